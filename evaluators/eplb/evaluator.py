"""Trusted scoring for eplb: validate each expert mapping, measure its balancedness on the next window.

As in the reference evaluator (mit-nms/Engram, SystemBench/ADRS/eplb): the candidate plans a
mapping from window i's expert loads; the mapping is scored on window i + 1 (the load it will
actually meet). Each physical expert (replica) of a logical expert gets an equal share of that
expert's load; a layer's balancedness is mean / max replica load, and a window's balancedness is
sum over layers of the mean over sum over layers of the max. Score = mean over windows.

Differences: the windows come from a seeded synthetic generator (`workload.py`; the real
recording is not public), the arrays are numpy (torch is not needed), and the validation -- the
reference's rules, every one of which fails the evaluation -- runs here on plain data rather than
in the candidate's process.

What is scored stays hidden: the generator's seed is drawn by this side once per run and kept
out of every sandbox (`Scorer.secrets`, stored in the run directory), never taken from
`problem.yaml`; and the windows are handed to the candidate one at a time, in a conversation --
window i + 1 is sent only after the mapping for window i has come back -- so no program can read
the window it is about to be scored on, from its inputs, its caller's frames or the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

# The reference's cluster: 256 logical experts in 8 groups, 288 replicas on 4 nodes of 8 GPUs.
NUM_REPLICAS = 288
NUM_GROUPS = 8
NUM_NODES = 4
NUM_GPUS = 32


workload = load_problem_module(__file__, "workload")


@dataclass(frozen=True)
class Mapping:
    """A validated plan: which logical expert each replica serves, and replicas per expert."""

    phy2log: np.ndarray  # [layers, replicas]
    logcnt: np.ndarray  # [layers, experts]


def _dense(plain: Any, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(plain, dict) or not isinstance(plain.get("shape"), list):
        raise InvalidAnswer(f"{where}: {name} is not an array")
    if tuple(plain["shape"]) != shape:
        raise InvalidAnswer(f"{where}: {name} has shape {tuple(plain['shape'])}, expected {shape}")
    data = _integers(plain.get("data"), name, where)
    if data.size != np.prod(shape):
        raise InvalidAnswer(f"{where}: {name} holds {data.size} numbers for shape {shape}")
    return data.reshape(shape)


def _integers(data: Any, name: str, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidAnswer(f"{where}: {name} must hold integers")
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError):
        array = None
    if array is None or array.ndim != 1 or (array.dtype.kind not in "iu" and array.size):
        raise InvalidAnswer(f"{where}: {name} must hold integers")
    return array.astype(np.int64)


def _log2phy(plain: Any, layers: int, experts: int, where: str) -> np.ndarray:
    """The dense log2phy (non-listed entries -1) from its non-negative entries."""
    if not isinstance(plain, dict) or not isinstance(plain.get("shape"), list):
        raise InvalidAnswer(f"{where}: log2phy is not an array")
    shape = tuple(plain["shape"])
    if len(shape) != 3 or shape[:2] != (layers, experts):
        raise InvalidAnswer(f"{where}: log2phy has shape {shape}, expected ({layers}, {experts}, max replicas)")
    depth = shape[2]
    if not isinstance(depth, int) or not 1 <= depth <= NUM_REPLICAS:
        raise InvalidAnswer(f"{where}: log2phy's last dimension is {depth}; it must be 1..{NUM_REPLICAS}")
    positions = plain.get("positions")
    if not isinstance(positions, list) or len(positions) != 3:
        raise InvalidAnswer(f"{where}: log2phy must hold integers")
    values = _integers(plain.get("values"), "log2phy", where)
    index = [_integers(axis, "log2phy", where) for axis in positions]
    if any(len(axis) != len(values) for axis in index):
        raise InvalidAnswer(f"{where}: log2phy's entries are malformed")
    for axis, size in zip(index, shape, strict=True):
        if len(axis) and (axis.min() < 0 or axis.max() >= size):
            raise InvalidAnswer(f"{where}: log2phy's entries are malformed")
    dense = np.full(shape, -1, dtype=np.int64)
    dense[tuple(index)] = values
    return dense


def check_mapping(answer: Any, layers: int, experts: int, where: str) -> Mapping:
    """The reference's validity rules: `InvalidAnswer` naming the first one broken."""
    if not isinstance(answer, dict) or "returned" in answer:
        returned = answer.get("returned") if isinstance(answer, dict) else type(answer).__name__
        raise InvalidAnswer(f"{where}: rebalance_experts must return (phy2log, log2phy, logcnt), not {returned}")
    phy2log = _dense(answer.get("phy2log"), "phy2log", (layers, NUM_REPLICAS), where)
    logcnt = _dense(answer.get("logcnt"), "logcnt", (layers, experts), where)
    log2phy = _log2phy(answer.get("log2phy"), layers, experts, where)
    sums = logcnt.sum(axis=1)
    if (bad := np.flatnonzero(sums != NUM_REPLICAS)).size:
        raise InvalidAnswer(f"{where}, layer {bad[0]}: logcnt sums to {sums[bad[0]]}, expected {NUM_REPLICAS}")
    _first_failure(logcnt < 1, logcnt, where, "logcnt is {value}; every expert needs at least one replica")
    _first_failure(logcnt > log2phy.shape[2], logcnt, where,
                   f"logcnt is {{value}}, more than log2phy's last dimension ({log2phy.shape[2]})")
    _first_failure((phy2log < 0) | (phy2log >= experts), phy2log, where,
                   f"phy2log names logical expert {{value}} (must be 0..{experts - 1})", item="replica")
    used = np.arange(log2phy.shape[2]) < logcnt[..., None]  # the first logcnt slots of each expert
    _first_failure(used & ((log2phy < 0) | (log2phy >= NUM_REPLICAS)), log2phy, where,
                   f"log2phy holds {{value}}, not a replica index (0..{NUM_REPLICAS - 1})")
    _first_failure(~used & (log2phy >= 0), log2phy, where,
                   "log2phy holds {value} beyond logcnt (unused slots must be -1)")
    for layer in range(layers):
        replicas = log2phy[layer][used[layer]]  # exactly NUM_REPLICAS of them: logcnt sums to it
        if np.unique(replicas).size != NUM_REPLICAS:
            raise InvalidAnswer(f"{where}, layer {layer}: log2phy lists some replica twice, and so misses another")
        owners = np.nonzero(used[layer])[0]
        wrong = np.flatnonzero(phy2log[layer, replicas] != owners)
        if wrong.size:
            replica, expert = replicas[wrong[0]], owners[wrong[0]]
            raise InvalidAnswer(f"{where}, layer {layer}: log2phy gives replica {replica} to expert {expert}, "
                                f"but phy2log gives it to expert {phy2log[layer, replica]}")
    return Mapping(phy2log=phy2log, logcnt=logcnt)


