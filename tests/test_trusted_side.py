"""The trusted side cannot be crashed or hung by what a candidate leaves behind.

Candidates answer with files swapped for FIFOs, links, directories or giant files, and with
numbers and structures no scorer expects (huge integers, NaN, infinity, deep nesting, huge lists,
wrong types). Each must come back as the candidate's `invalid_output` with a reason -- never an
exception out of `evaluate`, never a hang -- and the same evaluator must then score the honest
program exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, REPO, evaluator_on

from engram.evaluation import ErrorKind, InvalidAnswer
from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.plain_data import check_plain, parse_untrusted
from engram.evaluation.safe_read import UnsafeFile, read_untrusted, write_beneath
from engram.problems.problem import Problem, load_problem

# -- the file reader on its own ------------------------------------------------------------------


def test_a_regular_file_is_read(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"hello")
    assert read_untrusted(tmp_path / "sub" / "a.txt", within=tmp_path) == b"hello"
    assert read_untrusted("sub/a.txt", within=tmp_path) == b"hello"
    assert read_untrusted(tmp_path / "missing", within=tmp_path, missing_ok=True) is None


def test_a_fifo_is_refused_at_once(tmp_path: Path):
    os.mkfifo(tmp_path / "answers.jsonl")  # no writer: a blocking open would wait forever
    with pytest.raises(UnsafeFile, match="FIFO"):
        read_untrusted(tmp_path / "answers.jsonl", within=tmp_path)


@pytest.mark.parametrize("target", ["/etc/passwd", "/dev/zero"])
def test_a_symlink_is_refused(tmp_path: Path, target: str):
    (tmp_path / "answers.jsonl").symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_untrusted(tmp_path / "answers.jsonl", within=tmp_path)


def test_a_symlinked_directory_on_the_way_is_refused(tmp_path: Path):
    (tmp_path / "outputs").symlink_to("/etc")
    with pytest.raises(UnsafeFile):
        read_untrusted(tmp_path / "outputs" / "passwd", within=tmp_path)


def test_paths_outside_or_climbing_out_are_refused(tmp_path: Path):
    with pytest.raises(UnsafeFile, match="outside"):
        read_untrusted("/etc/passwd", within=tmp_path)
    with pytest.raises(UnsafeFile, match="plain path"):
        read_untrusted("../etc/passwd", within=tmp_path)


def test_a_directory_device_or_hard_link_is_refused(tmp_path: Path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(UnsafeFile, match="directory"):
        read_untrusted(tmp_path / "dir", within=tmp_path)
    (tmp_path / "original").write_text("secret")
    os.link(tmp_path / "original", tmp_path / "linked")
    with pytest.raises(UnsafeFile, match="hard link"):
        read_untrusted(tmp_path / "linked", within=tmp_path)


def test_a_giant_file_is_refused_without_reading_it(tmp_path: Path):
    giant = tmp_path / "giant"
    with giant.open("wb") as handle:
        handle.truncate(50 * 1024**3)  # sparse: 50 GB that take no disk
    with pytest.raises(UnsafeFile, match="larger than"):
        read_untrusted(giant, within=tmp_path, max_bytes=1024)


def test_writing_never_follows_a_link(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "inputs").symlink_to(outside)
    with pytest.raises(UnsafeFile):
        write_beneath(work / "inputs" / "table.pkl", b"data", within=work)
    assert not list(outside.iterdir())
    (work / "inputs").unlink()
    (work / "inputs").mkdir()
    (work / "inputs" / "table.pkl").symlink_to(outside / "victim")
    with pytest.raises(UnsafeFile):
        write_beneath(work / "inputs" / "table.pkl", b"data", within=work)
    assert not (outside / "victim").exists()
    (work / "inputs" / "table.pkl").unlink()
    os.mkfifo(work / "inputs" / "table.pkl")  # nobody reads it: a blocking open would wait forever
    with pytest.raises(UnsafeFile):
        write_beneath(work / "inputs" / "table.pkl", b"data", within=work)
    (work / "inputs" / "table.pkl").unlink()
    write_beneath(work / "inputs" / "table.pkl", b"longer data", within=work)
    write_beneath(work / "inputs" / "table.pkl", b"data", within=work)  # truncated in place
    assert (work / "inputs" / "table.pkl").read_bytes() == b"data"


# -- the answer checker on its own -----------------------------------------------------------------


@pytest.mark.parametrize("text, reason", [
    ("[" + "9" * 401 + "]", "digits"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ("{not json", "not valid JSON"),
])
def test_unreadable_data_is_refused_while_parsing(text: str, reason: str):
    with pytest.raises(InvalidAnswer, match=reason):
        parse_untrusted(text)


@pytest.mark.parametrize("value, reason", [
    ({"cost": float("nan")}, "nan"),
    ([1.0, float("inf")], "inf"),
    ([-float("inf")], "inf"),
    ({"x": 10**400}, "integer too large"),
    ([[[[[[]]]]]] * 1, "nested"),
    (list(range(50)), "more than"),
    ({"key": "x" * 100}, "string"),
    ({1: "a"}, "key"),
    ({"a": {1, 2}}, "set"),
])
def test_values_outside_plain_data_are_refused(value: object, reason: str):
    from engram.evaluation.plain_data import PlainLimits

    with pytest.raises(InvalidAnswer, match=reason):
        check_plain(value, PlainLimits(max_depth=4, max_items=40, max_string=50))


def test_plain_data_passes_unchanged():
    value = {"paths": {"a": {"0": [["x", "y", {"cost": 0.1, "throughput": 2}]]}}, "flag": True, "none": None}
    assert check_plain(value) is value


# -- whole evaluations, on every backend -------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def guarded(request: pytest.FixtureRequest, cloudcast: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, cloudcast, scenarios=["intra_aws"])


FORGE = '''
import json, os
request = json.load(open(os.path.join(os.getcwd(), "request.json")))
scenario = request["scenarios"][0]
s = scenario["input"]
def honest_paths(claim):
    return {d: {str(p): [[s["src"], d, claim]] for p in range(s["num_partitions"])} for d in s["dsts"]}
def write(answer_text):
    with open(request["answers"], "a") as out:
        out.write('{"event": "scenario", "name": "%s", "answer": %s}\\n' % (scenario["name"], answer_text))
        out.write('{"event": "done"}\\n')
'''

ANSWERS = {
    "huge_int_cost": "write(json.dumps({'paths': honest_paths({'cost': 0})}).replace('\"cost\": 0', "
                     "'\"cost\": ' + '1' + '0' * 400))",
    "int_cost_at_the_edge": "write(json.dumps({'paths': honest_paths({'cost': 2**63})}))",
    "nan_cost": "write(json.dumps({'paths': honest_paths({'cost': float('nan')})}))",
    "inf_cost": "write(json.dumps({'paths': honest_paths({'cost': float('inf')})}))",
    "overflowing_float": "write(json.dumps({'paths': honest_paths({})}).replace('{}', '{\"cost\": 1e400}'))",
    "deep_nesting": "write('[' * 50000 + ']' * 50000)",
    "deep_but_parsable": "write('[' * 200 + ']' * 200)",
    "huge_list": "write(json.dumps({'paths': [0] * 5_000_000}))",
    "wrong_types": "write(json.dumps({'paths': {d: [1, 2] for d in s['dsts']}}))",
    "unhashable_nodes": "write(json.dumps({'paths': {d: {str(p): [[[1], [2]]] for p in range(s['num_partitions'])} "
                        "for d in s['dsts']}}))",
    "answers_fifo": "os.unlink(request['answers']); os.mkfifo(request['answers'])",
    "answers_symlink": "os.unlink(request['answers']); os.symlink('/dev/zero', request['answers'])",
    "answers_directory": "os.unlink(request['answers']); os.mkdir(request['answers'])",
    "answers_giant": "open(request['answers'], 'a').truncate(200 * 2**20)",
}


@pytest.mark.parametrize("attack", sorted(ANSWERS))
def test_hostile_answers_are_invalid_output_and_the_evaluator_carries_on(
        guarded: CandidateEvaluator, initial_source: str, attack: str):
    result = guarded.evaluate(FORGE + ANSWERS[attack] + "\nos._exit(0)\n")
    assert not result.ok and result.score is None
    assert result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
    assert result.error
    honest = guarded.evaluate(initial_source)
    assert honest.ok and honest.score is not None, honest.error


def test_the_reason_names_what_was_wrong(guarded: CandidateEvaluator):
    fifo = guarded.evaluate(FORGE + ANSWERS["answers_fifo"] + "\nos._exit(0)\n")
    assert "FIFO" in (fifo.error or "")
    huge = guarded.evaluate(FORGE + ANSWERS["huge_int_cost"] + "\nos._exit(0)\n")
    assert "digits" in (huge.error or "")
    nan = guarded.evaluate(FORGE + ANSWERS["nan_cost"] + "\nos._exit(0)\n")
    assert "finite" in (nan.error or "")


def test_a_scorer_that_breaks_on_an_answer_blames_the_answer(tmp_path: Path, initial_source: str):
    """A scorer bug triggered by an answer is that answer's invalid_output, not a failed run."""
    from engram.sandbox import get_sandbox

    problem = _copy_problem("cloudcast", tmp_path)
    evaluator_py = problem.root / "evaluator.py"
    evaluator_py.write_text(evaluator_py.read_text().replace(
        "        config = self.configs[scenario.name]\n        paths = _paths_of(answer)",
        "        config = self.configs[scenario.name]\n        paths = _paths_of(answer)\n"
        "        if len(paths) > 3:\n            raise OverflowError('scorer bug')"))
    problem = load_problem(problem.root)
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["intra_aws"]) as evaluator:
        result = evaluator.evaluate(initial_source)
    assert result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "OverflowError: scorer bug" in (result.error or "")


