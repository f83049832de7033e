"""Trusted scoring for cloudcast: build the region graph, validate a topology, price the transfer.

The rules follow the reference evaluator (mit-nms/Engram, SystemBench/ADRS/cloudcast) exactly,
including its floating-point order, so that scores are comparable with the paper. Where the
reference trusted the candidate, this side does not:

* edge costs and throughputs always come from this module's own graph; an answer that *claims*
  different attributes for an edge is rejected, as the reference does, but the comparison is with
  the pristine graph rather than the copy the candidate could modify;
* the source, destinations and partition count come from the scenario, not from the answer
  object, so an answer cannot shrink the set of destinations that are priced.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import networkx as nx

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import Problem, ScenarioSpec

NUM_VMS = 2
"""VMs per region, as in the reference evaluator: it scales throughput and the in/egress limits."""
INSTANCE_DOLLARS_PER_HOUR = 0.54
DEFAULT_INGRESS_GBPS = {"aws": 10, "gcp": 16, "azure": 16}
DEFAULT_EGRESS_GBPS = {"aws": 5, "gcp": 7, "azure": 16}
ATTRIBUTE_TOLERANCE = 1e-9
MAX_ERRORS_SHOWN = 5


def read_edges(throughput_csv: str, cost_csv: str) -> list[list[Any]]:
    """Directed edges `[src, dst, cost $/GB, throughput_sent bit/s]` in the reference's order.

    Self-pairs are skipped, a later row for the same pair overrides an earlier one, and a pair
    with no price gets an infinite cost, all as the reference's `make_nx_graph` does.
    """
    edges: dict[tuple[str, str], list[Any]] = {}
    with open(throughput_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["src_region"] != row["dst_region"]:
                edges[(row["src_region"], row["dst_region"])] = [None, float(row["throughput_sent"])]
    with open(cost_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if (row["src"], row["dest"]) in edges:
                edges[(row["src"], row["dest"])][0] = float(row["cost"])
    return [[u, v, math.inf if c is None else c, t] for (u, v), (c, t) in edges.items()]


def build_graph(edges: list[list[Any]], num_vms: int = NUM_VMS) -> nx.DiGraph:
    graph = nx.DiGraph()
    for u, v, cost, sent in edges:
        graph.add_edge(u, v, cost=cost, throughput=num_vms * sent / 1e9)
    return graph


class CloudcastScorer(Scorer):
    """Validates broadcast topologies and prices them with the reference's simulator rules."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.edges = read_edges(str(problem.data_file("cloudcast/profiles/throughput.csv")),
                                str(problem.data_file("cloudcast/profiles/cost.csv")))
        self.graph = build_graph(self.edges)
        self.configs = {s.name: self._read_config(s) for s in problem.config.scenarios}

    def _read_config(self, scenario: ScenarioSpec) -> dict[str, Any]:
        with open(self.problem.data_file(scenario.params["config"]), encoding="utf-8") as handle:
            return json.load(handle)

    # -- Scorer interface -----------------------------------------------------------------------

    def shared_input(self) -> dict[str, Any]:
        return {"num_vms": NUM_VMS, "edges": self.edges}

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        config = self.configs[scenario.name]
        return {"src": config["source_node"], "dsts": list(config["dest_nodes"]),
                "num_partitions": config["num_partitions"]}

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> ScenarioScore:
        config = self.configs[scenario.name]
        paths = _paths_of(answer)
        validity = validate(paths, self.graph, config["source_node"], config["dest_nodes"], config["num_partitions"])
        overlay = simulate(paths, self.graph, config)
        metrics = {
            "cost": overlay["cost"],
            "egress_cost": overlay["egress_cost"],
            "instance_cost": overlay["instance_cost"],
            "max_transfer_time_s": overlay["max_transfer_time"],
            "avg_transfer_time_s": overlay["avg_transfer_time"],
            "validity_pct": validity,
            "regions_used": overlay["regions_used"],
        }
        return ScenarioScore(metrics=metrics, artifacts={f"{scenario.name}.edges.csv": overlay["edges_csv"]})

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        total_cost = 0.0
        total_time = 0.0
        for result in results.values():
            total_cost += result.metrics["cost"]
            total_time += result.metrics["max_transfer_time_s"]
        return 1.0 / (1.0 + total_cost), {"total_cost": total_cost, "total_max_transfer_time_s": total_time}


