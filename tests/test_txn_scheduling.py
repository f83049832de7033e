"""The txn_scheduling problem: makespans recomputed from checked permutations, seeded randomness.

The cost model was checked against the reference's simulator (mit-nms/Engram,
SystemBench/ADRS/txn_scheduling) on 900 random orders; the makespans pinned here for fixed orders
come from that simulator. The hostile programs target the reference's holes: a fabricated
makespan, schedules that are not permutations, and a tampered cost model inside the sandbox.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, REPO, evaluator_on, require_backend
from engram_runs import run

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, list_problems, load_problem
from engram.sandbox import get_sandbox

INITIAL_MAKESPANS = {"workload_1": 256, "workload_2": 56, "workload_3": 56}  # seed 0
INITIAL_SCORE = 1e6 / (1 + 368)
BASELINE_TOTALS = {"in_order": 537, "full_greedy": 323}
# The reference simulator's makespans for the listed order and its reverse.
IN_ORDER = {"WORKLOAD_1": 452, "WORKLOAD_2": 38, "WORKLOAD_3": 47}
REVERSED = {"WORKLOAD_1": 456, "WORKLOAD_2": 56, "WORKLOAD_3": 47}

IN_ORDER_PROGRAM = '''
def get_best_schedule(workload, num_seqs):
    return {claim}, {schedule}
'''


def _program(schedule: str, claim: str = "0") -> str:
    return IN_ORDER_PROGRAM.replace("{schedule}", schedule).replace("{claim}", claim)


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("txn_scheduling")


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, time_limit_s=60)


@pytest.fixture(scope="module")
def one_workload(problem: Problem) -> Iterator[CandidateEvaluator]:
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["workload_2"]) as ev:
        yield ev


def _module(problem: Problem, name: str):
    spec = importlib.util.spec_from_file_location(f"txn_test_{name}", problem.root / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workloads_are_the_mirrors(problem: Problem):
    mirror = Path(os.environ["ENGRAM_DATA_DIR"]) / "adrs" / "txn_scheduling" / "workloads.json"
    expected = json.loads(mirror.read_text())
    workloads = _module(problem, "workloads")
    assert {name: json.loads(getattr(workloads, name)) for name in expected} == expected


def test_cost_model_gives_the_references_makespans(problem: Problem):
    simulator, workloads = _module(problem, "txn_simulator"), _module(problem, "workloads")
    for name in IN_ORDER:
        workload = simulator.Workload(getattr(workloads, name))
        assert workload.get_opt_seq_cost(list(range(100))) == IN_ORDER[name]
        assert workload.get_opt_seq_cost(list(range(99, -1, -1))) == REVERSED[name]
        assert workload.txns[0][0][3] == len(workload.workload[0].split(" "))


@pytest.mark.parametrize("backend", BACKENDS)
def test_engram_evaluate_scores_the_initial_program(backend: str, problem: Problem):
    require_backend(backend)
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "txn_scheduling",
                           str(problem.initial_program), "--sandbox", backend, "--json"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["score"] == INITIAL_SCORE
    assert {n: s["metrics"]["makespan"] for n, s in result["scenarios"].items()} == INITIAL_MAKESPANS


def test_baselines(problem: Problem):
    assert set(problem.baselines()) == set(BASELINE_TOTALS)
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True)) as evaluator:  # values, not isolation
        results = {name: evaluator.evaluate(path) for name, path in problem.baselines().items()}
    for name, result in results.items():
        assert result.ok, result.error
        assert result.metrics["total_makespan"] == BASELINE_TOTALS[name]
        assert result.score == 1e6 / (1 + BASELINE_TOTALS[name])


def test_a_fabricated_makespan_is_ignored(evaluator: CandidateEvaluator):
    result = evaluator.evaluate(_program("list(range(workload.num_txns))", claim="1"))
    assert result.ok
    assert result.metrics["total_makespan"] == sum(IN_ORDER.values())
    assert all(s.metrics["claimed_makespan"] == 1 for s in result.scenarios.values())


def test_a_rigged_cost_model_in_the_sandbox_changes_nothing(evaluator: CandidateEvaluator):
    rigged = '''
import txn_simulator
txn_simulator.makespan = lambda transactions, order: 0
txn_simulator.Workload.get_opt_seq_cost = lambda self, seq: 0


def get_best_schedule(workload, num_seqs):
    schedule = list(range(workload.num_txns))
    return workload.get_opt_seq_cost(schedule), schedule
'''
    result = evaluator.evaluate(rigged)
    assert result.ok and result.metrics["total_makespan"] == sum(IN_ORDER.values())


@pytest.mark.parametrize("schedule, message", [
    ("list(range(workload.num_txns - 1))", "missing: 99"),
    ("[0] + list(range(workload.num_txns - 1))", "transaction 0 appears twice"),
    ("list(range(1, workload.num_txns + 1))", "100 is not a transaction index"),
    ("[str(i) for i in range(workload.num_txns)]", "'0' is not a transaction index"),
    ("[True] + list(range(1, workload.num_txns))", "True is not a transaction index"),
    ("None", "not NoneType"),
])
def test_schedules_that_are_not_permutations_fail(evaluator: CandidateEvaluator, schedule: str, message: str):
    result = evaluator.evaluate(_program(schedule))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT
    assert message in result.error


def _schedules(evaluator: CandidateEvaluator, source: str, directory: Path) -> list[str]:
    """The schedule CSVs of two evaluations of the same program."""
    texts = []
    for attempt in ("first", "second"):
        result = evaluator.evaluate(source, artifacts_dir=directory / attempt)
        assert result.ok, result.error
        texts.append((directory / attempt / "workload_2.schedule.csv").read_text())
    return texts


def test_randomness_is_seeded(one_workload: CandidateEvaluator, tmp_path: Path):
    shuffler = '''
import random


def get_best_schedule(workload, num_seqs):
    schedule = list(range(workload.num_txns))
    random.shuffle(schedule)
    return schedule
'''
    first, second = _schedules(one_workload, shuffler, tmp_path / "random")
    assert first == second and first.splitlines()[1] != "0,0,1,21"  # shuffled, and the same both times
    numpy_shuffler = shuffler.replace("import random", "import numpy as np").replace(
        "random.shuffle(schedule)", "schedule = np.random.permutation(workload.num_txns)")
    first, second = _schedules(one_workload, numpy_shuffler, tmp_path / "numpy")
    assert first == second
    assert "txn_scheduling" in {p.name for p in list_problems()}


def test_the_scripted_spec_runs_the_engram_method(tmp_path: Path):
    outcome = run(REPO / "specs" / "txn_scheduling_scripted.yaml",
                  [f"output.dir={tmp_path}", "sandbox.backend=process"])
    seed = outcome.run_dir / "seed-0"
    result = json.loads((seed / "result.json").read_text())
    assert result["evaluations"] == 3 and result["best_score"] == 1e6 / (1 + BASELINE_TOTALS["full_greedy"])
    events = [json.loads(line) for line in (seed / "events.jsonl").read_text().splitlines()]
    scores = [e["score"] for e in events if e["type"] == "experiment"]
    assert scores[1] == 1e6 / (1 + sum(IN_ORDER.values()))  # the claimed makespan of 1 was not believed
