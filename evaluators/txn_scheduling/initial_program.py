"""Sampled greedy: grow the schedule one transaction at a time, choosing among a few random ones.

Start from a random transaction; at every step draw up to 10 of the remaining transactions at
random, keep the one whose addition gives the shortest schedule so far
(`workload.get_opt_seq_cost`), and put the others back. `random` is seeded by the evaluator.
"""

import random

from txn_simulator import Workload  # noqa: F401 - the class of `workload`, for reference

SAMPLES_PER_STEP = 10
SAMPLE_RATE = 1.0  # probability of choosing greedily at a step; otherwise a random transaction is taken


def get_best_schedule(workload, num_seqs):
    """Returns (makespan, schedule); the evaluator recomputes the makespan from the schedule."""
    count = workload.num_txns
    first = random.randint(0, count - 1)
    schedule = [first]
    pool = [txn for txn in range(count) if txn != first]
    for _ in range(count - 1):
        if random.random() > SAMPLE_RATE:
            schedule.append(pool.pop(random.randint(0, len(pool) - 1)))
            continue
        drawn = []
        best, best_cost = None, float("inf")
        for _ in range(SAMPLES_PER_STEP):
            last = len(pool) <= 1
            drawn.append(pool.pop(0 if last else random.randint(0, len(pool) - 1)))
            cost = workload.get_opt_seq_cost([*schedule, drawn[-1]])
            if cost < best_cost:
                best, best_cost = drawn[-1], cost
            if last:
                break
        schedule.append(best)
        drawn.remove(best)
        pool.extend(drawn)
    return workload.get_opt_seq_cost(schedule), schedule
