"""Trusted scoring for cant_be_late: replay the candidate's recorded requests through our own simulator.

The candidate's strategy runs in the sandbox, inside a copy of the reference's simulation loop
(`adapter.py`), and sends back one request per tick and trace. Here every request string is
replayed against the verified traces by `replay`, which re-derives progress, restart overheads,
preemptions and dollars with the reference simulator's rules (mit-nms/Engram,
`SystemBench/ADRS/cant-be-late/simulator/sky_spot`), so the cost is computed by trusted code only:
a strategy that edits its own progress, prices or environment in the sandbox only changes which
requests it makes. A request string is rejected if it asks for spot while spot is unavailable,
holds an unknown request, ends before the job is done, runs past the end of the trace, or finishes
more than one tick after the deadline (the reference's deadline guard can itself overshoot by a
tick: it keeps a spot instance at the last moment, and if spot is gone at the next tick, that tick
is lost).

Score = -(mean cost + 0.25 * standard deviation of cost) over every simulation of the selected
scenarios, the reference's `combined_score`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems import data as data_files
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

ARCHIVE = "adrs/cant-be-late/real_traces.tar.gz"
ON_DEMAND_PRICE = 3.06
SPOT_PRICE = 3.06 / (3.06 / 0.9731)
"""The reference prices every trace at p3.2xlarge's $3.06/h on demand and spot at that price over
its ratio to $0.9731, computed in this order."""
STD_WEIGHT = 0.25
DONE_EPSILON = 1e-8
OVERHEAD_EPSILON = 1e-3


trace_index = load_problem_module(__file__, "trace_index")


@dataclass(frozen=True)
class Job:
    duration_s: float
    deadline_s: float
    overhead_s: float

    @classmethod
    def of(cls, params: dict[str, Any]) -> Job:
        return cls(duration_s=float(params["duration_hours"]) * 3600.0,
                   deadline_s=float(params["deadline_hours"]) * 3600,
                   overhead_s=float(params["overhead_hours"]) * 3600)


@dataclass(frozen=True)
class Outcome:
    """One simulated trace, as the trusted replay measured it."""

    cost: float
    finish_tick: int
    spot_ticks: int
    on_demand_ticks: int
    gap: int

    @property
    def finish_h(self) -> float:
        """When the job was seen done, in hours from the start."""
        return self.finish_tick * self.gap / 3600


def replay(requests: str, unavailable: bytes, gap: int, job: Job) -> Outcome:
    """Run the reference's loop on `requests` (one of S/O/N per tick) and return what it costs.

    Per tick: observe (charge the type that ran during the previous tick; a spot instance is
    preempted if spot is unavailable now), credit the previous tick's work minus any pending
    restart overhead, apply the request (a change to a running type starts a restart overhead),
    and stop once the job is done.
    """
    running = "N"
    overhead = 0.0
    done = 0.0
    charged: list[str] = []
    for tick, request in enumerate(requests):
        if tick >= len(unavailable):
            raise InvalidAnswer(f"tick {tick}: the job ran past the end of its availability trace "
                                f"({len(unavailable)} ticks) without finishing")
        has_spot = not unavailable[tick]
        last = running
        charged.append(last)
        if last != "N":
            worked = max(gap - overhead, 0)
            overhead -= gap - worked
            if overhead < OVERHEAD_EPSILON:
                overhead = 0
            done += min(worked, job.duration_s - done)
        if request not in ("S", "O", "N"):
            raise InvalidAnswer(f"tick {tick}: unknown request {request!r} (S spot, O on-demand, N none)")
        if request == "S" and not has_spot:
            raise InvalidAnswer(f"tick {tick}: asked for spot while spot is unavailable")
        current = "N" if last == "S" and not has_spot else last
        if current != request and request != "N":
            overhead = job.overhead_s
        running = request
        if job.duration_s - done <= DONE_EPSILON:
            if (tick - 1) * gap > job.deadline_s:  # one tick of grace: the reference's guard can overshoot
                raise InvalidAnswer(f"the job finished at {tick * gap / 3600:g} h, after its deadline of "
                                    f"{job.deadline_s / 3600:g} h")
            return Outcome(cost=_cost(charged, gap), finish_tick=tick, spot_ticks=charged.count("S"),
                           on_demand_ticks=charged.count("O"), gap=gap)
    raise InvalidAnswer(f"the requests end after {len(requests)} ticks, but the job is not done "
                        f"({done / 3600:.3f} of {job.duration_s / 3600:g} h of work)")


def _cost(charged: list[str], gap: int) -> float:
    """Dollars for the charged ticks, summed in order as the reference does."""
    prices = {"O": ON_DEMAND_PRICE, "S": SPOT_PRICE, "N": 0.0}
    return sum(prices[kind] * gap / 3600 for kind in charged)


@dataclass
class TraceCosts(ScenarioScore):
    """A scenario's metrics plus each trace's cost, so `combine` can pool every simulation."""

    costs: list[float] = field(default_factory=list)


class CantBeLateScorer(Scorer):
    """Loads the selected traces once, then replays each candidate's requests on them."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        entry = next(e for e in problem.config.data if e.path == ARCHIVE)
        problem.data_file(ARCHIVE)
        root = data_files.unpacked(entry, trace_index.SHA256)
        self.traces: dict[str, tuple[int, bytes]] = {}
        for member in trace_index.SHA256:
            trace = json.loads((root / member).read_text(encoding="utf-8"))
            gap = trace["metadata"]["gap_seconds"]
            self.traces[member] = (gap, bytes(1 if value else 0 for value in trace["data"]))

    def scenario_traces(self, scenario: ScenarioSpec) -> list[str]:
        return trace_index.SELECTION[f"{scenario.params['env']}|{scenario.params['delay_dir']}"]

    def shared_input(self) -> dict[str, Any]:
        return {"traces": {name: {"gap_seconds": gap, "unavailable": "".join(map(str, data))}
                           for name, (gap, data) in self.traces.items()}}

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        params = scenario.params
        return {"duration_hours": params["duration_hours"], "deadline_hours": params["deadline_hours"],
                "overhead_hours": params["overhead_hours"], "env": params["env"],
                "traces": self.scenario_traces(scenario)}

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> TraceCosts:
        names = self.scenario_traces(scenario)
        if not isinstance(answer, list) or len(answer) != len(names) or not all(isinstance(a, str) for a in answer):
            raise InvalidAnswer(f"expected a list of one request string per trace ({len(names)} traces)")
        job = Job.of(scenario.params)
        outcomes = []
        for name, requests in zip(names, answer, strict=True):
            gap, unavailable = self.traces[name]
            try:
                outcomes.append(replay(requests, unavailable, gap, job))
            except InvalidAnswer as exc:
                raise InvalidAnswer(f"trace {name}: {exc}") from None
        costs = [o.cost for o in outcomes]
        metrics = {
            "mean_cost": float(np.mean(costs)), "std_cost": float(np.std(costs)),
            "min_cost": float(np.min(costs)), "max_cost": float(np.max(costs)), "traces": len(costs),
            "mean_finish_h": float(np.mean([o.finish_h for o in outcomes])),
            "spot_share": sum(o.spot_ticks for o in outcomes) / max(1, sum(o.spot_ticks + o.on_demand_ticks
                                                                          for o in outcomes)),
        }
        return TraceCosts(metrics=metrics, costs=costs,
                          artifacts={f"{scenario.name}.costs.csv": _costs_csv(names, outcomes)})

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        order = [s.name for s in self.problem.config.scenarios if s.name in results]
        costs = np.array([c for name in order for c in _costs(results[name])])
        mean, std = float(np.mean(costs)), float(np.std(costs))
        totals = {"simulations": int(costs.size), "mean_cost": mean, "std_cost": std,
                  "min_cost": float(costs.min()), "max_cost": float(costs.max())}
        return -mean - STD_WEIGHT * std, totals


def _costs(result: ScenarioScore) -> list[float]:
    costs = getattr(result, "costs", None)
    if not costs:
        raise TypeError("scenario result without per-trace costs; combine needs TraceCosts")
    return costs


def _costs_csv(names: list[str], outcomes: list[Outcome]) -> str:
    lines = ["trace,cost,finish_tick,spot_ticks,on_demand_ticks"]
    lines += [f"{name},{o.cost!r},{o.finish_tick},{o.spot_ticks},{o.on_demand_ticks}"
              for name, o in zip(names, outcomes, strict=True)]
    return "\n".join(lines) + "\n"
