"""The `engram` command line.

Kept light at import time -- only click is imported up front -- so `engram --help` answers at
once; each command imports what it needs. Exit codes: 0 success, 2 bad input (a spec, problem,
data file or option), 3 the candidate program failed.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from engram import __version__
from engram.errors import CANDIDATE_FAILED_EXIT_CODE, EngramError

if TYPE_CHECKING:
    from engram.evaluation import Evaluation

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(command: F) -> F:
    """Turn `EngramError` into its message on stderr and its exit code, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EngramError as exc:
            click.echo(f"engram: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="engram")
def main() -> None:
    """Engram: LLM agents that design algorithms for computer systems."""


@main.command()
@_reports_errors
def problems() -> None:
    """List the built-in problems."""
    from engram.problem import list_problems

    found = list_problems()
    width = max((len(p.name) for p in found), default=0)
    for problem in found:
        click.echo(f"{problem.name:<{width}}  {problem.description}")


@main.command()
@click.argument("problem")
@_reports_errors
def data(problem: str) -> None:
    """Fetch and verify a problem's data files (they are otherwise fetched on first use)."""
    from engram.problem import load_problem

    loaded = load_problem(problem)
    for path in loaded.ensure_data():
        click.echo(str(path))


@main.command()
@click.argument("problem")
@click.argument("program", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON object.")
@click.option("--sandbox", "sandbox_name", type=click.Choice(["auto", "bwrap", "process"]), default="auto",
              show_default=True, help="Where the candidate runs.")
@click.option("--scenarios", default=None, metavar="A,B",
              help="Comma-separated scenario or scenario-set names (default: the problem's default set).")
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds (default: the problem's).")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for per-scenario result files (e.g. CSVs to analyse).")
@_reports_errors
def evaluate(problem: str, program: Path, as_json: bool, sandbox_name: str, scenarios: str | None,
             timeout: float | None, artifacts: Path | None) -> None:
    """Score PROGRAM on PROBLEM (a built-in name or a problem directory)."""
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.problem import load_problem
    from engram.sandbox import get_sandbox

    loaded = load_problem(problem)
    selection = [s.strip() for s in scenarios.split(",") if s.strip()] if scenarios else None
    sandbox = get_sandbox(sandbox_name, quiet=as_json)
    with CandidateEvaluator(loaded, sandbox, scenarios=selection, time_limit_s=timeout) as evaluator:
        result = evaluator.evaluate(program, artifacts_dir=artifacts)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), indent=2, allow_nan=True))
    else:
        click.echo(render_evaluation(result, program))
    if not result.ok:
        sys.exit(CANDIDATE_FAILED_EXIT_CODE)


def render_evaluation(result: Evaluation, program: Path) -> str:
    """A per-scenario table, the totals and the score, or the failure with the candidate's output."""
    lines = [f"{result.problem}: {program} (sandbox: {result.sandbox}, {result.duration_s:.2f} s)", ""]
    metric_names: list[str] = []
    for scenario in result.scenarios.values():
        metric_names += [m for m in scenario.metrics if m not in metric_names]
    header = ["scenario", "status", *metric_names]
    rows = [header]
    for scenario in result.scenarios.values():
        status = "ok" if scenario.ok else (scenario.error_kind or "failed")
        rows.append([scenario.name, str(status), *(_cell(scenario.metrics.get(m)) for m in metric_names)])
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        lines.append("")
    for name, value in result.metrics.items():
        lines.append(f"{name}: {_cell(value)}")
    if result.ok:
        lines.append(f"score: {result.score!r}")
    else:
        lines.append(f"FAILED ({result.error_kind}): {result.error}")
        if result.stderr.strip():
            lines += ["", "stderr (end):", result.stderr.rstrip()[-3000:]]
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


if __name__ == "__main__":
    main()