def _first_failure(mask: np.ndarray, values: np.ndarray, where: str, message: str, item: str = "expert") -> None:
    if mask.any():
        first = tuple(int(i) for i in np.argwhere(mask)[0])
        detail = f"layer {first[0]}, {item} {first[1]}" + (f", slot {first[2]}" if len(first) == 3 else "")
        raise InvalidAnswer(f"{where}, {detail}: " + message.format(value=values[first]))


def replica_loads(mapping: Mapping, load: np.ndarray) -> np.ndarray:
    """Load of every replica [layers, replicas]: its logical expert's load split evenly."""
    per_replica = load.astype(np.float64) / mapping.logcnt
    return np.take_along_axis(per_replica, mapping.phy2log, axis=1)


def balancedness(loads: np.ndarray) -> float:
    """Sum over layers of the mean load over the sum over layers of the largest (the reference's)."""
    if loads.sum() == 0:
        return 0.0
    peak = loads.max(axis=1).sum()
    return float(loads.mean(axis=1).sum() / peak) if peak > 0 else 0.0


@dataclass
class EplbScenarioScore(ScenarioScore):
    """A scenario's metrics plus each window's balancedness, so `combine` can pool the windows."""

    window_balancedness: list[float] = field(default_factory=list)


class EplbScorer(Scorer):
    """Scores expert mappings on the synthetic workload's next window."""

    interactive = True

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self._windows: dict[str, np.ndarray] = {}

    def windows(self, scenario: ScenarioSpec) -> np.ndarray:
        """The scenario's windows, from the run's secret seed for it (drawn on first use)."""
        if scenario.name not in self._windows:
            seed = self.secrets.seed(f"{self.problem.name}/{scenario.name}")
            model = workload.WorkloadModel(**{**scenario.params, "seed": seed})
            self._windows[scenario.name] = workload.expert_load_windows(model)
        return self._windows[scenario.name]

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {"name": scenario.name}

    def run_scenario(self, scenario: ScenarioSpec, channel: Any) -> EplbScenarioScore:
        windows = self.windows(scenario)
        _, layers, experts = windows.shape
        expert_scores, gpu_scores = [], []
        for number in range(len(windows) - 1):
            plan = channel.request({"type": "rebalance", "window": number, "windows": len(windows) - 1,
                                    "weight": windows[number].tolist(), "num_replicas": NUM_REPLICAS,
                                    "num_groups": NUM_GROUPS, "num_nodes": NUM_NODES, "num_gpus": NUM_GPUS})
            mapping = check_mapping(plan, layers, experts, f"window {number}")
            loads = replica_loads(mapping, windows[number + 1])
            expert_scores.append(balancedness(loads))
            gpu_scores.append(balancedness(loads.reshape(layers, NUM_GPUS, -1).sum(axis=2)))
        metrics = {
            "balancedness": float(np.mean(expert_scores)),
            "min_balancedness": min(expert_scores),
            "gpu_balancedness": float(np.mean(gpu_scores)),
            "windows": len(expert_scores),
        }
        return EplbScenarioScore(metrics=metrics, window_balancedness=expert_scores)

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        scores = [s for result in results.values() for s in _window_scores(result)]
        mean = float(np.mean(scores))
        return mean, {"balancedness": mean, "windows": len(scores)}


def _window_scores(result: ScenarioScore) -> list[float]:
    if not isinstance(result, EplbScenarioScore):
        raise TypeError("scenario result without per-window scores; combine needs EplbScenarioScore")
    return result.window_balancedness
