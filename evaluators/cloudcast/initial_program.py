"""Starting point for cloudcast: every destination gets its cheapest path, all partitions on it.

`search_algorithm(src, dsts, G, num_partitions)` receives the region graph `G` (a
`networkx.DiGraph` whose edges carry `cost` in $/GB and `throughput` in Gbps) and must return a
`BroadCastTopology` whose `paths[dst][str(partition)]` is the list of edges `[u, v, G[u][v]]`
that carries that partition from `src` to `dst`.
"""

import networkx as nx


def search_algorithm(src, dsts, G, num_partitions):
    graph = G.copy()
    # Nothing ever needs to flow back into the source.
    graph.remove_edges_from(list(graph.in_edges(src)) + list(nx.selfloop_edges(graph)))
    topology = BroadCastTopology(src, dsts, num_partitions)
    for dst in dsts:
        route = nx.dijkstra_path(graph, src, dst, weight="cost")
        for u, v in zip(route, route[1:]):
            for partition in range(num_partitions):
                topology.append_dst_partition_path(dst, partition, [u, v, G[u][v]])
    return topology


class BroadCastTopology:
    """For each destination and partition (keyed by str(partition)), a list of [u, v, attrs] edges."""

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
