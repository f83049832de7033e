"""The prism problem: the reference's cases and scores, and placements that break the rules fail.

Scores were measured with the reference evaluator itself (mit-nms/Engram, SystemBench/ADRS/prism)
on the same program files; ours must agree to the last bit. The hostile programs target exactly
the holes of the reference: an overfull GPU, a model left out, a model placed twice, a case
skipped by raising, and invented `Model` objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import BACKENDS, REPO, evaluator_on, require_backend
from engram_runs import run

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, list_problems, load_problem
from engram.sandbox import get_sandbox

# The reference evaluator's combined_score for these files (initial, its best program, its naive one).
REFERENCE_SCORES = {
    "initial_program": 21.891622105209393,
    "lookahead_local_search": 25.71806496921267,
    "first_fit": 1.0000031249889527,
}

# Places each model on the lowest-pressure GPU that fits (the initial program's rule), then breaks
# one rule in the first case only.
HONEST_THEN = '''
def compute_model_placement(gpu_num, models):
    placement = {g: [] for g in range(gpu_num)}
    free = [80] * gpu_num
    demand = [0.0] * gpu_num
    for m in sorted(models, key=lambda m: m.req_rate / m.slo, reverse=True):
        g = min((g for g in range(gpu_num) if m.model_size <= free[g]), key=lambda g: demand[g] / free[g])
        placement[g].append(m)
        free[g] -= m.model_size
        demand[g] += m.req_rate / m.slo
    first = models[0].cur_gpu_id == 0 and not hasattr(compute_model_placement, "done")
    compute_model_placement.done = True
    if first:
{attack}
    return placement
'''

ATTACKS = {
    "overfull_gpu": ("        placement = {0: list(models), **{g: [] for g in range(1, gpu_num)}}",
                     "GPU 0 holds"),
    "model_left_out": ("        placement[0] = placement[0][1:]", "not placed on any GPU"),
    "model_placed_twice": ("        placement[1].append(placement[0][0])", "is placed twice"),
    "invented_light_models": ("        for g in placement:\n"
                              "            placement[g] = [Model(m.model_name + 'x', 0, 0, 1, 0)\n"
                              "                            for m in placement[g]]",
                              "not one of the case's models"),
    "unknown_gpu": ("        placement[gpu_num] = placement.pop(0)", "does not exist"),
    "not_a_dict": ("        return None", "not NoneType"),
}


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("prism")


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, time_limit_s=60)


def _source(problem: Problem, name: str) -> str:
    path = problem.initial_program if name == "initial_program" else problem.baselines()[name]
    return path.read_text()


def test_cases_are_the_references(problem: Problem):
    cases = problem.make_scorer().cases["seed42"]
    assert len(cases) == 50
    # As printed by the reference's generate_test_gpu_models(): first and last draws.
    assert cases[0].gpu_num == 8
    assert [(m.size, m.req_rate, m.slo) for m in cases[0].models[:2]] == [(24, 8, 9), (16, 3, 7)]
    assert cases[49].gpu_num == 5 and (cases[49].models[-1].size, cases[49].models[-1].slo) == (20, 9)
    assert all(len(c.models) == 2 * c.gpu_num and all(10 <= m.size < 30 for m in c.models) for c in cases)


@pytest.mark.parametrize("backend", BACKENDS)
def test_engram_evaluate_gives_the_reference_score(backend: str, problem: Problem):
    require_backend(backend)
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "prism", str(problem.initial_program),
                           "--sandbox", backend, "--json"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["score"] == REFERENCE_SCORES["initial_program"]
    assert result["metrics"]["success_rate"] == 1.0 and result["metrics"]["cases"] == 50


def test_baselines_score_what_the_reference_gives_them(evaluator: CandidateEvaluator, problem: Problem):
    assert set(problem.baselines()) == {"first_fit", "lookahead_local_search"}
    for name in problem.baselines():
        result = evaluator.evaluate(_source(problem, name))
        assert result.ok, result.error
        assert result.score == REFERENCE_SCORES[name], name


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_placements_that_break_the_rules_fail(evaluator: CandidateEvaluator, attack: str):
    code, message = ATTACKS[attack]
    result = evaluator.evaluate(HONEST_THEN.replace("{attack}", code))
    assert not result.ok
    assert result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "case 0" in result.error and message in result.error


def test_the_honest_part_of_the_attacks_is_valid(evaluator: CandidateEvaluator):
    result = evaluator.evaluate(HONEST_THEN.replace("{attack}", "        pass"))
    assert result.ok and result.score == REFERENCE_SCORES["initial_program"]


def test_skipping_the_hardest_case_fails_instead_of_paying(evaluator: CandidateEvaluator, problem: Problem):
    """In the reference, raising on the worst case raised the score (the KVPR mean skips it)."""
    skipper = _source(problem, "initial_program") + '''
_plain = compute_model_placement


def compute_model_placement(gpu_num, models):
    placement = _plain(gpu_num, models)
    worst = max(sum(m.req_rate / m.slo for m in ms) / (80 - sum(m.model_size for m in ms)) for ms in placement.values())
    if worst > 0.066:
        raise ValueError("too hard")
    return placement
'''
    result = evaluator.evaluate(skipper)
    assert not result.ok and result.error_kind == ErrorKind.RUNTIME
    assert "too hard" in result.error and "while placing case" in result.error


def test_editing_models_changes_nothing(evaluator: CandidateEvaluator, problem: Problem):
    shrinker = _source(problem, "initial_program") + '''
_plain = compute_model_placement


def compute_model_placement(gpu_num, models):
    placement = _plain(gpu_num, models)
    for m in models:
        m.model_size, m.req_rate = 1, 0
    return placement
'''
    result = evaluator.evaluate(shrinker)
    assert result.ok and result.score == REFERENCE_SCORES["initial_program"]


def test_held_out_seed_and_listing(problem: Problem):
    assert {"prism", "txn_scheduling", "eplb"} <= {p.name for p in list_problems()}
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["all"]) as ev:
        result = ev.evaluate(problem.initial_program)
    assert result.ok and list(result.scenarios) == ["seed42", "seed7"]
    assert result.metrics["cases"] == 100
    assert result.score == pytest.approx(1 / result.metrics["mean_max_kvpr"] + 1)


def test_the_scripted_spec_runs_the_engram_method(tmp_path):
    outcome = run(REPO / "specs" / "prism_scripted.yaml", [f"output.dir={tmp_path}", "sandbox.backend=process"])
    seed = outcome.run_dir / "seed-0"
    result = json.loads((seed / "result.json").read_text())
    assert result["evaluations"] == 3 and result["best_score"] == REFERENCE_SCORES["lookahead_local_search"]
    events = [json.loads(line) for line in (seed / "events.jsonl").read_text().splitlines()]
    kinds = [e["error_kind"] for e in events if e["type"] == "experiment"]
    assert kinds == [None, "invalid_output", None]  # dropping a model is rejected
