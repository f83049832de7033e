"""The `engram` command line.

Kept light at import time -- only click is imported up front -- so `engram --help` answers at
once; each command imports what it needs. Exit codes: 0 success; 2 bad input (a spec, problem,
data file or option), an environment that cannot run it, a problem changed since the run, or a
fault of the problem's own evaluator; 3 `engram evaluate`: the candidate failed (any error kind,
`invalid_output` included); 4 `rescore`/`replay`: a score moved; 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import math
import re
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
SANDBOX_CHOICES = ("auto", "docker", "bwrap", "process")
"""Kept here (not imported from engram.sandbox) so `engram --help` stays fast."""


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


_accept_changed_problem = click.option(
    "--accept-changed-problem", is_flag=True,
    help="Go on although the problem's trusted files differ from the run's (recorded in the run).")


def _comparison_options(command: F) -> F:
    """The options `rescore` and `replay` share: both score a run's candidates again and compare,
    so they must accept the same problem override, sandbox, tolerance and listing."""
    for option in reversed((
        click.option("--problem", default=None,
                     help="Score with this problem (name or directory) instead of the run's."),
        click.option("--sandbox", "sandbox_name", type=click.Choice(list(SANDBOX_CHOICES)), default=None,
                     help="Where candidates run [default: the run's sandbox setting]."),
        click.option("--tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Relative difference of scores still counted as equal (0: bit for bit)."),
        click.option("--changes-only", is_flag=True, help="List only the experiments whose score moved."),
        _accept_changed_problem,
    )):
        command = option(command)
    return command


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets inf and nan through (nan compares false with every bound)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds")
    return value


class _SpecPath(click.Path):
    """An existing spec file (or, where `dir_okay`, folder); a mistyped one names the spec it most likely meant."""

    def __init__(self, dir_okay: bool = False) -> None:
        super().__init__(exists=True, dir_okay=dir_okay, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            from engram.spec_files import nearest_spec

            near = None if Path(value).exists() else nearest_spec(Path(value))
            if near is None:
                raise
            self.fail(f"{exc.message.rstrip('.')}; did you mean {near}?", param, ctx)


class _Command(click.Command):
    """A command listed in its group's help by its whole first sentence, wrapped, never cut to "...":
    the listing is where a newcomer learns what each command is for."""

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return self.short_help
        paragraph = (self.help or "").split("\f")[0].strip().split("\n\n")[0]
        return re.split(r"(?<=\.)\s", " ".join(paragraph.split()), maxsplit=1)[0]


class _Group(_Command, click.Group):
    command_class = _Command
    group_class = type  # subgroups (engram sandbox) list their commands the same way


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="engram")
def main() -> None:
    """Engram: LLM agents that design algorithms for computer systems."""


@main.command()
@_reports_errors
def problems() -> None:
    """List the built-in problems and the Frontier-CS family (frontier_cs/<id>)."""
    from engram.frontier_cs.family import list_family
    from engram.problems.problem import list_problems

    found = list_problems()
    family = list_family()
    width = max([len(p.name) for p in found] + [len(p.name) for p in family], default=0)
    for problem in found:
        click.echo(f"{problem.name:<{width}}  {problem.description}")
    for member in family:
        click.echo(f"{member.name:<{width}}  [{member.kind}] {member.title}{member.note}")


@main.command()
@click.argument("problem")
@_reports_errors
def data(problem: str) -> None:
    """Fetch and verify a problem's data files (they are otherwise fetched on first use)."""
    from engram.problems.problem import load_problem

    loaded = load_problem(problem)
    for path in loaded.ensure_data():
        click.echo(str(path))


@main.command()
@click.argument("problem")
@click.argument("program", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON object.")
@click.option("--sandbox", "sandbox_name", type=click.Choice(list(SANDBOX_CHOICES)), default="auto",
              show_default=True, help="Where the candidate runs.")
@click.option("--scenarios", default=None, metavar="A,B",
              help="Comma-separated scenario or scenario-set names (default: the problem's default set).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, callback=_finite,
              help="Wall-clock limit in seconds (default: the problem's).")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file keeping the seeds of hidden workloads (created if missing), to score "
                   "against the same hidden data again [default: drawn afresh].")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for per-scenario result files (e.g. CSVs to analyse).")
