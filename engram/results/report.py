"""`engram report RUN_DIR...`: compare methods on a problem from their run directories.

Runs are grouped by problem and scenario selection (a section each), then by method (the spec's
`method.name`; `--group-by spec` uses the spec name instead) together with everything that shapes a
result: the model, the method's settings and the budget. Runs that differ in any of these never
share a row; when several rows share a method, each label names what sets it apart (for example
`engram (digest=false)` next to `engram`, or `evolution (budget.max_dollars=30)`). So any method,
baseline or ablation appears as soon as its runs are given, and seeds of one setting pool. Everything comes from the run
directories, the record of every run: the event log gives the order, score and dollars of each
evaluation, the experiments' `evaluation.json` the result in the problem's natural unit.

Per group, over seeds: the best score, the median and interquartile range of each seed's final
best, and the evaluations and dollars a seed needed to reach 95% of its own final best (the first
evaluation whose best so far is within 5% of the final best score: at least 0.95 x final when
higher is better, at most final / 0.95 when lower is; for scores that are not positive, 95% of the
way from the first valid score to the final one). Plots (`engram.results.plots`) show the best so far
against evaluations and against dollars, median over seeds with a 95% bootstrap confidence band of
the median, in the problem's natural unit when it declares one (`score.natural_metric`), with the
problem's declared reference solutions (`references:` in problem.yaml) as horizontal lines.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from engram.errors import ConfigError, EngramError
from engram.runs.archive import SeedArchive, write_atomic, write_json
from engram.runs.rescore import seed_dirs

GroupBy = Literal["method", "spec"]
REACH_FRACTION = 0.95
_BOOTSTRAP_SAMPLES = 1000
_DOLLAR_GRID_POINTS = 300


# -- reading runs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluated:
    """One evaluation of a seed, in the order the run made them."""

    index: int
    experiment: int
    score: float | None
    dollars: float | None
    natural: float | None


@dataclass
class SeedTrace:
    run_dir: Path
    seed: int
    evaluations: list[Evaluated]
    dollars: float | None
    wall_s: float | None
    finished: bool

    def best_so_far(self, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
        """After each evaluation: the best score so far and the natural value of that best program
        (NaN until a candidate scores)."""
        scores = np.full(len(self.evaluations), np.nan)
        naturals = np.full(len(self.evaluations), np.nan)
        best: Evaluated | None = None
        for i, point in enumerate(self.evaluations):
            if _finite(point.score) and (best is None or _better(point.score, best.score, maximize)):  # type: ignore[arg-type]
                best = point
            if best is not None:
                scores[i] = best.score
                naturals[i] = best.natural if _finite(best.natural) else np.nan
        return scores, naturals

    def cumulative_dollars(self) -> np.ndarray:
        values = [p.dollars if _finite(p.dollars) else np.nan for p in self.evaluations]
        return np.array(values, dtype=float)


@dataclass
class RunInfo:
    run_dir: Path
    spec_name: str
    problem_name: str
    problem: Any  # engram.problems.problem.Problem, or None when its directory is gone
    method: str
    model: str
    scenarios: list[str] | None
    settings: dict[str, Any]
    """What shapes a result besides the method's name: model, method settings, budget (`_settings`)."""
    experiment: str
    tracking_uri: str | None
    seeds: list[SeedTrace]
    sandbox: str = ""
    """The backend its candidates ran in (`meta.sandbox` of the resolved spec)."""


def load_run(run_dir: Path) -> RunInfo:
    """Read one run directory (finished or not) for reporting."""
    from engram.runs.runner import RESOLVED_SPEC

    resolved = run_dir / RESOLVED_SPEC
    if not resolved.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no {RESOLVED_SPEC}")
    stored = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    spec = stored.get("spec") or {}
    problem_ref = str((spec.get("problem") or {}).get("name") or "")
    problem = _load_problem(problem_ref)
    problem_name = problem.name if problem is not None else Path(problem_ref).name
    natural_metric = problem.config.score.natural_metric if problem is not None else None
    tracking = spec.get("tracking") or {}
    seeds = [_load_seed(run_dir, seed, path, natural_metric) for seed, path in seed_dirs(run_dir).items()]
    return RunInfo(run_dir=run_dir, spec_name=str(spec.get("name") or run_dir.parent.name),
                   problem_name=problem_name, problem=problem,
                   method=str((spec.get("method") or {}).get("name") or "unknown"),
                   model=str((spec.get("model") or {}).get("id") or "unknown"),
                   scenarios=(spec.get("problem") or {}).get("scenarios"), settings=_settings(spec),
                   experiment=str(tracking.get("experiment") or problem_name), tracking_uri=tracking.get("uri"),
                   seeds=seeds, sandbox=str((stored.get("meta") or {}).get("sandbox") or ""))


