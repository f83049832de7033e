"""Figures of `engram report`: best so far against evaluations and against dollars, one line per method.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch, no display), at a
size and resolution meant for a paper or a slide. Each line is the median over seeds of the best
result so far; the shaded band is a 95% bootstrap confidence interval of that median (or the
interquartile range, `--band iqr`); dashed grey lines are the problem's declared reference
solutions, labelled at the right edge. When the problem declares a natural unit (dollars,
seconds, hit rate) the figures are drawn in it, and once more in raw score.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engram.results.report import Curve, Group

_MIN_LABEL_GAP = 0.05  # axes fraction between two reference labels
_MARKED_POINTS = 40  # evaluation curves up to this length get a marker per evaluation
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
# Methods with equal trajectories draw the same line: a dash pattern and a marker shape per method
# keep each one visible under the others (and in print without colour).
_DASHES = ("-", (0, (6, 2)), (0, (2, 2)), (0, (6, 2, 2, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_MARKS_PER_LINE = 12


def plot_problem(problem_name: str, groups: list[Group], references: list[Any], out_dir: Path, *,
                 scenarios: list[str] | None, band: str = "ci", stem: str | None = None) -> list[Path]:
    """Write this problem's figures to `out_dir` and return their paths (figures without data are skipped)."""
    from engram.results.report import dollar_curve, evaluation_curve

    problem = next((g.problem for g in groups if g.problem is not None), None)
    colors = {group.label: _PALETTE[i % len(_PALETTE)] for i, group in enumerate(groups)}
    units = ["natural", "score"] if problem is not None and problem.config.score.natural_metric else ["score"]
    written = []
    for unit in units:
        natural = unit == "natural"
        for axis, make in (("evaluations", evaluation_curve), ("dollars", dollar_curve)):
            curves = [c for c in (make(g, natural, band) for g in groups) if c is not None]
            if not curves:
                continue
            path = out_dir / f"{stem or problem_name}_{'natural' if natural else 'score'}_vs_{axis}.png"
            lines = [(r.name, r.natural if natural else r.score) for r in references]
            draw(curves, path, colors=colors, axis=axis, y_label=_y_label(problem, natural),
                 title=_title(groups[0].problem_name if groups else problem_name, axis, scenarios),
                 references=[(name, value) for name, value in lines if value is not None], band=band)
            written.append(path)
    return written


def _y_label(problem: Any, natural: bool) -> str:
    if problem is None:
        return "best score so far"
    score = problem.config.score
    if natural:
        label = score.natural_label or score.natural_unit or score.natural_metric
        better = "lower" if score.natural_direction == "minimize" else "higher"
        return f"{label} of the best program so far\n({better} is better)"
    better = "higher" if score.direction == "maximize" else "lower"
    return f"best score so far\n({better} is better)"


def _title(problem_name: str, axis: str, scenarios: list[str] | None) -> str:
    which = ", ".join(scenarios) if scenarios else "default scenarios"
    against = "evaluations" if axis == "evaluations" else "dollars spent on the model"
    return f"{problem_name} ({which}): best so far vs {against}"


def draw(curves: list[Curve], path: Path, *, colors: dict[str, str], axis: str, y_label: str, title: str,
         references: list[tuple[str, float]], band: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(8, 4.8), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # Few evaluations: mark each one, or the last step (at the right edge) could not be seen.
    every_point = axis == "evaluations" and max(c.x.size for c in curves) <= _MARKED_POINTS
    for index, curve in enumerate(curves):
        color = colors.get(curve.label, "black")
        seeds = f"{curve.seeds} seed{'s' if curve.seeds != 1 else ''}"
        axes.plot(curve.x, curve.median, drawstyle="steps-post", color=color, linewidth=2,
                  linestyle=_DASHES[index % len(_DASHES)], marker=_MARKERS[index % len(_MARKERS)],
                  markersize=5 + 1.5 * (len(curves) - 1 - index), markerfacecolor="none", markeredgewidth=1.3,
                  markevery=1 if every_point else max(1, curve.x.size // _MARKS_PER_LINE),
                  label=f"{curve.label} (median of {seeds})" if curve.seeds > 1 else f"{curve.label} ({seeds})")
        if curve.low is not None and curve.high is not None:
            axes.fill_between(curve.x, curve.low, curve.high, step="post", color=color, alpha=0.18, linewidth=0)
    for _, value in references:
        axes.axhline(value, color="0.45", linestyle=(0, (5, 3)), linewidth=1, zorder=1)
    _fit_limits(axes, curves, references, axis)
    _label_references(axes, references)
    axes.set_title(title, fontsize=11)
    axes.set_ylabel(y_label)
    if axis == "evaluations":
        axes.set_xlabel("evaluations (candidate programs scored)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        axes.set_xlabel("dollars spent on model calls")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"${value:,.2f}" if value < 10
                                                     else f"${value:,.0f}"))
    axes.grid(True, color="0.9", linewidth=0.8)
    axes.set_axisbelow(True)
    # Below the axes: inside, the legend could cover lines or the reference labels at the right.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(curves)), fontsize=8,
                frameon=False)
    described = "95% bootstrap CI of the median" if band == "ci" else "interquartile range over seeds"
    if any(c.low is not None for c in curves):
        figure.text(0.01, 0.005, f"Line: median over seeds of the best so far. Band: {described}. "
                                 "Dashed: reference solutions.", fontsize=7, color="0.35", ha="left", va="bottom")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, bbox_inches="tight")


def _fit_limits(axes: Any, curves: list[Curve], references: list[tuple[str, float]], axis: str) -> None:
    """Show every line and every reference, with a margin; x from the first evaluation (or $0)."""
    values = [v for c in curves for v in _finite(c.median)]
    values += [v for c in curves for band in (c.low, c.high) if band is not None for v in _finite(band)]
    values += [value for _, value in references]
    if values:
        low, high = min(values), max(values)
        pad = (high - low) * 0.06 or abs(high) * 0.05 or 1.0
        axes.set_ylim(low - pad, high + pad)
    right = max(float(np.max(c.x)) for c in curves)
    if axis == "evaluations":
        margin = max(0.5, right * 0.01)
        axes.set_xlim(1.0 - margin, right + margin)
    else:
        axes.set_xlim(0.0, right * 1.01 if right > 0 else 1.0)


def _label_references(axes: Any, references: list[tuple[str, float]]) -> None:
    """Name each reference line just right of the axes, spreading labels of close values apart."""
    if not references:
        return
    low, high = axes.get_ylim()
    span = (high - low) or 1.0
    ordered = sorted(references, key=lambda item: item[1])
    exact = [(value - low) / span for _, value in ordered]
    placed = spread_apart(exact, _MIN_LABEL_GAP)
    for (name, _), at, position in zip(ordered, exact, placed, strict=True):
        axes.annotate(name, xy=(1.0, at), xycoords="axes fraction", xytext=(1.03, position),
                      textcoords="axes fraction", fontsize=7.5, color="0.3", va="center", ha="left",
                      annotation_clip=False, arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6})


def spread_apart(positions: list[float], gap: float, top: float = 1.0) -> list[float]:
    """Move sorted label positions apart by at least `gap`, keeping them under `top` when they fit."""
    placed: list[float] = []
    for position in positions:
        placed.append(max(position, placed[-1] + gap) if placed else position)
    if placed and placed[-1] > top:
        placed[-1] = top
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
    return placed


def _finite(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if np.isfinite(v)]
