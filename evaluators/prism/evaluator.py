"""Trusted scoring for prism: draw the cases, check each placement, compute KV-cache pressure here.

The cases are drawn with the same generator calls as the reference evaluator (mit-nms/Engram,
SystemBench/ADRS/prism), so the reference's seed gives the reference's cases and its initial program
its score (21.89). The candidate only returns, per case, which models go on which GPU (by model
name); every size, rate and SLO comes from this module's own copy of the case. Unlike the
reference, a placement must be complete and must fit: every model of the case exactly once, no GPU
holding more than 80 GB of weights. Because every case is feasible (each GPU can hold two of the
largest models and there are two models per GPU), a case without a valid placement fails the
evaluation instead of only lowering the success rate -- otherwise skipping the hardest cases would
raise the score.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import ScenarioSpec

GPU_MEM_GB = 80
FULL_GPU_PRESSURE = 1_000_000.0
"""The reference's pressure for a GPU whose weights fill all of its memory (no room for KV cache)."""
MIN_GPUS, MAX_GPUS = 5, 10  # numpy's randint upper bounds are exclusive: 5..9 GPUs
MIN_SIZE, MAX_SIZE = 10, 30
MIN_RATE, MAX_RATE = 1, 10
MIN_SLO, MAX_SLO = 5, 10


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size: int
    req_rate: int
    slo: int


@dataclass(frozen=True)
class Case:
    gpu_num: int
    models: tuple[ModelSpec, ...]


def generate_cases(seed: int, count: int) -> list[Case]:
    """The reference's cases: numpy's legacy generator seeded once, then per case the GPU count and,
    per model, size, rate and SLO, in exactly that order of draws."""
    rng = np.random.RandomState(seed)
    cases = []
    for _ in range(count):
        gpu_num = int(rng.randint(MIN_GPUS, MAX_GPUS))
        models = []
        for j in range(gpu_num * 2):
            size = int(rng.randint(MIN_SIZE, MAX_SIZE))
            rate = int(rng.randint(MIN_RATE, MAX_RATE))
            slo = int(rng.randint(MIN_SLO, MAX_SLO))
            models.append(ModelSpec(f"model_{j}", size, rate, slo))
        cases.append(Case(gpu_num, tuple(models)))
    return cases


def gpu_pressure(models: list[ModelSpec]) -> float:
    """KV-cache pressure of one GPU: summed rate/SLO over the memory its weights leave free.

    Summed in the order the placement lists the models, as the reference does, so that the
    floating-point result is the reference's to the last bit.
    """
    weights = sum(m.size for m in models)
    demand = sum(m.req_rate / m.slo for m in models)
    free = GPU_MEM_GB - weights
    return demand / free if free > 0 else FULL_GPU_PRESSURE


def check_placement(case: Case, number: int, answer: Any) -> dict[int, list[ModelSpec]]:
    """The placement as GPU id -> models, or `InvalidAnswer` naming the first rule it breaks."""
    where = f"case {number} ({case.gpu_num} GPUs, {len(case.models)} models)"
    if not isinstance(answer, dict) or not isinstance(answer.get("gpus"), list):
        kind = answer.get("returned") if isinstance(answer, dict) else type(answer).__name__
        raise InvalidAnswer(f"{where}: compute_model_placement must return a dict mapping GPU ids to lists of "
                            f"models, not {kind}")
    by_name = {m.name: m for m in case.models}
    placed_on: dict[str, int] = {}
    placement: dict[int, list[ModelSpec]] = {}
    for entry in answer["gpus"]:
        gpu, names = _gpu_entry(entry, where)
        if not 0 <= gpu < case.gpu_num:
            raise InvalidAnswer(f"{where}: GPU id {gpu} does not exist (GPUs are 0..{case.gpu_num - 1})")
        if gpu in placement:
            raise InvalidAnswer(f"{where}: GPU {gpu} appears twice in the placement")
        models = []
        for name in names:
            if name not in by_name:
                raise InvalidAnswer(f"{where}: GPU {gpu} holds {name!r}, which is not one of the case's models")
            if name in placed_on:
                raise InvalidAnswer(f"{where}: {name} is placed twice (GPUs {placed_on[name]} and {gpu})")
            placed_on[name] = gpu
            models.append(by_name[name])
        weights = sum(m.size for m in models)
        if weights > GPU_MEM_GB:
            raise InvalidAnswer(f"{where}: GPU {gpu} holds {weights} GB of models, more than its {GPU_MEM_GB} GB")
        placement[gpu] = models
    missing = [m.name for m in case.models if m.name not in placed_on]
    if missing:
        raise InvalidAnswer(f"{where}: {len(missing)} model(s) not placed on any GPU: {', '.join(missing[:5])}")
    return placement


