"""What a method may use, and the one door through which every evaluation passes.

`MethodContext.evaluate` reserves an experiment number, stores the program, scores it in the
sandbox, archives the evaluation and its result files, updates the best program, appends the
event, mirrors it to MLflow and updates the progress display -- in that order, so that a crash at
any point leaves nothing half-recorded that resume cannot finish.

Several threads may call `evaluate` at once (population methods score candidates in parallel):
reserving a number against the evaluation budget and the bookkeeping after a run hold one lock;
the sandboxed run itself does not, so evaluations overlap.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.result import Evaluation
from engram.runs.archive import Experiment, SeedArchive
from engram.runs.interrupts import stop_requested

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from engram.models.llm import UsageLedger
    from engram.problems.problem import Problem
    from engram.results.tracking import Tracker
    from engram.runs.progress import Progress
    from engram.sandbox import Sandbox
    from engram.spec import Spec


class StopRun(Exception):
    """A run-level budget is spent or the target is reached: end the run cleanly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class MethodResult:
    stop_reason: str
    best_score: float | None
    evaluations: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodContext:
    spec: Spec
    seed: int
    problem: Problem
    evaluator: CandidateEvaluator
    archive: SeedArchive
    sandbox: Sandbox
    ledger: UsageLedger
    tracker: Tracker
    progress: Progress
    model_factory: Callable[..., BaseChatModel]
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _pending: set[int] = field(default_factory=set, init=False, repr=False)
    """Experiments reserved by `evaluate` and not yet logged: they count against the evaluation budget."""

    # -- budget ---------------------------------------------------------------------------------

    def evaluations_done(self) -> int:
        return len(self.archive.logged_experiment_numbers())

    def best_score(self) -> float | None:
        found = self.archive.best()
        return found[0] if found else None

    def stop_reason(self) -> str | None:
        """Why the run must stop now, or None. Checked before every model call and evaluation."""
        budget = self.spec.budget
        reserved = self.evaluations_done() + len(self._pending)
        if budget.max_evaluations is not None and reserved >= budget.max_evaluations:
            return f"evaluation budget reached ({budget.max_evaluations})"
        cap = self.spec.max_dollars
        if cap is not None and self.ledger.total_dollars >= cap:
            return f"dollar budget reached (${self.ledger.total_dollars:.4f} of ${cap:g})"
        shared = self.ledger.shared  # a sweep's cap over all its runs
        if shared is not None and (reason := shared.stop_reason(self.ledger.total_dollars)):
            return reason
        best = self.best_score()
        if budget.target_score is not None and best is not None and best >= budget.target_score:
            return f"target score reached ({best} >= {budget.target_score})"
        return None

    def check_budget(self) -> None:
        reason = self.stop_reason()
        if reason:
            raise StopRun(reason)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, code: str, *, agent: int, time_limit_s: float | None = None,
                 proposal: dict[str, Any] | None = None, program_name: str | None = None,
                 ) -> tuple[Experiment, Evaluation]:
        """Score `code` as a new experiment of `agent`; the only way methods evaluate anything.

        `proposal` is the method's record of the program's origin, stored with the experiment.
        `program_name`: the file the agent wrote it to, named in its syntax errors and tracebacks.
        """
        with self._lock:
            self.check_budget()
            experiment = self.archive.new_experiment(agent, code, proposal)
            self._pending.add(experiment.number)
        try:
            return experiment, self.complete(experiment, time_limit_s=time_limit_s, program_name=program_name)
        finally:
            with self._lock:
                self._pending.discard(experiment.number)

    def complete(self, experiment: Experiment, *, time_limit_s: float | None = None,
                 program_name: str | None = None) -> Evaluation:
        """Evaluate a stored experiment and record it (also used by resume for interrupted ones)."""
        scratch = Path(tempfile.mkdtemp(prefix="engram-results-"))
        try:
            evaluation = self.evaluator.evaluate(experiment.program, artifacts_dir=scratch, time_limit_s=time_limit_s,
                                                 program_name=program_name)
            if stop_requested():  # Ctrl-C killed the candidate: no result; resume scores it again
                raise KeyboardInterrupt
            self.archive.record_evaluation(experiment, evaluation, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.log_experiment(experiment, evaluation)
        return evaluation

    def log_experiment(self, experiment: Experiment, evaluation: Evaluation) -> None:
        with self._lock:
            self._log_experiment(experiment, evaluation)
            self._pending.discard(experiment.number)

    def _log_experiment(self, experiment: Experiment, evaluation: Evaluation) -> None:
        best = self.archive.update_best()
        self.archive.log(
            "experiment", experiment=experiment.number, agent=experiment.agent, score=evaluation.score,
            ok=evaluation.ok, error_kind=evaluation.error_kind, best_score=best,
            program_sha256=evaluation.program_sha256, dollars=self.ledger.total_dollars,
            tokens=self.ledger.total_tokens,
        )
        step = self.evaluations_done()
        self.tracker.log_evaluation(step=step, score=evaluation.score, best_score=best,
                                    dollars=self.ledger.total_dollars, tokens=self.ledger.total_tokens,
                                    agent=experiment.agent)
        self.progress.experiment(experiment.number, evaluation, best, self.ledger.total_dollars)

    def finish_interrupted_experiments(self, workers: int = 1) -> int:
        """Resume: log experiments scored but not logged, then evaluate those stored but not scored
        (up to `workers` at once: a method that evaluated in parallel left several behind)."""
        logged = self.archive.logged_experiment_numbers()
        unscored = []
        for experiment in self.archive.experiments():
            if experiment.number in logged:
                continue
            evaluation = experiment.evaluation()
            if evaluation is not None:
                self.log_experiment(experiment, evaluation)
            elif experiment.program.is_file():
                unscored.append(experiment)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(self.complete, unscored))
        return len(self.archive.logged_experiment_numbers()) - len(logged)
