"""The cant_be_late_multi problem: reference scores, region switching, cheats, tampered trace files.

Scores were checked against the reference evaluator (mit-nms/Engram, `SystemBench/ADRS/
cant-be-late-multi/evaluator.py`, run unchanged): the starting program scores -88.37793479456109
and the RC/CR threshold baseline -77.33419258680624 in both.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, REPO, evaluator_on
from engram_runs import run

from engram.evaluation import ErrorKind, InvalidAnswer
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems import data as data_files
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

INITIAL_SCORE = -88.37793479456109
RC_CR_SCORE = -77.33419258680624
SMALL = ["all_9_regions"]

HEADER = ("from sky_spot.strategies.multi_strategy import MultiRegionStrategy\n"
          "from sky_spot.utils import ClusterType\n\n")


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("cant_be_late_multi")


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem)


@pytest.fixture(scope="module", params=BACKENDS)
def small(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, scenarios=SMALL)


def test_the_initial_program_and_the_baseline_score_as_under_the_reference(evaluator: CandidateEvaluator,
                                                                            problem: Problem):
    initial = evaluator.evaluate(problem.initial_program)
    assert initial.ok, initial.error
    assert initial.score == pytest.approx(INITIAL_SCORE, abs=1e-9)
    assert initial.scenarios["3_regions_diverse"].metrics["mean_cost"] == pytest.approx(64.25020243055614)
    assert evaluator.evaluate(problem.baselines()["rc_cr_threshold"]).score == pytest.approx(RC_CR_SCORE, abs=1e-9)


def test_replay_follows_the_region_and_keeps_spot_across_a_move(problem: Problem):
    evaluator = sys.modules[problem.scorer_class.__module__]
    job = evaluator.Job(duration_s=1200.0, deadline_s=3600.0, overhead_s=300.0)
    zones = [evaluator.RegionTrace(gap=600, unavailable=bytes([0, 0, 1, 1]), prices=[1.0]),
             evaluator.RegionTrace(gap=600, unavailable=bytes([1, 0, 0, 0]), prices=[2.0])]
    # Spot in zone 0 (300 s restart), moved to zone 1 at tick 1 while zone 0 still had it: no
    # second restart, so 300 + 600 + 300 s of work end the job at tick 3.
    outcome = evaluator.replay("0111", "SSSS", zones, job)
    assert outcome.finish_tick == 3 and outcome.switches == 1
    assert outcome.cost == pytest.approx(3 * 2.0 * 600 / 3600)  # priced in the zone it ends in
    with pytest.raises(InvalidAnswer, match="in region 1, where spot is unavailable"):
        evaluator.replay("1", "S", zones, job)
    with pytest.raises(InvalidAnswer, match="unknown region"):
        evaluator.replay("05", "SS", zones, job)


FORGES_REGIONS = HEADER + '''
import sys

adapter = sys.modules["engram_problem_adapter"]
adapter.simulate = lambda cls, env, scenario_input: {"regions": "0" * 900, "requests": "S" * 900}


class Spot(MultiRegionStrategy):
    NAME = "spot"

    def _step(self, last_cluster_type, has_spot):
        return ClusterType.SPOT
'''

CLAIMS_PROGRESS = HEADER + '''
class ClaimsProgress(MultiRegionStrategy):
    NAME = "claims_progress"

    def _step(self, last_cluster_type, has_spot):
        self.task_done_time.append(3600.0)
        return ClusterType.NONE
'''


@pytest.mark.parametrize("source, rule", [
    (FORGES_REGIONS, "where spot is unavailable"),
    (CLAIMS_PROGRESS, "but the job is not done"),
], ids=["forges-regions", "claims-progress"])
def test_cheating_strategies_are_invalid(small: CandidateEvaluator, source: str, rule: str):
    result = small.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
    assert rule in result.error


def test_switching_to_a_region_that_does_not_exist_fails(small: CandidateEvaluator):
    source = HEADER + ("class Far(MultiRegionStrategy):\n    NAME = 'far'\n\n    def _step(self, last, has_spot):\n"
                       "        self.env.switch_region(42)\n        return ClusterType.NONE\n")
    result = small.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.RUNTIME and "out of range" in result.error


def test_tampered_trace_files_are_restored_before_they_are_read(problem: Problem, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 interpreter_behind_closed_directory: Path):
    """A candidate that stays root (`process` behind a closed interpreter, where no unprivileged uid can
    be used) can write into the cache. It rewrites every unpacked trace to "spot always available";
    the next scorer notices and unpacks afresh."""
    monkeypatch.setenv(data_files.CACHE_DIR_ENV, str(tmp_path / "cache"))
    index = sys.modules[problem.scorer_class.__module__].trace_index
    entry = problem.config.data[0]
    root = data_files.unpacked(entry, index.SHA256)
    honest = problem.make_scorer().traces
    vandal = HEADER + f'''
import json, pathlib

for path in pathlib.Path({str(root)!r}).rglob("*.json"):
    trace = json.loads(path.read_text())
    trace["data"] = [0] * len(trace["data"])
    path.write_text(json.dumps(trace))


class Vandal(MultiRegionStrategy):
    NAME = "vandal"

    def _step(self, last_cluster_type, has_spot):
        return ClusterType.SPOT if has_spot else ClusterType.ON_DEMAND
'''
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=SMALL) as ev:
        assert ev.evaluate(vandal).ok
    assert problem.make_scorer().traces == honest


def test_the_scripted_spec_runs_the_engram_method(tmp_path: Path):
    outcome = run(REPO / "specs" / "cant_be_late_multi_scripted.yaml",
                  [f"output.dir={tmp_path}", "sandbox.backend=process", f"problem.scenarios={json.dumps(SMALL)}"])
    result = json.loads((outcome.run_dir / "seed-0" / "result.json").read_text())
    assert result["evaluations"] == 2 and result["best_score"] < 0
