"""Running a spec: resolve it, find or create its run directory, run every seed, resume if needed.

`engram apply SPEC` creates `runs/<spec name>/<run id>/` and writes `spec.resolved.yaml` (the spec
after defaults and overrides, plus versions, sandbox, problem fingerprint and model prices). Run
again with the same resolved spec while that directory is unfinished and it continues there;
`engram resume RUN_DIR` continues a given directory. Nothing below this module reads the spec file.
"""

from __future__ import annotations

import contextlib
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engram import __version__
from engram.errors import ConfigError, EngramError, Interrupted, ProviderError
from engram.runs.archive import SeedArchive, read_jsonl, write_atomic, write_json
from engram.runs.leftovers import owned_temp_root, remove_dead_temp_roots
from engram.runs.progress import Progress
from engram.spec import SCRIPTED_MODEL, Spec, load_spec, parse_spec

if TYPE_CHECKING:
    from engram.models.llm import SharedBudget

RESOLVED_SPEC = "spec.resolved.yaml"
RUN_DIR_LABEL = "engram.run_dir"
"""Docker label carrying a run's directory, so a cancelled sweep removes exactly its own containers."""
_VERSIONED_PACKAGES = ("pydantic", "litellm", "langchain", "langchain-core", "langchain-litellm", "langgraph",
                       "deepagents", "mlflow", "networkx", "numpy", "pulp", "scikit-learn")


@dataclass
class SeedOutcome:
    seed: int
    result: dict[str, Any]


@dataclass
class RunOutcome:
    run_dir: Path
    seeds: list[SeedOutcome]
    tracking_uri: str | None


# -- resolving ------------------------------------------------------------------------------------------


def check_credentials(spec: Spec) -> None:
    """Fail before any agent starts when litellm cannot tell the model's provider or its API key is
    missing, naming what to write or set."""
    from engram.models.llm import any_one_suffices, missing_api_keys, unknown_model

    unknown = unknown_model(spec.model.id, spec.model.api_base)
    if unknown:
        raise ConfigError(unknown)
    missing = missing_api_keys(spec.model.id, spec.model.api_key_env, spec.model.api_base)
    if missing:
        either = not spec.model.api_key_env and any_one_suffices(spec.model.id, missing, spec.model.api_base)
        names = f"one of {' or '.join(missing)}" if either else " and ".join(missing)
        raise EngramError(
            f"model {spec.model.id} needs {names}: set it (export {missing[0]}=...) and run again, or choose "
            f"another model, e.g. --set model.id=ollama/llama3 --set model.api_base=http://127.0.0.1:11434"
        )


def check_sandbox_image(spec: Spec) -> None:
    """Fail before a run directory exists when the spec's Docker image is missing (or, for
    `image: locked`, was not built from this checkout's lock), saying how to build it."""
    if spec.sandbox.backend != "docker":
        return
    from engram.sandbox import get_sandbox

    get_sandbox("docker", quiet=True, image=spec.sandbox.image)


def find_unfinished_run(spec: Spec) -> Path | None:
    """The newest run directory of this spec whose resolved spec matches and that is not finished."""
    return find_run(spec, include_finished=False)


def find_run(spec: Spec, *, include_finished: bool) -> Path | None:
    """The newest run directory of this spec whose resolved spec matches (how it runs -- the
    `executor` section -- aside), optionally also a finished one: a re-launched sweep must find
    its runs whatever state they are in, so that only the unfinished work is done again."""
    base = spec.output.dir / spec.name
    if not base.is_dir():
        return None
    wanted = run_identity(spec.to_plain())
    for run_dir in sorted((p for p in base.iterdir() if (p / RESOLVED_SPEC).is_file()), reverse=True):
        stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
        if run_identity(stored.get("spec") or {}) != wanted:
            continue
        if include_finished or not run_is_finished(run_dir, spec):
            return run_dir
    return None


