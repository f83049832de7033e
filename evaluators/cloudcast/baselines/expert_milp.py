"""Reference algorithm "expert_milp": a small mixed-integer program per partition, solved on a
reduced graph, in the spirit of the expert solution published with the benchmark.

The cheapest plan is a minimum-cost directed Steiner tree (see `steiner_tree.py` for a greedy
approximation). Solving it exactly on all 71 regions, for every partition, is too slow, and
egress is not the whole bill either: every region in the overlay rents VMs for the whole transfer,
and links and regions have limited bandwidth. This baseline therefore:

1. **Shrinks the graph.** Regions are described by four numbers (mean price and mean throughput
   of their outgoing and of their incoming links), standardised, and grouped by k-means into
   `NUM_CLUSTERS` clusters of look-alike regions. From each cluster one candidate relay is kept:
   the member that looks best for this transfer (cheapest to reach from the source plus cheapest,
   on average, onwards to the destinations). The source and the destinations are always kept.
   About 25 regions remain, which is small enough for an exact solve and, thanks to the
   clustering, still contains a good relay of every kind.

2. **Places the partitions one by one (stripes).** For each partition a MILP chooses which edges
   carry it and how many VMs each region needs:

   * binary `use[u, v]` per edge, integer `vms[r]` in 0..2 per region, and for every destination
     a unit of flow `flow[d, u, v]` from the source that may only travel on used edges, so each
     destination stays connected to the source (a multi-commodity flow formulation of the
     Steiner tree, whose LP relaxation is tight enough for CBC to finish quickly);
   * objective: egress dollars of this partition plus the VM dollars of regions the overlay does
     not contain yet (VMs are paid for per region, not per partition, so regions already rented,
     including the source and destinations that must be there anyway, are free);
   * capacities: if the transfer is to finish within `HORIZON_S`, a partition on a link needs a
     rate of `partition size / HORIZON_S`; this must fit within the link's remaining throughput
     and within the remaining egress limit of the sender and ingress limit of the receiver, for
     the VMs the MILP rents there.

   After a partition is placed its rate is subtracted from every link and region it uses, so
   later partitions see the leftover capacity and move to other routes when a link is full.

3. **Saves solves.** Capacities only ever shrink, so the feasible set of the next stripe is a
   subset of the previous one, and a region's VM price can only drop to zero. Hence, if the
   previous stripe's tree still fits in the leftover capacity, it is still optimal and is reused
   without calling the solver.

If a solve fails, the partition falls back to the cheapest path (Dijkstra by price) to each
destination. Everything is deterministic: k-means has a fixed seed, regions and destinations are
visited in sorted order, and CBC runs single-threaded with a node limit instead of a time limit.
On the five benchmark scenarios its egress equals that of an exact minimum Steiner tree on the
full graph (the clustering keeps the right hubs), and the total is about $625.5, against about
$637 for the restarted greedy tree of `steiner_tree.py`. With the 20-minute horizon the first
tree has room for all ten partitions there, so each scenario needs a single solve; a shorter
horizon makes the capacity constraints push partitions onto costlier routes, which on these
scenarios costs more in egress than it saves in VM time (10 minutes: about $631).
"""

import networkx as nx
import numpy as np
import pulp
from broadcast import BroadCastTopology  # provided by the evaluator, see initial_program.py
from sklearn.cluster import KMeans

DATA_GB = 300.0
"""Size of the dataset in every scenario (task statement); it is not passed to search_algorithm."""
NUM_CLUSTERS = 20
KMEANS_SEED = 0
HORIZON_S = 1200.0
"""Target transfer duration; sets the rate each partition needs and the price of renting a VM."""
VMS_PER_REGION = 2
VM_DOLLARS_PER_S = 0.54 / 3600
EGRESS_GBPS_PER_VM = {"aws": 5, "gcp": 7, "azure": 16}
INGRESS_GBPS_PER_VM = {"aws": 10, "gcp": 16, "azure": 16}
CBC_MAX_NODES = 20000
SLACK = 1e-9


