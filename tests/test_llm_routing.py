"""The llm_routing problem: the trusted cluster simulator, its baselines, and hostile schedulers.

The simulator runs in the trusted process; the candidate's scheduler answers over the channel.
In-process tests drive the simulator with the adapter and a program directly (the same code path
as the sandbox, minus the sandbox) to check its invariants and determinism; the rest go through
the real evaluation pipeline under both sandbox backends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS, evaluator_on, private_data_mirror, require_backend

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import Limits, get_sandbox

RATES = ["sharegpt_6qps", "sharegpt_7.5qps", "sharegpt_9qps"]
RANKING = ["random_routing", "round_robin", "lor", "llq"]  # worst to best, as in the paper

HOLDING = '''
class CustomGlobalScheduler(BaseGlobalScheduler):
    """Routes a request only to a replica with no pending request, holding the rest."""

    def schedule(self):
        free = [i for i, r in self._replica_schedulers.items() if r.num_pending_requests == 0]
        assignments = []
        for request in self._request_queue:
            if not free:
                break
            assignments.append((free.pop(0), request))
        return assignments
'''


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("llm_routing")


@pytest.fixture(scope="module")
def scorer(problem: Problem) -> Any:
    return problem.make_scorer()


@pytest.fixture(scope="module")
def llq_source(problem: Problem) -> str:
    return problem.initial_program.read_text()


def _load_adapter(problem: Problem) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("llm_routing_adapter_under_test", problem.adapter_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulate_in_process(problem: Problem, scorer: Any, source: str, scenario_name: str, *,
                        check_invariants: bool = False) -> Any:
    """Run a scenario with the program's scheduler in this process, messages round-tripped via JSON."""
    adapter = _load_adapter(problem)
    module = types.ModuleType("candidate")
    module.__dict__.update(adapter.namespace(None))
    exec(compile(source, "<candidate>", "exec"), module.__dict__)
    entry = module.CustomGlobalScheduler
    scenario = next(s for s in problem.config.scenarios if s.name == scenario_name)
    adapter.handle(entry, scorer.start_message(scenario), None)

    def ask(message: dict) -> Any:
        return json.loads(json.dumps(adapter.handle(entry, json.loads(json.dumps(message)), None)))

    return scorer.simulate(scenario, ask, check_invariants=check_invariants)


def _outcome(result: Any) -> list[tuple[int, int, float, float, int]]:
    return [(r.id, r.replica.id, r.first_token_at, r.done_at, r.restarts) for r in result.requests]


# -- the simulator itself -------------------------------------------------------------------------


def test_the_cluster_is_the_papers(scorer: Any):
    config = scorer.configs["sharegpt_6qps"]
    model = config.model_spec
    assert (config.gpu, config.replicas, config.block_size, config.batch_size_cap) == ("a10", 4, 16, 128)
    assert model.parameters == 8_030_261_248  # Llama-3-8B, counted from its shape
    assert model.kv_bytes_per_token == 128 * 1024
    assert config.num_blocks == 2240 and config.watermark_blocks == 22  # the reference's cache
    assert len(scorer.traces["sharegpt_6qps"]) == 2086 and len(scorer.traces["sharegpt_9qps"]) == 2951
    assert len(scorer.traces["sharegpt_7.5qps"]) == 2560


def test_the_papers_rate_is_made_as_the_public_traces_are(problem: Problem, scorer: Any):
    """Every public trace is the 12 queries/s trace with its arrivals stretched by 12 / rate and cut at
    300 s; the 7.5 queries/s scenario is made that way, and the same recipe gives back the 6 and 9."""
    from evaluators.llm_routing import simulator

    twelve = simulator.read_trace(str(problem.data_file("llm_routing/traces/sharegpt_12.0.csv")))
    for name, rate in (("sharegpt_6qps", 6.0), ("sharegpt_9qps", 9.0)):
        derived = simulator.rescale_trace(twelve, 12.0 / rate, 300.0)
        shipped = scorer.traces[name]
        assert [row[1:] for row in derived] == [row[1:] for row in shipped]
        assert max(abs(a[0] - b[0]) for a, b in zip(derived, shipped, strict=True)) < 1e-9
    assert scorer.traces["sharegpt_7.5qps"] == simulator.rescale_trace(twelve, 1.6, 300.0)
    assert [s.name for s in problem.select_scenarios(None)] == ["sharegpt_7.5qps"]  # the paper's rate