def run_identity(plain_spec: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same experiment: the spec without the settings of where it executes
    and where it is stored (`output.dir` is absolute once resolved, so a run directory moved or
    pulled elsewhere, e.g. by `dvc pull`, must still be found and resumed)."""
    return {key: value for key, value in plain_spec.items() if key not in ("executor", "output")}


def run_is_finished(run_dir: Path, spec: Spec) -> bool:
    return all(SeedArchive(run_dir / f"seed-{seed}").is_finished() for seed in spec.seeds)


def new_run_dir(spec: Spec) -> Path:
    base = spec.output.dir / spec.name
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output.dir {spec.output.dir}: cannot create {base}: {exc.strerror}; "
                          f"choose a writable folder (--set output.dir=DIR)") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in range(1000):
        candidate = base / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise EngramError(f"cannot create a new run directory under {base}")


def write_resolved_spec(run_dir: Path, spec: Spec, *, source: Path | None, overrides: list[str],
                        problem_fingerprint: str, sandbox: str, sandbox_image: dict[str, Any] | None = None) -> None:
    from engram.models.llm import price_snapshot
    from engram.sandbox import isolation_warning

    meta = {
        "engram_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec_file": str(source) if source else None,
        "overrides": overrides,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _VERSIONED_PACKAGES},
        "sandbox": sandbox,
        "sandbox_warning": isolation_warning(sandbox),  # set when candidates ran without isolation
        "sandbox_image": sandbox_image,  # the Docker image candidates ran in: reference, digest, pinned
        "problem_fingerprint": problem_fingerprint,
        "model_prices": price_snapshot(spec.model.price_as or spec.model.id),
    }
    write_atomic(run_dir / RESOLVED_SPEC, yaml.safe_dump({"spec": spec.to_plain(), "meta": meta}, sort_keys=False))


def run_to_resume(path: Path) -> Path:
    """The run `engram resume PATH` continues: PATH itself, the run of a seed folder, or the newest
    unfinished run in a spec's folder (runs/<spec>), as `engram apply SPEC` would pick it."""
    return chosen_run(path, unfinished=True)


def chosen_run(path: Path, *, unfinished: bool = False) -> Path:
    """The run directory a command given PATH works on: PATH itself, the run of a seed folder, or the
    newest run (with `unfinished`, the newest unfinished one) in a spec's folder such as runs/<spec>.
    A folder holding runs of several specs is refused with the paths that name one."""
    if (path / RESOLVED_SPEC).is_file():
        return path
    if path.name.startswith("seed-") and (path.parent / RESOLVED_SPEC).is_file():
        return path.parent
    runs = sorted({p.parent for pattern in (f"*/{RESOLVED_SPEC}", f"*/*/{RESOLVED_SPEC}") for p in path.glob(pattern)})
    if not runs:
        raise ConfigError(f"{path} is not a run directory: neither it nor a folder below it has {RESOLVED_SPEC}")
    candidates = [run for run in runs if not _finished(run)] if unfinished else runs
    if not candidates:
        raise ConfigError(f"{path}: every run in it is finished ({len(runs)}); nothing to resume")
    newest = {run.parent: run for run in candidates}  # sorted: the last one of each spec is its newest
    if len(newest) > 1:
        which = "unfinished runs" if unfinished else "runs"
        raise ConfigError(f"{path} holds {which} of {len(newest)} specs; name one: "
                          + ", ".join(str(run) for run in sorted(newest.values())))
    return next(iter(newest.values()))


def _finished(run_dir: Path) -> bool:
    try:
        return run_is_finished(run_dir, load_run_spec(run_dir))
    except EngramError:
        return False  # resuming it reports what is wrong with it


def load_run_spec(run_dir: Path) -> Spec:
    path = run_dir / RESOLVED_SPEC
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no {RESOLVED_SPEC}")
    stored = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_spec(stored.get("spec") or {}, source=str(path), base=run_dir)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# -- running --------------------------------------------------------------------------------------------


def apply(spec_path: Path, overrides: list[str], progress: Progress, *, new: bool = False) -> RunOutcome:
    spec = load_spec(spec_path, overrides)
    check_preconditions(spec)
    run_dir = None if new else find_unfinished_run(spec)
    return execute(spec, run_dir, progress, source=spec_path, overrides=overrides, resumed=run_dir is not None)


def resume(run_dir: Path, progress: Progress, *, accept_changed_problem: bool = False) -> RunOutcome:
    spec = load_run_spec(run_dir)
    if not run_is_finished(run_dir, spec):  # a finished run only reports itself: no key or image needed
        check_preconditions(spec)
    return execute(spec, run_dir, progress, source=None, overrides=[], resumed=True,
                   accept_changed_problem=accept_changed_problem)


def check_preconditions(spec: Spec) -> None:
    """What can be checked before a run directory exists or an agent is spent: the model's key, the
    Docker image, and for the scripted model its script (a run that cannot start must leave nothing to resume)."""
    check_credentials(spec)
    check_sandbox_image(spec)
    if spec.model.id == SCRIPTED_MODEL and spec.model.script is not None:
        from engram.models.llm import ScriptedChatModel

        ScriptedChatModel(script=spec.model.script, agent=0)  # parses and validates the whole file


def execute(spec: Spec, run_dir: Path | None, progress: Progress, *, source: Path | None, overrides: list[str],
            resumed: bool, seeds: list[int] | None = None, tracking_uri: str | None = None,
            shared_budget: SharedBudget | None = None, accept_changed_problem: bool = False) -> RunOutcome:
    """Run `seeds` (default: all of the spec's) in `run_dir`, or in a new run directory created once
    the problem, its data and the sandbox are ready. A sweep runs one seed per worker process, with
    the driver's tracking URI (a worker's cwd may differ) and the sweep's shared dollar budget. A
    resumed run goes on only with the problem it was scored with, unless `accept_changed_problem`
    (see `engram.problems.record`)."""
    from engram.problems.problem import load_problem
    from engram.problems.record import check_problem, record_acceptance
    from engram.results.tracking import default_tracking_uri
    from engram.sandbox import get_sandbox

    problem = load_problem(spec.problem.name)
    if resumed:
        accepted = check_problem(run_dir, problem, command="resume", accept=accept_changed_problem)
        if accepted is not None:
            record_acceptance(run_dir, accepted, adopt=True)
    problem.ensure_data(problem.select_scenarios(spec.problem.scenarios))
    created = run_dir is None
    if run_dir is None:
        run_dir = new_run_dir(spec)
    shown_dir, run_dir = run_dir, run_dir.resolve()  # sandboxes bind-mount it: never relative to a cwd
    try:
        sandbox = get_sandbox(spec.sandbox.backend, quiet=True, image=spec.sandbox.image,
                              labels={"engram.run": run_dir.name, RUN_DIR_LABEL: str(run_dir.resolve())})
    except EngramError:
        if created:
            discard_if_unused(run_dir)
        raise
    if not (run_dir / RESOLVED_SPEC).is_file():
        write_resolved_spec(run_dir, spec, source=source, overrides=overrides,
                            problem_fingerprint=problem.fingerprint(), sandbox=sandbox.name,
                            sandbox_image=_image_record(sandbox))
    tracking_uri = (spec.tracking.uri or tracking_uri or default_tracking_uri()) if spec.tracking.mlflow else None
    _remove_leftovers(run_dir, sandbox)
    try:
        with owned_temp_root(), _stop_sandboxes_on_interrupt():
            outcomes = _run_seeds(spec, run_dir, problem, sandbox, progress, tracking_uri, resumed,
                                  spec.seeds if seeds is None else seeds, shared_budget)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; everything recorded so far is in {shown_dir}. "
                          f"Continue with: engram resume {shown_dir}") from None
    except ProviderError as exc:
        raise ProviderError(f"{exc}\nThe run stopped; everything recorded so far is in {shown_dir}. Once the cause "
                            f"is fixed, `engram resume {shown_dir}` continues it with the same spec (the stopped "
                            "agent starts again if it had run no experiment).", status_code=exc.status_code) from exc
    except EngramError:
        if created:
            discard_if_unused(run_dir)
        raise
    return RunOutcome(shown_dir, outcomes, tracking_uri)