_NOT_SETTINGS = {"name", "workers", "checkpoint_interval"}
"""Method fields that change how a run executes (parallelism, bookkeeping), not what it may find."""


def _settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two runs of one method comparable or not, as flat `section.field` keys."""
    settings: dict[str, Any] = {"model": str((spec.get("model") or {}).get("id") or "unknown")}
    for section in ("method", "budget"):
        for key, value in sorted((spec.get(section) or {}).items()):
            if not (section == "method" and key in _NOT_SETTINGS):
                settings[f"{section}.{key}"] = value
    return settings


def _load_problem(reference: str) -> Any:
    from engram.problems.problem import load_problem

    try:
        return load_problem(reference)
    except EngramError:
        return None  # a problem directory that moved: report scores without natural units or references


def _load_seed(run_dir: Path, seed: int, path: Path, natural_metric: str | None) -> SeedTrace:
    archive = SeedArchive(path)
    experiments = {e.number: e for e in archive.experiments()}
    points = []
    for event in archive.events("experiment"):
        number = int(event.get("experiment", 0))
        natural = None
        if natural_metric and event.get("ok") and number in experiments:
            evaluation = experiments[number].evaluation()
            value = evaluation.metrics.get(natural_metric) if evaluation is not None else None
            natural = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        points.append(Evaluated(index=len(points) + 1, experiment=number, score=_number(event.get("score")),
                                dollars=_number(event.get("dollars")), natural=natural))
    result = json.loads(archive.result_file.read_text(encoding="utf-8")) if archive.is_finished() else {}
    dollars = _number(result.get("dollars"))
    if dollars is None and points:
        dollars = points[-1].dollars
    return SeedTrace(run_dir=run_dir, seed=seed, evaluations=points, dollars=dollars,
                     wall_s=_number(result.get("wall_s")), finished=archive.is_finished())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _better(a: float, b: float | None, maximize: bool) -> bool:
    return b is None or (a > b if maximize else a < b)


# -- grouping and statistics ------------------------------------------------------------------------------


@dataclass
class Group:
    """The seeds of one method (or spec) on one problem, with the settings they share."""

    problem_name: str
    label: str
    runs: list[RunInfo] = field(default_factory=list)

    @property
    def seeds(self) -> list[SeedTrace]:
        return [seed for run in self.runs for seed in run.seeds if seed.evaluations]

    @property
    def problem(self) -> Any:
        return next((run.problem for run in self.runs if run.problem is not None), None)

    @property
    def maximize(self) -> bool:
        problem = self.problem
        return problem is None or problem.config.score.direction == "maximize"


def group_runs(runs: list[RunInfo], group_by: GroupBy = "method") -> list[Group]:
    """Groups by problem, then by method (or spec) and settings: one row per distinct setting."""
    variants: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for run in runs:
        variants[(run.problem_name, _base_label(run, group_by))][_settings_key(run)] = run.settings
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        base = _base_label(run, group_by)
        label = base + _difference(run.settings, list(variants[(run.problem_name, base)].values()))
        groups.setdefault((run.problem_name, label), Group(run.problem_name, label)).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def _base_label(run: RunInfo, group_by: GroupBy) -> str:
    return run.spec_name if group_by == "spec" else run.method


def _settings_key(run: RunInfo) -> str:
    return json.dumps(run.settings, sort_keys=True, default=str)


def _difference(settings: dict[str, Any], variants: list[dict[str, Any]]) -> str:
    """` (key=value, ...)` for the settings in which this variant differs from the others; "" alone."""
    if len(variants) < 2:
        return ""
    keys = sorted({key for variant in variants for key in variant})
    differing = [key for key in keys if len({json.dumps(v.get(key), default=str) for v in variants}) > 1]
    parts = []
    for key in differing:
        if key not in settings:
            continue
        shown = key.removeprefix("method.") if key.startswith("method.") else key
        parts.append(settings[key] if key == "model" else f"{shown}={_plain(settings[key])}")
    return f" ({', '.join(map(str, parts))})" if parts else ""


def _plain(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool | type(None)) else str(value)


@dataclass(frozen=True)
class SeedSummary:
    final_score: float | None
    final_natural: float | None
    evaluations: int
    dollars: float | None
    wall_s: float | None
    evaluations_to_reach: int | None
    dollars_to_reach: float | None


def summarize_seed(seed: SeedTrace, maximize: bool) -> SeedSummary:
    scores, naturals = seed.best_so_far(maximize)
    valid = np.flatnonzero(~np.isnan(scores))
    final = float(scores[-1]) if valid.size else None
    reach = reached_at(scores, maximize) if final is not None else None
    dollars = seed.cumulative_dollars()
    return SeedSummary(
        final_score=final,
        final_natural=float(naturals[-1]) if valid.size and not np.isnan(naturals[-1]) else None,
        evaluations=len(seed.evaluations), dollars=seed.dollars, wall_s=seed.wall_s,
        evaluations_to_reach=reach + 1 if reach is not None else None,
        dollars_to_reach=float(dollars[reach]) if reach is not None and not np.isnan(dollars[reach]) else None,
    )


def reached_at(best: np.ndarray, maximize: bool, fraction: float = REACH_FRACTION) -> int | None:
    """Index of the first evaluation whose best so far is within `fraction` of the final best."""
    valid = np.flatnonzero(~np.isnan(best))
    if not valid.size:
        return None
    final, first = float(best[-1]), float(best[valid[0]])
    if final > 0:
        threshold = final * fraction if maximize else final / fraction
    else:  # ratios mean nothing around zero: use the share of the improvement instead
        threshold = first + fraction * (final - first)
    for index in valid:
        value = float(best[index])
        if (value >= threshold) if maximize else (value <= threshold):
            return int(index)
    return int(valid[-1])


@dataclass(frozen=True)
class Spread:
    median: float | None
    q25: float | None
    q75: float | None

    @classmethod
    def of(cls, values: list[float | None]) -> Spread:
        finite = [v for v in values if _finite(v)]
        if not finite:
            return cls(None, None, None)
        q25, median, q75 = np.percentile(finite, [25, 50, 75])
        return cls(float(median), float(q25), float(q75))


@dataclass
class GroupRow:
    """One line of the report's table."""

    problem: str
    label: str
    runs: int
    seeds: int
    best_score: float | None
    best_natural: float | None
    score: Spread
    natural: Spread
    evaluations: Spread
    dollars: Spread
    evaluations_to_reach: Spread
    dollars_to_reach: Spread
    natural_unit: str | None

    def as_dict(self) -> dict[str, Any]:
        flat: dict[str, Any] = {"problem": self.problem, "method": self.label, "runs": self.runs, "seeds": self.seeds,
                                "best_score": self.best_score, "best_natural": self.best_natural,
                                "natural_unit": self.natural_unit}
        for name in ("score", "natural", "evaluations", "dollars", "evaluations_to_reach", "dollars_to_reach"):
            spread: Spread = getattr(self, name)
            flat |= {f"{name}_median": spread.median, f"{name}_q25": spread.q25, f"{name}_q75": spread.q75}
        return flat


