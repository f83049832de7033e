"""Trusted scoring for cant_be_late_multi: replay the candidate's recorded regions and requests here.

The candidate's strategy runs in the sandbox, inside a copy of the reference's simulation loop
(`adapter.py`), and sends back, per tick and trace set, the region its instance is in after the
step and its request. `replay` re-derives progress, restart overheads, preemptions and dollars
from the verified traces with the reference simulator's rules (mit-nms/Engram,
`SystemBench/ADRS/cant-be-late-multi/simulator/sky_spot`), so the cost is computed by trusted code
only. Rejected: spot requested where spot is unavailable, an unknown region or request, requests
that end before the job is done, run past a trace's end, or finish more than one tick after the
deadline (the reference's deadline guard can itself overshoot by a tick: it keeps a spot instance
at the last moment, and if spot is gone at the next tick, that tick is lost).

As in the reference, a spot instance keeps running when the strategy moves it to another region
that has spot (no restart overhead), and the whole run is priced with the on-demand and spot
prices of the region the instance ends in. Score = -(mean over the scenarios of each scenario's
mean cost), the reference's `combined_score`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems import data as data_files
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

ARCHIVE = "adrs/cant-be-late-multi/real_traces.tar.gz"
ON_DEMAND_PRICE = 3.06
DONE_EPSILON = 1e-8
OVERHEAD_EPSILON = 1e-3
REQUESTS = ("S", "O", "N")


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
class RegionTrace:
    gap: int
    unavailable: bytes
    prices: list[float]

    @property
    def spot_price(self) -> float:
        """The reference prices a region's spot instance at the first price of its trace."""
        return float(self.prices[0])


@dataclass(frozen=True)
class Outcome:
    cost: float
    finish_tick: int
    switches: int
    spot_ticks: int
    on_demand_ticks: int
    gap: int

    @property
    def finish_h(self) -> float:
        """When the job was seen done, in hours from the start."""
        return self.finish_tick * self.gap / 3600


def replay(regions: str, requests: str, traces: list[RegionTrace], job: Job) -> Outcome:
    """Run the reference's loop on the recorded regions and requests and return what it costs."""
    if len(regions) != len(requests):
        raise InvalidAnswer(f"{len(regions)} regions for {len(requests)} requests")
    gap = traces[0].gap
    region, running, overhead, done = 0, "N", 0.0, 0.0
    charged: list[str] = []
    switches = 0
    for tick, (region_code, request) in enumerate(zip(regions, requests, strict=True)):
        has_spot = _spot(traces, region, tick)
        last = running
        charged.append(last)
        if last != "N":
            worked = max(gap - overhead, 0)
            overhead -= gap - worked
            if overhead < OVERHEAD_EPSILON:
                overhead = 0
            done += min(worked, job.duration_s - done)
        if not region_code.isdigit() or int(region_code) >= len(traces):
            raise InvalidAnswer(f"tick {tick}: unknown region {region_code!r} (0..{len(traces) - 1})")
        switches += int(region_code) != region
        region = int(region_code)
        if request not in REQUESTS:
            raise InvalidAnswer(f"tick {tick}: unknown request {request!r} (S spot, O on-demand, N none)")
        if request == "S" and not _spot(traces, region, tick):
            raise InvalidAnswer(f"tick {tick}: asked for spot in region {region}, where spot is unavailable")
        current = "N" if last == "S" and not has_spot else last
        if current != request and request != "N":
            overhead = job.overhead_s
        running = request
        if job.duration_s - done <= DONE_EPSILON:
            if (tick - 1) * gap > job.deadline_s:  # one tick of grace: the reference's guard can overshoot
                raise InvalidAnswer(f"the job finished at {tick * gap / 3600:.2f} h, after its deadline of "
                                    f"{job.deadline_s / 3600:g} h")
            prices = {"O": ON_DEMAND_PRICE, "S": traces[region].spot_price, "N": 0.0}
            return Outcome(cost=sum(prices[kind] * gap / 3600 for kind in charged), finish_tick=tick,
                           switches=switches, spot_ticks=charged.count("S"), on_demand_ticks=charged.count("O"),
                           gap=gap)
    raise InvalidAnswer(f"the requests end after {len(requests)} ticks, but the job is not done "
                        f"({done / 3600:.3f} of {job.duration_s / 3600:g} h of work)")