@_reports_errors
def evaluate(problem: str, program: Path, as_json: bool, sandbox_name: str, scenarios: str | None,
             timeout: float | None, artifacts: Path | None, secrets_file: Path | None) -> None:
    """Score PROGRAM on PROBLEM (a built-in name or a problem directory)."""
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.evaluation.run_secrets import TrustedSecrets
    from engram.problems.problem import load_problem
    from engram.sandbox import get_sandbox

    loaded = load_problem(problem)
    selection = [s.strip() for s in scenarios.split(",") if s.strip()] if scenarios else None
    sandbox = get_sandbox(sandbox_name, quiet=as_json)
    secrets = TrustedSecrets(secrets_file) if secrets_file else None
    with CandidateEvaluator(loaded, sandbox, scenarios=selection, time_limit_s=timeout, secrets=secrets) as evaluator:
        result = _naming_the_program(evaluator.evaluate(program, artifacts_dir=artifacts), program)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), indent=2, allow_nan=True))
    else:
        click.echo(render_evaluation(result, program))
    if not result.ok:
        sys.exit(CANDIDATE_FAILED_EXIT_CODE)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=_SpecPath(dir_okay=True))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field, e.g. budget.max_agents=5.")
@_reports_errors
def validate(specs: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Check specs, grid files or folders of specs without running anything (all, also after one fails)."""
    from engram.spec import check_spec
    from engram.spec_files import specs_to_check

    failed = checked = 0
    for path in specs:
        try:
            targets = specs_to_check(path, overrides)
        except EngramError as exc:
            failed, checked = failed + 1, checked + 1
            click.echo(f"engram: error: {exc}", err=True)
            continue
        for target in targets:
            checked += 1
            try:
                click.echo(f"{target.label}: ok ({check_spec(target.path, list(target.overrides))})")
            except EngramError as exc:
                failed += 1
                click.echo(f"engram: error: {target.grid}: {exc}" if target.grid else f"engram: error: {exc}", err=True)
    if failed:
        click.echo(f"engram: {failed} of {checked} spec(s) have errors", err=True)
        sys.exit(2)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=_SpecPath())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field (validated, recorded in the resolved spec). Repeatable.")
@click.option("--new", is_flag=True, help="Start a new run even if an unfinished one of this spec exists.")
@click.option("-v", "--verbose", is_flag=True, help="Stream each agent turn (text and tool calls).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@click.option("--json", "as_json", is_flag=True, help="Print progress events and the result as JSON lines.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Local executor: at most this many runs at once [default: the number of cores].")
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default=None,
              help="Where runs execute [default: the spec's executor.name, local].")
@click.option("--address", default=None, help="Ray cluster address [default: $RAY_ADDRESS or auto].")
@click.option("--max-dollars", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sweep cap: the dollars of all runs together, on top of each run's own budget.")
@_reports_errors
def apply(specs: tuple[Path, ...], overrides: tuple[str, ...], new: bool, verbose: bool, quiet: bool, as_json: bool,
          jobs: int | None, executor_name: str | None, address: str | None, max_dollars: float | None) -> None:
    """Run the experiment SPEC (or continue its unfinished run); several specs or a grid file run as a sweep."""
    from engram.runs.progress import make_progress
    from engram.runs.runner import apply as apply_spec
    from engram.runs.sweep import apply_sweep, is_sweep

    executor_options = {"name": executor_name, "jobs": jobs, "address": address, "max_dollars": max_dollars}
    if is_sweep(specs, list(overrides), executor_options):
        sys.exit(apply_sweep(specs, list(overrides), executor_options, new=new, quiet=quiet, as_json=as_json,
                             verbose=verbose))
    [spec] = specs
    progress = make_progress(verbose=verbose, quiet=quiet, as_json=as_json)
    try:
        outcome = apply_spec(spec, list(overrides), progress, new=new)
    finally:
        progress.close()
    _report_run(outcome, as_json)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Stream each agent turn (text and tool calls).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@click.option("--json", "as_json", is_flag=True, help="Print progress events and the result as JSON lines.")
@_accept_changed_problem
@_reports_errors
def resume(run_dir: Path, verbose: bool, quiet: bool, as_json: bool, accept_changed_problem: bool) -> None:
    """Continue the interrupted run in RUN_DIR (or the newest unfinished one in a folder such as runs/<spec>)."""
    from engram.runs.progress import make_progress
    from engram.runs.runner import resume as resume_run

    run_dir = _chosen_run(run_dir, "resuming", unfinished=True)
    finished = _finished_run(run_dir)
    progress = make_progress(verbose=verbose, quiet=quiet, as_json=as_json)
    try:
        outcome = resume_run(run_dir, progress, accept_changed_problem=accept_changed_problem)
    finally:
        progress.close()
    _report_run(outcome, as_json)
    if finished:
        click.echo(f"engram: note: {run_dir} was already finished; nothing was run (engram apply SPEC --new "
                   "starts another run of its spec)", err=True)


def _chosen_run(path: Path, doing: str, *, unfinished: bool = False) -> Path:
    """PATH, or the run it stands for (a seed folder's run, a spec folder's newest), said when it differs."""
    from engram.runs.runner import chosen_run

    chosen = chosen_run(path, unfinished=unfinished)
    if chosen != path:
        click.echo(f"{doing} {chosen}", err=True)
    return chosen


def _finished_run(run_dir: Path) -> bool:
    from engram.runs.runner import load_run_spec, run_is_finished

    return run_is_finished(run_dir, load_run_spec(run_dir))


def _runs_folder(paths: tuple[Path, ...]) -> tuple[Path, ...]:
    """What a command over runs reads when given none: ./runs, where specs put runs by default."""
    from engram.spec import OutputSettings

    if paths:
        return paths
    default = OutputSettings().dir
    if not default.is_dir():
        raise EngramError(f"no ./{default} folder here (where runs go by default): run from the folder you ran "
                          f"`engram apply` in, or name the runs, e.g. path/to/{default}")
    return (default,)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run.")
@_reports_errors
def status(paths: tuple[Path, ...], as_json: bool) -> None:
    """Show each run under PATHS (run directories, seed folders or folders of runs; default: ./runs)."""
    from engram.runs.status import collect, find_seed_dirs, render

    rows = collect(find_seed_dirs(_runs_folder(paths)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_json(), default=str))
        return
    click.echo(render(rows))


@main.command()
@click.option("--uri", default=None, help="Tracking URI (default: the project's SQLite store under ./mlruns).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port of the UI on 127.0.0.1.")
@_reports_errors
def ui(uri: str | None, port: int) -> None:
    """Open the MLflow UI for this project's runs, on 127.0.0.1."""
    from engram.results.tracking import default_tracking_uri
    from engram.results.ui import serve

    sys.exit(serve(uri or default_tracking_uri(), port=port, say=click.echo))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_comparison_options
@_reports_errors
def rescore(run_dir: Path, problem: str | None, sandbox_name: str | None, tolerance: float,
            changes_only: bool, accept_changed_problem: bool) -> None:
    """Evaluate every archived candidate of RUN_DIR (or a spec folder's newest run) again and compare with the
    recorded scores.

    New evaluations go next to the old ones (exp-<m>/rescores/<stamp>/); exit code 4 when a score moved.
    """
    from engram.runs.rescore import SCORES_DIFFER_EXIT_CODE, format_comparison, rescore_run

    run_dir = _chosen_run(run_dir, "rescoring")
    outcome = rescore_run(run_dir, problem_path=problem, sandbox_name=sandbox_name, tolerance=tolerance,
                          accept_changed_problem=accept_changed_problem)
    click.echo(format_comparison(outcome.comparison, before="recorded", after="rescored", changes_only=changes_only))
    click.echo(f"new evaluations: {run_dir}/seed-*/agents/agent-*/experiments/exp-*/rescores/{outcome.stamp}/")
    click.echo(f"comparison: {outcome.summary_file}")
    if not outcome.comparison.identical:
        sys.exit(SCORES_DIFFER_EXIT_CODE)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory of the replay [default: RUN_DIR-replay-<time> beside it].")
@_comparison_options
@click.option("--mlflow", is_flag=True, help="Mirror the replay into MLflow too (off by default: it is a check).")
@click.option("--strict", is_flag=True, help="Fail also when a model request differs from the recorded one.")
@click.option("-v", "--verbose", is_flag=True, help="Stream each agent turn (text and tool calls).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display, only the comparison.")
@_reports_errors
def replay(run_dir: Path, out: Path | None, problem: str | None, sandbox_name: str | None, tolerance: float,
           mlflow: bool, strict: bool, changes_only: bool, verbose: bool, quiet: bool,
           accept_changed_problem: bool) -> None:
    """Run RUN_DIR (or a spec folder's newest run) again from its recorded model replies (offline, no key, no
    cost) and compare every score.

    Exit code 4 when a score moved (or, with --strict, a model request differs).
    """
    from engram.runs.progress import make_progress
    from engram.runs.replay import replay_run
    from engram.runs.rescore import SCORES_DIFFER_EXIT_CODE, format_comparison

    run_dir = _chosen_run(run_dir, "replaying")
    progress = make_progress(verbose=verbose, quiet=quiet, as_json=False)
    try:
        outcome = replay_run(run_dir, progress, out=out, problem=problem, tolerance=tolerance, mlflow=mlflow,
                             sandbox=sandbox_name, accept_changed_problem=accept_changed_problem)
    finally:
        progress.close()
    click.echo(format_comparison(outcome.comparison, before="recorded", after="replayed", changes_only=changes_only))
    for note in outcome.transcript_notes:
        click.echo(note)
    for seed, (recorded, replayed) in outcome.dollars.items():
        if recorded != replayed:
            click.echo(f"seed {seed}: dollars {recorded} recorded, {replayed} replayed")
    click.echo(f"replay: {outcome.replay_dir}")
    if not outcome.comparison.identical or (strict and not outcome.transcripts_identical):
        sys.exit(SCORES_DIFFER_EXIT_CODE)


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True,
              help="Directory for the table, figures and HTML page.")
