"""Sweeps: many runs launched together -- several specs, all their seeds, or a grid file.

A grid file lists specs (paths relative to the grid file), each optionally with overrides, plus
overrides for all of them and the executor settings:

    specs:
      - specs/cloudcast_o3.yaml
      - {spec: specs/cloudcast_o3.yaml, set: {method.digest: false}, name: no_digest}
    set: {tracking.experiment: cloudcast-sweep}     # applied to every spec (before each entry's own)
    executor: {name: local, jobs: 4, max_dollars: 200}

(a bare YAML list of entries is a grid too; so is `dvc.yaml`, or `{dvc: dvc.yaml, stages: [offline]}`:
see `engram.results.dvc_grid`). Each (spec, seed) is a run unit with its own seed
directory; `plan` finds each spec's run directory -- for a sweep the newest one of the same
resolved spec, finished or not, so re-launching a sweep finishes only what is unfinished -- and
`run_sweep` hands the unfinished units to an executor while it shows one line per run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from engram.config_files import format_validation_error
from engram.errors import ConfigError, EngramError, Interrupted
from engram.executors.base import Executor, RunUnit, SweepCap, UnitOutcome
from engram.results.dvc_grid import dvc_runs, is_dvc_pipeline
from engram.runs.status import RunStatus, collect, planned_agents, render
from engram.spec import SCRIPTED_MODEL, ExecutorSettings, Spec, load_spec

BUDGET_GRACE_S = 60.0
"""After the sweep's dollar cap is reached, runs get this long to stop by themselves before they are
cancelled (a run notices at its next model call or evaluation; a long shell command delays that)."""


class SweepFailed(EngramError):
    """Some runs of a sweep failed; the others' results are kept."""

    exit_code = 1


@dataclass(frozen=True)
class SweepEntry:
    path: Path
    overrides: tuple[str, ...] = ()


@dataclass
class Grid:
    entries: list[SweepEntry]
    executor: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlannedRun:
    unit: RunUnit
    finished: bool
    max_agents: int | None


@dataclass
class SweepOutcome:
    rows: list[RunStatus]
    outcomes: list[UnitOutcome]
    run_dirs: list[Path]
    tracking_uris: list[str]


# -- grid files -----------------------------------------------------------------------------------------


