"""Global greedy: replicas to the experts with the most load per replica, then packed onto GPUs.

Ignores nodes and groups. Each extra replica (288 - 256 = 32) goes, one at a time, to the expert
whose load per replica is largest; this minimises the largest replica load for the window it
plans from. The replicas, heaviest first, then go to the least loaded GPU with a free slot.
"""

import numpy as np


def _replica_counts(weight, num_replicas):
    layers, experts = weight.shape
    count = np.ones((layers, experts), dtype=np.int64)
    rows = np.arange(layers)
    for _ in range(num_replicas - experts):
        count[rows, np.argmax(weight / count, axis=1)] += 1
    return count


def _pack(replica_load, num_gpus):
    """Slot of each replica: GPU g holds slots g * per_gpu .. (g + 1) * per_gpu - 1."""
    per_gpu = len(replica_load) // num_gpus
    gpu_load = [0.0] * num_gpus
    used = [0] * num_gpus
    slot = np.empty(len(replica_load), dtype=np.int64)
    for replica in np.argsort(-replica_load, kind="stable").tolist():
        gpu = min((g for g in range(num_gpus) if used[g] < per_gpu), key=gpu_load.__getitem__)
        slot[replica] = gpu * per_gpu + used[gpu]
        used[gpu] += 1
        gpu_load[gpu] += replica_load[replica]
    return slot


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    weight = np.asarray(weight, dtype=np.float64)
    layers, experts = weight.shape
    count = _replica_counts(weight, num_replicas)
    max_count = int(count.max())
    phy2log = np.empty((layers, num_replicas), dtype=np.int64)
    log2phy = np.full((layers, experts, max_count), -1, dtype=np.int64)
    for layer in range(layers):
        owner = np.repeat(np.arange(experts), count[layer])  # replica -> expert, experts in order
        rank = np.arange(num_replicas) - np.repeat(np.cumsum(count[layer]) - count[layer], count[layer])
        slot = _pack(weight[layer, owner] / count[layer, owner], num_gpus)
        phy2log[layer, slot] = owner
        log2phy[layer, owner, rank] = slot
    return phy2log, log2phy, count
