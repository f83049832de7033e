"""The transaction-schedule cost model: how long a sequence of transactions takes under locking.

Used on both sides: the trusted scorer computes every makespan with it, and the sandbox gives
candidates the same model as the `Workload` class of a module named `txn_simulator`, as the
reference did (mit-nms/Engram, SystemBench/ADRS/txn_scheduling). The rules reproduce the
reference's makespans exactly (checked against it on random permutations):

* A transaction is a string of operations, `r-<key>` (read), `w-<key>` (write) or `*` (work on
  no key); the operation at position `p` (1-based) runs at time `start + p - 1`, and the
  transaction's length counts every position, `*` included.
* Transactions are placed in the given order, each at the earliest start (at least 1) such that,
  for each of its keys already used by earlier transactions: a write, or a read after the key's
  latest use was a write, comes strictly after the latest time the key was used; a read after
  other reads comes strictly after the latest *write* of the key (reads share the key). All of a
  transaction's operations are checked against the state before it, so a transaction never waits
  for itself.
* The makespan is the largest end time (`start + length - 1`) over the transactions.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence

Operation = tuple[str, str, int, int]
"""(kind "r" or "w", key, 1-based position in the transaction, transaction length)."""


def parse_transaction(text: str) -> list[Operation]:
    """The keyed operations of one transaction (positions count the `*` placeholders too)."""
    tokens = text.split(" ")
    operations = []
    for position, token in enumerate(tokens, start=1):
        if token == "*":
            continue
        kind, separator, key = token.partition("-")
        if not separator or "-" in key or kind not in ("r", "w"):
            raise ValueError(f"malformed operation {token!r} in transaction {text[:60]!r}")
        operations.append((kind, key, position, len(tokens)))
    return operations


class _KeyHistory:
    """When a key was used, in time order: times, and whether each use was a write."""

    __slots__ = ("is_write", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.is_write: list[bool] = []

    def add(self, time: int, write: bool) -> None:
        index = bisect.bisect_right(self.times, time)
        self.times.insert(index, time)
        self.is_write.insert(index, write)

    def earliest_access(self, write: bool) -> int:
        """The first time at which an operation of this kind may use the key."""
        if write or self.is_write[-1]:
            return self.times[-1] + 1
        for index in range(len(self.times) - 1, -1, -1):
            if self.is_write[index]:
                return self.times[index] + 1
        return 0


def schedule_times(transactions: Sequence[list[Operation]], order: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each transaction of `order` (indices into `transactions`), as defined above."""
    histories: dict[str, _KeyHistory] = {}
    times = []
    for index in order:
        operations = transactions[index]
        start = 1
        for kind, key, position, _ in operations:
            history = histories.get(key)
            if history is not None:
                start = max(start, history.earliest_access(kind == "w") - position + 1)
        length = operations[-1][3] if operations else 0  # every operation carries the length
        times.append((start, start + length - 1))
        for kind, key, position, _ in operations:
            history = histories.get(key)
            if history is None:
                history = histories[key] = _KeyHistory()
            history.add(start + position - 1, kind == "w")
    return times


def makespan(transactions: Sequence[list[Operation]], order: Sequence[int]) -> int:
    """Time to run the transactions in `order`: the latest end (0 for an empty order)."""
    return max((end for _, end in schedule_times(transactions, order)), default=0)


class Workload:
    """A workload as candidates see it: `num_txns`, `txns` (each a list of operations
    `(kind, key, position, length)`), and `get_opt_seq_cost(order)`, the makespan of an order
    (a prefix of a full schedule is allowed)."""

    def __init__(self, workload_json: str, debug: bool = False, verify: bool = False) -> None:
        self.workload: list[str] = list(json.loads(workload_json).values())
        self.debug = debug
        self.verify = verify
        self.txns: list[list[Operation]] = [parse_transaction(text) for text in self.workload]
        self.num_txns = len(self.txns)

    def get_opt_seq_cost(self, txn_seq: Sequence[int]) -> int:
        return makespan(self.txns, txn_seq)