def summarize_group(group: Group) -> GroupRow:
    maximize = group.maximize
    seeds = [summarize_seed(seed, maximize) for seed in group.seeds]
    finals = [(s.final_score, s.final_natural) for s in seeds if s.final_score is not None]
    best = (max if maximize else min)(finals, key=lambda pair: pair[0]) if finals else (None, None)
    problem = group.problem
    return GroupRow(
        problem=group.problem_name, label=group.label, runs=len(group.runs), seeds=len(seeds),
        best_score=best[0], best_natural=best[1],
        score=Spread.of([s.final_score for s in seeds]), natural=Spread.of([s.final_natural for s in seeds]),
        evaluations=Spread.of([float(s.evaluations) for s in seeds]), dollars=Spread.of([s.dollars for s in seeds]),
        evaluations_to_reach=Spread.of([float(s.evaluations_to_reach) if s.evaluations_to_reach else None
                                        for s in seeds]),
        dollars_to_reach=Spread.of([s.dollars_to_reach for s in seeds]),
        natural_unit=_natural_label(problem),
    )


def _natural_label(problem: Any) -> str | None:
    if problem is None or not problem.config.score.natural_metric:
        return None
    score = problem.config.score
    return score.natural_label or score.natural_unit or score.natural_metric


# -- curves over seeds ------------------------------------------------------------------------------------