def _copy_problem(name: str, destination: Path) -> Problem:
    import shutil

    source = load_problem(name).root
    shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    return load_problem(destination / name)


# -- an interactive problem: the output file named in the conversation ----------------------------

LLM_SQL_SWAP = '''
import io, os, sys
import pandas as pd
from solver import Algorithm

class _Discard(io.StringIO):
    def __exit__(self, *exc):
        return False

class Evolved(Algorithm):
    def reorder(self, df, **kwargs):
        adapter = sys.modules["engram_problem_adapter"]
        adapter.open = lambda *a, **k: _Discard()   # the adapter writes nowhere ...
        os.makedirs("outputs", exist_ok=True)
        for name in os.listdir("inputs"):           # ... and the output the scorer reads is a %s
            target = os.path.join("outputs", name.replace(".pkl", ".jsonl"))
            if not os.path.lexists(target):
                %s
        return df
'''


@pytest.mark.parametrize("kind, make", [("FIFO", "os.mkfifo(target)"),
                                        ("symbolic link", "os.symlink('/etc/passwd', target)")])
def test_llm_sql_output_swapped_for_a_fifo_or_link_is_refused(kind: str, make: str):
    from engram.sandbox import get_sandbox

    problem = load_problem("llm_sql")
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["movies_sample"]) as evaluator:
        result = evaluator.evaluate(LLM_SQL_SWAP % (kind, make))
        assert result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
        assert kind in (result.error or "")
        honest = evaluator.evaluate(problem.initial_program)
    assert honest.ok, honest.error


