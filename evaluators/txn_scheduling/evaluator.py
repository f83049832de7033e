"""Trusted scoring for txn_scheduling: check each schedule, compute its makespan here.

The reference (mit-nms/Engram, SystemBench/ADRS/txn_scheduling) ran the candidate's own
`get_random_costs()` and scored the makespan *it reported*, so a program could claim any number,
and never seeded the random generator, so scores of randomised programs varied from run to run.
Here the candidate only returns an order of transactions; this module checks that it is a
permutation of the workload's transactions and computes the makespan with its own copy of the
cost model (`txn_simulator.py`, which reproduces the reference's makespans exactly) on its own copy
of the workload (`workloads.py`). Score = 1e6 / (1 + sum of the scenarios' makespans), the
reference's formula.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer
from engram.problems.problem import Problem, ScenarioSpec, load_problem_module

SCORE_NUMERATOR = 1_000_000.0


simulator = load_problem_module(__file__, "txn_simulator")
workloads = load_problem_module(__file__, "workloads")


def check_schedule(answer: Any, num_txns: int) -> list[int]:
    """The schedule as a list of indices, or `InvalidAnswer` naming the first problem with it."""
    if not isinstance(answer, dict) or not isinstance(answer.get("schedule"), list):
        returned = answer.get("returned") if isinstance(answer, dict) else type(answer).__name__
        raise InvalidAnswer(f"get_best_schedule must return a schedule (a list of transaction indices) or "
                            f"(makespan, schedule), not {returned}")
    schedule = answer["schedule"]
    seen: dict[int, int] = {}
    for position, item in enumerate(schedule):
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < num_txns:
            shown = item if isinstance(item, str) else repr(item)  # the adapter sends non-integers as repr
            raise InvalidAnswer(f"schedule position {position}: {shown} is not a transaction index "
                                f"(0..{num_txns - 1})")
        if item in seen:
            raise InvalidAnswer(f"transaction {item} appears twice in the schedule (positions {seen[item]} "
                                f"and {position}); each must appear exactly once")
        seen[item] = position
    if len(schedule) != num_txns:
        missing = sorted(set(range(num_txns)) - set(seen))
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InvalidAnswer(f"the schedule lists {len(schedule)} of the {num_txns} transactions; missing: {shown}")
    return schedule


class TxnSchedulingScorer(Scorer):
    """Scores transaction orders by the makespan the cost model gives them."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.texts = {s.name: getattr(workloads, s.params["workload"]) for s in problem.config.scenarios}
        self.transactions = {name: [simulator.parse_transaction(t) for t in json.loads(text).values()]
                             for name, text in self.texts.items()}

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {"workload": self.texts[scenario.name], "num_seqs": int(scenario.params["num_seqs"]),
                "seed": int(scenario.params["seed"])}

    def score_scenario(self, scenario: ScenarioSpec, answer: Any) -> ScenarioScore:
        transactions = self.transactions[scenario.name]
        schedule = check_schedule(answer, len(transactions))
        times = simulator.schedule_times(transactions, schedule)
        makespan = max(end for _, end in times)
        rows = io.StringIO()
        table = csv.writer(rows, lineterminator="\n")
        table.writerow(["position", "transaction", "start", "end"])
        table.writerows([position, txn, start, end] for position, (txn, (start, end))
                        in enumerate(zip(schedule, times, strict=True)))
        claimed = answer.get("claimed_makespan")
        metrics = {"makespan": makespan, "transactions": len(transactions),
                   "claimed_makespan": claimed if isinstance(claimed, int | float) else None}
        return ScenarioScore(metrics=metrics, artifacts={f"{scenario.name}.schedule.csv": rows.getvalue()})

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        total = sum(int(r.metrics["makespan"]) for r in results.values())
        return SCORE_NUMERATOR / (1 + total), {"total_makespan": total}
