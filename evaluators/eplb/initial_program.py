"""Hierarchical expert-parallel load balancing (DeepSeek's EPLB algorithm, as vLLM ships it), in numpy.

1. Pack the expert groups onto nodes so that the nodes' loads are balanced.
2. Within each node, give the extra replicas one at a time to the expert with the largest load
   per replica.
3. Pack each node's replicas onto its GPUs so that the GPUs' loads are balanced.
When the groups cannot be split evenly over the nodes, the same steps run with one group on one
node (a global policy).
"""

import numpy as np


def balanced_packing(weight, num_packs):
    """Split each row's n items into `num_packs` packs of n / num_packs items, heaviest item first
    into the lightest pack that still has room. Returns (pack_index, rank_in_pack), both [rows, n]."""
    rows, items = weight.shape
    per_pack = items // num_packs
    if per_pack == 1:
        pack_index = np.tile(np.arange(items, dtype=np.int64), (rows, 1))
        return pack_index, np.zeros_like(pack_index)
    order = np.argsort(-weight, axis=-1, kind="stable")
    pack_index = np.full((rows, items), -1, dtype=np.int64)
    rank_in_pack = np.full((rows, items), -1, dtype=np.int64)
    for row in range(rows):
        load = [0.0] * num_packs
        count = [0] * num_packs
        values = weight[row].tolist()
        for item in order[row].tolist():
            pack = min((p for p in range(num_packs) if count[p] < per_pack), key=load.__getitem__)
            pack_index[row, item] = pack
            rank_in_pack[row, item] = count[pack]
            load[pack] += values[item]
            count[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight, num_physical):
    """Add replicas one by one to the expert with the largest load per replica.
    Returns phy2log [rows, num_physical], replica rank [rows, num_physical], count [rows, n]."""
    rows, num_logical = weight.shape
    phy2log = np.tile(np.arange(num_physical, dtype=np.int64), (rows, 1))
    rank = np.zeros((rows, num_physical), dtype=np.int64)
    count = np.ones((rows, num_logical), dtype=np.int64)
    every_row = np.arange(rows)
    for slot in range(num_logical, num_physical):
        hottest = np.argmax(weight / count, axis=-1)
        phy2log[:, slot] = hottest
        rank[:, slot] = count[every_row, hottest]
        count[every_row, hottest] += 1
    return phy2log, rank, count


def _inverse(permutation):
    inverse = np.empty_like(permutation)
    positions = np.tile(np.arange(permutation.shape[1], dtype=np.int64), (permutation.shape[0], 1))
    np.put_along_axis(inverse, permutation, positions, axis=1)
    return inverse


def rebalance_hierarchical(weight, num_physical, num_groups, num_nodes, num_gpus):
    layers, num_logical = weight.shape
    group_size = num_logical // num_groups
    groups_per_node = num_groups // num_nodes
    per_gpu = num_physical // num_gpus
    per_node_logical = num_logical // num_nodes

    # 1. groups -> nodes; "mlog" numbers the experts node by node.
    group_load = weight.reshape(layers, num_groups, group_size).sum(-1)
    group_pack, group_rank = balanced_packing(group_load, num_nodes)
    log2mlog = (((group_pack * groups_per_node + group_rank) * group_size)[..., None]
                + np.arange(group_size, dtype=np.int64)).reshape(layers, -1)
    mlog2log = _inverse(log2mlog)

    # 2. replicas within each node; rows are (layer, node) pairs.
    mlog_load = np.take_along_axis(weight, mlog2log, -1).reshape(-1, per_node_logical)
    phy2mlog, phy_rank, mlog_count = replicate_experts(mlog_load, num_physical // num_nodes)

    # 3. replicas -> GPUs of the node.
    replica_load = np.take_along_axis(mlog_load / mlog_count, phy2mlog, -1)
    gpu_pack, gpu_rank = balanced_packing(replica_load, num_gpus // num_nodes)
    pphy2phy = _inverse(gpu_pack * per_gpu + gpu_rank)
    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, -1)
    node_offset = np.arange(0, num_logical, per_node_logical, dtype=np.int64).reshape(1, -1, 1)
    pphy2mlog = (pphy2mlog.reshape(layers, num_nodes, -1) + node_offset).reshape(layers, -1)
    phy2log = np.take_along_axis(mlog2log, pphy2mlog, -1)
    rank = np.take_along_axis(phy_rank, pphy2phy, -1).reshape(layers, -1)
    count = np.take_along_axis(mlog_count.reshape(layers, -1), log2mlog, -1)
    return phy2log, rank, count


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    """weight: [layers, experts] token counts (a numpy array). Returns
    phy2log [layers, num_replicas], log2phy [layers, experts, max replicas] (-1 padded),
    logcnt [layers, experts]."""
    weight = np.asarray(weight, dtype=np.float64)
    layers, num_logical = weight.shape
    if num_groups % num_nodes == 0:
        phy2log, rank, logcnt = rebalance_hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus)
    else:
        phy2log, rank, logcnt = rebalance_hierarchical(weight, num_replicas, 1, 1, num_gpus)
    max_count = num_replicas - num_logical + 1
    log2phy = np.full((layers, num_logical * max_count), -1, dtype=np.int64)
    slots = np.tile(np.arange(num_replicas, dtype=np.int64), (layers, 1))
    np.put_along_axis(log2phy, phy2log * max_count + rank, slots, axis=1)
    return phy2log, log2phy.reshape(layers, num_logical, max_count), logcnt