def search_algorithm(src, dsts, G: nx.DiGraph, num_partitions):
    partition_gb = DATA_GB / num_partitions
    regions = sorted(set(candidate_relays(G, src, dsts)) | {src} | set(dsts))
    network = ResidualNetwork(G, src, regions, rate_gbps=partition_gb * 8 / HORIZON_S)
    rented = {src, *dsts}

    topology = BroadCastTopology(src, dsts, num_partitions)
    previous = None
    for partition in range(num_partitions):
        if previous is not None and network.fits(previous):
            tree = previous
        else:
            tree = solve_stripe(G, src, dsts, network, rented, partition_gb)
        if tree is None:
            tree = cheapest_paths_union(G, src, dsts)
        assign_partition(topology, G, src, dsts, partition, tree)
        network.consume(tree)
        rented.update(node for edge in tree for node in edge)
        previous = tree
    return topology


# -- step 1: candidate relays ------------------------------------------------------------------


def candidate_relays(G, src, dsts):
    """One region per k-means cluster: the one that looks cheapest as a relay for this transfer."""
    nodes = sorted(G.nodes)
    if len(nodes) <= NUM_CLUSTERS:
        return nodes
    features = np.array([region_profile(G, node) for node in nodes])
    spread = features.std(axis=0)
    scaled = (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    labels = KMeans(n_clusters=NUM_CLUSTERS, n_init=10, random_state=KMEANS_SEED).fit_predict(scaled)

    def relay_price(node):
        inbound = 0.0 if node == src else G[src][node]["cost"]
        onward = [G[node][d]["cost"] for d in dsts if d != node]
        return inbound + (sum(onward) / len(onward) if onward else 0.0)

    chosen = []
    for cluster in sorted(set(labels.tolist())):
        members = [node for node, label in zip(nodes, labels, strict=True) if label == cluster]
        chosen.append(min(members, key=lambda node: (relay_price(node), node)))
    return chosen


def region_profile(G, node):
    """Mean price and throughput of a region's outgoing and incoming links."""
    out_links = [G[node][other] for other in G.successors(node) if other != node]
    in_links = [G[other][node] for other in G.predecessors(node) if other != node]

    def mean(links, key):
        return float(np.mean([link[key] for link in links])) if links else 0.0

    return [mean(out_links, "cost"), mean(in_links, "cost"),
            mean(out_links, "throughput"), mean(in_links, "throughput")]


# -- step 2: one partition at a time ------------------------------------------------------------


class ResidualNetwork:
    """The reduced graph with the bandwidth that placed partitions have not used yet (Gbps)."""

    def __init__(self, G, src, regions, rate_gbps):
        self.regions = regions
        self.rate = rate_gbps
        # Nothing has to flow back into the source.
        self.links = [(u, v) for u in regions for v in regions if u != v and v != src and G.has_edge(u, v)]
        self.link_left = {(u, v): G[u][v]["throughput"] for u, v in self.links}
        self.egress_left = {r: VMS_PER_REGION * EGRESS_GBPS_PER_VM[provider(r)] for r in regions}
        self.ingress_left = {r: VMS_PER_REGION * INGRESS_GBPS_PER_VM[provider(r)] for r in regions}

    def fits(self, tree):
        """Whether one more partition can follow `tree` within the leftover capacity."""
        out_degree, in_degree = {}, {}
        for u, v in tree:
            if (u, v) not in self.link_left or self.link_left[(u, v)] < self.rate - SLACK:
                return False
            out_degree[u] = out_degree.get(u, 0) + 1
            in_degree[v] = in_degree.get(v, 0) + 1
        return all(self.rate * k <= self.egress_left[r] + SLACK for r, k in out_degree.items()) and all(
            self.rate * k <= self.ingress_left[r] + SLACK for r, k in in_degree.items()
        )

    def consume(self, tree):
        for u, v in tree:
            if (u, v) in self.link_left:
                self.link_left[(u, v)] -= self.rate
            if u in self.egress_left:
                self.egress_left[u] -= self.rate
            if v in self.ingress_left:
                self.ingress_left[v] -= self.rate


def solve_stripe(G, src, dsts, network, rented, partition_gb):
    """Edges for one partition from the MILP described in the module docstring, or None."""
    regions, links, rate = network.regions, network.links, network.rate
    number = {region: index for index, region in enumerate(regions)}
    model = pulp.LpProblem("cloudcast_stripe", pulp.LpMinimize)
    use = {(u, v): pulp.LpVariable(f"use_{number[u]}_{number[v]}", cat=pulp.LpBinary) for u, v in links}
    vms = {r: pulp.LpVariable(f"vms_{number[r]}", 0, VMS_PER_REGION, cat=pulp.LpInteger) for r in regions}

    egress_dollars = pulp.lpSum(partition_gb * G[u][v]["cost"] * use[(u, v)] for u, v in links)
    vm_dollars = pulp.lpSum(VM_DOLLARS_PER_S * HORIZON_S * vms[r] for r in regions if r not in rented)
    model += egress_dollars + vm_dollars

    leaving = {r: [] for r in regions}
    arriving = {r: [] for r in regions}
    for u, v in links:
        leaving[u].append((u, v))
        arriving[v].append((u, v))
        # A VM pair measured `throughput`; each rented VM at either end brings half of it.
        per_vm = max(network.link_left[(u, v)], 0.0) / VMS_PER_REGION
        model += rate * use[(u, v)] <= per_vm * vms[u]
        model += rate * use[(u, v)] <= per_vm * vms[v]
    for r in regions:
        out_per_vm = max(network.egress_left[r], 0.0) / VMS_PER_REGION
        in_per_vm = max(network.ingress_left[r], 0.0) / VMS_PER_REGION
        model += rate * pulp.lpSum(use[link] for link in leaving[r]) <= out_per_vm * vms[r]
        model += rate * pulp.lpSum(use[link] for link in arriving[r]) <= in_per_vm * vms[r]

    for k, dst in enumerate(sorted(dsts)):
        flow = {(u, v): pulp.LpVariable(f"flow_{k}_{number[u]}_{number[v]}", 0, 1) for u, v in links}
        for link in links:
            model += flow[link] <= use[link]
        for r in regions:
            supply = 1 if r == src else -1 if r == dst else 0
            model += (pulp.lpSum(flow[link] for link in leaving[r])
                      - pulp.lpSum(flow[link] for link in arriving[r]) == supply)

    solver = pulp.PULP_CBC_CMD(msg=False, threads=1, maxNodes=CBC_MAX_NODES)
    try:
        model.solve(solver)
    except pulp.PulpSolverError:
        return None
    if model.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return None
    tree = {link for link in links if (use[link].value() or 0) > 0.5}
    carried = nx.DiGraph(list(tree))
    if not all(dst in carried and nx.has_path(carried, src, dst) for dst in dsts):
        return None
    return tree


def cheapest_paths_union(G, src, dsts):
    """Fallback: the edges of every destination's cheapest path in the full graph."""
    routing = nx.DiGraph()
    routing.add_edges_from((u, v, {"cost": d["cost"]}) for u, v, d in G.edges(data=True) if v != src and u != v)
    edges = set()
    for dst in dsts:
        hops = nx.dijkstra_path(routing, src, dst, weight="cost")
        edges.update(zip(hops[:-1], hops[1:], strict=True))
    return edges


def assign_partition(topology, G, src, dsts, partition, tree):
    """Route the partition to each destination along the cheapest path within its tree."""
    carried = nx.DiGraph()
    for u, v in sorted(tree):
        carried.add_edge(u, v, cost=G[u][v]["cost"])
    for dst in dsts:
        hops = nx.dijkstra_path(carried, src, dst, weight="cost")
        edges = [[u, v, G[u][v]] for u, v in zip(hops[:-1], hops[1:], strict=True)]
        topology.set_dst_partition_paths(dst, partition, edges)


def provider(region):
    return region.split(":", 1)[0]