def is_grid_file(path: Path) -> bool:
    """A grid is a YAML list, or a mapping with `specs:` (a key no spec has)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # reading it as a spec reports the problem
    return isinstance(data, list) or (isinstance(data, dict) and ("specs" in data or "dvc" in data)) \
        or is_dvc_pipeline(data)


def load_grid(path: Path) -> Grid:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        data = {"specs": data}
    if is_dvc_pipeline(data):  # the pipeline itself: every foreach stage
        return Grid([SweepEntry(spec, tuple(overrides)) for spec, overrides in dvc_runs(path)])
    unknown = set(data) - {"specs", "set", "executor", "dvc", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a grid has specs (or dvc and "
                          f"stages), set and executor")
    common = _overrides(data.get("set"), f"{path}: set")
    entries = [_entry(item, i, path, common) for i, item in enumerate(data.get("specs") or [])]
    if data.get("dvc"):
        stages = data.get("stages") or []
        if not isinstance(stages, list) or not all(isinstance(name, str) for name in stages):
            raise ConfigError(f"{path}: stages must be a list of stage names, e.g. [offline]")
        entries += [SweepEntry(spec, (*common, *overrides))
                    for spec, overrides in dvc_runs(path.parent / str(data["dvc"]), stages)]
    if not entries:
        raise ConfigError(f"{path}: `specs` lists no spec")
    executor = data.get("executor") or {}
    if not isinstance(executor, dict):
        raise ConfigError(f"{path}: executor must be a mapping such as {{name: local, jobs: 4}}")
    return Grid(entries, executor)


def _entry(item: Any, index: int, grid: Path, common: list[str]) -> SweepEntry:
    where = f"{grid}: specs[{index}]"
    if isinstance(item, str):
        item = {"spec": item}
    if not isinstance(item, dict) or not isinstance(item.get("spec"), str):
        raise ConfigError(f"{where}: expected a spec path or {{spec: PATH, set: {{key: value}}, name: NAME}}")
    unknown = set(item) - {"spec", "set", "name"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; an entry has spec, set and name")
    path = (grid.parent / item["spec"]).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: spec file {path} not found")
    overrides = [*common, *_overrides(item.get("set"), f"{where}.set")]
    if item.get("name"):
        overrides.append(f"name={item['name']}")
    return SweepEntry(path, tuple(overrides))


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: expected a mapping of dotted keys to values, or a list of key=value strings")


# -- executor settings ----------------------------------------------------------------------------------


def executor_settings(specs: Sequence[Spec], grid_section: dict[str, Any] | None,
                      cli: dict[str, Any]) -> ExecutorSettings:
    """The command line wins over a grid file's `executor:`, which wins over the specs' (which must agree)."""
    if grid_section:
        base = grid_section
    else:
        sections = {yaml.safe_dump(s.executor.model_dump(mode="json"), sort_keys=True) for s in specs}
        if len(sections) > 1:
            raise ConfigError("the specs disagree on their `executor:` settings; set them once in a grid file or "
                              "with --executor/--jobs/--address/--max-dollars")
        base = specs[0].executor.model_dump(mode="json", exclude_unset=False)
    merged = {**base, **{k: v for k, v in cli.items() if v is not None}}
    try:
        return ExecutorSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("executor settings", exc)) from None


def make_executor(settings: ExecutorSettings) -> Executor:
    if settings.name == "ray":
        from engram.executors.ray import RayExecutor

        return RayExecutor(settings.address, cpus_per_run=settings.cpus_per_run,
                           docker_resource=settings.docker_resource, max_retries=settings.max_retries,
                           fork_server=settings.fork_server)
    from engram.executors.local import LocalExecutor

    return LocalExecutor(settings.jobs, max_retries=settings.max_retries, fork_server=settings.fork_server)


# -- planning -------------------------------------------------------------------------------------------


def load_specs(entries: Sequence[SweepEntry]) -> list[Spec]:
    from engram.runs.runner import check_credentials, run_identity

    specs = [load_spec(entry.path, list(entry.overrides)) for entry in entries]
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.model.id != SCRIPTED_MODEL:  # the check imports litellm: seconds a scripted sweep need not wait
            check_credentials(spec)
        key = yaml.safe_dump(run_identity(spec.to_plain()), sort_keys=True)
        if key in seen:
            raise ConfigError(f"{entries[i].path} and {entries[seen[key]].path} (entries {seen[key] + 1} and {i + 1}) "
                              "resolve to the same experiment; give one of them other settings")
        seen[key] = i
    return specs


def plan(entries: Sequence[SweepEntry], specs: Sequence[Spec], *, new: bool, reuse_finished: bool,
         max_dollars: float | None) -> list[PlannedRun]:
    """One unit per (spec, seed) in a run directory found or created for each spec."""
    from engram.results.tracking import default_tracking_uri
    from engram.runs.archive import SeedArchive
    from engram.runs.runner import find_run, prepare_run_dir

    units: list[tuple[RunUnit, bool, int | None]] = []
    for entry, spec in zip(entries, specs, strict=True):
        found = None if new else find_run(spec, include_finished=reuse_finished)
        run_dir, sandbox = prepare_run_dir(spec, found, source=entry.path, overrides=list(entry.overrides))
        tracking_uri = (spec.tracking.uri or default_tracking_uri()) if spec.tracking.mlflow else None
        for seed in spec.seeds:
            unit = RunUnit(spec=spec.to_plain(), spec_file=str(entry.path), overrides=entry.overrides,
                           run_dir=str(run_dir), seed=seed, tracking_uri=tracking_uri, sandbox=sandbox)
            units.append((unit, SeedArchive(unit.seed_dir).is_finished(), planned_agents(unit.spec)))
    cap = SweepCap(max_dollars, tuple(str(u.seed_dir) for u, _, _ in units)) if max_dollars else None
    return [PlannedRun(_with_cap(unit, cap), finished, max_agents) for unit, finished, max_agents in units]


def _with_cap(unit: RunUnit, cap: SweepCap | None) -> RunUnit:
    from dataclasses import replace

    return replace(unit, sweep_cap=cap)


def prepare_tracking(specs: Sequence[Spec], runs: Sequence[PlannedRun]) -> None:
    """Create each MLflow store and experiment once, before runs start side by side: two runs that
    create the same experiment (or a fresh SQLite store) at the same moment would collide."""
    from engram.problems.problem import load_problem
    from engram.results.tracking import prepare_experiment

    wanted: set[tuple[str, str]] = set()
    by_name = {spec.name: spec for spec in specs}
    for run in runs:
        spec = by_name.get(str(run.unit.spec.get("name")))
        if spec is None or run.unit.tracking_uri is None or run.finished:
            continue
        wanted.add((run.unit.tracking_uri, spec.tracking.experiment or load_problem(spec.problem.name).name))
    for uri, experiment in sorted(wanted):
        try:
            prepare_experiment(uri, experiment)
        except Exception as exc:  # tracking never stops a run; each run reports its own failure
            print(f"engram: warning: MLflow store {uri} not prepared ({type(exc).__name__}: {exc})", file=sys.stderr)


# -- running --------------------------------------------------------------------------------------------


class SweepDisplay(Protocol):
    def update(self, rows: Sequence[RunStatus]) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


def run_sweep(runs: Sequence[PlannedRun], executor: Executor, display: SweepDisplay,
              max_dollars: float | None = None) -> SweepOutcome:
    seed_dirs = [(run.unit.seed_dir, run.max_agents) for run in runs]
    todo = [run.unit for run in runs if not run.finished]
    done_before = len(runs) - len(todo)
    display.note(f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({done_before} already finished), executor: "
                 f"{executor.describe()}" + (f", sweep cap ${max_dollars:g}" if max_dollars else ""))
    budget_hit_at: list[float] = []

    def tick() -> bool:
        rows = collect(seed_dirs)
        display.update(rows)
        if max_dollars is None or sum(r.dollars for r in rows) < max_dollars:
            return True
        if not budget_hit_at:
            budget_hit_at.append(time.monotonic())
            display.note(f"sweep dollar cap ${max_dollars:g} reached: runs stop at their next model call or "
                         f"evaluation; those still running in {BUDGET_GRACE_S:g} s are cancelled")
        return time.monotonic() - budget_hit_at[0] < BUDGET_GRACE_S

    try:
        outcomes = executor.run(todo, tick) if todo else []
    except KeyboardInterrupt:
        raise Interrupted("interrupted; every run stopped and everything recorded so far is kept. Run the same "
                          "command again to continue (finished runs are not repeated)") from None
    rows = collect(seed_dirs)
    display.update(rows)
    run_dirs = sorted({Path(run.unit.run_dir) for run in runs})
    uris = sorted({run.unit.tracking_uri for run in runs if run.unit.tracking_uri})
    return SweepOutcome(rows, outcomes, run_dirs, uris)


def check_outcomes(outcome: SweepOutcome) -> None:
    failed = [o for o in outcome.outcomes if o.state == "failed"]
    if failed:
        lines = "\n".join(f"  {o.unit.name} ({o.unit.run_dir}): {o.error}" for o in failed)
        raise SweepFailed(f"{len(failed)} run(s) failed (the others' results are kept):\n{lines}")


# -- displays -------------------------------------------------------------------------------------------


class QuietSweepDisplay:
    def update(self, rows: Sequence[RunStatus]) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class JsonSweepDisplay(QuietSweepDisplay):
    """One JSON line whenever a run's row changes."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def update(self, rows: Sequence[RunStatus]) -> None:
        import json

        for row in rows:
            line = json.dumps({"event": "run", **row.as_json()}, default=str)
            if self._last.get(row.run) != line:
                self._last[row.run] = line
                print(line, flush=True)

    def note(self, message: str) -> None:
        import json

        print(json.dumps({"event": "note", "message": message}), flush=True)