def test_vidurs_semantics_by_default_and_the_first_model_as_settings(scorer: Any):
    """Defaults as Vidur: no CPU overhead, no embedding or LM head, the prompt alone reserved at
    admission; the scheduler is also asked at completions while requests wait (the reference's task)."""
    import dataclasses

    from evaluators.llm_routing import simulator

    vidur = scorer.configs["sharegpt_6qps"]
    assert (vidur.cpu_overhead, vidur.embedding_and_lm_head, vidur.reserve_first_token) == (False, False, False)
    assert vidur.schedule_on_completion
    first = dataclasses.replace(vidur, cpu_overhead=True, embedding_and_lm_head=True)
    profile = str(scorer.problem.data_file("llm_routing/profiling/a10/meta-llama/Meta-Llama-3-8B/mlp.csv"))
    plain, full = simulator.ExecutionModel(profile, vidur), simulator.ExecutionModel(profile, first)
    extra = full.iteration_ms(10, 10 * 500, [(200, 0)], 11) - plain.iteration_ms(10, 10 * 500, [(200, 0)], 11)
    lm_head = full.lm_head_ms(11)
    cpu = simulator.CPU_OVERHEAD_MS + 11 * simulator.CPU_OVERHEAD_PER_SEQUENCE_MS
    assert lm_head > 2 and extra == pytest.approx(lm_head + cpu + full.linear_ms[210] - plain.linear_ms[210])


def test_iteration_times_come_from_the_profile(scorer: Any):
    a10 = scorer.execution(scorer.configs["sharegpt_6qps"])
    a100 = scorer.execution(scorer.configs["a100_sharegpt_12qps"])
    table = a10.linear_ms
    assert table[1] == pytest.approx(30.45, abs=0.05)  # 32 layers of the A10's measured operators
    assert table[4096] == pytest.approx(920.6, abs=0.5)
    assert a10.profile_max_tokens == 4096
    step = table[8192] - table[8191]
    assert 0.2 < step < 0.3 and table[6000] - table[5000] == pytest.approx(1000 * step)  # linear beyond 4096
    assert a100.linear_ms[4096] < table[4096] / 3
    # Decode attention reads the KV cache: longer contexts cost more; prefill attention is quadratic.
    assert a10.iteration_ms(64, 64 * 2000, [], 64) > a10.iteration_ms(64, 64 * 100, [], 64) + 10
    assert a10.prefill_attention_ms(4000, 0) > 3 * a10.prefill_attention_ms(2000, 0)


def test_every_request_finishes_within_memory(problem: Problem, scorer: Any, llq_source: str):
    result = simulate_in_process(problem, scorer, llq_source, "sharegpt_9qps", check_invariants=True)
    assert all(r.state == 4 for r in result.requests)  # DONE
    assert max(result.peak_allocated_blocks) <= result.num_blocks
    assert sum(r.restarts for r in result.requests) > 0  # the preemption path was exercised
    for r in result.requests:
        assert r.arrived_at <= r.assigned_at <= r.first_token_at <= r.done_at
    assert sum(rep.assigned for rep in result.replicas) == len(result.requests)


def test_held_requests_are_offered_again_when_requests_finish(problem: Problem, scorer: Any):
    result = simulate_in_process(problem, scorer, HOLDING, "sharegpt_6qps", check_invariants=True)
    assert all(r.state == 4 for r in result.requests)
    assert result.calls > len(result.requests)  # arrivals plus completions while requests waited
    assert any(r.assigned_at > r.arrived_at for r in result.requests)


def test_the_simulation_is_deterministic(problem: Problem, scorer: Any):
    source = problem.baselines()["random_routing"].read_text()
    first = simulate_in_process(problem, scorer, source, "sharegpt_6qps")
    second = simulate_in_process(problem, scorer, source, "sharegpt_6qps")
    assert _outcome(first) == _outcome(second)


def test_the_optional_a100_scenario_runs(problem: Problem, scorer: Any, llq_source: str):
    result = simulate_in_process(problem, scorer, llq_source, "a100_sharegpt_12qps")
    assert all(r.state == 4 for r in result.requests) and len(result.requests) == 3973
    assert result.num_blocks > 10 * 2240


# -- through the sandbox ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_evaluator(problem: Problem) -> Iterator[CandidateEvaluator]:
    require_backend("bwrap")  # process may refuse a problem with hidden data (see conftest)
    with private_data_mirror(problem), CandidateEvaluator(problem, get_sandbox("bwrap", quiet=True),
                                                          scenarios=["rates"]) as ev:
        yield ev


