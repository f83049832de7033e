"""The cloudcast reference algorithms, run through the real evaluation pipeline.

Direct and Dijkstra must reproduce the published totals exactly; the Steiner tree and the MILP
expert must be valid, improve on them, and (for the expert) be deterministic.
"""

import os
from pathlib import Path

import pytest

from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import load_problem
from engram.sandbox import get_sandbox

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DIRECT_TOTAL = 1199.168994
DIJKSTRA_TOTAL = 1045.860405


@pytest.fixture(scope="module")
def evaluator():
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("ENGRAM_DATA_DIR"):
            patch.setenv("ENGRAM_DATA_DIR", str(SHARED_DATA))
        problem = load_problem("cloudcast")
        with CandidateEvaluator(problem, get_sandbox("process", quiet=True)) as ev:
            yield ev


@pytest.fixture(scope="module")
def evaluate(evaluator):
    """Evaluate a baseline by name, once per module (the expert's determinism test reruns it)."""
    cache = {}
    baselines = evaluator.problem.baselines()

    def run(name, *, fresh=False):
        if fresh or name not in cache:
            cache[name] = evaluator.evaluate(baselines[name])
        return cache[name]

    return run


def _check_valid(result):
    assert result.ok, result.error
    assert set(result.scenarios) == {"intra_aws", "intra_azure", "intra_gcp", "inter_agz", "inter_gaz2"}
    for name, scenario in result.scenarios.items():
        assert scenario.ok, (name, scenario.error)
        assert scenario.metrics["validity_pct"] == 100
    total = sum(s.metrics["cost"] for s in result.scenarios.values())
    assert result.metrics["total_cost"] == pytest.approx(total)
    assert result.score == pytest.approx(1 / (1 + result.metrics["total_cost"]))
    return result.metrics["total_cost"]


def test_baselines_are_listed(evaluator):
    assert {"direct", "dijkstra", "steiner_tree", "expert_milp"} <= set(evaluator.problem.baselines())


def test_direct_matches_published_total(evaluate):
    result = evaluate("direct")
    _check_valid(result)
    assert round(result.metrics["total_cost"], 6) == DIRECT_TOTAL
    assert result.score == pytest.approx(1 / (1 + DIRECT_TOTAL), rel=1e-9)


def test_dijkstra_matches_published_total(evaluate):
    result = evaluate("dijkstra")
    _check_valid(result)
    assert round(result.metrics["total_cost"], 6) == DIJKSTRA_TOTAL
    assert result.score == pytest.approx(1 / (1 + DIJKSTRA_TOTAL), rel=1e-9)


def test_dijkstra_equals_initial_program(evaluator, evaluate):
    initial = evaluator.evaluate(evaluator.problem.file("initial_program.py"))
    baseline = evaluate("dijkstra")
    for name, scenario in baseline.scenarios.items():
        assert scenario.metrics["cost"] == initial.scenarios[name].metrics["cost"]


def test_steiner_tree_beats_dijkstra(evaluate):
    steiner = _check_valid(evaluate("steiner_tree"))
    assert steiner < _check_valid(evaluate("dijkstra"))
    # Sharing edges must pay off in every scenario, not just in total.
    dijkstra = evaluate("dijkstra")
    for name, scenario in evaluate("steiner_tree").scenarios.items():
        assert scenario.metrics["egress_cost"] <= dijkstra.scenarios[name].metrics["egress_cost"] + 1e-9


@pytest.mark.slow
def test_expert_milp_is_cheapest(evaluate):
    expert = _check_valid(evaluate("expert_milp"))
    assert expert < _check_valid(evaluate("steiner_tree"))
    # The published expert lands at about $626-640; this deterministic one should not be far off.
    assert expert < 645


@pytest.mark.slow
def test_expert_milp_is_deterministic(evaluate):
    first = evaluate("expert_milp")
    second = evaluate("expert_milp", fresh=True)
    assert first.ok and second.ok
    assert first.score == second.score
    for name, scenario in first.scenarios.items():
        assert scenario.metrics["cost"] == second.scenarios[name].metrics["cost"]
