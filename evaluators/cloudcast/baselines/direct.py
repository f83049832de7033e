"""Reference algorithm "direct": every partition travels on the edge from the source straight to
each destination, with no relay regions at all.

This is the naive plan a user gets without any overlay routing. It is a useful yardstick because
it shows what relaying buys: the direct edge between two regions is often *not* the cheapest way
to move a gigabyte between them (a detour through a region with cheap egress can cost less), and
independent direct edges never share anything, so the same bytes leave the source once per
destination. Its total over the five scenarios is about $1199.17.
"""

import networkx as nx
from broadcast import BroadCastTopology  # provided by the evaluator, see initial_program.py


def search_algorithm(src, dsts, G: nx.DiGraph, num_partitions):
    topology = BroadCastTopology(src, dsts, num_partitions)
    for dst in dsts:
        hop = [src, dst, G[src][dst]]
        for partition in range(num_partitions):
            # A fresh list per partition: the topology owns its paths independently.
            topology.set_dst_partition_paths(dst, partition, [list(hop)])
    return topology
