"""The trusted half of a problem: the base class its `evaluator.py` implements.

A `Scorer` lives in Engram's own process, never in the candidate's. It hands the sandbox plain
inputs, receives the candidate's plain-data answer, validates it and computes every number the
score depends on from its own copy of the problem data. Whatever the candidate does to its own
process, files or output, the score comes from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from engram.evaluation.result import Metric

if TYPE_CHECKING:
    from engram.evaluation.channel import CandidateChannel
    from engram.problem import Problem, ScenarioSpec


class InvalidAnswer(Exception):
    """The candidate's answer breaks the problem's rules; the message says which rule and where."""


@dataclass
class ScenarioScore:
    metrics: dict[str, Metric]
    artifacts: dict[str, str] = field(default_factory=dict)
    """File name -> text, written into the evaluation's artifact directory when one is given."""


class Scorer(ABC):
    """Validates and scores answers for one problem. Set up once, then used for many candidates."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem

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