def prepare_run_dir(spec: Spec, run_dir: Path | None, *, source: Path | None, overrides: list[str]) -> tuple[Path, str]:
    """A sweep's planning: the run directory with its resolved spec written now, so that a driver
    killed before the run starts leaves a run that `engram status` lists as pending and a re-run
    reuses. Returns the directory and the sandbox backend the spec resolves to on this machine."""
    from engram.problems.problem import load_problem
    from engram.sandbox import get_sandbox

    if run_dir is not None and (run_dir / RESOLVED_SPEC).is_file():
        stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
        return run_dir, str((stored.get("meta") or {}).get("sandbox") or spec.sandbox.backend)
    problem = load_problem(spec.problem.name)
    created = run_dir is None
    run_dir = (run_dir or new_run_dir(spec)).resolve()
    try:
        sandbox = get_sandbox(spec.sandbox.backend, quiet=True, image=spec.sandbox.image,
                              labels={"engram.run": run_dir.name, RUN_DIR_LABEL: str(run_dir)})
    except EngramError:
        if created:
            discard_if_unused(run_dir)
        raise
    write_resolved_spec(run_dir, spec, source=source, overrides=overrides, problem_fingerprint=problem.fingerprint(),
                        sandbox=sandbox.name, sandbox_image=_image_record(sandbox))
    return run_dir, sandbox.name


