"""OpenEvolve as an Engram method: the real `openevolve` package, driven through Engram's machinery.

OpenEvolve keeps islands of programs in a MAP-Elites grid; each iteration samples a parent and a
few inspirations from one island, asks the model for SEARCH/REPLACE diffs to the parent, applies
them, evaluates the child and files it in the grid; islands exchange programs every
`migration_interval` generations. Iterations run in OpenEvolve's own pool of worker processes.

What Engram changes around it (settings: `engram.spec.OpenEvolveMethod`):

* Model calls and evaluations are answered by the runner through a local endpoint
  (`baselines.openevolve.endpoint`), so the usage ledger, dollar budget, transcript
  (`agents/agent-1/transcript.jsonl`), retries and the scripted model are Engram's, and every
  program OpenEvolve evaluates becomes one experiment of agent 1 through `MethodContext.evaluate`
  (sandbox, archive, MLflow metrics, evaluation budget) -- exactly once, as OpenEvolve never
  retries an evaluation here. A failed candidate gets `combined_score = -inf`, so it never
  outranks a valid score, and its error as OpenEvolve "artifacts" for the next prompt.
* An admission hook sees every program OpenEvolve files: it links it to its experiment
  (`openevolve/programs.jsonl`), keeps out programs the runner refused to evaluate, and stops
  OpenEvolve once a budget (evaluations, dollars, `max_minutes`, target score) is reached.
* Resume: OpenEvolve's checkpoints hold only the surviving population, so a resumed run starts a
  new OpenEvolve session whose database is rebuilt from every evaluated experiment in the archive
  (with the program ids, parents and islands recorded at admission), and runs the iterations not
  yet started. No evaluation is lost or repeated; OpenEvolve's grid may differ from the one the
  killed session had, since it is rebuilt from all programs rather than the survivors.

Per seed, `openevolve/` holds `requests.jsonl` (one line per model request: iterations started),
`programs.jsonl`, and `session-<n>/` with OpenEvolve's own output (log, checkpoints, evolution
trace) and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import io
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baselines.deadline import Deadline
from baselines.openevolve.config import Connection, SessionPaths, build_config, worker_count
from baselines.openevolve.endpoint import ChatReply, LocalEndpoint, Refused, Unavailable
from baselines.openevolve.ordering import make_population_order_reproducible
from baselines.prompting import known_solutions
from engram.errors import EngramError
from engram.evaluation.result import Evaluation
from engram.methods.context import MethodContext, MethodResult, StopRun
from engram.runs.archive import append_jsonl, read_jsonl, write_atomic

if TYPE_CHECKING:
    from openevolve import OpenEvolve
    from openevolve.population import PopulationSnapshot, ProgramState

AGENT = 1
"""The whole OpenEvolve run is one proposer in the archive: its experiments and transcript are agent 1's."""
SUPPORTED = ">=0.4.0,<0.5"
_STOP_GRACE_S = 5.0
_WATCH_INTERVAL_S = 0.05
_ARTIFACT_CHARS = 4000


class OpenEvolveMissing(EngramError):
    """The `openevolve` package, an optional dependency, is not installed."""


def run_openevolve(ctx: MethodContext) -> MethodResult:
    """Run (or continue) OpenEvolve for one seed."""
    version = _require_openevolve()
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments()
    log = RunLog(ctx.archive.root / "openevolve")
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    remaining = settings.iterations - log.iterations_started()
    stop = deadline.stop_reason() or ctx.stop_reason()
    if stop is None and remaining > 0:
        stop = _run_session(ctx, log, deadline, remaining, version)
    stop = stop or f"all {settings.iterations} iterations done"
    return MethodResult(stop_reason=stop, best_score=ctx.best_score(), evaluations=ctx.evaluations_done(),
                        details={"iterations_started": log.iterations_started(), "sessions": log.sessions(),
                                 "model_errors": log.requests_with_status(502),
                                 "openevolve_version": version})


def _require_openevolve() -> str:
    try:
        import openevolve  # noqa: F401
    except ImportError:
        raise OpenEvolveMissing(
            f"method 'openevolve' needs the openevolve package ({SUPPORTED}): pip install 'engram[openevolve]'"
        ) from None
    return importlib.metadata.version("openevolve")


