"""Hostile candidates cannot score better than their honest answer deserves.

The candidate process only produces an answer; validation and pricing happen in the trusted
process from its own copy of the data. Each test pairs an attack with the honest score it must
not beat. Attacks that write files run against temporary copies of the problem and its data.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, INITIAL_SCORE, REPO, TIGHT, require_backend

from engram.errors import DataError, IntegrityError
from engram.evaluation import ErrorKind, Evaluation
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

DIRECT_SCORE = 1 / (1 + 1199.168994)


def test_monkeypatching_the_scorer_inside_the_candidate_changes_nothing(evaluator: CandidateEvaluator,
                                                                       initial_source: str):
    attack = '''
import importlib.util, json, os, sys
adapter = sys.modules["engram_problem_adapter"]
here = os.path.dirname(adapter.__file__)
try:  # load the trusted evaluator module into this process and rig it
    spec = importlib.util.spec_from_file_location("rigged", os.path.join(here, "evaluator.py"))
    rigged = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rigged)
    rigged.CloudcastScorer.combine = lambda self, results: (1.0, {"total_cost": 0.0})
    rigged.simulate = lambda *a, **k: {"cost": 0.0}
except Exception as exc:
    print("could not load the evaluator:", exc)
_dumps = json.dumps
json.dumps = lambda obj, **kw: _dumps({**obj, "score": 1e9, "cost": 0} if isinstance(obj, dict) else obj, **kw)
'''
    result = evaluator.evaluate(attack + initial_source)
    assert result.ok, result.error
    assert result.score == INITIAL_SCORE


def test_printing_a_fake_score_is_ignored(evaluator: CandidateEvaluator, initial_source: str):
    attack = '''
import sys
print("score: 1.0")
print('{"combined_score": 1e9, "total_cost": 0}')
print("total_cost: 0.0", file=sys.stderr)
'''
    result = evaluator.evaluate(attack + initial_source)
    assert result.score == INITIAL_SCORE
    assert "combined_score" in result.stdout


def test_forged_answer_lines_are_scored_on_their_merits(evaluator: CandidateEvaluator):
    """Writing the answers file directly only yields the honest score of the topology written."""
    attack = '''
import json, os
request = json.load(open(os.path.join(os.getcwd(), "request.json")))
with open(request["answers"], "a") as out:
    for scenario in request["scenarios"]:
        s = scenario["input"]
        paths = {d: {str(p): [[s["src"], d, {"cost": 0.0}]] for p in range(s["num_partitions"])} for d in s["dsts"]}
        out.write(json.dumps({"event": "scenario", "name": scenario["name"], "answer": {"paths": paths},
                              "score": 1e9, "metrics": {"cost": 0.0}}) + "\\n")
    out.write(json.dumps({"event": "done", "score": 1e9}) + "\\n")
os._exit(0)
'''
    forged = evaluator.evaluate(attack)
    assert forged.score is None and forged.error_kind == ErrorKind.INVALID_OUTPUT  # cost 0.0 is a lie
    honest_lines = attack.replace('{"cost": 0.0}', "{}")
    result = evaluator.evaluate(honest_lines)
    assert result.ok, result.error
    assert result.score == pytest.approx(DIRECT_SCORE, rel=0, abs=1e-15)


@pytest.mark.parametrize("attribute, value", [("cost", 0.0), ("throughput", 1e12)])
def test_forged_edge_attributes_are_rejected(evaluator: CandidateEvaluator, initial_source: str,
                                             attribute: str, value: float):
    attack = initial_source + f'''
_honest = search_algorithm
def search_algorithm(src, dsts, G, num_partitions):
    topology = _honest(src, dsts, G, num_partitions)
    for by_partition in topology.paths.values():
        for edges in by_partition.values():
            for edge in edges:
                edge[2] = dict(edge[2], {attribute}={value!r})
    return topology
'''
    result = evaluator.evaluate(attack)
    assert result.score is None
    assert result.error_kind == ErrorKind.INVALID_OUTPUT
    assert f"claims {attribute}=" in result.error


def test_rewriting_the_graph_in_place_does_not_fool_the_scorer(evaluator: CandidateEvaluator):
    """The reference compared claimed attributes with the candidate's own (mutable) graph."""
    attack = '''
import networkx as nx
def search_algorithm(src, dsts, G, num_partitions):
    for u, v in G.edges:
        G[u][v]["cost"] = 0.0
        G[u][v]["throughput"] = 1e6
    paths = {}
    for dst in dsts:
        route = nx.dijkstra_path(G, src, dst, weight="cost")
        paths[dst] = {str(p): [[u, v, G[u][v]] for u, v in zip(route, route[1:])] for p in range(num_partitions)}
    return paths
'''
    result = evaluator.evaluate(attack)
    assert result.score is None
    assert result.error_kind == ErrorKind.INVALID_OUTPUT


def test_shrinking_the_destination_list_does_not_shrink_the_bill(evaluator: CandidateEvaluator,
                                                                 initial_source: str):
    attack = initial_source + '''
_honest = search_algorithm
def search_algorithm(src, dsts, G, num_partitions):
    topology = _honest(src, dsts, G, num_partitions)
    topology.dsts = dsts[:1]
    topology.src = dsts[0]
    return topology
'''
    assert evaluator.evaluate(attack).score == INITIAL_SCORE


