"""The eplb problem: the seeded synthetic workload, the reference's balancedness, malformed mappings.

The reference's workload is not public and its evaluator needs torch, so the numbers pinned here
are our own: the generator's first draws, and the initial program's score on them, with the seeds
`PINNED` (a run draws its own, secret ones; these are the seeds problem.yaml used to publish). The
balancedness definition is checked against a direct transcription of the reference's loop
(`simulate_inference`: each replica listed in log2phy gets its expert's load / count).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import BACKENDS, REPO, evaluator_on, require_backend
from engram_runs import run

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.run_secrets import TrustedSecrets
from engram.problems.problem import Problem, list_problems, load_problem
from engram.runs.progress import QuietProgress
from engram.runs.replay import replay_run
from engram.runs.rescore import rescore_run
from engram.sandbox import get_sandbox

PINNED = {"eplb/steady": 1, "eplb/shifting": 2}
INITIAL_SCORE = 0.2709619742603009
INITIAL_STEADY = 0.33485313498963554
GLOBAL_GREEDY_STEADY = 0.34381730080354855

# A cheap valid mapping (experts in order, the 32 extra replicas to experts 0..31), then an attack
# applied to window 0's answer only.
TRIVIAL_THEN = '''
import numpy as np

calls = []


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    layers, experts = weight.shape
    extra = num_replicas - experts
    phy2log = np.tile(np.concatenate([np.arange(experts), np.arange(extra)]), (layers, 1))
    logcnt = np.ones((layers, experts), dtype=np.int64)
    logcnt[:, :extra] = 2
    log2phy = np.full((layers, experts, 2), -1, dtype=np.int64)
    log2phy[:, :, 0] = np.arange(experts)
    log2phy[:, :extra, 1] = experts + np.arange(extra)
    calls.append(1)
    if len(calls) == 1:
{attack}
    return phy2log, log2phy, logcnt
'''

ATTACKS = {
    "phy2log_shape": ("        phy2log = phy2log[:, :-1]", "phy2log has shape (58, 287), expected (58, 288)"),
    "logcnt_sum": ("        logcnt[3, 40] = 2", "layer 3: logcnt sums to 289"),
    "zero_replicas": ("        logcnt[0, 40] = 0\n        logcnt[0, 41] = 2",
                      "layer 0, expert 40: logcnt is 0"),
    "float_arrays": ("        logcnt = logcnt.astype(float)", "logcnt must hold integers"),
    "phy2log_range": ("        phy2log[2, 5] = 256", "layer 2, replica 5: phy2log names logical expert 256"),
    "replica_twice": ("        log2phy[1, 7, 0] = 8", "layer 1: log2phy lists some replica twice"),
    "inconsistent": ("        phy2log[4, 100], phy2log[4, 101] = 101, 100",
                     "layer 4: log2phy gives replica 100 to expert 100, but phy2log gives it to expert 101"),
    "padding_used": ("        log2phy[0, 200, 1] = 5", "layer 0, expert 200, slot 1: log2phy holds 5 beyond logcnt"),
    "slot_range": ("        log2phy[0, 3, 0] = 288", "layer 0, expert 3, slot 0: log2phy holds 288"),
    "huge_last_dimension": ("        log2phy = np.full((layers, experts, 1000), -1, dtype=np.int64)",
                            "log2phy's last dimension is 1000"),
    "two_arrays": ("        return phy2log, logcnt", "not tuple of length 2"),
}


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("eplb")


@pytest.fixture(scope="module")
def scorer(problem: Problem):
    made = problem.make_scorer()
    made.secrets = TrustedSecrets(values=PINNED)
    return made


def windows_of(scorer, name: str) -> np.ndarray:
    return scorer.windows(next(s for s in scorer.problem.config.scenarios if s.name == name))


@pytest.fixture(scope="module", params=BACKENDS)
def steady(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, scenarios=["steady"], time_limit_s=60,
                            secrets=TrustedSecrets(values=PINNED))


@pytest.fixture(scope="module")
def steady_process(problem: Problem) -> Iterator[CandidateEvaluator]:
    """For the validation rules: they run in the trusted process, whatever the backend."""
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["steady"],
                            time_limit_s=60, secrets=TrustedSecrets(values=PINNED)) as ev:
        yield ev


def _initial_module(problem: Problem):
    spec = importlib.util.spec_from_file_location("eplb_initial_under_test", problem.initial_program)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_synthetic_workload_is_seeded_and_shaped(scorer):
    windows = windows_of(scorer, "steady")
    assert windows.shape == (10, 58, 256) and windows.dtype == np.int64
    assert (windows.sum(axis=2) == 409_600 * 8).all()
    assert windows[0, 0, :4].tolist() == [10867, 4590, 8906, 11506]
    assert windows[9, 57, -2:].tolist() == [28138, 2897]
    assert not np.array_equal(windows_of(scorer, "shifting"), windows)


def test_balancedness_is_the_references(problem: Problem, scorer):
    """Scorer vs. the reference's loop over log2phy, on the initial program's real mappings."""
    evaluator = sys.modules[type(scorer).__module__]
    initial = _initial_module(problem)
    windows = windows_of(scorer, "shifting")
    for number in range(3):
        phy2log, log2phy, logcnt = initial.rebalance_experts(windows[number], 288, 8, 4, 32)
        load = windows[number + 1]
        replica = np.zeros((load.shape[0], 288))
        for layer in range(load.shape[0]):
            for expert in range(load.shape[1]):
                count = int(logcnt[layer, expert])
                replica[layer, log2phy[layer, expert, :count]] += load[layer, expert] / count
        expected = replica.mean(axis=1).sum() / replica.max(axis=1).sum()
        mapping = evaluator.Mapping(phy2log=phy2log, logcnt=logcnt)
        assert evaluator.balancedness(evaluator.replica_loads(mapping, load)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_engram_evaluate_scores_the_initial_program(backend: str, problem: Problem, tmp_path):
    require_backend(backend)
    (tmp_path / "secrets.json").write_text(json.dumps(PINNED))
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "eplb", str(problem.initial_program),
                           "--sandbox", backend, "--scenarios", "steady", "--json",
                           "--secrets", str(tmp_path / "secrets.json")],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["score"] == pytest.approx(INITIAL_STEADY, rel=1e-12)
    assert result["scenarios"]["steady"]["metrics"]["windows"] == 9


def test_full_score_of_the_initial_program(problem: Problem):
    assert "eplb" in {p.name for p in list_problems()}
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True),  # values, not isolation
                            secrets=TrustedSecrets(values=PINNED)) as evaluator:
        initial = evaluator.evaluate(problem.initial_program)
    assert initial.ok, initial.error
    assert initial.score == pytest.approx(INITIAL_SCORE, rel=1e-12)
    assert initial.metrics["windows"] == 18


def test_the_baseline(steady_process: CandidateEvaluator, problem: Problem):
    greedy = steady_process.evaluate(problem.baselines()["global_greedy"])
    assert greedy.ok, greedy.error
    assert greedy.score == pytest.approx(GLOBAL_GREEDY_STEADY, rel=1e-12)


def _attack(evaluator: CandidateEvaluator, attack: str) -> None:
    code, message = ATTACKS[attack]
    result = evaluator.evaluate(TRIVIAL_THEN.replace("{attack}", code))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "window 0" in result.error and message in result.error


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_malformed_mappings_fail(steady_process: CandidateEvaluator, attack: str):
    _attack(steady_process, attack)


def test_the_trivial_mapping_is_valid_and_an_inconsistent_one_fails_on_every_backend(steady: CandidateEvaluator):
    result = steady.evaluate(TRIVIAL_THEN.replace("{attack}", "        pass"))
    assert result.ok, result.error
    assert 0 < result.score < INITIAL_STEADY
    _attack(steady, "inconsistent")


@pytest.mark.parametrize("source, kind", [
    ("import torch\n\ndef rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n    pass\n",
     ErrorKind.IMPORT),
    ("def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n    return torch.zeros(1)\n",
     ErrorKind.RUNTIME),  # the predefined name `torch`, used without importing it
])
def test_a_torch_program_without_torch_is_told_so(steady: CandidateEvaluator, source: str, kind: ErrorKind):
    result = steady.evaluate(source)
    assert not result.ok and result.error_kind == kind
    assert "torch is not installed" in result.error and "numpy" in result.error


def test_the_scripted_spec_runs_the_engram_method_on_its_own_secret_windows(tmp_path, problem: Problem):
    outcome = run(REPO / "specs" / "eplb_scripted.yaml", [f"output.dir={tmp_path}", "sandbox.backend=process"])
    result = json.loads((outcome.run_dir / "seed-0" / "result.json").read_text())
    assert result["evaluations"] == 2
    secrets_file = outcome.run_dir / "trusted" / "secrets.json"
    drawn = json.loads(secrets_file.read_text())
    assert set(drawn) == {"eplb/steady"} and drawn["eplb/steady"] not in PINNED.values()
    assert secrets_file.stat().st_mode & 0o777 == 0o600 and secrets_file.parent.stat().st_mode & 0o777 == 0o700
    assert not list(outcome.run_dir.glob("seed-*/workspace/**/secrets.json"))
    # The run's windows are not the published ones, and rescoring finds them again: every score the same.
    assert result["best_score"] not in (pytest.approx(GLOBAL_GREEDY_STEADY, rel=1e-9),
                                        pytest.approx(INITIAL_STEADY, rel=1e-9))
    rescored = rescore_run(outcome.run_dir, sandbox_name="process")
    assert rescored.comparison.identical and len(rescored.comparison.pairs) == 2
    replayed = replay_run(outcome.run_dir, QuietProgress(), out=tmp_path / "replay")
    assert replayed.comparison.identical and len(replayed.comparison.pairs) == 2
    assert json.loads((tmp_path / "replay" / "trusted" / "secrets.json").read_text()) == drawn


# -- what is scored stays hidden ----------------------------------------------------------------------

PREDICTOR = '''
import gc
import numpy as np

{workload}

{greedy}

_GUESSES = {{1: 0.95, 2: 0.7}}  # the seeds problem.yaml once published, with each scenario's persistence
_known = [expert_load_windows(WorkloadModel(seed=seed, persistence=rho)) for seed, rho in _GUESSES.items()]


def _leaked_windows():
    """Every list of windows reachable in this process (a scenario input that held them all)."""
    for item in gc.get_objects():
        if isinstance(item, dict) and isinstance(item.get("windows"), list) and len(item["windows"]) > 1:
            yield np.asarray(item["windows"], dtype=np.int64)


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    current = np.asarray(weight)
    for windows in [*_known, *_leaked_windows()]:
        for number in range(len(windows) - 1):
            if np.array_equal(windows[number], current):  # plan for the window we will be scored on
                return _honest(windows[number + 1], num_replicas, num_groups, num_nodes, num_gpus)
    return _honest(weight, num_replicas, num_groups, num_nodes, num_gpus)
'''


def _predictor(problem: Problem) -> str:
    workload = (problem.root / "workload.py").read_text().replace("from __future__ import annotations", "")
    greedy = problem.baselines()["global_greedy"].read_text().replace("def rebalance_experts(", "def _honest(")
    return PREDICTOR.format(workload=workload, greedy=greedy)


@pytest.mark.parametrize("backend", ["process", "bwrap"])
def test_a_predictor_of_the_next_window_no_longer_beats_honest_programs(backend: str, problem: Problem):
    """With the seeds problem.yaml used to publish, regenerating the workload wins by far (the
    control: this test can fail); with the run's secret seed, and windows sent one at a time, the
    predictor finds nothing to predict from and scores exactly as the honest program it falls back on."""
    require_backend(backend)
    sandbox = get_sandbox(backend, quiet=True)
    honest_source = problem.baselines()["global_greedy"].read_text()
    with CandidateEvaluator(problem, sandbox, secrets=TrustedSecrets(values=PINNED)) as published:
        cheat, honest = published.evaluate(_predictor(problem)), published.evaluate(honest_source)
    assert cheat.ok and honest.ok, (cheat.error, honest.error)
    assert cheat.score > honest.score + 0.1
    with CandidateEvaluator(problem, sandbox) as secret:  # a fresh secret seed, as every run draws
        cheat, honest = secret.evaluate(_predictor(problem)), secret.evaluate(honest_source)
    assert cheat.ok and honest.ok, (cheat.error, honest.error)
    assert cheat.score <= honest.score


def test_the_problem_publishes_no_seed_and_candidates_see_no_generator(problem: Problem):
    assert all("seed" not in s.params for s in problem.config.scenarios)
    assert [p.name for p in problem.candidate_files()] == ["adapter.py"]