# -- the run's own records --------------------------------------------------------------------------


class RunLog:
    """Append-only records of an OpenEvolve run, next to the archive and read back on resume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests_file = root / "requests.jsonl"
        self.programs_file = root / "programs.jsonl"

    def iterations_started(self) -> int:
        """Each OpenEvolve iteration asks the model exactly once (its client never retries here)."""
        return len(read_jsonl(self.requests_file))

    def requests_with_status(self, status: int) -> int:
        return sum(1 for record in read_jsonl(self.requests_file) if record.get("status") == status)

    def sessions(self) -> int:
        return len(list(self.root.glob("session-*"))) if self.root.is_dir() else 0

    def new_session(self) -> tuple[int, SessionPaths]:
        number = self.sessions() + 1
        paths = SessionPaths(self.root / f"session-{number}")
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        (paths.output_dir / "logs").mkdir(exist_ok=True)
        return number, paths

    def request(self, session: int, status: int) -> None:
        append_jsonl(self.requests_file, {"t": time.time(), "session": session, "status": status})

    def admitted(self, record: dict[str, Any]) -> None:
        append_jsonl(self.programs_file, {"t": time.time(), **record})

    def admissions(self) -> dict[int, dict[str, Any]]:
        return {int(r["experiment"]): r for r in read_jsonl(self.programs_file) if "experiment" in r}


# -- what OpenEvolve sees of an evaluation ----------------------------------------------------------


def openevolve_metrics(evaluation: Evaluation) -> dict[str, Any]:
    """`combined_score` is Engram's score; a failure gets -inf (never above a valid, even negative, score)
    and its error kind. The problem's numeric totals come along for the prompt."""
    metrics: dict[str, Any] = {
        "combined_score": evaluation.score if evaluation.score is not None else -math.inf,
    }
    for name, value in evaluation.metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and name != "combined_score":
            metrics[name] = value
    if not evaluation.ok:
        metrics["error"] = str(evaluation.error_kind or "failed")
    return metrics


def openevolve_artifacts(evaluation: Evaluation) -> dict[str, str]:
    """What OpenEvolve shows the model as the parent's execution output."""
    artifacts: dict[str, str] = {}
    if not evaluation.ok:
        artifacts["error"] = f"{evaluation.error_kind}: {evaluation.error or ''}"[-_ARTIFACT_CHARS:]
    failed = {name: f"{s.error_kind}: {s.error}" for name, s in evaluation.scenarios.items() if not s.ok}
    if failed and evaluation.ok:
        artifacts["failed_scenarios"] = "\n".join(f"{k}: {v}" for k, v in failed.items())[-_ARTIFACT_CHARS:]
    if evaluation.stderr.strip():
        artifacts["stderr"] = evaluation.stderr[-_ARTIFACT_CHARS:]
    return artifacts


