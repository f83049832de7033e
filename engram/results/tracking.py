"""Mirror each experiment run into MLflow so runs can be compared in the MLflow UI.

The run directory on disk is the single source of truth: it holds every candidate, score and log, and
a run can be resumed or re-analysed from it alone. MLflow is a *mirror* for browsing and comparing
runs (parameters, score curves, agent traces), never the only copy of anything. Hence the rule this
module is built around: a tracking failure must never stop or lose a run. Every `Tracker` method
catches its own errors; on the first one it prints a single warning to stderr (which call failed,
why, and that the archive is unaffected) and turns itself into a no-op for the rest of the run.

Layout in MLflow: one parent run per (spec run, seed), tagged ``engram.run_dir`` with the run
directory, and one nested run ``agent-<index>`` per agent. Resuming a run directory reuses both.

Calls go through `MlflowClient` with explicit run ids rather than the fluent active-run stack, so
several trackers created one after another in one process never confuse their runs. The one
exception is the agent's nested run: while an agent runs it is also pushed onto MLflow's fluent
stack, because that is how `mlflow.langchain.autolog` attaches a trace to a run (see `start_agent`).

mlflow is imported lazily inside methods: importing it takes a second or more, and commands that do
not track should not pay for it.
"""

from __future__ import annotations

import functools
import logging
import math
import posixpath
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_TRACKING_DIR = "mlruns"
"""Directory, under the project directory, holding the default SQLite store and its artefacts."""

RUN_ID_FILE = "mlflow_run_id.txt"
"""File in a run directory holding the MLflow parent run id, so a resume finds the same run."""

TAG_RUN_DIR = "engram.run_dir"
TAG_AGENT = "engram.agent"
_PARENT_RUN_ID_TAG = "mlflow.parentRunId"  # what makes the MLflow UI show a run as nested
_STATUSES = ("FINISHED", "FAILED", "KILLED")

# MLflow's limits (mlflow.utils.validation); copied so that truncation needs no mlflow import.
_MAX_KEY_LENGTH = 250
_MAX_PARAM_VALUE_LENGTH = 6000
_MAX_TAG_VALUE_LENGTH = 8000
_MAX_PARAMS_PER_BATCH = 100
_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]")

_P = ParamSpec("_P")


def default_tracking_uri(project_dir: Path | None = None) -> str:
    """The local SQLite store ``<project_dir or cwd>/mlruns/mlflow.db``, creating its directory.

    A local file store keeps tracking offline and next to the project; SQLite (not MLflow's
    file store, which is in maintenance mode) is what the MLflow UI and tracing need.
    """
    directory = (project_dir or Path.cwd()).resolve() / DEFAULT_TRACKING_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}"


def _quiet_mlflow_logging() -> None:
    """MLflow logs store migrations and trace flushing at INFO, which would break the progress
    display; keep its warnings, unless the user configured MLflow's logger themselves."""
    logger = logging.getLogger("mlflow")
    if logger.level in (logging.NOTSET, logging.INFO):
        logger.setLevel(logging.WARNING)


