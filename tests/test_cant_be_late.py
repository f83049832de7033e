"""The cant_be_late problem: trusted replay, reference scores, archives unpacked into the cache, cheats.

Scores were checked against the reference evaluator (mit-nms/Engram, `SystemBench/ADRS/
cant-be-late/evaluator.py`, run unchanged): every one of the 1,080 per-trace costs of the starting
program is identical, and its full-grid score is -106.74569918383592 in both. The full grid takes
a few seconds here; `bench/bench_cant_be_late.py` checks it, so these tests use the quick set
(270 runs) and single scenarios.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, REPO, evaluator_on
from engram_runs import run

from engram.errors import DataError
from engram.evaluation import ErrorKind, InvalidAnswer
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems import data as data_files
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

QUICK_INITIAL = -98.26710795416716
QUICK_UNIFORM_PROGRESS = -98.91575370687735
ONE = ["dl52.oh0.02.us-west-2a_k80_1"]

HEADER = "import math\nfrom sky_spot.strategies.strategy import Strategy\nfrom sky_spot.utils import ClusterType\n\n"


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("cant_be_late")


@pytest.fixture(scope="module")
def initial_source(problem: Problem) -> str:
    return problem.initial_program.read_text()


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem)


@pytest.fixture(scope="module", params=BACKENDS)
def one_scenario(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, scenarios=ONE)


@pytest.fixture(scope="module")
def honest_one(problem: Problem, initial_source: str) -> float:
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=ONE) as ev:
        return ev.evaluate(initial_source).score


# -- the trusted simulator -------------------------------------------------------------------------


def test_the_quick_set_is_a_quarter_of_the_grid_and_full_is_all_of_it(problem: Problem):
    quick, full = problem.select_scenarios(None), problem.select_scenarios(["full"])
    assert len(quick) == 9 and len(full) == 36
    assert {s.params["deadline_hours"] for s in quick} == {52, 70, 92}
    assert {s.params["overhead_hours"] for s in quick} == {0.02, 0.2, 0.4}
    assert {s.params["env"] for s in quick} == {s.params["env"] for s in full}


def test_replay_charges_restarts_and_preemptions(problem: Problem):
    evaluator = sys.modules[problem.scorer_class.__module__]
    job = evaluator.Job(duration_s=1200.0, deadline_s=3600.0, overhead_s=300.0)
    # Tick 0 starts spot (300 s restart, paid from tick 1), tick 1 works 300 s, tick 2 works 600 s
    # and is preempted at its end, on demand restarts (300 s) and finishes the last 300 s in tick 3.
    outcome = evaluator.replay("SSOOOO", bytes([0, 0, 1, 1, 1, 1]), 600, job)
    assert outcome.finish_tick == 3 and (outcome.spot_ticks, outcome.on_demand_ticks) == (2, 1)
    assert outcome.cost == pytest.approx((2 * 0.9731 + 3.06) * 600 / 3600)
    with pytest.raises(InvalidAnswer, match="spot while spot is unavailable"):
        evaluator.replay("SSS", bytes([0, 0, 1]), 600, job)
    with pytest.raises(InvalidAnswer, match="unknown request"):
        evaluator.replay("SX", bytes([0, 0]), 600, job)


# -- scores ---------------------------------------------------------------------------------------


def test_the_initial_program_scores_as_under_the_reference(evaluator: CandidateEvaluator, initial_source: str):
    result = evaluator.evaluate(initial_source)
    assert result.ok, result.error
    assert result.score == pytest.approx(QUICK_INITIAL, abs=1e-9)
    assert result.metrics["simulations"] == 270


def test_baselines_on_the_quick_set(problem: Problem):
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True)) as ev:
        uniform = ev.evaluate(problem.baselines()["uniform_progress"])
        on_demand = ev.evaluate(problem.baselines()["on_demand_only"])
    assert uniform.score == pytest.approx(QUICK_UNIFORM_PROGRESS, abs=1e-9)
    assert on_demand.metrics["std_cost"] < 1 and on_demand.score < uniform.score


# -- candidates that try to cheat -----------------------------------------------------------------


CLAIMS_PROGRESS = HEADER + '''
class ClaimsProgress(Strategy):
    NAME = "claims_progress"

    def _step(self, last_cluster_type, has_spot):
        if self.env.tick == 5:
            self.task_done_time.append(self.task_duration)  # "the job is done"
        return ClusterType.SPOT if has_spot else ClusterType.NONE
'''

FORGES_REQUESTS = HEADER + '''
import sys

adapter = sys.modules["engram_problem_adapter"]
adapter.simulate = lambda cls, trace, name, scenario_input: "S" * 288  # cheapest possible, never mind the trace


class Greedy(Strategy):
    NAME = "greedy"

    def _step(self, last_cluster_type, has_spot):
        return ClusterType.SPOT if has_spot else ClusterType.NONE
'''

IGNORES_DEADLINE = HEADER + '''
class WaitsForSpot(Strategy):
    NAME = "waits_for_spot"

    def _apply_strong_guarantee(self, proposed, last_cluster_type):  # switch the deadline guard off
        return proposed

    def _step(self, last_cluster_type, has_spot):
        return ClusterType.SPOT if has_spot else ClusterType.NONE
'''

REPORTS_ITS_COST = '''
import sys

adapter = sys.modules["engram_problem_adapter"]
adapter.Env.accumulated_cost = property(lambda self: 0.0)
adapter.ON_DEMAND_PRICE = 0.0
print("mean: 0.0; std: 0.0")
'''


@pytest.mark.parametrize("source, rule", [
    (CLAIMS_PROGRESS, "but the job is not done"),
    (FORGES_REQUESTS, "asked for spot while spot is unavailable"),
    (IGNORES_DEADLINE, "after its deadline of 52 h"),
], ids=["claims-progress", "forges-requests", "ignores-deadline"])
def test_cheating_strategies_are_invalid(one_scenario: CandidateEvaluator, source: str, rule: str):
    result = one_scenario.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
    assert rule in result.error


def test_reporting_its_own_cost_changes_nothing(one_scenario: CandidateEvaluator, initial_source: str,
                                                honest_one: float):
    assert one_scenario.evaluate(REPORTS_ITS_COST + initial_source).score == pytest.approx(honest_one, abs=1e-12)


@pytest.mark.parametrize("choice", ['"SPOT"', "None", "3"])
def test_invalid_actions_fail_with_a_clear_message(one_scenario: CandidateEvaluator, choice: str):
    source = HEADER + f"class Odd(Strategy):\n    NAME = 'odd'\n\n    def _step(self, last, has_spot):\n" \
                      f"        return {choice}\n"
    result = one_scenario.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.RUNTIME
    assert "return ClusterType.SPOT, ClusterType.ON_DEMAND or ClusterType.NONE" in result.error


def test_a_program_without_a_strategy_fails(one_scenario: CandidateEvaluator):
    result = one_scenario.evaluate("x = 1\n")
    assert not result.ok and "defines no strategy" in result.error


# -- archives are unpacked into the cache and their members checked --------------------------------


def _archive(path: Path, files: dict[str, bytes]) -> data_files.DataFile:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return data_files.DataFile(path="t/a.tar.gz", url="https://example.invalid/a.tar.gz", sha256=digest)


def test_unpacked_archives_are_checked_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mirror = tmp_path / "mirror"
    (mirror / "t").mkdir(parents=True)
    monkeypatch.setenv(data_files.DATA_DIR_ENV, str(mirror))
    monkeypatch.setenv(data_files.CACHE_DIR_ENV, str(tmp_path / "cache"))
    entry = _archive(mirror / "t" / "a.tar.gz", {"d/x.json": b"[1]", "d/y.json": b"[2]"})
    expected = {"d/x.json": hashlib.sha256(b"[1]").hexdigest()}
    root = data_files.unpacked(entry, expected)
    assert (root / "d" / "x.json").read_bytes() == b"[1]"
    assert not (root / "d" / "y.json").exists()  # only what the problem reads
    assert root.is_relative_to(tmp_path / "cache")  # the mirror stays untouched
    (root / "d" / "x.json").write_bytes(b"[0]")  # a candidate run without isolation edits the cache
    assert (data_files.unpacked(entry, expected) / "d" / "x.json").read_bytes() == b"[1]"
    with pytest.raises(DataError, match="does not contain the expected files"):
        data_files.unpacked(entry, {"d/z.json": "0" * 64})
    both = {**expected, "d/y.json": hashlib.sha256(b"[2]").hexdigest()}
    assert (data_files.unpacked(entry, both) / "d" / "y.json").read_bytes() == b"[2]"


def test_archives_that_escape_their_folder_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mirror = tmp_path / "mirror"
    (mirror / "t").mkdir(parents=True)
    monkeypatch.setenv(data_files.DATA_DIR_ENV, str(mirror))
    monkeypatch.setenv(data_files.CACHE_DIR_ENV, str(tmp_path / "cache"))
    entry = _archive(mirror / "t" / "a.tar.gz", {"../../escape.txt": b"x"})
    with pytest.raises(DataError, match="cannot unpack"):
        data_files.unpacked(entry, {"../../escape.txt": hashlib.sha256(b"x").hexdigest()})
    assert not (tmp_path / "escape.txt").exists()


def test_engram_evaluate_writes_per_trace_costs(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "cant_be_late",
                           "evaluators/cant_be_late/initial_program.py", "--sandbox", "process", "--scenarios", ONE[0],
                           "--json", "--artifacts", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["simulations"] == 30
    rows = (tmp_path / f"{ONE[0]}.costs.csv").read_text().splitlines()
    assert rows[0] == "trace,cost,finish_tick,spot_ticks,on_demand_ticks" and len(rows) == 31


# -- the Engram method, offline -------------------------------------------------------------------


def test_the_scripted_spec_runs_the_engram_method(tmp_path: Path):
    outcome = run(REPO / "specs" / "cant_be_late_scripted.yaml",
                  [f"output.dir={tmp_path}", "sandbox.backend=process", f"problem.scenarios={json.dumps(ONE)}"])
    result = json.loads((outcome.run_dir / "seed-0" / "result.json").read_text())
    assert result["evaluations"] == 2 and result["best_score"] < 0
