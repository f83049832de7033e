"""Trusted scoring for llm_routing: simulate the cluster here, ask the sandboxed scheduler at each decision.

The simulator (`simulator.py` beside this file) runs in Engram's process. At every decision it
sends the candidate the cluster's state as plain data over the channel and receives
`[replica_id, request_id]` pairs, which it validates before they take effect. Latencies are
measured on the simulator's own clock from its own copy of the trace, so nothing the candidate
does inside its process -- printing numbers, patching modules, rewriting its view of requests --
reaches the score. Score = 20 / mean end-to-end latency (s) over every request of the scenarios
run, as in the reference evaluator (which scored one trace this way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

SCORE_NUMERATOR_S = 20.0
"""The reference's score is 20 / mean latency in seconds: about 0.37 for its initial program."""


simulator = load_problem_module(__file__, "simulator")


@dataclass
class RoutingScenarioScore(ScenarioScore):
    """A scenario's metrics plus its per-request latencies, so `combine` can pool the scenarios."""

    e2e_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)


def profile_path(config: Any) -> str:
    return f"llm_routing/profiling/{config.gpu}/{config.model}/mlp.csv"


class LLMRoutingScorer(Scorer):
    """Replays each scenario's trace through the simulated cluster, with the candidate routing."""

    interactive = True

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.configs: dict[str, Any] = {}
        self.traces: dict[str, list[tuple[float, int, int]]] = {}
        self.executions: dict[tuple[str, str, int], Any] = {}
        for scenario in problem.config.scenarios:
            config = simulator.ClusterConfig.from_params(scenario.params)
            self.configs[scenario.name] = config
            trace = simulator.read_trace(str(problem.data_file(scenario.params["trace"])))
            if "qps" in scenario.params:  # a rate derived from a published trace (simulator.rescale_trace)
                factor = float(scenario.params["trace_qps"]) / float(scenario.params["qps"])
                trace = simulator.rescale_trace(trace, factor, float(scenario.params.get("duration_s", 300.0)))
            self.traces[scenario.name] = trace

    def execution(self, config: Any) -> Any:
        """The execution-time model for a GPU, model and chunk size, built once (on first use)."""
        key = (config.gpu, config.model, config.chunk_size)
        if key not in self.executions:
            self.executions[key] = simulator.ExecutionModel(str(self.problem.data_file(profile_path(config))), config)
        return self.executions[key]

    # -- Scorer interface -----------------------------------------------------------------------

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {}  # interactive: everything travels over the channel

    def start_message(self, scenario: ScenarioSpec) -> dict[str, Any]:
        """What the candidate learns once per scenario: the cluster's fixed settings and a seed."""
        config = self.configs[scenario.name]
        return {
            "type": "start", "scenario": scenario.name, "num_replicas": config.replicas,
            "seed": int(scenario.params.get("seed", 0)),
            "replica": {"num_blocks": config.num_blocks, "block_size": config.block_size,
                        "watermark_blocks": config.watermark_blocks, "batch_size_cap": config.batch_size_cap,
                        "chunk_size": config.chunk_size, "gpu": config.gpu, "model": config.model},
        }

    def simulate(self, scenario: ScenarioSpec, scheduler: Any, *, check_invariants: bool = False) -> Any:
        """Run one scenario with `scheduler(message) -> reply`; raises `InvalidAnswer` for bad replies."""
        config = self.configs[scenario.name]
        run = simulator.Simulation(config, self.execution(config), self.traces[scenario.name],
                                   check_invariants=check_invariants)
        try:
            return run.run(scheduler)
        except simulator.InvalidAssignment as exc:
            raise InvalidAnswer(str(exc)) from None

    def run_scenario(self, scenario: ScenarioSpec, channel: Any) -> RoutingScenarioScore:
        channel.request(self.start_message(scenario))
        result = self.simulate(scenario, channel.request)
        return RoutingScenarioScore(
            metrics=simulator.summarize(result),
            artifacts={f"{scenario.name}.requests.csv": simulator.requests_csv(result)},
            e2e_s=[r.done_at - r.arrived_at for r in result.requests],
            ttft_s=[r.first_token_at - r.arrived_at for r in result.requests],
        )

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        """Pool every request of every scenario: the mean over all of them (so a scenario weighs by
        its number of requests) and the 99th percentile of the pooled latencies."""
        e2e = np.concatenate([np.asarray(_latencies(r, "e2e_s")) for r in results.values()])
        ttft = np.concatenate([np.asarray(_latencies(r, "ttft_s")) for r in results.values()])
        mean = float(e2e.mean())
        totals = {
            "requests": int(e2e.size),
            "mean_e2e_s": mean,
            "p99_e2e_s": float(np.percentile(e2e, 99)),
            "mean_ttft_s": float(ttft.mean()),
            "p99_ttft_s": float(np.percentile(ttft, 99)),
            "preemptions": int(sum(r.metrics["preemptions"] for r in results.values())),
        }
        return SCORE_NUMERATOR_S / mean, totals


def _latencies(result: ScenarioScore, name: str) -> list[float]:
    values = getattr(result, name, None)
    if not values:
        raise TypeError(f"scenario result without per-request {name}; combine needs RoutingScenarioScore")
    return values