@click.option("--group-by", type=click.Choice(["method", "spec"]), default="method", show_default=True,
              help="One line per method (the spec's method.name) or per spec.")
@click.option("--band", type=click.Choice(["ci", "iqr"]), default="ci", show_default=True,
              help="Band around the median: 95% bootstrap CI of the median, or interquartile range of the seeds.")
@click.option("--mlflow/--no-mlflow", default=True, show_default=True,
              help="Also log the figures and page to each problem's MLflow experiment.")
@click.option("--tracking-uri", default=None, help="MLflow store [default: the runs' own, else ./mlruns].")
@_reports_errors
def report(run_dirs: tuple[Path, ...], out: Path, group_by: str, band: str, mlflow: bool,
           tracking_uri: str | None) -> None:
    """Compare runs (run directories, or folders of them; default: ./runs) by problem and method."""
    from engram.results.report import build_report, format_table, log_to_mlflow

    built = build_report(list(_runs_folder(run_dirs)), out, group_by=group_by, band=band)  # type: ignore[arg-type]
    click.echo(format_table(built))
    for note in built.notes:
        click.echo(f"note: {note}")
    for warning in log_to_mlflow(built, tracking_uri) if mlflow else []:
        click.echo(f"engram: warning: {warning}", err=True)
    figures = sum(len(p.figures) for p in built.problems)
    click.echo(f"\nreport: {built.html_file} ({figures} figure(s); table in report.csv, report.md, report.json)")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "metrics_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics JSON here (e.g. for `dvc metrics`).")