@pytest.fixture(scope="module")
def baseline_results(problem: Problem, paper_evaluator: CandidateEvaluator) -> dict[str, Any]:
    return {name: paper_evaluator.evaluate(problem.baselines()[name]) for name in RANKING}


def test_baselines_rank_as_in_the_paper_on_every_rate(baseline_results: dict[str, Any]):
    for result in baseline_results.values():
        assert result.ok, result.error
        assert set(result.scenarios) == set(RATES)
    for scenario in RATES:
        means = [baseline_results[name].scenarios[scenario].metrics["mean_e2e_s"] for name in RANKING]
        assert means == sorted(means, reverse=True) and len(set(means)) == 4, (scenario, means)
    scores = [baseline_results[name].score for name in RANKING]
    assert scores == sorted(scores)
    # The spread as well as the order: the paper has LLQ 17 % below random at 7.5 queries/s.
    at_paper_rate = {name: baseline_results[name].scenarios["sharegpt_7.5qps"].metrics["mean_e2e_s"]
                     for name in RANKING}
    assert at_paper_rate["llq"] < 0.9 * at_paper_rate["random_routing"]


def test_the_score_pools_every_request(baseline_results: dict[str, Any]):
    result = baseline_results["llq"]
    counts = {name: result.scenarios[name].metrics["requests"] for name in RATES}
    pooled = sum(counts[n] * result.scenarios[n].metrics["mean_e2e_s"] for n in RATES) / sum(counts.values())
    assert result.metrics["requests"] == 2086 + 2560 + 2951
    assert result.metrics["mean_e2e_s"] == pytest.approx(pooled)
    assert result.score == pytest.approx(20 / pooled)
    for name in RATES:
        metrics = result.scenarios[name].metrics
        assert sum(metrics[f"requests_r{i}"] for i in range(4)) == metrics["requests"]
        assert metrics["p99_e2e_s"] > metrics["mean_e2e_s"] > metrics["mean_ttft_s"] > 0


def test_the_initial_program_is_llq_and_scores_the_same_again(problem: Problem, paper_evaluator: CandidateEvaluator,
                                                              baseline_results: dict[str, Any]):
    again = paper_evaluator.evaluate(problem.initial_program)
    assert again.ok and again.score == baseline_results["llq"].score
    assert again.metrics == baseline_results["llq"].metrics


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    """The 6 qps scenario only, once per backend: enough for the hostile candidates."""
    limits = Limits(wall_seconds=60, memory_bytes=2 * 1024**3, max_processes=32)
    yield from evaluator_on(request, problem, scenarios=["sharegpt_6qps"], limits=limits)


@pytest.fixture(scope="module")
def honest(problem: Problem, scorer: Any, llq_source: str) -> float:
    """LLQ's mean latency on the 6 qps scenario, simulated in this process."""
    result = simulate_in_process(problem, scorer, llq_source, "sharegpt_6qps")
    return sum(r.done_at - r.arrived_at for r in result.requests) / len(result.requests)


def _mean(result: Any) -> float:
    assert result.ok, result.error
    return result.scenarios["sharegpt_6qps"].metrics["mean_e2e_s"]


def test_both_backends_score_what_the_simulator_computes(evaluator: CandidateEvaluator, llq_source: str,
                                                         honest: float):
    result = evaluator.evaluate(llq_source)
    assert _mean(result) == pytest.approx(honest, rel=1e-12)
    assert result.score == pytest.approx(20 / honest, rel=1e-12)
    assert result.scenarios["sharegpt_6qps"].candidate_seconds > 0


