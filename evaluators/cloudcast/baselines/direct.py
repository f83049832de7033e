"""Reference algorithm "direct": every partition travels on the edge from the source straight to
each destination, with no relay regions at all.

This is the naive plan a user gets without any overlay routing. It is a useful yardstick because
it shows what relaying buys: the direct edge between two regions is often *not* the cheapest way
to move a gigabyte between them (a detour through a region with cheap egress can cost less), and
independent direct edges never share anything, so the same bytes leave the source once per
destination. Its total over the five scenarios is about $1199.17.
"""

import networkx as nx


def search_algorithm(src, dsts, G: nx.DiGraph, num_partitions):
    topology = BroadCastTopology(src, dsts, num_partitions)
    for dst in dsts:
        hop = [src, dst, G[src][dst]]
        for partition in range(num_partitions):
            # A fresh list per partition: the topology owns its paths independently.
            topology.set_dst_partition_paths(dst, partition, [list(hop)])
    return topology


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
