"""Reference algorithm "steiner_tree": one cheap tree from the source that reaches every
destination, built with the shortest-path heuristic of Takahashi and Matsuyama (1980); all
partitions travel along the tree.

Why a tree: the scorer charges an edge's egress price once per partition it carries, however many
destinations sit behind it. A plan in which destinations share edges (the source sends the data
once to a relay, the relay fans it out) therefore pays for those bytes once, while independent
cheapest paths (see `dijkstra.py`) may pay for the same bytes several times. The cheapest such
plan is a minimum directed Steiner tree rooted at the source, with the destinations as terminals
and any other region allowed as a relay. Finding it exactly is NP-hard, so this baseline uses the
classic greedy approximation:

1. The tree starts as the source alone.
2. Run Dijkstra (by egress price) from all tree regions at once; among the destinations not yet
   reached, take the one closest to the tree and graft its shortest path onto the tree.
3. Repeat until every destination is in the tree.

Ties are broken by the destination's name, so the result is deterministic. Because every path
grafted in step 2 starts at a tree region and its other regions are all new, the result is an
arborescence: each destination has exactly one route from the source.

What it ignores: time. A tree concentrates traffic, and a region's egress limit is shared equally
between its out-edges, so a hub with many children (or a slow relay link) lengthens the transfer
and with it the VM bill, which is paid in every region of the overlay. The bill is still
dominated by egress, so the tree wins overall; a method that weighs both (see `expert_milp.py`)
can do better.
"""

import networkx as nx


def search_algorithm(src, dsts, G: nx.DiGraph, num_partitions):
    tree = steiner_arborescence(G, src, dsts)
    topology = BroadCastTopology(src, dsts, num_partitions)
    for dst in dsts:
        hops = nx.shortest_path(tree, src, dst)  # the unique route in the arborescence
        edges = [[u, v, G[u][v]] for u, v in zip(hops[:-1], hops[1:], strict=True)]
        for partition in range(num_partitions):
            topology.set_dst_partition_paths(dst, partition, [list(e) for e in edges])
    return topology


def steiner_arborescence(G, src, dsts):
    """A low-egress-cost arborescence rooted at `src` spanning `dsts` (Takahashi-Matsuyama)."""
    # Nothing has to flow back into the source, and self-loops are useless.
    routing = nx.DiGraph()
    routing.add_nodes_from(G.nodes)
    routing.add_edges_from(
        (u, v, {"cost": data["cost"]}) for u, v, data in G.edges(data=True) if v != src and u != v
    )

    tree = nx.DiGraph()
    tree.add_node(src)
    pending = sorted(set(dsts) - {src})
    while pending:
        distance, route = nx.multi_source_dijkstra(routing, set(tree.nodes), weight="cost")
        reachable = [d for d in pending if d in distance]
        if not reachable:
            raise nx.NetworkXNoPath(f"no route from {src} to {pending}")
        target = min(reachable, key=lambda d: (distance[d], d))
        hops = route[target]
        for u, v in zip(hops[:-1], hops[1:], strict=True):
            tree.add_edge(u, v)
        pending = [d for d in pending if d not in tree]
    return tree


class BroadCastTopology:
    """Edge lists `[u, v, attrs]` per destination and per partition (keyed by `str(partition)`)."""

    def __init__(self, src, dsts, num_partitions=4, paths=None):
        self.src = src
        self.dsts = dsts
        self.num_partitions = num_partitions
        if paths is None:
            paths = {dst: {str(i): None for i in range(num_partitions)} for dst in dsts}
        self.paths = paths

    def get_paths(self):
        return self.paths

    def set_num_partitions(self, num_partitions):
        self.num_partitions = num_partitions

    def set_dst_partition_paths(self, dst, partition, paths):
        self.paths[dst][str(partition)] = paths

    def append_dst_partition_path(self, dst, partition, path):
        key = str(partition)
        if self.paths[dst][key] is None:
            self.paths[dst][key] = []
        self.paths[dst][key].append(path)