@click.option("--plot-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the best score so far after every evaluation as CSV here (e.g. for `dvc plots`).")
@_reports_errors
def metrics(run_dir: Path, metrics_file: Path | None, plot_csv: Path | None) -> None:
    """Summarise RUN_DIR (or the newest run in a folder such as runs/<spec>): best score, evaluations,
    dollars, wall time."""
    from engram.results.report import write_run_metrics

    click.echo(json.dumps(write_run_metrics(run_dir, metrics_file=metrics_file, plot_file=plot_csv), indent=2))


def _report_run(outcome: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"event": "result", "run_dir": str(outcome.run_dir),
                               "seeds": [s.result for s in outcome.seeds]}, default=str))
        return
    click.echo(f"\nrun directory: {outcome.run_dir}")
    for seed in outcome.seeds:
        result = seed.result
        best = result.get("best_score")
        click.echo(f"  seed {seed.seed}: best score {best if best is not None else '-'} "
                   f"(exp {result.get('best_experiment') or '-'}), {result.get('evaluations')} evaluations, "
                   f"{_agents_part(result)}${result.get('dollars', 0.0):.4f}; "
                   f"stopped: {result.get('stop_reason')}")
        seed_dir = outcome.run_dir / f"seed-{seed.seed}"
        if (seed_dir / "best" / "program.py").is_file():
            click.echo(f"    best program: {seed_dir / 'best' / 'program.py'}")
        if (seed_dir / "digest.md").is_file():
            click.echo(f"    digest:       {seed_dir / 'digest.md'}")  # only Engram writes one
    if outcome.tracking_uri:
        click.echo(f"  MLflow: engram ui   (store {outcome.tracking_uri})")


def _agents_part(result: dict[str, Any]) -> str:
    """Agent count only for methods that run agents: "0 agents" would misdescribe one-shot or EoH."""
    agents = result.get("agents") or 0
    return f"{agents} agent{'s' if agents != 1 else ''}, " if agents else ""


