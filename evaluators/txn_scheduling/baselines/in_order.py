"""No scheduling: the transactions in the order they are listed (txn0, txn1, ...)."""


def get_best_schedule(workload, num_seqs):
    schedule = list(range(workload.num_txns))
    return workload.get_opt_seq_cost(schedule), schedule