# -- attacks on files ---------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def isolated_copy(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  cloudcast: Problem) -> Iterator[tuple[str, CandidateEvaluator, Path, Path]]:
    """An evaluator over private copies of the problem directory and its data."""
    require_backend(request.param)
    data_dir = tmp_path / "data"
    shutil.copytree(Path(os.environ["ENGRAM_DATA_DIR"]) / "cloudcast", data_dir / "cloudcast")
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(data_dir))
    problem_dir = tmp_path / "problem"
    shutil.copytree(cloudcast.root, problem_dir, ignore=shutil.ignore_patterns("__pycache__"))
    problem = load_problem(problem_dir)
    with CandidateEvaluator(problem, get_sandbox(request.param, quiet=True), limits=TIGHT) as ev:
        yield request.param, ev, problem_dir, data_dir


OVERWRITE = '''
import glob, json, os, sys
targets = {
    "evaluator": os.path.join(PROBLEM_DIR, "evaluator.py"),
    "data": os.path.join(DATA_DIR, "cloudcast", "profiles", "cost.csv"),
    "child": os.path.join(os.path.dirname(json.load(open("request.json"))["shared_input"]), "child.py"),
}
for name, path in targets.items():
    try:
        with open(path, "a") as handle:
            handle.write("\\n# tampered\\n")
        print("overwrote", name)
    except OSError as exc:
        print("could not write", name, type(exc).__name__)
'''


STAYED_ROOT = "ran as root without capabilities"
"""The note `process` adds to a result when it could not give the command an unprivileged uid."""


def test_overwriting_trusted_files_never_pays_off(isolated_copy, initial_source: str):
    """Isolated (bwrap, docker) or under an unprivileged uid (process where one can reach the
    interpreter), the writes cannot land."""
    backend, evaluator, problem_dir, data_dir = isolated_copy
    attack = f"PROBLEM_DIR = {str(problem_dir)!r}\nDATA_DIR = {str(data_dir)!r}\n" + OVERWRITE + initial_source
    result = evaluator.evaluate(attack)
    assert result.score == INITIAL_SCORE, result.error
    if backend == "process" and any(STAYED_ROOT in note for note in result.notes):
        _writes_landed_and_are_refused(result, evaluator, initial_source)
        return
    assert "overwrote" not in result.stdout
    assert "could not write evaluator" in result.stdout
    assert evaluator.evaluate(initial_source).score == INITIAL_SCORE


@pytest.mark.parametrize("isolated_copy", ["process"], indirect=True)
def test_writes_of_a_candidate_that_stays_root_are_refused_by_the_next_evaluation(
        interpreter_behind_closed_directory: Path, isolated_copy, initial_source: str):
    """`process` behind a closed interpreter keeps candidates root (no capabilities): their writes
    land, and the next evaluation refuses to run on what they changed."""
    _, evaluator, problem_dir, data_dir = isolated_copy
    attack = f"PROBLEM_DIR = {str(problem_dir)!r}\nDATA_DIR = {str(data_dir)!r}\n" + OVERWRITE + initial_source
    result = evaluator.evaluate(attack)
    assert result.score == INITIAL_SCORE, result.error
    assert any(STAYED_ROOT in note for note in result.notes), result.notes
    _writes_landed_and_are_refused(result, evaluator, initial_source)


def _writes_landed_and_are_refused(result: Evaluation, evaluator: CandidateEvaluator, initial_source: str) -> None:
    assert "overwrote evaluator" in result.stdout
    with pytest.raises((IntegrityError, DataError)):
        evaluator.evaluate(initial_source)


def test_corrupt_data_is_reported_with_file_and_fix(isolated_copy, initial_source: str):
    _, evaluator, _, data_dir = isolated_copy
    with (data_dir / "cloudcast" / "profiles" / "cost.csv").open("a") as handle:
        handle.write("aws:x,aws:y,0.0\n")
    with pytest.raises(DataError) as caught:
        evaluator.evaluate(initial_source)
    message = str(caught.value)
    assert "cloudcast/profiles/cost.csv" in message and "does not match the problem's manifest" in message
    assert "restore it from https://" in message  # how to fix it, with both causes named
    assert "the manifest's checksum is wrong" in message


# -- secrets and reach --------------------------------------------------------------------------------


def test_candidate_cannot_see_the_callers_secrets(evaluator: CandidateEvaluator, initial_source: str,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-do-not-leak-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-do-not-leak-456")
    probe = '''
import os
print("ENV", dict(os.environ))
for path in ("/proc/self/environ", "/proc/1/environ", f"/proc/{os.getppid()}/environ"):
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print(path, "unreadable", exc)
'''
    result = evaluator.evaluate(probe + initial_source)
    assert result.ok, result.error
    assert "ENV" in result.stdout
    for secret in ("sk-test-do-not-leak-123", "aws-do-not-leak-456", "OPENAI_API_KEY"):
        assert secret not in result.stdout


def test_bwrap_hides_the_host_and_the_network(cloudcast: Problem, initial_source: str, tmp_path: Path):
    require_backend("bwrap")
    secret = tmp_path / "credentials"
    secret.write_text("top-secret-token")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    probe = f'''
import os, socket
try:
    print("SECRET", open({str(secret)!r}).read())
except OSError as exc:
    print("SECRET unreadable", type(exc).__name__)
print("HOME", sorted(os.listdir(os.path.expanduser("~"))))
print("REPO", os.path.exists({str(REPO / "pyproject.toml")!r}))
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("NETWORK reachable")
except OSError as exc:
    print("NETWORK unreachable", type(exc).__name__)
'''
    try:
        with CandidateEvaluator(cloudcast, get_sandbox("bwrap", quiet=True), limits=TIGHT) as ev:
            result = ev.evaluate(probe + initial_source)
    finally:
        server.close()
    assert result.score == INITIAL_SCORE
    assert "top-secret-token" not in result.stdout
    assert "SECRET unreadable" in result.stdout
    assert "NETWORK unreachable" in result.stdout
    assert "REPO False" in result.stdout