@main.command("new-problem")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@_reports_errors
def new_problem(path: Path) -> None:
    """Write the skeleton of a new problem directory at PATH."""
    from engram.problems.scaffold import write_skeleton

    for written in write_skeleton(path):
        click.echo(f"wrote {written}")
    click.echo(f"next: describe the task in {path / 'task.md'}, write the rules in {path / 'evaluator.py'}, "
               f"then run: engram check-problem {path}")


@main.command("check-problem")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--sandbox", "sandbox_name", type=click.Choice(list(SANDBOX_CHOICES)), default="auto",
              show_default=True, help="Where the initial program runs.")
@click.option("--scenarios", default=None, metavar="A,B", help="Evaluate the initial program on these only.")
@_reports_errors
def check_problem(path: Path, sandbox_name: str, scenarios: str | None) -> None:
    """Check that the problem directory PATH (or a family member such as frontier_cs/7) is ready for agents."""
    from engram.problems.check import check_problem as run_checks

    selection = [s.strip() for s in scenarios.split(",") if s.strip()] if scenarios else None
    checks = run_checks(path, sandbox_name=sandbox_name, scenarios=selection)
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"{mark} {check.name}: {check.detail}")
    if not all(c.ok for c in checks):
        sys.exit(2)
    click.echo(f"{path}: ready")


@main.group()
def sandbox() -> None:
    """Manage sandbox backends."""


@sandbox.command()
@click.option("--all", "everything", is_flag=True, help="Also remove the containers of runs that are still going.")
@_reports_errors
def prune(everything: bool) -> None:
    """Remove what killed Engram processes left: sandbox containers and scratch directories."""
    from engram.errors import SandboxError
    from engram.runs.leftovers import remove_dead_temp_roots
    from engram.sandbox.docker import DockerSandbox
    from engram.sandbox.docker import prune as prune_containers

    directories = remove_dead_temp_roots()
    reason = DockerSandbox.availability()
    if reason is not None:
        raise SandboxError(f"removed {directories} scratch directories, but cannot prune containers: {reason}")
    done = prune_containers(everything=everything)
    click.echo(f"removed {done.removed} sandbox container{'s' if done.removed != 1 else ''}"
               + (f"; kept {done.kept} of runs still going (--all removes them too)" if done.kept else "")
               + f"; removed {directories} scratch director{'ies' if directories != 1 else 'y'}")


@sandbox.command()
@click.option("--tag", default="engram-sandbox:latest", show_default=True, help="Name for the built image")
@click.option("--base", default=None, help="Base image with Python 3.11 [default: python:3.11-slim-bookworm]")
@click.option("--offline", is_flag=True,
              help="No registry reachable: download wheels on this host, build with no network on a local --base")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer (e.g. to check the lock alone fixes the packages)")
@_reports_errors
def build(tag: str, base: str | None, offline: bool, no_cache: bool) -> None:
    """Build Engram's default Docker sandbox image and print the digest to pin in specs."""
    from engram.errors import SandboxError
    from engram.sandbox.docker import DockerSandbox
    from engram.sandbox.images import DEFAULT_BASE, build_image, locked_tag

    reason = DockerSandbox.availability()
    if reason is not None:
        raise SandboxError(f"cannot build: {reason}")
    result = build_image(tag=tag, base=base or DEFAULT_BASE, offline=offline, no_cache=no_cache,
                         say=lambda line: click.echo(line, err=True))
    click.echo(f"built {result.tag} = {result.image_id}")
    click.echo(f"tagged {locked_tag()}: the image of this lock, run by specs with  sandbox: {{image: locked}}")
    click.echo(f"pin it in a spec with:  sandbox: {{backend: docker, image: {result.image_id}}}")


_SANDBOX_COPY = re.compile(r"(?:<workdir>|[^\s\"']*/engram-eval-[^/\s]+)/program\.\w+")


def _naming_the_program(result: Evaluation, program: Path) -> Evaluation:
    """Syntax errors and tracebacks name the copy the sandbox ran (deleted by now): name the user's file."""

    def named(text: str | None) -> str | None:
        return _SANDBOX_COPY.sub(str(program), text) if text else text

    scenarios = {name: s.model_copy(update={"error": named(s.error)}) for name, s in result.scenarios.items()}
    return result.model_copy(update={"error": named(result.error), "stderr": named(result.stderr) or "",
                                     "scenarios": scenarios})


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