# -- validation -------------------------------------------------------------------------------------


def _paths_of(answer: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(answer, dict) or not isinstance(answer.get("paths"), dict):
        raise InvalidAnswer("the answer has no paths mapping (destination -> partition -> list of edges)")
    return answer["paths"]


def validate(paths: dict[str, Any], graph: nx.DiGraph, src: str, dsts: list[str], num_partitions: int) -> float:
    """Apply the reference's validity rules; raise `InvalidAnswer` listing the first violations.

    Every partition of every destination needs a non-empty chain of edges that starts at the
    source, is connected, reaches the destination, and uses only graph edges whose claimed
    attributes (if any) equal the graph's. Returns the percentage of valid partitions (100).
    """
    errors: list[str] = []
    invalid = 0
    total = 0
    for dst in dsts:
        if dst not in paths:
            errors.append(f"destination {dst} is missing from paths")
            continue
        for partition in range(num_partitions):
            total += 1
            problem = _partition_problem(paths[dst], str(partition), dst, src, graph)
            if problem:
                invalid += 1
                errors.append(f"partition {partition} of {dst}: {problem}")
    if errors or invalid:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise InvalidAnswer(f"invalid broadcast topology: {shown}{more}")
    return 100.0 * (total - invalid) / total if total else 0.0


def _partition_problem(by_partition: Any, key: str, dst: str, src: str, graph: nx.DiGraph) -> str | None:
    if not isinstance(by_partition, dict) or key not in by_partition:
        return "missing"
    path = by_partition[key]
    if path is None:
        return "path is None"
    if not isinstance(path, list) or not path:
        return "path is empty"
    previous = src
    self_loops_only, reaches_dst, disconnected = True, False, None
    for index, edge in enumerate(path):
        if not isinstance(edge, list) or len(edge) < 2:
            return f"malformed edge {edge!r}"
        u, v = edge[0], edge[1]
        if u != v:
            self_loops_only = False
        if v == dst:
            reaches_dst = True
        if u != previous and disconnected is None:
            disconnected = f"edge {index} starts at {u} but the previous edge ended at {previous}"
        previous = v
        if not isinstance(u, str) or not isinstance(v, str) or u not in graph or v not in graph:
            return f"uses a node that is not in the graph: {u!r} -> {v!r}"
        if not graph.has_edge(u, v) and not graph.has_edge(v, u):
            return f"uses an edge that is not in the graph: {u} -> {v}"
        forged = _forged_attribute(edge, _graph_edge(graph, u, v))
        if forged:
            return forged
    if self_loops_only:
        return "uses only self-loops, so it delivers nothing"
    if not reaches_dst:
        return "does not reach the destination"
    if path[0][0] != src:
        return f"does not start at the source {src}"
    return f"disconnected path: {disconnected}" if disconnected else None


def _graph_edge(graph: nx.DiGraph, u: str, v: str) -> dict[str, Any]:
    return graph[u][v] if graph.has_edge(u, v) else graph[v][u]


def _forged_attribute(edge: list[Any], original: dict[str, Any]) -> str | None:
    claimed = edge[2] if len(edge) >= 3 and isinstance(edge[2], dict) else {}
    for name in ("cost", "throughput"):
        if name in claimed and claimed[name] is not None:
            value = claimed[name]
            truth = original[name]
            same = value == truth or (
                isinstance(value, int | float) and abs(value - truth) <= ATTRIBUTE_TOLERANCE
            )
            if not same:
                return f"edge {edge[0]}->{edge[1]} claims {name}={value!r} but the graph has {truth!r}"
    return None


# -- simulation (the reference BCSimulator's arithmetic, in its order) ---------------------------


def simulate(paths: dict[str, Any], graph: nx.DiGraph, config: dict[str, Any]) -> dict[str, Any]:
    src, dsts, num_partitions = config["source_node"], config["dest_nodes"], config["num_partitions"]
    partition_volume = config["data_vol"] / num_partitions
    ingress, egress = _limits(config)

    overlay = nx.DiGraph()
    overlay.add_node(src)
    for dst in dsts:
        overlay.add_node(dst)
    for dst in dsts:
        for partition in range(num_partitions):
            for edge in paths[dst][str(partition)]:
                u, v = edge[0], edge[1]
                if not overlay.has_edge(u, v):
                    attrs = _graph_edge(graph, u, v)
                    overlay.add_edge(u, v, cost=attrs["cost"], throughput=attrs["throughput"],
                                     flow=attrs["throughput"], partitions=set())
                overlay[u][v]["partitions"].add(partition)

    for node in overlay.nodes:
        provider = node.split(":")[0]
        if provider not in ingress:
            raise InvalidAnswer(f"region {node} belongs to no known provider")
        in_edges, out_edges = list(overlay.in_edges(node)), list(overlay.out_edges(node))
        in_total, out_total = _flow_sum(overlay, in_edges), _flow_sum(overlay, out_edges)
        if in_total > ingress[provider]:
            _cap_equal_share(overlay, in_edges, ingress[provider])
        if out_total > egress[provider]:
            _cap_equal_share(overlay, out_edges, egress[provider])

    times: dict[str, float] = {}
    for dst in dsts:
        slowest = -math.inf
        for partition in range(num_partitions):
            for edge in paths[dst][str(partition)]:
                data = overlay[edge[0]][edge[1]]
                if data["flow"] <= 0:
                    raise InvalidAnswer(f"edge {edge[0]}->{edge[1]} carries no flow")
                slowest = max(slowest, len(data["partitions"]) * partition_volume * 8 / data["flow"])
        times[dst] = math.inf if slowest == -math.inf else slowest
    max_time = max(times.values())
    avg_time = sum(times.values()) / len(times)

    egress_cost = 0
    for _, _, data in overlay.edges.data():
        volume = len(data["partitions"]) * partition_volume
        egress_cost += volume * data["cost"]
    runtime_s = round(max_time, 2)
    instance_cost = 0
    for _ in overlay.nodes():
        instance_cost += NUM_VMS * (INSTANCE_DOLLARS_PER_HOUR / 3600) * runtime_s
    return {
        "cost": egress_cost + instance_cost,
        "egress_cost": float(egress_cost),
        "instance_cost": float(instance_cost),
        "max_transfer_time": max_time,
        "avg_transfer_time": avg_time,
        "regions_used": overlay.number_of_nodes(),
        "edges_csv": _edges_csv(overlay, partition_volume),
    }


def _limits(config: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    ingress = dict(DEFAULT_INGRESS_GBPS)
    egress = dict(DEFAULT_EGRESS_GBPS)
    for provider, limit in config.get("ingress_limit", {}).items():
        ingress[provider] = NUM_VMS * limit
    for provider, limit in config.get("egress_limit", {}).items():
        egress[provider] = NUM_VMS * limit
    return ingress, egress


def _flow_sum(overlay: nx.DiGraph, edges: list[tuple[str, str]]) -> float:
    return sum([overlay[u][v]["flow"] for u, v in edges])


def _cap_equal_share(overlay: nx.DiGraph, edges: list[tuple[str, str]], limit: float) -> None:
    """A region over its in- or egress limit gives each of its edges at most an equal share."""
    share = 1 / len(edges)
    for u, v in edges:
        overlay[u][v]["flow"] = min(overlay[u][v]["flow"], limit * share)


def _edges_csv(overlay: nx.DiGraph, partition_volume: float) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["src", "dst", "partitions", "cost_per_gb", "throughput_gbps", "flow_gbps", "egress_cost"])
    for u, v, data in overlay.edges.data():
        count = len(data["partitions"])
        writer.writerow([u, v, count, data["cost"], data["throughput"], data["flow"],
                         count * partition_volume * data["cost"]])
    return out.getvalue()