def flatten_params(data: dict, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts and lists into dotted keys (``agents.0.model``) with string values.

    MLflow params are a flat string-to-string map, and dotted keys keep the spec's structure
    readable (and sortable) in the UI's parameter table. Empty containers are kept as ``{}``/``[]``
    so that "no entries" stays visible; ``None`` becomes ``"None"``.
    """
    flat: dict[str, str] = {}

    def visit(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for sub_key, sub_value in value.items():
                visit(sub_value, f"{key}.{sub_key}" if key else str(sub_key))
        elif isinstance(value, list | tuple) and value:
            for index, item in enumerate(value):
                visit(item, f"{key}.{index}" if key else str(index))
        elif isinstance(value, dict):
            flat[key] = "{}"
        elif isinstance(value, list | tuple):
            flat[key] = "[]"
        else:
            flat[key] = str(value)

    for key, value in data.items():
        visit(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _safe(
    call: str,
) -> Callable[[Callable[Concatenate[Tracker, _P], None]], Callable[Concatenate[Tracker, _P], None]]:
    """Make a `Tracker` method a no-op once tracking is off, and turn its errors into one warning."""

    def decorate(method: Callable[Concatenate[Tracker, _P], None]) -> Callable[Concatenate[Tracker, _P], None]:
        @functools.wraps(method)
        def wrapper(self: Tracker, *args: _P.args, **kwargs: _P.kwargs) -> None:
            if not self._usable:
                return
            with self._lock:
                try:
                    method(self, *args, **kwargs)
                except Exception as error:
                    self._fail(call, error)

        return wrapper

    return decorate


class Tracker:
    """One MLflow parent run per (spec run, seed), nested runs per agent.

    Every call is safe: on the first MLflow error it prints one warning to stderr (which call
    failed, why, that the archive is unaffected) and disables itself. A tracker constructed with
    ``enabled=False`` does nothing at all and never imports mlflow.

    Only one tracker should be active at a time in a process (MLflow's tracking URI, experiment and
    langchain autologging are process-wide); create a new one per seed after finishing the last.
    """

    def __init__(self, *, enabled: bool, tracking_uri: str | None, experiment: str) -> None:
        self._enabled = enabled
        self._tracking_uri = tracking_uri
        self._experiment = experiment
        self._failed = False
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._agent_ids: dict[int, str] = {}  # every agent run seen, open or ended
        self._open_agents: set[int] = set()  # agent runs started and not yet ended
        self._autolog_enabled = False

    # ----------------------------------------------------------------- state

    @property
    def active(self) -> bool:
        """True while a parent run is open and tracking has not failed."""
        return self._usable and self._parent_id is not None

    @property
    def run_id(self) -> str | None:
        """The MLflow parent run id once started (for tests and for messages pointing at the UI)."""
        return self._parent_id

    def agent_run_id(self, index: int) -> str | None:
        """The MLflow run id of agent `index`'s nested run, if it was started."""
        return self._agent_ids.get(index)

    @property
    def _usable(self) -> bool:
        return self._enabled and not self._failed

    def _fail(self, call: str, error: BaseException) -> None:
        """Warn once and switch tracking off, leaving MLflow's process-wide state clean."""
        self._failed = True
        reason = " ".join(str(error).split())[:500] or "no message"
        print(
            f"engram: warning: MLflow tracking failed in Tracker.{call} ({type(error).__name__}: {reason}). "
            "MLflow tracking is off for the rest of this run; the run continues and its run directory, "
            "the archive of record, is unaffected.",
            file=sys.stderr,
        )
        for index in list(self._open_agents):
            run_id = self._agent_ids.get(index)
            if run_id is not None:
                _remove_from_fluent_stack(run_id, None)
        self._open_agents.clear()
        self._disable_autolog()

    # ------------------------------------------------------------ parent run

    @_safe("start")
    def start(self, *, run_name: str, run_dir: Path, tags: dict[str, str], params: dict[str, Any]) -> None:
        """Open (or, when resuming `run_dir`, reopen) the parent run and log `params` and `tags`.

        A resumed run directory maps to the same MLflow run: it is found through
        ``<run_dir>/mlflow_run_id.txt`` first (robust to the directory being moved), then through
        the ``engram.run_dir`` tag, and set RUNNING again. Params already on a resumed run are not
        logged again: MLflow params are immutable, and re-logging a changed value would fail.
        """
        import mlflow

        _quiet_mlflow_logging()
        if self._parent_id is not None:
            self._finish("FINISHED")
        uri = self._tracking_uri or default_tracking_uri()
        _create_sqlite_directory(uri)
        client = mlflow.MlflowClient(uri)
        experiment_id = self._get_or_create_experiment(client, uri)
        # Fluent calls (the agent run pushed for autolog) and trace export use the process-wide
        # URI and experiment, so point them at ours; only after the store proved usable above.
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=experiment_id)
        self._client, self._experiment_id = client, experiment_id

        run_tags = _clean_tags({**tags, TAG_RUN_DIR: str(run_dir)})
        run_id = self._find_parent(run_dir)
        if run_id is None:
            run_id = client.create_run(experiment_id, run_name=run_name, tags=_with_context_tags(run_tags)).info.run_id
            existing_params: dict[str, str] = {}
        else:
            client.update_run(run_id, status="RUNNING", name=run_name)
            _log_batch(client, run_id, tags=run_tags)
            existing_params = client.get_run(run_id).data.params
        self._parent_id = run_id
        (run_dir / RUN_ID_FILE).write_text(run_id + "\n")

        new_params = {key: value for key, value in _clean_params(params).items() if key not in existing_params}
        _log_batch(client, run_id, params=new_params)

    def _get_or_create_experiment(self, client: MlflowClient, uri: str) -> str:
        experiment = client.get_experiment_by_name(self._experiment)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        # Keep artefacts beside a local SQLite store; MLflow's default ("./mlruns") would follow cwd.
        db_path = _sqlite_path(uri)
        location = (db_path.parent / "artifacts").as_uri() if db_path is not None else None
        return client.create_experiment(self._experiment, artifact_location=location)

    def _find_parent(self, run_dir: Path) -> str | None:
        """The parent run of an earlier attempt at `run_dir`, or None."""
        from mlflow.exceptions import MlflowException

        assert self._client is not None
        id_file = run_dir / RUN_ID_FILE
        if id_file.is_file():
            run_id = id_file.read_text().strip()
            try:
                run = self._client.get_run(run_id) if run_id else None
            except MlflowException:  # unknown or malformed id, e.g. the store was wiped
                run = None
            if (
                run is not None
                and run.info.experiment_id == self._experiment_id
                and run.info.lifecycle_stage == "active"
            ):
                return run_id
        value = str(run_dir)
        runs = self._search_runs(f"tags.`{TAG_RUN_DIR}` = '{value}'" if _quotable(value) else "")
        parents = [r for r in runs if r.data.tags.get(TAG_RUN_DIR) == value and _PARENT_RUN_ID_TAG not in r.data.tags]
        return min(parents, key=lambda r: r.info.start_time).info.run_id if parents else None

    def _search_runs(self, filter_string: str) -> list[Any]:
        assert self._client is not None and self._experiment_id is not None
        runs: list[Any] = []
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # ------------------------------------------------------------ agent runs

    @_safe("start_agent")
    def start_agent(self, index: int, *, tags: dict[str, str] | None = None) -> None:
        """Open (or reopen, on resume) the nested run ``agent-<index>`` and make it MLflow's active run.

        Making it the fluent active run is what links traces to it: when a trace starts, MLflow's
        span processor records ``mlflow.sourceRun`` = the most recently started run on the fluent
        stack of *any* thread (`mlflow.tracking.fluent._get_latest_active_run`), so LLM calls made
        from LangGraph's worker threads are linked too. The parent run is deliberately kept off
        that stack, so an agent's traces cannot land on the parent.
        """
        import mlflow

        if self._parent_id is None or self._client is None:
            return
        if index in self._open_agents:
            return
        run_tags = _clean_tags({**(tags or {}), TAG_AGENT: str(index), _PARENT_RUN_ID_TAG: self._parent_id})
        run_id = self._agent_ids.get(index) or self._find_agent(index)
        if run_id is None:
            run_id = self._client.create_run(
                self._experiment_id, run_name=f"agent-{index}", tags=_with_context_tags(run_tags)
            ).info.run_id
        else:
            _log_batch(self._client, run_id, tags=run_tags)
        self._agent_ids[index] = run_id
        # Sets the run RUNNING (also on resume) and pushes it; nested=True only skips the check
        # that no other fluent run is active in this thread.
        mlflow.start_run(run_id=run_id, nested=True)
        self._open_agents.add(index)

    def _find_agent(self, index: int) -> str | None:
        runs = self._search_runs(
            f"tags.`{_PARENT_RUN_ID_TAG}` = '{self._parent_id}' and tags.`{TAG_AGENT}` = '{index}'"
        )
        return min(runs, key=lambda r: r.info.start_time).info.run_id if runs else None

    @_safe("end_agent")
    def end_agent(
        self, index: int, *, metrics: dict[str, float], artifacts: Sequence[Path] = (), status: str = "FINISHED"
    ) -> None:
        """Log the agent's final `metrics` and `artifacts` on its nested run and close it with `status`.

        On resume an agent that a killed run left open is closed without having been started in this
        process: its run is looked up, so it does not stay RUNNING forever."""
        import mlflow

        if self._parent_id is None or self._client is None:
            return
        run_id = self._agent_ids.get(index) or self._find_agent(index)
        if run_id is None:
            return
        self._agent_ids[index] = run_id
        status = _status(status)
        _log_batch(self._client, run_id, metrics=metrics)
        self._log_paths(run_id, artifacts, None)
        if index in self._open_agents:
            # The agent's traces were linked when they started; flush so they are in the store
            # before its run is shown as ended.
            mlflow.flush_trace_async_logging()
            _remove_from_fluent_stack(run_id, status)
            self._open_agents.discard(index)
        self._client.set_terminated(run_id, status=status)

    # -------------------------------------------------------------- logging

    @_safe("log_evaluation")
    def log_evaluation(
        self,
        *,
        step: int,
        score: float | None,
        best_score: float | None,
        dollars: float,
        tokens: int,
        agent: int | None,
    ) -> None:
        """Log one evaluation as metrics at `step`, on the parent run and on `agent`'s nested run.

        ``score`` is skipped when None (a failed candidate has no score; a 0 would distort the
        curve). ``best_score`` is skipped too while no candidate has scored yet.
        """
        if self._parent_id is None or self._client is None:
            return
        metrics = {"score": score, "best_score": best_score, "dollars": dollars, "tokens": tokens}
        values = {key: float(value) for key, value in metrics.items() if value is not None}
        run_ids = [self._parent_id]
        if agent is not None and (agent_run := self._agent_ids.get(agent)) is not None:
            run_ids.append(agent_run)
        for run_id in run_ids:
            _log_batch(self._client, run_id, metrics=values, step=step)

    @_safe("log_artifacts")
    def log_artifacts(self, paths: Sequence[Path], artifact_path: str | None = None) -> None:
        """Copy files or directories (kept under their own name) to the parent run's artefacts."""
        if self._parent_id is None:
            return
        self._log_paths(self._parent_id, paths, artifact_path)

    def _log_paths(self, run_id: str, paths: Sequence[Path], artifact_path: str | None) -> None:
        assert self._client is not None
        for path in map(Path, paths):
            if path.is_dir():
                target = posixpath.join(artifact_path, path.name) if artifact_path else path.name
                self._client.log_artifacts(run_id, str(path), target)
            elif path.is_file():
                self._client.log_artifact(run_id, str(path), artifact_path)
            # A path that does not exist is skipped: the mirror copies what the archive has.

    @_safe("log_score_plot")
    def log_score_plot(self, points: list[tuple[int, float | None, float | None]]) -> None:
        """Log ``plots/score.png``: each scored candidate, and the best score so far, against step.

        MLflow's own charts show the metrics too, but a PNG travels with the run's artefacts and
        shows failed steps as gaps. Skipped silently when matplotlib is not installed.
        """
        if self._parent_id is None or self._client is None:
            return
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return
        # Figure + the Agg canvas directly, not pyplot: no global backend switch, no GUI.
        figure = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        scored = [(step, score) for step, score, _ in points if _finite(score)]
        best = [(step, value) for step, _, value in points if _finite(value)]
        if scored:
            axes.scatter(*zip(*scored, strict=True), s=12, alpha=0.5, label="score")
        if best:
            axes.step(*zip(*best, strict=True), where="post", color="C1", label="best so far")
        axes.set_xlabel("evaluation step")
        axes.set_ylabel("score")
        if scored or best:
            axes.legend(loc="best")
        figure.tight_layout()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "score.png"
            figure.savefig(path)
            self._client.log_artifact(self._parent_id, str(path), "plots")

    @_safe("enable_langchain_autolog")
    def enable_langchain_autolog(self) -> None:
        """Record LangChain/LangGraph calls as MLflow traces, linked to the running agent's run.

        Autologging is process-wide; `finish` (or a tracking failure) turns it off again, so a
        later tracker, or a run with tracking off, does not keep exporting traces.
        """
        import mlflow.langchain

        mlflow.langchain.autolog(log_traces=True)
        self._autolog_enabled = True

    def _disable_autolog(self) -> None:
        if not self._autolog_enabled:
            return
        self._autolog_enabled = False
        try:
            import mlflow.langchain

            mlflow.langchain.autolog(disable=True)
        except Exception:  # best effort while shutting down; nothing left to protect
            pass

    # --------------------------------------------------------------- finish

    def finish(self, status: str = "FINISHED", *, metrics: dict[str, float] | None = None) -> None:
        """End any open agent runs and the parent run with `status` (FINISHED, FAILED or KILLED).

        `metrics` are the run's final figures (dollars, tokens): model calls after the last
        evaluation (an agent's summary, say) cost money too, so the last per-evaluation value of
        `dollars` is not the run's total."""
        if not self._usable:
            return
        with self._lock:
            try:
                self._finish(status, metrics or {})
            except Exception as error:
                self._fail("finish", error)

    def _finish(self, status: str, metrics: dict[str, float]) -> None:
        status = _status(status)
        if self._parent_id is None and not self._open_agents and not self._autolog_enabled:
            return
        import mlflow

        final = {key: float(value) for key, value in metrics.items() if _finite(value)}
        if final and self._parent_id is not None and self._client is not None:
            _log_batch(self._client, self._parent_id, metrics=final, step=self._last_step(final))

        if self._open_agents:
            mlflow.flush_trace_async_logging()
        for index in sorted(self._open_agents):
            run_id = self._agent_ids[index]
            _remove_from_fluent_stack(run_id, status)
            assert self._client is not None
            self._client.set_terminated(run_id, status=status)
        self._open_agents.clear()
        self._disable_autolog()
        if self._parent_id is not None and self._client is not None:
            self._client.set_terminated(self._parent_id, status=status)
        self._parent_id = None
        self._agent_ids.clear()


    def _last_step(self, metrics: dict[str, float]) -> int:
        """The step the final figures are logged at: the parent's latest, so they end its history."""
        assert self._client is not None and self._parent_id is not None
        steps = [m.step for key in metrics for m in self._client.get_metric_history(self._parent_id, key)]
        return max(steps, default=0)


