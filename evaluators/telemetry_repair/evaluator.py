"""Trusted scoring for telemetry_repair: the candidate repairs, Engram compares with the ground truth.

The cases (perturbed telemetry, topology, ground truth) are built here from the verified data file
(`cases.py`); the sandbox receives only the perturbed telemetry and the topology. The answer must
give, for every interface, `rx_rate`, `tx_rate` and `interface_status` as `(original, repaired,
confidence)` triples. Each case scores `0.75 * counter repair + 0.05 * status repair + 0.2 *
confidence calibration`, the reference's formulas (mit-nms/Engram,
`SystemBench/ADRS/telemetry_repair/evaluator.py`) evaluated in the same order, and the score is
the mean over the cases. Unlike the reference, an answer that leaves interfaces out or gives a
bare value instead of a triple is rejected: there such fields were skipped, and skipped fields
counted as perfect status and calibration (an empty answer scored 0.25, five times the starting
program).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

DATA_FILE = "adrs/telemetry_repair/evaluation_data.csv"
COUNTERS = ("rx_rate", "tx_rate")
FIELDS = (*COUNTERS, "interface_status")
WEIGHTS = {"counter_repair": 0.75, "status_repair": 0.05, "confidence_calibration": 0.2}


cases_module = load_problem_module(__file__, "cases")


@dataclass(frozen=True)
class Repair:
    """One checked field of the answer: the repaired value and the confidence in it."""

    value: Any
    confidence: float


class TelemetryRepairScorer(Scorer):
    """Scores repairs of the reference's 30 fixed cases."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.cases = cases_module.load_cases(problem.data_file(DATA_FILE))

    def _case(self, scenario: ScenarioSpec) -> Any:
        index = int(scenario.params["case"])
        if not 0 <= index < len(self.cases):
            raise ValueError(f"scenario {scenario.name}: case {index} does not exist ({len(self.cases)} cases)")
        return self.cases[index]

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        case = self._case(scenario)
        return {"telemetry": case.telemetry, "topology": case.topology}

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> ScenarioScore:
        case = self._case(scenario)
        repairs = _checked_repairs(answer, case.telemetry)
        parts = {
            "counter_repair": counter_repair_quality(repairs, case.ground_truth),
            "status_repair": status_repair_quality(repairs, case.ground_truth),
            "confidence_calibration": confidence_calibration(repairs, case.ground_truth),
        }
        combined = (parts["counter_repair"] * WEIGHTS["counter_repair"]
                    + parts["status_repair"] * WEIGHTS["status_repair"]
                    + parts["confidence_calibration"] * WEIGHTS["confidence_calibration"])
        return ScenarioScore(metrics={"score": combined, **parts, "bug_type": case.bug_type,
                                      "interfaces": len(case.telemetry)})

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        """Mean over the cases, summed in case order as the reference does."""
        names = [s.name for s in self.problem.config.scenarios if s.name in results]
        totals: dict[str, Any] = {"cases": len(names)}
        for metric in ("score", *WEIGHTS):
            total = 0.0
            for name in names:
                total += float(results[name].metrics[metric])  # type: ignore[arg-type]
            totals[metric] = total / len(names)
        return float(totals.pop("score")), totals


def _checked_repairs(answer: Any, telemetry: dict[str, Any]) -> dict[str, dict[str, Repair]]:
    """Every interface of the input with three `[original, repaired, confidence]` triples."""
    if not isinstance(answer, dict):
        raise InvalidAnswer(f"the answer must be a dict of interface id -> fields, got {answer!r:.200}")
    checked: dict[str, dict[str, Repair]] = {}
    for interface_id in telemetry:
        fields = answer.get(interface_id)
        if not isinstance(fields, dict):
            raise InvalidAnswer(f"interface {interface_id!r} is missing from the answer (every interface of the "
                                f"input must be returned)")
        checked[interface_id] = {name: _checked_triple(interface_id, name, fields.get(name)) for name in FIELDS}
    return checked


def _checked_triple(interface_id: str, name: str, triple: Any) -> Repair:
    where = f"interface {interface_id!r}, field {name!r}"
    if not isinstance(triple, list) or len(triple) != 3:
        raise InvalidAnswer(f"{where}: must be an (original, repaired, confidence) tuple, got {triple!r}")
    _, repaired, confidence = triple
    if not _is_number(confidence) or not 0.0 <= confidence <= 1.0:
        raise InvalidAnswer(f"{where}: the confidence must be a number between 0 and 1, got {confidence!r}")
    if name in COUNTERS and not _is_number(repaired):
        raise InvalidAnswer(f"{where}: the repaired counter must be a finite number, got {repaired!r}")
    return Repair(repaired, float(confidence))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def counter_repair_quality(repairs: dict[str, dict[str, Repair]], truth: dict[str, dict[str, Any]]) -> float:
    """1 - mean relative error (each capped at 1) over the counters whose true value is positive."""
    total_error = 0.0
    measured = 0
    for interface_id, true_fields in truth.items():
        for name in COUNTERS:
            true_value = true_fields[name]
            if true_value > 0:
                total_error += min(abs(repairs[interface_id][name].value - true_value) / true_value, 1.0)
                measured += 1
    if measured == 0:
        return 0.0
    return max(0.0, 1.0 - total_error / measured)


def status_repair_quality(repairs: dict[str, dict[str, Repair]], truth: dict[str, dict[str, Any]]) -> float:
    """Share of interfaces whose repaired status equals the true one."""
    correct = sum(1 for interface_id, fields in truth.items()
                  if repairs[interface_id]["interface_status"].value == fields["interface_status"])
    return correct / len(truth) if truth else 1.0


def confidence_calibration(repairs: dict[str, dict[str, Repair]], truth: dict[str, dict[str, Any]]) -> float:
    """Mean per-counter agreement between confidence and accuracy (the reference's piecewise rule):
    an accurate repair (accuracy > 0.8) earns 1 with confidence > 0.7, less when under-confident;
    an inaccurate one earns 0.8 with confidence < 0.3 and is penalised for confidence above that."""
    total = 0.0
    measured = 0
    for interface_id, true_fields in truth.items():
        for name in COUNTERS:
            repair = repairs[interface_id][name]
            total += _calibration(true_fields[name], repair.value, repair.confidence)
            measured += 1
    return total / measured if measured else 1.0


def _calibration(true_value: float, repaired: float, confidence: float) -> float:
    scale = max(abs(true_value), abs(repaired), 1.0)
    accuracy = 1.0 - abs(true_value - repaired) / scale
    if accuracy > 0.8:
        score = 1.0 if confidence > 0.7 else 0.5 + (confidence - 0.3) * 1.25
    elif confidence < 0.3:
        score = 0.8
    else:
        score = max(0.0, 0.8 - confidence * (1.0 - accuracy) * 2.0)
    return max(0.0, min(1.0, score))