def _code_key(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


# -- the bridge: the runner's answers to OpenEvolve -----------------------------------------------------


class Bridge:
    """Answers OpenEvolve's model requests and evaluations (from endpoint threads) and its admissions
    (from the main thread), and decides when OpenEvolve must stop."""

    def __init__(self, ctx: MethodContext, log: RunLog, session: int, deadline: Deadline) -> None:
        self.ctx = ctx
        self.log = log
        self.session = session
        self.deadline = deadline
        self.model = ctx.model_factory(agent=AGENT, role="agent",
                                       transcript=ctx.archive.agent_dir(AGENT) / "transcript.jsonl")
        self.replaying = False
        self.seeded = False
        self.fatal: EngramError | None = None
        self.controller: Any = None
        self._lock = threading.Lock()
        self._unadmitted: dict[str, deque[int]] = defaultdict(deque)
        self._stop: str | None = None
        self._stopped_at = 0.0

    # -- stopping

    @property
    def stop(self) -> str | None:
        return self._stop

    def stop_reason(self) -> str | None:
        return self._stop or self.deadline.stop_reason() or self.ctx.stop_reason()

    def request_stop(self, reason: str) -> None:
        with self._lock:
            if self._stop is None:
                self._stop, self._stopped_at = reason, time.monotonic()

    def should_shut_down(self) -> bool:
        """Stop OpenEvolve once a budget is spent, but first let evaluations already answered be admitted,
        so that its database keeps them (within a grace period, in case one never arrives).

        Polled often, so it reads no files: budgets that change with a model call or an evaluation are
        checked when those happen, and only the clock here."""
        reason = self._stop or self.deadline.stop_reason()
        if reason is None:
            return False
        self.request_stop(reason)
        with self._lock:
            waiting = any(self._unadmitted.values())
            return not waiting or time.monotonic() - self._stopped_at > _STOP_GRACE_S

    # -- model requests

    def chat(self, messages: list[dict[str, str]]) -> ChatReply:
        status = 500
        try:
            reason = self.stop_reason()
            if reason:
                self.request_stop(reason)
                raise Refused(reason)
            reply = self._invoke(_langchain_messages(messages))
            status = 200
            if after := self.ctx.stop_reason():  # e.g. this call spent the last of the dollars
                self.request_stop(after)
            return reply
        except Refused:
            status = 402
            raise
        except Unavailable:
            status = 502
            raise
        finally:
            self.log.request(self.session, status)

    def _invoke(self, messages: list[Any]) -> ChatReply:
        """One model request through the agents' retry layer (`engram.models.calls`): transient provider
        errors are retried as for any method, never past the run's time budget; every attempt is in
        the transcript."""
        from engram.errors import ProviderError
        from engram.models.calls import AgentStop, RetryPolicy, call_model
        from engram.models.llm import BudgetExceeded

        try:
            message = call_model(self.model, messages, RetryPolicy.of(self.ctx.spec.model),
                                 deadline=self.deadline.instant, before_attempt=self._refuse_when_stopping)
        except Refused:
            raise
        except (BudgetExceeded, AgentStop) as exc:
            reason = self.ctx.stop_reason() or self.deadline.stop_reason() or (
                self.deadline.reason if isinstance(exc, AgentStop) else str(exc))
            self.request_stop(reason)
            raise Refused(reason) from exc
        except ProviderError as fatal:  # e.g. a bad key: every later request would fail alike
            self.fatal = fatal
            self.request_stop(f"error: {fatal}")
            raise Refused(str(fatal)) from fatal
        except EngramError:
            raise
        except Exception as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        usage = getattr(message, "usage_metadata", None) or {}
        return ChatReply(content=_content_text(message.content), prompt_tokens=int(usage.get("input_tokens", 0)),
                         completion_tokens=int(usage.get("output_tokens", 0)))

    def _refuse_when_stopping(self) -> None:
        """Before each attempt: another worker may have spent the budget while this one waited."""
        if reason := self.stop_reason():
            self.request_stop(reason)
            raise Refused(reason)

    # -- evaluations

    def evaluate(self, code: str) -> dict[str, Any]:
        # The seed program is always scored: OpenEvolve cannot start without it.
        reason = self._stop or (self.deadline.stop_reason() if self.seeded else None)
        if reason:
            raise Refused(reason)
        try:
            experiment, evaluation = self.ctx.evaluate(code, agent=AGENT, time_limit_s=self._time_left(),
                                                       proposal={"method": "openevolve", "session": self.session})
        except StopRun as exc:
            self.request_stop(exc.reason)
            raise Refused(exc.reason) from exc
        except EngramError as exc:  # Engram's own fault (scorer, tampering): the run must end with it
            self.fatal = exc
            self.request_stop(f"error: {exc}")
            raise
        with self._lock:
            self._unadmitted[_code_key(code)].append(experiment.number)
        if after := self.ctx.stop_reason():  # e.g. this was the last evaluation of the budget
            self.request_stop(after)
        return {"metrics": openevolve_metrics(evaluation), "artifacts": openevolve_artifacts(evaluation)}

    def _time_left(self) -> float | None:
        """The evaluation's limit: the method's timeout, cut to what is left of the seed's time."""
        limits = [self.ctx.spec.method.evaluation_timeout_s]
        left = self.deadline.remaining()
        if left is not None and self.seeded:
            limits.append(max(1.0, left))
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    # -- admissions (OpenEvolve's main thread)

    def admit(self, snapshot: PopulationSnapshot, candidate: ProgramState, island: int) -> bool:
        if self.replaying:
            return True
        with self._lock:
            waiting = self._unadmitted.get(_code_key(candidate.code))
            number = waiting.popleft() if waiting else None
        if number is None:
            return False  # the runner refused to evaluate it: it is in no archive, so in no database either
        self.seeded = True
        self.log.admitted({"experiment": number, "program_id": candidate.id, "parent_id": candidate.parent_id,
                           "island": island, "generation": candidate.generation, "session": self.session})
        if self.controller is not None and self.should_shut_down():
            self.controller.request_shutdown()
        return True


def _langchain_messages(messages: list[dict[str, str]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "developer": SystemMessage, "assistant": AIMessage}
    return [kinds.get(m["role"], HumanMessage)(content=m["content"]) for m in messages]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content or [])


# -- one session ------------------------------------------------------------------------------------


def _run_session(ctx: MethodContext, log: RunLog, deadline: Deadline, iterations: int, version: str) -> str | None:
    """Start OpenEvolve (rebuilt from the archive on resume), run `iterations` more, return why it stopped."""
    if threading.current_thread() is not threading.main_thread():
        raise EngramError("method 'openevolve' must run in the main thread (OpenEvolve installs signal handlers)")
    settings = ctx.spec.method
    session, paths = log.new_session()
    bridge = Bridge(ctx, log, session, deadline)
    endpoint = LocalEndpoint(bridge, model_name=ctx.spec.model.id)
    endpoint.start()
    drain = False
    try:
        with _environment(endpoint.environment()), _openevolve_logging(paths) as take_over_logging:
            write_atomic(paths.evaluation_file, _evaluation_file(paths))
            oe = _open(ctx, paths, bridge, endpoint, take_over_logging)
            replayed = _replay(oe, ctx, log, bridge)
            ctx.archive.log("openevolve_session", session=session, replayed=replayed, iterations=iterations,
                            workers=worker_count(settings), openevolve_version=version)
            failure = _drive(oe, bridge, iterations)
        drain = True
    except Exception:
        if bridge.fatal is not None:  # the cause, rather than how OpenEvolve reacted to it
            raise bridge.fatal from None
        raise
    finally:
        endpoint.close(drain=drain)
    if bridge.fatal is not None:
        raise bridge.fatal
    return bridge.stop or failure


def evaluation_limit(ctx: MethodContext) -> float:
    """One evaluation's wall-clock limit: the problem's, or the method's timeout if lower."""
    limit = ctx.evaluator.limits.wall_seconds
    timeout = ctx.spec.method.evaluation_timeout_s
    return min(limit, timeout) if timeout is not None else limit


def _open(ctx: MethodContext, paths: SessionPaths, bridge: Bridge, endpoint: LocalEndpoint,
          take_over_logging: Any) -> OpenEvolve:
    from openevolve import OpenEvolve
    from openevolve.population import PopulationStrategy

    model = ctx.spec.model
    connection = Connection(api_base=f"{endpoint.url}/v1", api_key=endpoint.token, model_name=model.id,
                            timeout_s=int(model.timeout_s * (model.max_retries + 1) + 60 * model.max_retries + 60))
    config = build_config(ctx.spec.method, paths=paths, connection=connection, system_message=_system_message(ctx),
                          seed=ctx.seed, evaluation_limit_s=evaluation_limit(ctx))
    # Its console handler is bound to stderr when it is made: bind it to a sink instead (it is dropped below).
    with contextlib.redirect_stderr(io.StringIO()):
        oe = OpenEvolve(initial_program_path=str(ctx.problem.initial_program),
                        evaluation_file=str(paths.evaluation_file), config=config, output_dir=str(paths.output_dir),
                        population_strategy=PopulationStrategy(admit=bridge.admit))
    take_over_logging()
    make_population_order_reproducible(oe.database)
    return oe


def _system_message(ctx: MethodContext) -> str:
    known = known_solutions(ctx.problem) if ctx.spec.method.reference_solutions else ""
    return ("You improve a program for the task below. Each candidate is scored by a trusted evaluator; "
            "a higher score is better.\n\n" + ctx.problem.task_prompt + (f"\n\n{known}" if known else ""))


def _evaluation_file(paths: SessionPaths) -> str:
    return (
        '"""OpenEvolve\'s evaluation file for an Engram run: the runner scores and records every program."""\n\n'
        "from baselines.openevolve.endpoint import log_worker_to_file, remote_evaluate\n\n"
        f"log_worker_to_file({str(paths.worker_log)!r}, runner_pid={os.getpid()})\n\n\n"
        "def evaluate(program_path):\n"
        "    return remote_evaluate(program_path)\n"
    )


def _replay(oe: OpenEvolve, ctx: MethodContext, log: RunLog, bridge: Bridge) -> int:
    """Resume: file every evaluated experiment in the new session's database, in the order they were made,
    under the id, parent and island recorded when it was first admitted."""
    from openevolve.database import Program

    admissions = log.admissions()
    islands = ctx.spec.method.islands
    replayed = 0
    bridge.replaying = True
    try:
        for experiment in ctx.archive.experiments():
            evaluation = experiment.evaluation() if experiment.agent == AGENT else None
            if evaluation is None:
                continue
            record = admissions.get(experiment.number, {})
            program = Program(id=record.get("program_id") or str(uuid.uuid4()),
                              code=experiment.program.read_text(encoding="utf-8"), language=oe.config.language,
                              parent_id=record.get("parent_id"), generation=int(record.get("generation") or 0),
                              metrics=openevolve_metrics(evaluation))
            island = record.get("island", replayed % islands)
            oe.database.add(program, target_island=int(island) % islands)
            replayed += 1
    finally:
        bridge.replaying = False
    if replayed:
        bridge.seeded = True
        oe.database.last_iteration = log.iterations_started() + 1  # the next iteration's number
    return replayed


def _drive(oe: OpenEvolve, bridge: Bridge, iterations: int) -> str | None:
    """Run OpenEvolve's loop in this thread; returns a stop reason if every iteration failed."""
    runner_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def main() -> None:
        watcher = asyncio.create_task(_watch(oe, bridge, runner_handlers))
        try:
            await oe.run(iterations=iterations)
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    except Exception as exc:
        if type(exc).__name__ != "EvolutionFailedError":  # openevolve >= 0.4.1: no iteration produced a program
            raise
        return f"every OpenEvolve iteration failed ({exc})"
    finally:
        _restore(runner_handlers)
    return None


async def _watch(oe: OpenEvolve, bridge: Bridge, runner_handlers: dict[int, Any]) -> None:
    """Alongside OpenEvolve's loop: give Ctrl-C back to the runner once OpenEvolve has taken it (its
    handler would wind down gracefully and exit 0 on a second Ctrl-C), and stop it when a budget is spent."""
    while True:
        controller = oe.parallel_controller
        if controller is not None:
            if bridge.controller is None:
                bridge.controller = controller
                _restore(runner_handlers)
            if bridge.should_shut_down():
                controller.request_shutdown()
        await asyncio.sleep(_WATCH_INTERVAL_S)


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Variables OpenEvolve's workers inherit when its pool starts; removed again afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _openevolve_logging(paths: SessionPaths) -> Iterator[Any]:
    """OpenEvolve configures the root logger (level INFO, a console and a file handler). Keep the runner's
    terminal and logging as they were: its file handler moves to the `openevolve` logger, the rest goes."""
    root, own = logging.getLogger(), logging.getLogger("openevolve")
    root_handlers, root_level = list(root.handlers), root.level
    own_state = (list(own.handlers), own.level, own.propagate)
    taken: list[logging.Handler] = []

    def take_over() -> None:
        for handler in [h for h in root.handlers if h not in root_handlers]:
            root.removeHandler(handler)
            if isinstance(handler, logging.FileHandler):
                own.addHandler(handler)
                taken.append(handler)
            else:
                handler.close()
        root.setLevel(root_level)
        own.setLevel(logging.INFO)
        own.propagate = False

    try:
        yield take_over
    finally:
        take_over()
        for handler in taken:
            own.removeHandler(handler)
            handler.close()
        own.handlers[:] = own_state[0]
        own.setLevel(own_state[1])
        own.propagate = own_state[2]
