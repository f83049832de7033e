"""Scoring candidate programs: isolated execution, trusted validation, structured results."""

from engram.evaluation.result import ErrorKind, Evaluation, ScenarioResult, Timings
from engram.evaluation.scoring import InvalidAnswer, ScenarioScore, Scorer

__all__ = ["ErrorKind", "Evaluation", "InvalidAnswer", "ScenarioResult", "ScenarioScore", "Scorer", "Timings"]