@dataclass
class Curve:
    """A median line over seeds with its confidence band (None for a single seed)."""

    label: str
    seeds: int
    x: np.ndarray
    median: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None


def evaluation_curve(group: Group, natural: bool, band: str = "ci") -> Curve | None:
    """Best so far after k evaluations, k = 1 .. the longest seed; a seed that stopped earlier keeps its best."""
    series = [_series(seed, group.maximize, natural) for seed in group.seeds]
    series = [s for s in series if s.size]
    if not series:
        return None
    length = max(s.size for s in series)
    matrix = np.array([np.concatenate([s, np.full(length - s.size, s[-1])]) for s in series])
    return _curve(group.label, np.arange(1, length + 1), _worst_when_missing(matrix, group, natural), band)


def dollar_curve(group: Group, natural: bool, band: str = "ci") -> Curve | None:
    """Best so far once d dollars are spent, on a common grid up to the costliest seed; None when no
    seed has a known price."""
    rows = []
    top = 0.0
    for seed in group.seeds:
        values, spent = _series(seed, group.maximize, natural), seed.cumulative_dollars()
        keep = ~np.isnan(spent)
        if values.size and keep.any():
            rows.append((spent[keep], values[keep]))
            # The best stays the best until the run ends, including the calls after its last evaluation.
            top = max(top, float(spent[keep].max()), seed.dollars if _finite(seed.dollars) else 0.0)  # type: ignore[arg-type]
    if not rows or top <= 0:
        return None
    grid = np.linspace(0.0, top, _DOLLAR_GRID_POINTS)
    matrix = np.array([_step_at(spent, values, grid) for spent, values in rows])
    return _curve(group.label, grid, _worst_when_missing(matrix, group, natural), band)


def _series(seed: SeedTrace, maximize: bool, natural: bool) -> np.ndarray:
    scores, naturals = seed.best_so_far(maximize)
    return naturals if natural else scores


def _worst_when_missing(matrix: np.ndarray, group: Group, natural: bool) -> np.ndarray:
    """A seed with no valid program yet counts as worse than any result, so the median exists (and
    is drawn) once more than half of the seeds have one, instead of following the lucky few."""
    problem = group.problem
    maximize = group.maximize
    if natural and problem is not None:
        maximize = problem.config.score.natural_direction == "maximize"
    return np.where(np.isnan(matrix), -np.inf if maximize else np.inf, matrix)