def _remove_leftovers(run_dir: Path, sandbox: Any) -> None:
    """What killed processes left: this run's containers (SIGKILL gave them no chance to go) and
    every dead Engram process's scratch directory. Live runs' containers and files are kept."""
    containers = 0
    if sandbox.name == "docker":
        containers = sandbox.remove_dead_containers({RUN_DIR_LABEL: str(run_dir.resolve())})
    directories = remove_dead_temp_roots()
    if containers or directories:
        print(f"engram: removed {containers} container(s) of this run and {directories} scratch "
              "directory(ies) left by killed Engram processes", file=sys.stderr)


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run directory that a failed start left without any work in it -- no experiment, no
    model call -- so that it is neither listed nor resumed. Anything recorded is kept."""
    import shutil

    for path in run_dir.rglob("*"):
        if path.is_dir() and path.name.startswith("exp-"):
            return
        if path.name == "transcript.jsonl" and path.stat().st_size > 0:
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # the spec's folder, if this was its only run


def _image_record(sandbox: Any) -> dict[str, Any] | None:
    """What the docker backend runs in, warning (once per run directory) when the spec did not pin it."""
    resolved = getattr(sandbox, "resolved", None)
    if resolved is None:
        return None
    warning = resolved.unpinned_warning()
    if warning:
        print(f"engram: warning: {warning}", file=sys.stderr)
    return {"reference": resolved.reference, "digest": resolved.digest, "image_id": resolved.image_id,
            "pinned": resolved.pinned, "lock": resolved.lock}


@contextlib.contextmanager
def _stop_sandboxes_on_interrupt() -> Iterator[None]:
    """On Ctrl-C, kill running candidates and shell commands first: tools run in worker threads,
    and the agent loop would otherwise wait for them to time out before it could stop."""
    from engram.runs import interrupts

    interrupts.reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    with interrupts.signal_as_keyboard_interrupt(signal.SIGINT, before=interrupts.request_stop):
        yield


def _run_seeds(spec: Spec, run_dir: Path, problem: Any, sandbox: Any, progress: Progress,
               tracking_uri: str | None, resumed: bool, seeds: list[int],
               shared_budget: SharedBudget | None) -> list[SeedOutcome]:
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.evaluation.run_secrets import TrustedSecrets

    outcomes = []
    with CandidateEvaluator(problem, sandbox, scenarios=spec.problem.scenarios,
                            time_limit_s=spec.problem.time_limit_s,
                            secrets=TrustedSecrets.of_run(run_dir)) as evaluator:
        for seed in seeds:
            archive = SeedArchive(run_dir / f"seed-{seed}")
            if archive.is_finished():
                outcomes.append(SeedOutcome(seed, _read_result(archive)))
                continue
            progress.seed_started(seed, resumed=resumed and archive.events_file.exists())
            repair_archive(archive, evaluator)
            outcomes.append(SeedOutcome(seed, run_seed(spec, run_dir, archive, seed, problem, evaluator, sandbox,
                                                       progress, tracking_uri, shared_budget)))
            progress.seed_finished(seed, outcomes[-1].result)
    return outcomes


def repair_archive(archive: SeedArchive, evaluator: Any) -> None:
    """Resume: an experiment whose evaluation.json is gone is scored again (the event log keeps the
    recorded score; the file is what reports, rescore and the best program read); one whose program
    is gone cannot be, and is named so that the loss is not silent."""
    import shutil
    import tempfile

    logged = {int(e["experiment"]): e for e in archive.events("experiment") if "experiment" in e}
    stored = archive.experiments()
    for experiment in stored:
        if experiment.number not in logged:
            continue  # unlogged ones are the method's to finish (finish_interrupted_experiments)
        where = f"{archive.root.name}/exp-{experiment.number:04d}"
        if not experiment.program.is_file():
            print(f"engram: warning: {where}: program.py is missing from the archive; only its logged score "
                  f"({logged[experiment.number].get('score')}) remains", file=sys.stderr)
            continue
        if experiment.evaluation_file.is_file():
            continue
        scratch = Path(tempfile.mkdtemp(prefix="engram-results-"))
        try:
            evaluation = evaluator.evaluate(experiment.program, artifacts_dir=scratch)
            archive.record_evaluation(experiment, evaluation, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"engram: {where}: evaluation.json was missing; scored again: {evaluation.score} "
              f"(logged: {logged[experiment.number].get('score')})", file=sys.stderr)
    for number in sorted(set(logged) - {e.number for e in stored}):
        print(f"engram: warning: {archive.root.name}/exp-{number:04d} is logged but its folder is missing "
              "from the archive", file=sys.stderr)


def run_seed(spec: Spec, run_dir: Path, archive: SeedArchive, seed: int, problem: Any, evaluator: Any,
             sandbox: Any, progress: Progress, tracking_uri: str | None,
             shared_budget: SharedBudget | None = None) -> dict[str, Any]:
    from engram.methods.context import MethodContext, MethodResult
    from engram.methods.registry import run_method
    from engram.methods.workspace_backend import closing_shells
    from engram.models.llm import UsageLedger
    from engram.results.tracking import Tracker, flatten_params

    started = time.time()
    ledger = UsageLedger(max_dollars=spec.max_dollars)
    restore_usage(ledger, archive, spec.model.id)
    if shared_budget is not None:
        ledger.share(shared_budget)  # after restoring: the others see this run's spending from now on
    tracker = Tracker(enabled=spec.tracking.mlflow, tracking_uri=tracking_uri,
                      experiment=spec.tracking.experiment or problem.name)
    tracker.start(run_name=f"{spec.name}/{run_dir.name}/seed-{seed}", run_dir=archive.root,
                  tags={"engram.problem": problem.name, "engram.method": spec.method.name,
                        "engram.model": spec.model.id, "engram.seed": str(seed), "engram.spec": spec.name},
                  params=flatten_params(spec.to_plain()))
    tracker.enable_langchain_autolog()
    if not archive.events("run_start"):
        archive.log("run_start", seed=seed, spec=spec.name)
    else:
        archive.log("resume", seed=seed)
    ctx = MethodContext(spec=spec, seed=seed, problem=problem, evaluator=evaluator, archive=archive,
                        sandbox=sandbox, ledger=ledger, tracker=tracker, progress=progress,
                        model_factory=_model_factory(spec, archive, ledger, progress))
    status = "FINISHED"
    try:
        with closing_shells():  # a method that forgot to close an agent's shell container: at the latest here
            outcome: MethodResult = run_method(ctx)
    except EngramError as exc:
        if isinstance(exc, ProviderError):
            _record_provider_stop(archive, exc)
        elif not isinstance(exc, Interrupted):  # `engram status` shows why the run stopped, not "resumable"
            archive.log("run_error", error=str(exc), error_type=type(exc).__name__, exit_code=exc.exit_code)
        status = "KILLED" if isinstance(exc, ProviderError | Interrupted) else "FAILED"
        tracker.finish(status, metrics=_final_metrics(ledger))
        raise
    except BaseException:
        status = "KILLED"
        tracker.finish(status, metrics=_final_metrics(ledger))
        raise
    result = _result(spec, archive, seed, outcome, ledger, started)
    write_json(archive.result_file, result)
    archive.log("run_end", stop_reason=outcome.stop_reason, best_score=outcome.best_score)
    _mirror_outputs(tracker, archive)
    tracker.finish(status, metrics=_final_metrics(ledger))
    return result


def _record_provider_stop(archive: SeedArchive, error: ProviderError) -> None:
    """Log why the run stopped; the agent it stopped is started again on resume if it had done nothing
    yet, so fixing a key or a parameter costs no agent of the budget."""
    finished = set(archive.finished_agents())
    running = [agent for agent in archive.started_agents() if agent not in finished]
    agent = running[-1] if running else None
    idle = agent is not None and not any(e.agent == agent for e in archive.experiments())
    archive.log("provider_error", error=str(error)[:2000], status_code=error.status_code, agent=agent,
                restart_agent=agent if idle else None)


def _final_metrics(ledger: Any) -> dict[str, float]:
    """What the run spent in all, for MLflow's parent run (its per-evaluation figures stop earlier)."""
    return {"dollars": ledger.total_dollars, "tokens": float(ledger.total_tokens)}


