"""The cloudcast problem reproduces the reference evaluator's numbers exactly, on every backend."""

from __future__ import annotations

import json

import pytest
from conftest import INITIAL_SCORE, INITIAL_TOTAL_COST

from engram.evaluation.evaluator import CandidateEvaluator
from engram.problem import Problem
from engram.sandbox import get_sandbox

# Measured with the reference evaluator (mit-nms/Engram, SystemBench/ADRS/cloudcast).
INITIAL_SCENARIO_COSTS = {
    "intra_aws": 165.024,
    "intra_azure": 144.945,
    "intra_gcp": 161.468568,
    "inter_agz": 268.851417,
    "inter_gaz2": 305.57142,
}


def test_initial_program_matches_reference_bit_for_bit(evaluator: CandidateEvaluator, cloudcast: Problem):
    result = evaluator.evaluate(cloudcast.initial_program)
    assert result.ok, result.error
    assert result.score == INITIAL_SCORE
    assert result.metrics["total_cost"] == INITIAL_TOTAL_COST
    assert {n: r.metrics["cost"] for n, r in result.scenarios.items()} == INITIAL_SCENARIO_COSTS
    for scenario in result.scenarios.values():
        assert scenario.metrics["validity_pct"] == 100.0
        metrics = scenario.metrics
        assert metrics["egress_cost"] + metrics["instance_cost"] == pytest.approx(metrics["cost"])


def test_scores_are_reproducible(evaluator: CandidateEvaluator, cloudcast: Problem):
    first = evaluator.evaluate(cloudcast.initial_program)
    second = evaluator.evaluate(cloudcast.initial_program)
    assert first.score == second.score
    assert first.scenarios == second.scenarios or all(
        first.scenarios[n].metrics == second.scenarios[n].metrics for n in first.scenarios
    )


def test_scenario_subset_is_scored_alone(cloudcast: Problem):
    with CandidateEvaluator(cloudcast, get_sandbox("process", quiet=True), scenarios=["intra"]) as ev:
        result = ev.evaluate(cloudcast.initial_program)
    assert list(result.scenarios) == ["intra_aws", "intra_azure", "intra_gcp"]
    assert result.metrics["total_cost"] == pytest.approx(165.024 + 144.945 + 161.468568)
    assert result.score == 1 / (1 + result.metrics["total_cost"])


def test_artifacts_hold_per_edge_csv(evaluator: CandidateEvaluator, cloudcast: Problem, tmp_path):
    result = evaluator.evaluate(cloudcast.initial_program, artifacts_dir=tmp_path)
    assert result.artifacts == sorted(f"{name}.edges.csv" for name in INITIAL_SCENARIO_COSTS)
    rows = (tmp_path / "intra_aws.edges.csv").read_text().splitlines()
    assert rows[0].startswith("src,dst,partitions,cost_per_gb")
    assert len(rows) > 1


REFERENCE_STYLE = '''
# Written the way programs for the reference evaluator are: no imports of the names it injected,
# and imports of its helper modules by name.
from broadcast import BroadCastTopology as ImportedTopology
from utils import make_nx_graph as imported_make_nx_graph

def search_algorithm(src, dsts, G, num_partitions):
    h = G.copy()
    h.remove_edges_from(list(h.in_edges(src)))
    mean_cost = np.mean([d["cost"] for _, _, d in h.edges(data=True)])
    assert mean_cost > 0 and isinstance(make_nx_graph(num_vms=2), nx.DiGraph)
    assert LpProblem("probe", LpMinimize).name == "probe"
    assert ImportedTopology is BroadCastTopology and imported_make_nx_graph is make_nx_graph
    topology = BroadCastTopology(src, dsts, num_partitions)
    for dst in dsts:
        route = nx.dijkstra_path(h, src, dst, weight="cost")
        for i in range(len(route) - 1):
            for j in range(topology.num_partitions):
                topology.append_dst_partition_path(dst, j, [route[i], route[i + 1], G[route[i]][route[i + 1]]])
    return topology
'''


def test_reference_style_program_with_injected_names(evaluator: CandidateEvaluator):
    result = evaluator.evaluate(REFERENCE_STYLE)
    assert result.ok, result.error
    assert result.score == INITIAL_SCORE


def test_plain_dict_answer_with_int_partition_keys(evaluator: CandidateEvaluator):
    source = '''
import networkx as nx
def search_algorithm(src, dsts, G, num_partitions):
    paths = {}
    for dst in dsts:
        route = nx.dijkstra_path(G, src, dst, weight="cost")
        edges = [[u, v] for u, v in zip(route, route[1:])]
        paths[dst] = {p: list(edges) for p in range(num_partitions)}
    return paths
'''
    result = evaluator.evaluate(source)
    assert result.ok, result.error
    assert result.score is not None and result.score > 0


def test_json_output_shape(cloudcast: Problem):
    with CandidateEvaluator(cloudcast, get_sandbox("process", quiet=True), scenarios=["quick"]) as ev:
        payload = json.loads(json.dumps(ev.evaluate(cloudcast.initial_program).to_json_dict()))
    for key in ("score", "ok", "error_kind", "error", "duration_s", "scenarios"):
        assert key in payload
    assert set(payload["scenarios"]) == {"intra_aws", "intra_azure"}
    assert payload["scenarios"]["intra_aws"]["metrics"]["cost"] == 165.024