# -- the command line ----------------------------------------------------------------------------------


def test_engram_evaluate_exits_3_for_an_invalid_answer(tmp_path: Path):
    program = tmp_path / "forged.py"
    program.write_text(FORGE + ANSWERS["huge_int_cost"] + "\nos._exit(0)\n")
    done = subprocess.run(
        [sys.executable, "-m", "engram", "evaluate", "cloudcast", str(program), "--sandbox", "process",
         "--scenarios", "intra_aws", "--json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
    )
    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout)
    assert result["error_kind"] == "invalid_output"
    assert "Traceback" not in done.stderr



# -- runs: a hostile candidate does not stop them; a changed problem stops resume -----------------------


def _hostile_run(tmp_path: Path) -> Path:
    import shutil

    from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run, simulate, write_program

    problem = tmp_path / "cloudcast_copy"
    shutil.copytree(REPO / "evaluators" / "cloudcast", problem, ignore=shutil.ignore_patterns("__pycache__"))
    hostile = FORGE + ANSWERS["huge_int_cost"] + "\nos._exit(0)\n"
    agents = [[{"tool_calls": [write_program("/hostile.py", hostile)]},
               {"tool_calls": [simulate("/hostile.py")]},
               {"tool_calls": [INITIAL_PROGRAM_CALL]},
               {"content": SUMMARY}]]
    spec = make_spec(tmp_path, agents, problem={"name": str(problem), "scenarios": ["intra_aws"]},
                     sandbox={"backend": "process"})
    return run(spec).run_dir