# ------------------------------------------------------------------ helpers


def _status(status: str) -> str:
    value = status.upper()
    if value not in _STATUSES:
        raise ValueError(f"run status must be one of {', '.join(_STATUSES)}, not {status!r}")
    return value


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _quotable(value: str) -> bool:
    """Whether `value` can go into a search filter literal (MLflow's parser has no quote escaping)."""
    return "'" not in value and '"' not in value and "\\" not in value


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores (or in-memory SQLite)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix or ":memory:" in uri:
        return None
    return Path(uri[len(prefix) :].split("?", 1)[0])


def prepare_experiment(uri: str, experiment: str) -> str:
    """Create the store and the experiment before runs start side by side, so that parallel runs
    never race to create the same experiment (MLflow's SQLite store refuses the second creation)."""
    import mlflow

    _quiet_mlflow_logging()
    _create_sqlite_directory(uri)
    return Tracker(enabled=True, tracking_uri=uri, experiment=experiment)._get_or_create_experiment(
        mlflow.MlflowClient(uri), uri)


def _create_sqlite_directory(uri: str) -> None:
    """Create the directory of a SQLite store: SQLite creates the file, but not missing directories."""
    if (path := _sqlite_path(uri)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _clean_key(key: str) -> str:
    """A key MLflow accepts: allowed characters only, not path-like, within the length limit."""
    key = _INVALID_KEY_CHARS.sub("_", str(key))[:_MAX_KEY_LENGTH]
    if posixpath.normpath(key) != key or key in {"", "."} or key.startswith(".."):
        key = ("_" + key.replace("/", "_"))[:_MAX_KEY_LENGTH]
    return key


def _clean_params(params: dict[str, Any]) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for key, value in params.items():
        cleaned.setdefault(_clean_key(key), str(value)[:_MAX_PARAM_VALUE_LENGTH])
    return cleaned


def _clean_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {_clean_key(key): str(value)[:_MAX_TAG_VALUE_LENGTH] for key, value in tags.items()}


def _with_context_tags(tags: dict[str, str]) -> dict[str, str]:
    """Add what `mlflow.start_run` would (user, source file, git commit), which the UI displays."""
    from mlflow.tracking.context import registry

    return registry.resolve_tags(tags)


def _log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    step: int = 0,
) -> None:
    """Log in batches within MLflow's per-request limits (100 params or tags per batch)."""
    from mlflow.entities import Metric, Param, RunTag

    timestamp = int(time.time() * 1000)
    param_items = [Param(key, value) for key, value in (params or {}).items()]
    tag_items = [RunTag(key, value) for key, value in (tags or {}).items()]
    metric_items = [Metric(_clean_key(k), float(v), timestamp, step) for k, v in (metrics or {}).items()]
    for start in range(0, len(param_items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=param_items[start : start + _MAX_PARAMS_PER_BATCH])
    for start in range(0, len(tag_items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=tag_items[start : start + _MAX_PARAMS_PER_BATCH])
    if metric_items:
        client.log_batch(run_id, metrics=metric_items)


def _remove_from_fluent_stack(run_id: str, status: str | None) -> None:
    """Take `run_id` off MLflow's fluent active-run stack, in whichever thread pushed it.

    Normally it is on top of this thread's stack and `mlflow.end_run` pops it (and records
    `status`). If the agent was started from another thread, that thread's stack is reached through
    MLflow's private thread-local registry; failing that, the entry stays (later traces may then
    be linked to it, nothing worse), which is why this never raises. `status` None pops without
    touching the store, for when the store is what failed.
    """
    try:
        import mlflow
        from mlflow.tracking import fluent

        current = mlflow.active_run()
        if current is not None and current.info.run_id == run_id:
            if status is not None:
                mlflow.end_run(status)
            else:
                fluent._active_run_stack.get().pop()
            return
        for stack in fluent._active_run_stack.get_all_thread_values().values():
            for run in [r for r in stack if r.info.run_id == run_id]:
                stack.remove(run)
    except Exception:
        pass