def _gpu_entry(entry: Any, where: str) -> tuple[int, list[str]]:
    if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
        raise InvalidAnswer(f"{where}: malformed placement entry {entry!r:.80}")
    gpu, names = entry
    if not isinstance(gpu, int) or isinstance(gpu, bool):
        raise InvalidAnswer(f"{where}: GPU id {gpu!r:.40} is not an integer")
    for name in names:
        if not isinstance(name, str):
            raise InvalidAnswer(f"{where}: GPU {gpu} holds {name!r:.60}, which is not a model of the case")
    return gpu, names


@dataclass
class PrismScenarioScore(ScenarioScore):
    """A scenario's metrics plus each case's largest pressure, so `combine` can pool the cases."""

    max_pressures: list[float] = field(default_factory=list)


class PrismScorer(Scorer):
    """Checks each case's placement and measures its busiest GPU's KV-cache pressure."""

    def __init__(self, problem: Any) -> None:
        super().__init__(problem)
        self.cases = {s.name: generate_cases(int(s.params["seed"]), int(s.params["cases"]))
                      for s in problem.config.scenarios}

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {
            "seed": int(scenario.params["seed"]),
            "cases": [{"gpu_num": c.gpu_num, "models": [[m.name, m.size, m.req_rate, m.slo] for m in c.models]}
                      for c in self.cases[scenario.name]],
        }

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> PrismScenarioScore:
        cases = self.cases[scenario.name]
        answers = answer.get("cases") if isinstance(answer, dict) else None
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise InvalidAnswer(f"expected one placement for each of the {len(cases)} cases")
        pressures = []
        rows = io.StringIO()
        table = csv.writer(rows, lineterminator="\n")
        table.writerow(["case", "gpus", "models", "max_kvpr", "busiest_gpu", "busiest_gpu_models"])
        for number, (case, placed) in enumerate(zip(cases, answers, strict=True)):
            placement = check_placement(case, number, placed)
            by_gpu = {gpu: gpu_pressure(models) for gpu, models in placement.items()}
            busiest = max(by_gpu, key=by_gpu.__getitem__)
            pressures.append(by_gpu[busiest])
            table.writerow([number, case.gpu_num, len(case.models), repr(by_gpu[busiest]), busiest,
                            " ".join(m.name for m in placement[busiest])])
        metrics = {
            "cases": len(cases),
            "mean_max_kvpr": float(np.mean(pressures)),
            "worst_max_kvpr": max(pressures),
            "best_max_kvpr": min(pressures),
            "success_rate": 1.0,
        }
        return PrismScenarioScore(metrics=metrics, artifacts={f"{scenario.name}.cases.csv": rows.getvalue()},
                                  max_pressures=pressures)

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        pressures = [p for result in results.values() for p in _pressures(result)]
        mean = float(np.mean(pressures))
        inverse = 1.0 / mean if mean != 0 else 0.0
        success_rate = 1.0  # every case was answered with a valid placement, or the evaluation failed
        return inverse + success_rate, {"cases": len(pressures), "mean_max_kvpr": mean,
                                        "inverse_mean_max_kvpr": inverse, "success_rate": success_rate}


def _pressures(result: ScenarioScore) -> list[float]:
    if not isinstance(result, PrismScenarioScore):
        raise TypeError("scenario result without per-case pressures; combine needs PrismScenarioScore")
    return result.max_pressures