def test_a_run_goes_on_past_a_hostile_candidate_and_resume_checks_the_problem(tmp_path: Path):
    import yaml
    from click.testing import CliRunner

    from engram.cli import main
    from engram.runs.archive import SeedArchive

    run_dir = _hostile_run(tmp_path)
    archive = SeedArchive(run_dir / "seed-0")
    evaluations = {e.number: e.evaluation() for e in archive.experiments()}
    assert [e.error_kind for _, e in sorted(evaluations.items())] == [ErrorKind.INVALID_OUTPUT, None]
    assert archive.is_finished()

    cli = CliRunner()
    evaluator_py = tmp_path / "cloudcast_copy" / "evaluator.py"
    evaluator_py.write_text(evaluator_py.read_text() + "\n# changed\n")
    refused = cli.invoke(main, ["resume", str(run_dir), "-q"])
    assert refused.exit_code == 2, refused.output
    message = refused.output.strip()
    assert "\n" not in message and "--accept-changed-problem" in message and "differ" in message
    before = (run_dir / "spec.resolved.yaml").read_text()

    accepted = cli.invoke(main, ["resume", str(run_dir), "-q", "--accept-changed-problem"])
    assert accepted.exit_code == 0, accepted.output
    meta = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())["meta"]
    change = meta["accepted_problem_changes"][0]
    assert change["command"] == "resume"
    assert change["recorded_fingerprint"] == yaml.safe_load(before)["meta"]["problem_fingerprint"]
    now = load_problem(evaluator_py.parent).fingerprint()
    assert meta["problem_fingerprint"] == change["accepted_fingerprint"] == now
    assert [e["command"] for e in archive.events("problem_change_accepted")] == ["resume"]
    again = cli.invoke(main, ["resume", str(run_dir), "-q"])  # the accepted problem is now the run's
    assert again.exit_code == 0, again.output


# -- every problem: hostile answers and replies are the candidate's invalid_output ------------------

ONE_SHOT = ["cloudcast", "prism", "txn_scheduling", "telemetry_repair", "cant_be_late", "cant_be_late_multi"]
CONVERSING = ["llm_sql", "llm_routing", "eplb"]
PAYLOADS = {
    "nan": "NaN",
    "infinity": "[1e400, -Infinity]",
    "huge_int": "1" + "0" * 500,
    "deep": "[" * 5000 + "]" * 5000,
    "huge_list": "[" + "0," * 5_000_000 + "0]",
    "wrong_type": '"an answer"',
}

FORGED_LINES = '''
import json, os
request = json.load(open(os.path.join(os.getcwd(), "request.json")))
with open(request["answers"], "a") as out:
    for scenario in request["scenarios"]:
        out.write('{"event": "scenario", "name": "%s", "answer": %s}\\n' % (scenario["name"], PAYLOAD))
    out.write('{"event": "done"}\\n')
os._exit(0)
'''

FORGED_REPLIES = '''
import json
_dumps = json.dumps
def _forged(obj, **kwargs):
    if isinstance(obj, dict) and obj.get("ok") is True:
        return '{"ok": true, "reply": ' + PAYLOAD + '}'
    return _dumps(obj, **kwargs)
json.dumps = _forged
'''