_TURN_REPORTING_METHODS = ("engram", "single_agent", "tree_search")
"""Methods whose agent loops report every turn to the progress display themselves."""


def _model_factory(spec: Spec, archive: SeedArchive, ledger: Any, progress: Progress | None = None) -> Any:
    from engram.models.llm import UsageCallback, create_chat_model

    model = spec.model
    timeout = min(model.timeout_s, spec.budget.minutes_per_agent * 60)
    echo = progress if progress is not None and spec.method.name not in _TURN_REPORTING_METHODS else None

    def factory(*, agent: int = 0, role: str = "agent", transcript: Path | None = None) -> Any:
        """A model for one agent; role "distill" gets the scripted model's distill turns (agent 0)."""
        index = 0 if role == "distill" else agent
        if transcript is None:
            transcript = archive.root / "digests" / "transcript.jsonl"
        callback = UsageCallback(ledger, model_id=model.id, price_model=model.price_as, transcript=transcript,
                                 agent=index or None)
        callbacks = [callback] if echo is None else [callback, _reply_echo(echo, index)]
        return create_chat_model(model.id, params=dict(model.params), api_base=model.api_base, script=model.script,
                                 agent=index, price_as=model.price_as, timeout_s=timeout, callbacks=callbacks,
                                 api_key_env=model.api_key_env, api=model.api)

    return factory