class RichSweepDisplay(QuietSweepDisplay):
    """A live table on stderr: one line per run, then the totals."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self.console = Console(stderr=True)
        self.live = Live(Text(""), console=self.console, refresh_per_second=2, transient=True)
        self.live.start()

    def update(self, rows: Sequence[RunStatus]) -> None:
        from rich.text import Text

        self.live.update(Text(render(rows)))

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def close(self) -> None:
        self.live.stop()


def make_display(*, quiet: bool, as_json: bool) -> SweepDisplay:
    if as_json:
        return JsonSweepDisplay()
    if quiet:
        return QuietSweepDisplay()
    return RichSweepDisplay()


def summary(outcome: SweepOutcome) -> str:
    lines = ["", render(outcome.rows), ""]
    lines += [f"run directory: {run_dir}" for run_dir in outcome.run_dirs]
    lines += [f"MLflow: engram ui --uri {uri}" for uri in outcome.tracking_uris]
    return "\n".join(lines)



# -- the `engram apply` entry point for sweeps ----------------------------------------------------------


def is_sweep(paths: Sequence[Path], overrides: list[str], cli_options: dict[str, Any]) -> bool:
    """Several specs, a grid file, executor options, or a spec with several seeds or an `executor:` section;
    otherwise `engram apply` runs its one run in this process, streaming the agents' turns."""
    if len(paths) != 1 or any(v is not None for v in cli_options.values()) or is_grid_file(paths[0]):
        return True
    try:
        spec = load_spec(paths[0], overrides)
    except EngramError:
        return False  # the single-run path reports it
    return spec.runs > 1 or spec.executor != ExecutorSettings() or spec.problem.members is not None