def _spot(traces: list[RegionTrace], region: int, tick: int) -> bool:
    unavailable = traces[region].unavailable
    if tick >= len(unavailable):
        raise InvalidAnswer(f"tick {tick}: the job ran past the end of region {region}'s trace "
                            f"({len(unavailable)} ticks) without finishing")
    return not unavailable[tick]


@dataclass
class ScenarioCosts(ScenarioScore):
    """A scenario's metrics plus its mean cost as the reference sums it, for `combine`."""

    mean_cost: float = 0.0


class CantBeLateMultiScorer(Scorer):
    """Loads the scenarios' traces once, then replays each candidate's decisions on them."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        entry = next(e for e in problem.config.data if e.path == ARCHIVE)
        root = data_files.unpacked(entry, trace_index.SHA256)
        self.traces: dict[str, RegionTrace] = {}
        for member in trace_index.SHA256:
            trace = json.loads((root / member).read_text(encoding="utf-8"))
            self.traces[member] = RegionTrace(gap=trace["metadata"]["gap_seconds"],
                                              unavailable=bytes(1 if v else 0 for v in trace["data"]),
                                              prices=trace["prices"])

    def trace_sets(self, scenario: ScenarioSpec) -> list[list[str]]:
        params = scenario.params
        return [[f"{trace_index.FOLDER}/{region}/{index}.json" for region in params["regions"]]
                for index in params["traces"]]

    def shared_input(self) -> dict[str, Any]:
        return {"traces": {name: {"gap_seconds": trace.gap, "unavailable": "".join(map(str, trace.unavailable)),
                                  "prices": trace.prices}
                           for name, trace in self.traces.items()}}

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        params = scenario.params
        return {"duration_hours": params["duration_hours"], "deadline_hours": params["deadline_hours"],
                "overhead_hours": params["overhead_hours"], "regions": params["regions"],
                "trace_sets": self.trace_sets(scenario)}

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> ScenarioCosts:
        trace_sets = self.trace_sets(scenario)
        if not isinstance(answer, list) or len(answer) != len(trace_sets):
            raise InvalidAnswer(f"expected a list of one record per trace set ({len(trace_sets)})")
        job = Job.of(scenario.params)
        outcomes = []
        for names, record in zip(trace_sets, answer, strict=True):
            if (not isinstance(record, dict) or not isinstance(record.get("regions"), str)
                    or not isinstance(record.get("requests"), str)):
                raise InvalidAnswer("each record must hold a 'regions' and a 'requests' string")
            try:
                outcomes.append(replay(record["regions"], record["requests"], [self.traces[n] for n in names], job))
            except InvalidAnswer as exc:
                raise InvalidAnswer(f"trace set {names[0].rsplit('/', 1)[-1]}: {exc}") from None
        total = 0
        for outcome in outcomes:
            total += outcome.cost
        mean = total / len(outcomes)
        costs = [o.cost for o in outcomes]
        metrics = {
            "mean_cost": mean, "std_cost": float(np.std(costs)), "min_cost": min(costs), "max_cost": max(costs),
            "trace_sets": len(outcomes), "mean_finish_h": float(np.mean([o.finish_h for o in outcomes])),
            "region_switches": sum(o.switches for o in outcomes),
            "spot_share": sum(o.spot_ticks for o in outcomes) / max(1, sum(o.spot_ticks + o.on_demand_ticks
                                                                          for o in outcomes)),
        }
        return ScenarioCosts(metrics=metrics, mean_cost=mean)

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        order = [s.name for s in self.problem.config.scenarios if s.name in results]
        means = [_mean_cost(results[name]) for name in order]
        average = sum(means) / len(means)
        return -average, {"scenarios": len(means), "mean_cost": average}


def _mean_cost(result: ScenarioScore) -> float:
    if not isinstance(result, ScenarioCosts):
        raise TypeError("scenario result without its mean cost; combine needs ScenarioCosts")
    return result.mean_cost
