"""Full greedy: at every step append the remaining transaction that keeps the schedule shortest.

Deterministic (ties go to the lowest index); every step tries every remaining transaction, so it
costs about n^2 / 2 makespan evaluations (5,000 for 100 transactions, about 1 s per workload).
"""


def get_best_schedule(workload, num_seqs):
    schedule = []
    remaining = list(range(workload.num_txns))
    while remaining:
        costs = [workload.get_opt_seq_cost([*schedule, txn]) for txn in remaining]
        best = min(range(len(remaining)), key=costs.__getitem__)
        schedule.append(remaining.pop(best))
    return workload.get_opt_seq_cost(schedule), schedule