def read_entries(paths: Sequence[Path], overrides: list[str]) -> tuple[list[SweepEntry], dict[str, Any] | None]:
    """Entries of every spec and grid file given, with `--set` applied to all; a grid's executor section."""
    entries: list[SweepEntry] = []
    section: dict[str, Any] | None = None
    for path in paths:
        if not is_grid_file(path):
            entries += _family_members(SweepEntry(path, tuple(overrides)))
            continue
        grid = load_grid(path)
        for entry in grid.entries:
            entries += _family_members(SweepEntry(entry.path, (*entry.overrides, *overrides)))
        if grid.executor:
            if section is not None and section != grid.executor:
                raise ConfigError(f"{path}: its executor section differs from another grid file's; give one")
            section = grid.executor
    return entries, section


def _family_members(entry: SweepEntry) -> list[SweepEntry]:
    """A spec naming a problem family's members stands for one entry per member."""
    from engram.frontier_cs.selection import member_names, member_overrides

    spec = load_spec(entry.path, list(entry.overrides))
    if spec.problem.members is None:
        return [entry]
    return [SweepEntry(entry.path, (*entry.overrides, *member_overrides(spec.name, name)))
            for name in member_names(spec.problem.name, spec.problem.members)]


def family_report(runs: Sequence[PlannedRun], rows: Sequence[RunStatus]) -> str:
    """Per-problem best scores and their mean, when the sweep ran Frontier-CS problems."""
    from engram.frontier_cs.family import is_family_name
    from engram.frontier_cs.selection import family_summary

    problems = {Path(run.unit.seed_dir): str(run.unit.spec["problem"]["name"]) for run in runs
                if is_family_name(str(run.unit.spec["problem"]["name"]))}
    return family_summary(problems, {Path(row.seed_dir): row.best_score for row in rows}) if problems else ""


def apply_sweep(paths: Sequence[Path], overrides: list[str], cli_options: dict[str, Any], *, new: bool,
                quiet: bool, as_json: bool, verbose: bool) -> int:
    """Plan the runs, run the unfinished ones with the chosen executor, print the table; the exit code."""
    import json

    entries, section = read_entries(paths, overrides)
    specs = load_specs(entries)
    settings = executor_settings(specs, section, cli_options)
    # A single spec keeps `engram apply`'s rule (continue its unfinished run, else start anew); a sweep
    # is a fixed set of runs, so re-launching it finishes what is unfinished and repeats nothing.
    reuse_finished = len(entries) > 1 or any(is_grid_file(p) for p in paths)
    runs = plan(entries, specs, new=new, reuse_finished=reuse_finished, max_dollars=settings.max_dollars)
    prepare_tracking(specs, runs)
    executor = make_executor(settings)
    display = make_display(quiet=quiet, as_json=as_json)
    if verbose:
        display.note("-v streams agent turns for a single run only; a sweep's turns are in each agent's "
                     "transcript.jsonl")
    try:
        outcome = run_sweep(runs, executor, display, settings.max_dollars)
    finally:
        display.close()
    if as_json:
        print(json.dumps({"event": "result", "runs": [row.as_json() for row in outcome.rows],
                          "run_dirs": [str(d) for d in outcome.run_dirs]}, default=str), flush=True)
    else:
        print(summary(outcome), flush=True)
        if family := family_report(runs, outcome.rows):
            print("\n" + family, flush=True)
    check_outcomes(outcome)
    return 0