@pytest.fixture(scope="module", params=ONE_SHOT + CONVERSING)
def any_problem(request: pytest.FixtureRequest) -> Iterator[CandidateEvaluator]:
    """Each built-in problem on its first scenario, under process (bwrap for a problem with hidden
    data, which process may refuse): the checks run in the trusted process, whatever the backend."""
    from conftest import private_data_mirror, require_backend

    from engram.sandbox import get_sandbox

    problem = load_problem(request.param)
    backend = "bwrap" if problem.config.hidden_data else "process"
    require_backend(backend)
    first = "movies_sample" if request.param == "llm_sql" else problem.config.scenarios[0].name
    with private_data_mirror(problem), CandidateEvaluator(problem, get_sandbox(backend, quiet=True),
                                                          scenarios=[first], time_limit_s=120) as evaluator:
        yield evaluator


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_every_problem_turns_hostile_values_into_invalid_output(any_problem: CandidateEvaluator, payload: str):
    name = any_problem.problem.name
    if name in CONVERSING:
        initial = any_problem.problem.initial_program.read_text()
        source = FORGED_REPLIES.replace("PAYLOAD", repr(PAYLOADS[payload])) + initial
    else:
        source = FORGED_LINES.replace("PAYLOAD", repr(PAYLOADS[payload]))
    result = any_problem.evaluate(source)
    if (name, payload) == ("llm_sql", "wrong_type"):  # its replies carry no answer: the output file does
        assert result.ok, result.error
        return
    assert not result.ok and result.score is None
    assert result.error_kind == ErrorKind.INVALID_OUTPUT, (name, result.error_kind, result.error)


def test_a_fifo_in_place_of_a_trusted_or_data_file_does_not_hang_the_runner(tmp_path: Path):
    """Without isolation a candidate can replace the problem's files or its data with FIFOs: the
    runner's fingerprint and data checks must see a change, not wait for a writer."""
    from engram.errors import DataError

    problem = _copy_problem("cloudcast", tmp_path)
    before = problem.fingerprint()
    (problem.root / "extra.py").write_text("X = 1\n")
    with_extra = problem.fingerprint()
    (problem.root / "extra.py").unlink()
    os.mkfifo(problem.root / "extra.py")
    assert problem.fingerprint() not in (before, with_extra)

    from engram.problems import data as data_files

    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        data_files._sha256(fifo)


# -- the agent's file tools: the workspace is written by the agent's shell too -------------------------


@pytest.fixture(params=["process", "bwrap"])
def agent_workspace(request: pytest.FixtureRequest, tmp_path: Path):
    from conftest import require_backend

    from engram.methods.workspace_backend import SandboxedWorkspace
    from engram.sandbox import get_sandbox

    require_backend(request.param)
    (tmp_path / "ws").mkdir()
    opened = SandboxedWorkspace(tmp_path / "ws", get_sandbox(request.param, quiet=True), readonly=[],
                                readonly_files=["digest.md"], shell_timeout_s=60, memory_mb=256,
                                remaining_s=lambda: 600.0)
    yield opened
    opened.close()


def test_the_agents_shell_cannot_hang_or_steer_the_file_tools(agent_workspace, tmp_path: Path):
    ws = agent_workspace
    made = ws.execute("mkfifo /pipe.py && ln -s /etc/passwd /link.py && truncate -s 64M /giant.py && "
                      "mkdir -p /sub && echo 'x = 1' > /sub/ok.py")
    assert made.exit_code == 0, made.output
    for name, reason in [("/pipe.py", "FIFO"), ("/link.py", ""), ("/giant.py", "larger than")]:
        read = ws.read(name)
        assert read.error and reason in read.error, (name, read)
        assert ws.edit(name, "a", "b").error
    assert ws.write("/pipe.py", "print(1)\n").error  # nobody reads the FIFO: refused, not waited on
    assert ws.read("/sub/ok.py").file_data["content"] == "x = 1\n"
    assert ws.edit("/sub/ok.py", "x = 1", "x = 2").occurrences == 1
    assert ws.read("/sub/ok.py").file_data["content"] == "x = 2\n"
    outside = tmp_path / "outside.txt"
    outside.write_text("host file\n")
    assert ws.execute(f"rm -f /new.py && ln -s {outside} /new.py").exit_code == 0
    assert ws.write("/new.py", "overwritten\n").error
    assert outside.read_text() == "host file\n"


@pytest.mark.parametrize("event", [
    '{"event": "failure", "scenario": [1], "kind": "runtime", "error": "x"}',
    '{"event": "failure", "scenario": {"a": 1}, "kind": [], "error": {"deep": [1, 2]}}',
    '{"event": "started", "t": "yesterday"}',
    '{"event": "loaded", "seconds": [1e308]}',
])
def test_malformed_child_events_never_break_the_evaluator(guarded: CandidateEvaluator, event: str):
    result = guarded.evaluate(FORGE + f"\nopen(request['answers'], 'a').write({event!r} + '\\n')\nos._exit(0)\n")
    assert not result.ok and result.error_kind is not None