def _step_at(spent: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The value of the last evaluation made with at most `grid` dollars (NaN before the first)."""
    positions = np.searchsorted(spent, grid, side="right") - 1
    out = np.full(grid.size, np.nan)
    ok = positions >= 0
    out[ok] = values[positions[ok]]
    return out


def _curve(label: str, x: np.ndarray, matrix: np.ndarray, band: str) -> Curve:
    """Median over seeds and its band: "ci" (bootstrap CI of the median) or "iqr" (quartiles of the seeds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf while interpolating between missing seeds
        median = _finite_or_nan(np.median(matrix, axis=0))
        low = high = None
        if matrix.shape[0] > 1:
            low, high = (bootstrap_median_band(matrix) if band == "ci"
                         else (np.percentile(matrix, 25, axis=0), np.percentile(matrix, 75, axis=0)))
            low, high = _finite_or_nan(low), _finite_or_nan(high)
    return Curve(label, matrix.shape[0], x, median, low, high)


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def bootstrap_median_band(matrix: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """A percentile-bootstrap confidence band for the median over rows (seeds), column by column.

    Seeds without a result yet are -inf or +inf (the worst), so bounds may be infinite there; the
    caller leaves those out. Seeded, so the same runs always give the same figure. With few seeds
    the band is wide and coarse (it can only take the seeds' own values): that is the honest answer.
    """
    rng = np.random.default_rng(0)
    picks = rng.integers(0, matrix.shape[0], size=(_BOOTSTRAP_SAMPLES, matrix.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf where seeds have no result yet
        medians = np.median(matrix[picks], axis=1)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(medians, [tail, 100 - tail], axis=0)
    return low, high


# -- the report -------------------------------------------------------------------------------------------


@dataclass
class ProblemReport:
    problem_name: str
    rows: list[GroupRow]
    figures: list[Path]
    references: list[Any]
    scenarios: list[str] | None
    experiment: str
    tracking_uri: str | None
    problem: str = ""  # the problem's own name (problem_name may add a scenario selection)


@dataclass
class Report:
    out_dir: Path
    problems: list[ProblemReport]
    runs: list[RunInfo]
    html_file: Path
    notes: list[str] = field(default_factory=list)
    band: str = "ci"


def build_report(run_dirs: list[Path], out_dir: Path, *, group_by: GroupBy = "method",
                 band: str = "ci") -> Report:
    """Read the runs, write the table (CSV, Markdown, JSON), the figures and the HTML page to `out_dir`."""
    from engram.results.plots import plot_problem

    runs = [load_run(path.resolve()) for path in _expand(run_dirs)]
    if not runs:
        raise ConfigError("no run directories given (a run directory holds spec.resolved.yaml)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Scores of different scenario selections are not comparable: each selection is its own section.
    by_problem: dict[tuple[str, str], list[RunInfo]] = defaultdict(list)
    for run in runs:
        by_problem[(run.problem_name, _selection_label(run))].append(run)
    reports, notes = [], []
    for (problem_name, selection), problem_runs in sorted(by_problem.items()):
        title = f"{problem_name} [{selection}]" if selection else problem_name
        groups = group_runs(problem_runs, group_by)
        scenarios = problem_runs[0].scenarios
        problem = next((g.problem for g in groups if g.problem is not None), None)
        references = problem.references_for(scenarios) if problem is not None else []
        figures = plot_problem(title, groups, references, out_dir, scenarios=scenarios, band=band,
                               stem=re.sub(r"[^A-Za-z0-9_.-]+", "-", title).strip("-"))
        rows = [summarize_group(g) for g in groups]
        for row in rows:
            row.problem = title
        reports.append(ProblemReport(title, rows, figures, references,
                                     scenarios, _most_common(r.experiment for r in problem_runs),
                                     next((r.tracking_uri for r in problem_runs if r.tracking_uri), None),
                                     problem_name))
    notes += _isolation_notes(runs)
    report = Report(out_dir, reports, runs, out_dir / "report.html", notes, band)
    _write_tables(report)
    write_atomic(report.html_file, render_html(report))
    return report


def _isolation_notes(runs: list[RunInfo]) -> list[str]:
    """A run whose candidates were not isolated may hold tampered scores: the report says which."""
    from engram.sandbox import UNISOLATED

    return [f"{run.run_dir.name} ({run.spec_name}) ran its candidates without isolation (sandbox "
            f"'{run.sandbox}'): a candidate could have changed its own score"
            for run in runs if run.sandbox in UNISOLATED]


def _expand(paths: list[Path]) -> list[Path]:
    """Run directories as given, or every run directory below a folder such as runs/<spec>/."""
    from engram.runs.runner import RESOLVED_SPEC

    found: list[Path] = []
    for path in paths:
        if (path / RESOLVED_SPEC).is_file():
            found.append(path)
            continue
        below = sorted(p.parent for p in path.glob(f"**/{RESOLVED_SPEC}"))
        if not below:
            raise ConfigError(f"{path} is not a run directory and holds none (no {RESOLVED_SPEC} below it)")
        found += below
    return list(dict.fromkeys(found))


def _selection_label(run: RunInfo) -> str:
    """"" for the problem's default scenarios, else the selection as the spec names it (e.g. "quick")."""
    if not run.scenarios:
        return ""
    if run.problem is not None:
        chosen = [s.name for s in run.problem.select_scenarios(run.scenarios)]
        if chosen == [s.name for s in run.problem.select_scenarios(None)]:
            return ""
    return "+".join(run.scenarios)


def _most_common(values: Any) -> str:
    return Counter(values).most_common(1)[0][0]


# -- output -----------------------------------------------------------------------------------------------


def format_value(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


def _spread_text(spread: Spread, digits: int = 6, dollars: bool = False) -> str:
    if spread.median is None:
        return "-"
    prefix = "$" if dollars else ""
    text = f"{prefix}{format_value(spread.median, digits)}"
    if spread.q25 != spread.q75:
        text += f" [{prefix}{format_value(spread.q25, digits)}, {prefix}{format_value(spread.q75, digits)}]"
    return text


TABLE_HEADER = ("problem", "method", "seeds", "best score", "median score [IQR]", "best (natural)",
                "median (natural) [IQR]", "evaluations", "dollars", "evals to 95%", "$ to 95%")


def table_rows(report: Report) -> list[tuple[str, ...]]:
    rows = []
    for problem in report.problems:
        for row in problem.rows:
            unit = f" {row.natural_unit}" if row.natural_unit else ""
            rows.append((row.problem, row.label, str(row.seeds), format_value(row.best_score, 8),
                         _spread_text(row.score, 6),
                         (format_value(row.best_natural, 8) + unit) if row.best_natural is not None else "-",
                         _spread_text(row.natural, 6), _spread_text(row.evaluations, 4),
                         _spread_text(row.dollars, 4, dollars=True), _spread_text(row.evaluations_to_reach, 4),
                         _spread_text(row.dollars_to_reach, 4, dollars=True)))
    return rows


def format_table(report: Report) -> str:
    rows = [TABLE_HEADER, *table_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _write_tables(report: Report) -> None:
    rows = [row.as_dict() for problem in report.problems for row in problem.rows]
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(report.out_dir / "report.csv", buffer.getvalue())
    write_json(report.out_dir / "report.json", {"runs": [str(r.run_dir) for r in report.runs], "rows": rows,
                                                "notes": report.notes})
    markdown = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    markdown += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    write_atomic(report.out_dir / "report.md", "\n".join(markdown) + "\n")


def _unisolated() -> tuple[str, ...]:
    from engram.sandbox import UNISOLATED

    return UNISOLATED


def render_html(report: Report) -> str:
    """One self-contained page: the table, then each problem's figures (embedded, so the page can be
    mailed or stored as a single MLflow artefact)."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in TABLE_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in table_rows(report))
    sections = []
    for problem in report.problems:
        images = "".join(
            f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(path.name)}</figcaption></figure>'
            for path in problem.figures)
        refs = "".join(f"<li>{html.escape(r.name)}: score {r.score:g}"
                       + (f", {r.natural:g}" if r.natural is not None else "")
                       + (f" ({html.escape(r.source)})" if r.source else "") + "</li>" for r in problem.references)
        scenarios = ", ".join(problem.scenarios) if problem.scenarios else "the problem's default selection"
        sections.append(f"<h2>{html.escape(problem.problem_name)}</h2><p>Scenarios: {html.escape(scenarios)}.</p>"
                        + (f"<p>Reference solutions:</p><ul>{refs}</ul>" if refs else "") + images)
    runs = "".join(f"<li><code>{html.escape(str(r.run_dir))}</code>: {html.escape(r.spec_name)}, "
                   f"{html.escape(r.method)}, {html.escape(r.model)}, {len(r.seeds)} seed(s), "
                   f"sandbox {html.escape(r.sandbox or 'unknown')}"
                   + (" <span class=note>(not isolated)</span>" if r.sandbox in _unisolated() else "")
                   + "</li>" for r in report.runs)
    notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in report.notes)
    band = ("95% bootstrap confidence interval of the median" if report.band == "ci"
            else "interquartile range of the seeds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Engram report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
.note {{ color: #a33; }} .defs {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>Engram report</h1>
<p>Generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))} from {len(report.runs)} run(s).</p>
{notes}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p class=defs>Per method, over seeds: median of each seed's final best, with the interquartile range in brackets;
"evals to 95%" and "$ to 95%" are the evaluations and dollars a seed took until its best so far was within 5% of its
own final best. Curves: median over seeds of the best so far (a seed without a valid program yet counts as the worst),
band: {band}.
"natural" is the best-scoring program's result in the problem's own unit.</p>
{''.join(sections)}
<h2>Runs</h2><ul>{runs}</ul>
</body></html>
"""


# -- MLflow -----------------------------------------------------------------------------------------------


def log_to_mlflow(report: Report, tracking_uri: str | None = None) -> list[str]:
    """Log each problem's figures, table and page as one run in that problem's MLflow experiment (the
    experiment its runs are in), so they sit beside the runs they summarise. Returns warnings;
    a tracking failure never loses the report, which is on disk already."""
    warnings = []
    for problem in report.problems:
        try:
            _log_problem(report, problem, tracking_uri)
        except Exception as error:  # MLflow is a mirror: say so and go on
            warnings.append(f"MLflow logging of the {problem.problem_name} report failed "
                            f"({type(error).__name__}: {error}); the report files are in {report.out_dir}")
    return warnings


def _log_problem(report: Report, problem: ProblemReport, tracking_uri: str | None) -> None:
    import mlflow

    from engram.results.tracking import _quiet_mlflow_logging, default_tracking_uri

    _quiet_mlflow_logging()
    uri = tracking_uri or problem.tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(problem.experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(problem.experiment)
    run = client.create_run(experiment_id, run_name=f"report {problem.problem_name} {time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"engram.report": "true", "engram.problem": problem.problem or problem.problem_name})
    run_id = run.info.run_id
    for row in problem.rows:
        for key, value in (("best_score", row.best_score), ("median_best_score", row.score.median),
                           ("median_evaluations_to_95pct", row.evaluations_to_reach.median)):
            if _finite(value):
                client.log_metric(run_id, f"{_metric_key(row.label)}.{key}", float(value))  # type: ignore[arg-type]
    for path in [*problem.figures, report.html_file, report.out_dir / "report.csv", report.out_dir / "report.md"]:
        client.log_artifact(run_id, str(path), "report")
    client.set_terminated(run_id, "FINISHED")


def _metric_key(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in label)


# -- per-run metrics (DVC) --------------------------------------------------------------------------------


def run_metrics(run: RunInfo) -> dict[str, Any]:
    """A small, flat summary of one run for `dvc metrics`: best score, evaluations, dollars, wall time."""
    group = Group(run.problem_name, run.method, [run])
    row = summarize_group(group)
    seeds = group.seeds
    return {
        "spec": run.spec_name, "problem": run.problem_name, "method": run.method, "model": run.model,
        "seeds": len(run.seeds), "best_score": row.best_score, "best_natural": row.best_natural,
        "natural_unit": row.natural_unit, "median_best_score": row.score.median,
        "evaluations": sum(len(s.evaluations) for s in seeds),
        "dollars": sum(s.dollars or 0.0 for s in run.seeds),
        "wall_s": sum(s.wall_s or 0.0 for s in run.seeds),
        "evaluations_to_95pct": row.evaluations_to_reach.median,
    }


def best_so_far_rows(run: RunInfo) -> list[dict[str, Any]]:
    """One row per evaluation of every seed: the plot data DVC draws (`dvc plots show`)."""
    maximize = run.problem is None or run.problem.config.score.direction == "maximize"
    rows = []
    for seed in run.seeds:
        scores, naturals = seed.best_so_far(maximize)
        for point, best, natural in zip(seed.evaluations, scores, naturals, strict=True):
            rows.append({"seed": seed.seed, "evaluation": point.index, "experiment": point.experiment,
                         "score": point.score, "best_score": None if np.isnan(best) else float(best),
                         "best_natural": None if np.isnan(natural) else float(natural), "dollars": point.dollars})
    return rows


def write_run_metrics(run_dir: Path, *, metrics_file: Path | None, plot_file: Path | None) -> dict[str, Any]:
    run = load_run(_newest_run(run_dir))
    metrics = run_metrics(run)
    if metrics_file is not None:
        write_json(metrics_file, metrics)
    if plot_file is not None:
        rows = best_so_far_rows(run)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["seed", "evaluation", "experiment", "score", "best_score",
                                                    "best_natural", "dollars"])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        write_atomic(plot_file, buffer.getvalue())
    return metrics


def _newest_run(path: Path) -> Path:
    """`path` itself when it is a run directory, else the newest run directory directly below it
    (`runs/<spec name>/`, where a DVC stage finds the run it just made)."""
    from engram.runs.runner import RESOLVED_SPEC

    if (path / RESOLVED_SPEC).is_file():
        return path
    runs = sorted((p for p in path.iterdir() if (p / RESOLVED_SPEC).is_file()), key=lambda p: p.name) \
        if path.is_dir() else []
    if not runs:
        raise ConfigError(f"{path} is not a run directory and has none directly below it")
    return runs[-1]
