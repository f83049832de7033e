"""The trusted half of a problem: the base class its `evaluator.py` implements.

A `Scorer` lives in Engram's own process, never in the candidate's. It hands the sandbox plain
inputs, receives the candidate's plain-data answer, validates it and computes every number the
score depends on from its own copy of the problem data. Whatever the candidate does to its own
process, files or output, the score comes from here.
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from engram.evaluation.result import ErrorKind, Metric, ScenarioResult
from engram.evaluation.run_secrets import TrustedSecrets

if TYPE_CHECKING:
    from engram.evaluation.channel import CandidateChannel
    from engram.problems.problem import Problem, ScenarioSpec
    from engram.sandbox import Limits, Sandbox


class InvalidAnswer(Exception):
    """The candidate's answer breaks the problem's rules; the message says which rule and where."""


def scoring_fault(error: BaseException) -> InvalidAnswer:
    """An exception the scorer raised while handling a candidate's answer, as that answer's fault.

    A scorer that breaks on some answer (an overflow, a key it did not expect) would otherwise fail
    the whole run, again on every resume; whatever the scorer's own share in it, the answer is what
    triggered it, so it is scored as invalid, with the exception and where it happened, and the run
    goes on. Faults without any candidate data (setting the scorer up) stay the evaluator's."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    message = str(error)[:500]
    return InvalidAnswer(f"the answer could not be scored: {type(error).__name__}: {message}{where}")


@dataclass
class ScenarioScore:
    metrics: dict[str, Metric]
    artifacts: dict[str, str] = field(default_factory=dict)
    """File name -> text, written into the evaluation's artifact directory when one is given."""


class Scorer(ABC):
    """Validates and scores answers for one problem. Set up once, then used for many candidates."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.secrets = TrustedSecrets()
        """Secret values (seeds of hidden workloads) kept out of the sandbox; the evaluator replaces
        this in-memory store with the run's, so use it lazily, not in `__init__`."""

    def shared_input(self) -> Any:
        """Plain data every scenario needs (e.g. a graph), sent to the sandbox once per session."""
        return None

    @abstractmethod
    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        """Plain data the adapter passes to the candidate for this scenario."""

    interactive: ClassVar[bool] = False
    """True for problems scored in a conversation with the candidate (`run_scenario`), False for
    problems scored from one answer per scenario (`score_scenario`)."""

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> ScenarioScore:
        """Validate `answer` (raise `InvalidAnswer`) and measure it."""
        raise NotImplementedError(f"{type(self).__name__} scores no one-shot answers")

    def run_scenario(self, scenario: ScenarioSpec, channel: CandidateChannel) -> ScenarioScore:
        """Score a scenario by talking to the candidate (`channel.request`); raise `InvalidAnswer`
        for a reply that breaks the rules. Failures of the candidate itself propagate as
        `CandidateFailure` and are reported by the evaluator."""
        raise NotImplementedError(f"{type(self).__name__} is not interactive")

    @abstractmethod
    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Metric]]:
        """The combined score (higher is better) and totals, from all scenarios' metrics."""


@dataclass
class Judgement:
    """What a `ProgramJudge` made of one program: a result and score per scenario, or why there are none."""

    results: dict[str, tuple[ScenarioResult, ScenarioScore]] = field(default_factory=dict)
    failure: tuple[ErrorKind, str] | None = None
    """The program could not be run at all (e.g. it does not compile): kind and message."""
    stdout: str = ""
    stderr: str = ""
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    """File name -> text, written into the evaluation's artifact directory when one is given."""
    candidate_s: float = 0.0


class ProgramJudge(Scorer):
    """A scorer for programs that are not Python functions (e.g. C++ solutions run on test files).

    The evaluator does not start `child.py` for it: it hands the judge the program's source, a fresh
    working directory and the sandbox, and the judge runs whatever it must there (compilers,
    test runs, checkers) -- every untrusted step inside the sandbox. Failed scenarios may still
    carry a score (a test case that scores 0), so `combine` sees every scenario's `ScenarioScore`."""

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {}

    @abstractmethod
    def judge(self, source: str, scenarios: list[ScenarioSpec], *, sandbox: Sandbox, workdir: Path,
              limits: Limits) -> Judgement:
        """Run and score the program on `scenarios`; never raise for the program's own faults."""