FORGED = {
    "unknown replica": ("return [(4, r) for r in self._request_queue]", "names replica 4, but the replicas are 0..3"),
    "negative replica": ("return [(-1, r) for r in self._request_queue]", "names replica -1"),
    "replica not an int": ("return [('0', r) for r in self._request_queue]", "integer replica id"),
    "assigned twice in one reply": ("r = self._request_queue[0]\n        return [(0, r), (1, r)]",
                                    "assigned twice in one reply"),
    "assigned again later": ("self.__dict__.setdefault('old', []).extend(self._request_queue)\n"
                             "        return [(0, r) for r in self.old]", "which was already assigned earlier"),
    "a request that has not arrived": ("return [(0, 10**6)]", "is not a request in the global queue"),
    "not a list": ("return {0: 1}", "must return a list"),
    "never routed": ("return [(0, r) for r in self._request_queue if r.id != 0]", "never assigned"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_answers_are_invalid(evaluator: CandidateEvaluator, case: str):
    body, message = FORGED[case]
    source = f"class CustomGlobalScheduler(BaseGlobalScheduler):\n    def schedule(self):\n        {body}\n"
    result = evaluator.evaluate(source)
    assert not result.ok and result.score is None
    assert result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
    assert message in result.error


def test_patching_the_simulator_inside_the_candidate_changes_nothing(evaluator: CandidateEvaluator,
                                                                      llq_source: str, honest: float):
    attack = '''
import importlib.util, json, os, sys
here = os.path.dirname(sys.modules["engram_problem_adapter"].__file__)
for name in ("simulator", "evaluator"):
    try:
        spec = importlib.util.spec_from_file_location("engram_problem_llm_routing_" + name,
                                                      os.path.join(here, name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        print("could not load", name, exc)
        continue
    if name == "simulator":
        module.summarize = lambda result: {"mean_e2e_s": 0.001}
        module.Simulation.run = lambda self, scheduler: None
        module.ExecutionModel.iteration_ms = lambda self, *a: 0.0
    else:
        module.LLMRoutingScorer.combine = lambda self, results: (1e9, {})
_dumps = json.dumps
json.dumps = lambda obj, **kw: _dumps({**obj, "mean_e2e_s": 0.001} if isinstance(obj, dict) else obj, **kw)
'''
    assert _mean(evaluator.evaluate(attack + llq_source)) == pytest.approx(honest, rel=1e-12)


def test_reporting_fake_latencies_gains_nothing(evaluator: CandidateEvaluator, llq_source: str, honest: float):
    attack = '''
import json, os
print("mean_e2e_s: 0.001\\nscore: 20000.0")
request = json.load(open(os.path.join(os.getcwd(), "request.json")))
with open(request["answers"], "a") as out:
    out.write(json.dumps({"event": "scenario", "name": "sharegpt_6qps", "answer": [],
                          "metrics": {"mean_e2e_s": 0.001}, "score": 20000.0}) + "\\n")
'''
    result = evaluator.evaluate(attack + llq_source)
    assert _mean(result) == pytest.approx(honest, rel=1e-12)
    assert "score: 20000.0" in result.stdout


def test_rewriting_its_view_of_the_cluster_gains_nothing(evaluator: CandidateEvaluator, llq_source: str,
                                                         honest: float):
    """The candidate's view is read-only and rebuilt from the simulator's messages; its edits are its own."""
    attack = llq_source.replace("        self.sort_requests()\n", '''        self.sort_requests()
        for replica in self._replica_schedulers.values():
            replica.pending_queue.clear()
            for request in replica.active_queue + self._request_queue:
                try:
                    request._num_prefill_tokens = 0
                except AttributeError:
                    pass
                try:
                    request.__dict__["num_processed_tokens"] = 10**9
                except AttributeError:
                    pass
''')
    assert attack != llq_source
    assert _mean(evaluator.evaluate(attack)) == pytest.approx(honest, rel=1e-12)


def test_the_trace_is_out_of_reach_under_bwrap(problem: Problem):
    """Output lengths are in the trace file; the bwrap sandbox does not show the data directory."""
    require_backend("bwrap")
    trace = problem.data_file("llm_routing/traces/sharegpt_6.0.csv")
    spy = f'''
try:
    open({str(trace)!r}).read()
    print("TRACE VISIBLE")
except OSError:
    print("TRACE HIDDEN")
'''
    with CandidateEvaluator(problem, get_sandbox("bwrap", quiet=True), scenarios=["sharegpt_6qps"]) as ev:
        result = ev.evaluate(spy + problem.initial_program.read_text())
    assert result.ok and "TRACE HIDDEN" in result.stdout


def test_engram_evaluate_runs_it_and_writes_per_request_files(problem: Problem, tmp_path: Path):
    require_backend("bwrap")  # fails in CI when missing; process may refuse hidden data (see conftest)
    backend = "bwrap"
    done = subprocess.run(
        [sys.executable, "-m", "engram.cli", "evaluate", "llm_routing", str(problem.initial_program), "--json",
         "--sandbox", backend, "--scenarios", "sharegpt_6qps", "--artifacts", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["ok"] and payload["sandbox"] == backend and payload["score"] > 0
    rows = (tmp_path / "sharegpt_6qps.requests.csv").read_text().splitlines()
    assert rows[0].startswith("id,arrived_at,prompt_tokens,output_tokens,replica") and len(rows) == 2087