def _reply_echo(progress: Progress, agent: int) -> Any:
    """Hands each model reply to the progress display (`-v`), for methods that call the model directly
    (one-shot, best-shot, evolution, OpenEvolve) and so have no agent loop to report their turns."""
    from langchain_core.callbacks import BaseCallbackHandler

    class ReplyEcho(BaseCallbackHandler):
        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            for generations in response.generations:
                for generation in generations:
                    message = getattr(generation, "message", None)
                    text = message.content if message is not None else generation.text
                    calls = list(getattr(message, "tool_calls", None) or [])
                    progress.agent_turn(agent, text if isinstance(text, str) else str(text), calls)

    return ReplyEcho()


def restore_usage(ledger: Any, archive: SeedArchive, model_id: str) -> None:
    """On resume, the dollars already spent are read back from the transcripts: the cap stays exact."""
    from engram.models.llm import BudgetExceeded

    transcripts = list(archive.agents_dir.glob("agent-*/transcript.jsonl")) if archive.agents_dir.is_dir() else []
    transcripts += list((archive.root / "digests").glob("transcript.jsonl"))
    for path in transcripts:
        for line in read_jsonl(path):
            if line.get("type") != "response" and not (line.get("type") == "error" and line.get("usage")):
                continue  # an error record with usage is an empty reply the provider still billed
            usage = line.get("usage") or {}
            with contextlib.suppress(BudgetExceeded):  # already over the cap: the run will stop at once
                ledger.record(model=model_id, input_tokens=int(usage.get("input_tokens") or 0),
                              output_tokens=int(usage.get("output_tokens") or 0), dollars=line.get("dollars"),
                              agent=line.get("agent"))


def _result(spec: Spec, archive: SeedArchive, seed: int, outcome: Any, ledger: Any, started: float) -> dict[str, Any]:
    best = archive.best()
    return {
        "seed": seed,
        "stop_reason": outcome.stop_reason,
        "best_score": best[0] if best else None,
        "best_experiment": best[1].number if best else None,
        "evaluations": outcome.evaluations,
        "agents": len(archive.finished_agents()),
        "usage": ledger.snapshot(),
        "dollars": ledger.total_dollars,
        "wall_s": time.time() - started,
        "scripted": spec.model.id == SCRIPTED_MODEL,
        "details": outcome.details,  # the method's own counts (e.g. failed proposals of the baselines)
    }


def _read_result(archive: SeedArchive) -> dict[str, Any]:
    import json

    return json.loads(archive.result_file.read_text(encoding="utf-8"))


def _mirror_outputs(tracker: Any, archive: SeedArchive) -> None:
    paths = [p for p in (archive.best_dir / "program.py", archive.digest_file, archive.result_file) if p.exists()]
    paths += sorted(archive.agents_dir.glob("agent-*/summary.md"))
    tracker.log_artifacts(paths)
    points = [(i + 1, e.get("score"), e.get("best_score")) for i, e in enumerate(archive.events("experiment"))]
    tracker.log_score_plot(points)
