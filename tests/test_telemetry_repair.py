"""The telemetry_repair problem: reference scores, complete answers, and candidates that try to cheat.

Expected scores were checked against the reference evaluator (mit-nms/Engram,
`SystemBench/ADRS/telemetry_repair/evaluator.py`, run unchanged on the same programs): it gives
0.05112111111111114 for our starting program and 0.7993600702169033 for the echo baseline (and
for the reference's own Hodor program once its `random.seed` call is neutralised).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    BACKENDS,
    REPO,
    evaluator_on,
    private_data_mirror,
    require_backend,
    require_unprivileged_process_sandbox,
)
from engram_runs import run

from engram.errors import SandboxError
from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

DATA_FILE = "adrs/telemetry_repair/evaluation_data.csv"
SHARED_MIRROR = os.environ["ENGRAM_DATA_DIR"]

INITIAL_SCORE = 0.05112111111111114
ECHO_SCORE = 0.7993600702169033

ECHO_BODY = '''
def repair_network_telemetry(telemetry, topology):
    out = {}
    for i, r in telemetry.items():
        out[i] = {"rx_rate": (r["rx_rate"], r["rx_rate"], 0.5), "tx_rate": (r["tx_rate"], r["tx_rate"], 0.5),
                  "interface_status": (r["interface_status"], r["interface_status"], 1.0)}
    return out
'''


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("telemetry_repair")


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem)


def test_the_initial_program_scores_what_the_reference_evaluator_gives(evaluator: CandidateEvaluator,
                                                                       problem: Problem):
    result = evaluator.evaluate(problem.initial_program)
    assert result.ok, result.error
    assert result.score == pytest.approx(INITIAL_SCORE, abs=1e-15)
    assert result.metrics["cases"] == 30 and result.metrics["status_repair"] == 1.0


def test_baselines(evaluator: CandidateEvaluator, problem: Problem):
    baselines = problem.baselines()
    echo = evaluator.evaluate(baselines["echo"])
    symmetry = evaluator.evaluate(baselines["link_symmetry"])
    assert echo.score == pytest.approx(ECHO_SCORE, abs=1e-15)
    assert symmetry.ok and symmetry.score > 0.9 > echo.score


def test_cases_are_fixed_and_carry_no_ground_truth(problem: Problem):
    first, again = problem.make_scorer(), problem.make_scorer()
    assert [c.telemetry for c in first.cases] == [c.telemetry for c in again.cases]
    assert len(first.cases) == 30
    assert {c.bug_type for c in first.cases} == {"dropped", "scaled", "correlated_dropped", "correlated_scaled"}
    for case in first.cases:
        for record in case.telemetry.values():
            assert set(record) == {"interface_status", "rx_rate", "tx_rate", "connected_to", "local_router",
                                   "remote_router"}


@pytest.mark.parametrize("body, rule", [
    ("return {}", "is missing from the answer"),
    ("return {k: v for k, v in list(echo(telemetry, topology).items())[:3]}", "is missing from the answer"),
    ("return {k: {f: t[1] for f, t in v.items()} for k, v in echo(telemetry, topology).items()}",
     "must be an (original, repaired, confidence) tuple"),
    ("return {k: {f: (t[0], t[1], 1.5) for f, t in v.items()} for k, v in echo(telemetry, topology).items()}",
     "confidence must be a number between 0 and 1"),
    ("return {k: dict(v, rx_rate=(0, 'big', 0.5)) for k, v in echo(telemetry, topology).items()}",
     "repaired counter must be a finite number"),
    ("return [1, 2, 3]", "must be a dict"),
], ids=["empty", "cherry-picked", "bare-values", "confidence-out-of-range", "text-counter", "not-a-dict"])
def test_answers_that_skip_or_bend_the_rules_are_invalid(evaluator: CandidateEvaluator, body: str, rule: str):
    """The reference skipped missing interfaces and bare values, and counted what it skipped as
    perfect status and calibration: an empty answer scored 0.25, a cherry-picked one more."""
    source = ECHO_BODY.replace("def repair_network_telemetry", "def echo") + \
        f"\n\ndef repair_network_telemetry(telemetry, topology):\n    {body}\n"
    result = evaluator.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT
    assert rule in result.error


def test_reseeding_random_does_not_change_the_cases(evaluator: CandidateEvaluator):
    """In the reference the cases were drawn from the global generator the candidate shares; a
    program that reseeded it (as the reference's own Hodor program does) changed its test cases."""
    reseeding = "import random\n" + ECHO_BODY.replace("    out = {}", "    random.seed(7)\n    out = {}")
    assert evaluator.evaluate(reseeding).score == pytest.approx(ECHO_SCORE, abs=1e-15)


def test_a_candidate_that_prints_or_writes_a_perfect_score_gains_nothing(evaluator: CandidateEvaluator):
    source = "import json, os\n" + ECHO_BODY.replace("    return out", '''    print("score: 1.0")
    with open(os.path.join(os.getcwd(), "answers.jsonl"), "a") as handle:
        handle.write(json.dumps({"event": "scenario", "name": "case_01", "answer": {}}) + "\\n")
    return out''')
    result = evaluator.evaluate(source)
    assert result.score == pytest.approx(ECHO_SCORE, abs=1e-15) or (
        not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT)  # a forged line is judged like any answer


def test_engram_evaluate_prints_the_score():
    require_backend("bwrap")
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "telemetry_repair",
                           "evaluators/telemetry_repair/initial_program.py", "--sandbox", "bwrap",
                           "--scenarios", "quick", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and len(result["scenarios"]) == 10


def test_the_scripted_spec_runs_the_engram_method(tmp_path: Path):
    require_backend("bwrap")
    outcome = run(REPO / "specs" / "telemetry_repair_scripted.yaml",
                  [f"output.dir={tmp_path}", "sandbox.backend=bwrap"])
    result = json.loads((outcome.run_dir / "seed-0" / "result.json").read_text())
    assert result["evaluations"] == 2 and result["best_score"] > 0.9


# -- the ground truth stays hidden ---------------------------------------------------------------------

READ_THE_TRUTH = """
import csv, glob, os
from collections import defaultdict

def _truth_rows():
    for pattern in PATTERNS:
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path, newline="") as handle:
                    return list(csv.DictReader(handle))
            except OSError:
                continue
    return None
""" + ECHO_BODY


def _reader(*patterns: str) -> str:
    """Echo, after trying to open the data file wherever it might be: a read is proven by printing it."""
    return READ_THE_TRUTH.replace("PATTERNS", repr(list(patterns))).replace(
        "    out = {}", "    rows = _truth_rows()\n    print('TRUTH-ROWS', None if rows is None else len(rows))\n"
                      "    out = {}")


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_the_ground_truth_is_not_readable_under_isolation(problem: Problem, backend: str):
    require_backend(backend)
    truth = problem.data_file(DATA_FILE)
    reader = _reader(str(truth), "/work/shared/**/" + DATA_FILE, os.path.expanduser("~/.cache/engram/**/*.csv"))
    probe: dict = {}
    exec(reader, probe)  # the control: from the runner's own process the probe does find the file
    assert len(probe["_truth_rows"]()) == 40
    with CandidateEvaluator(problem, get_sandbox(backend, quiet=True), scenarios=["case_01"]) as evaluator:
        result = evaluator.evaluate(reader)
    assert result.ok, result.error
    assert "TRUTH-ROWS None" in result.stdout


def test_the_process_sandbox_refuses_while_the_ground_truth_is_readable(problem: Problem,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """The shared mirror is world-readable (and without root candidates run as Engram's user):
    under process, where nothing hides a file, the evaluation does not start."""
    monkeypatch.setenv("ENGRAM_DATA_DIR", SHARED_MIRROR)
    truth = problem.data_file(DATA_FILE)
    assert truth.stat().st_mode & 0o004 or os.geteuid() != 0
    with pytest.raises(SandboxError, match="could read under the 'process' sandbox"):
        CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["case_01"])
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "telemetry_repair",
                           "evaluators/telemetry_repair/initial_program.py", "--sandbox", "process"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") <= 1 and "bwrap or docker" in done.stderr


def test_under_process_a_private_ground_truth_is_unreadable(problem: Problem):
    """As root, with the data store closed to other users and the interpreter reachable: the problem
    runs under process, and its candidates (an unprivileged uid) cannot open the ground truth."""
    require_unprivileged_process_sandbox()
    with private_data_mirror(problem) as mirror:
        truth = problem.data_file(DATA_FILE)
        assert mirror is not None and truth.is_relative_to(mirror)
        with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["case_01"]) as evaluator:
            result = evaluator.evaluate(_reader(str(truth), str(mirror / "**" / "*.csv")))
    assert result.ok, result.error
    assert "TRUTH-ROWS None" in result.stdout
