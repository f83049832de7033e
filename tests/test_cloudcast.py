"""The cloudcast problem reproduces the reference evaluator's numbers exactly, on every backend."""

from __future__ import annotations

import json

import pytest
from conftest import INITIAL_SCORE, INITIAL_TOTAL_COST

from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem
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


SOLVER_STYLE = '''
# The reference's solver style: pulp's names as injected (no imports), a 0/1 program, and
# `except PulpSolverError`. Each destination picks one of its three cheapest routes; an edge shared
# by several picked routes is paid once, so the choice is a real 0/1 decision (its LP relaxation
# splits routes and picks others).
import itertools

def search_algorithm(src, dsts, G, num_partitions):
    probe = LpVariable("probe", cat=LpBinary)
    assert probe.isBinary() and LpProblem("p", LpMinimize).sense == pulp.LpMinimize
    try:
        raise pulp.PulpSolverError("probe")
    except PulpSolverError:
        pass
    h = G.copy()
    h.remove_edges_from(list(h.in_edges(src)))
    routes = {d: list(itertools.islice(nx.shortest_simple_paths(h, src, d, weight="cost"), 3)) for d in dsts}
    edges = sorted({(u, v) for d in dsts for r in routes[d] for u, v in zip(r, r[1:])})
    prob = LpProblem("shared_routes", LpMinimize)
    pick = {(d, k): LpVariable(f"pick_{i}_{k}", cat=LpBinary)
            for i, d in enumerate(dsts) for k in range(len(routes[d]))}
    use = {e: LpVariable(f"use_{j}", cat=LpBinary) for j, e in enumerate(edges)}
    prob += lpSum(h[u][v]["cost"] * use[(u, v)] for (u, v) in edges)
    for d in dsts:
        prob += lpSum(pick[(d, k)] for k in range(len(routes[d]))) == 1
        for k, route in enumerate(routes[d]):
            for u, v in zip(route, route[1:]):
                prob += use[(u, v)] >= pick[(d, k)]
    try:
        prob.solve(pulp.PULP_CBC_CMD(msg=False))
    except PulpSolverError:
        pass
    topology = BroadCastTopology(src, dsts, num_partitions)
    for d in dsts:
        best = max(range(len(routes[d])), key=lambda k: pick[(d, k)].value() or 0)
        route = routes[d][best]
        for u, v in zip(route, route[1:]):
            for p in range(num_partitions):
                topology.append_dst_partition_path(d, p, [u, v, G[u][v]])
    return topology
'''


def test_a_01_program_in_the_reference_solver_style_is_solved_as_binary(evaluator: CandidateEvaluator):
    """Injected pulp names are pulp's own: constants compare equal inside pulp (LpBinary makes binary
    variables, LpMinimize a minimisation) and `except PulpSolverError` catches pulp's class."""
    injected = evaluator.evaluate(SOLVER_STYLE)
    assert injected.ok, injected.error
    imported = evaluator.evaluate("import pulp\nfrom pulp import LpVariable, LpProblem, LpMinimize, lpSum, "
                                  "LpBinary, LpInteger, PulpSolverError\n" + SOLVER_STYLE)
    assert imported.ok and injected.score == imported.score
    assert injected.metrics["total_cost"] < INITIAL_TOTAL_COST  # shared edges, paid once
    # What a stand-in for LpBinary made of these variables (continuous, unbounded) changes the answer,
    # so this test would catch one.
    relaxed = evaluator.evaluate(SOLVER_STYLE.replace("cat=LpBinary)", 'cat="Continuous")')
                                 .replace("assert probe.isBinary() and", "assert"))
    assert relaxed.ok and relaxed.score != injected.score


def test_only_the_references_pulp_names_are_injected(evaluator: CandidateEvaluator):
    """A program relying on a name the reference did not inject fails here as it did there."""
    source = REFERENCE_STYLE.replace("    h = G.copy()\n", "    h = G.copy()\n    LpMaximize\n", 1)
    result = evaluator.evaluate(source)
    assert not result.ok and "LpMaximize" in result.error


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
