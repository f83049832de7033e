"""A run killed with SIGKILL at any moment resumes with no experiment lost or duplicated."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from engram_runs import (
    INITIAL_PROGRAM_CALL,
    SUMMARY,
    finish_cli,
    kill_when,
    make_spec,
    simulate,
    start_cli,
    wait_for,
    write_program,
)

from engram.runs.archive import read_jsonl

SLEEPY = "import time\n\ndef search_algorithm(src, dsts, G, num_partitions):\n    time.sleep(60)\n"


def _run_dir(tmp_path: Path) -> Path:
    [run_dir] = list((tmp_path / "runs" / "t").iterdir())
    return run_dir


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "seed-0" / "events.jsonl") if e["type"] == kind]


def test_ctrl_c_during_an_evaluation_records_no_false_failure(tmp_path: Path):
    """Ctrl-C kills the running candidate; that kill is not the candidate's result, so nothing is
    recorded for it, and resume scores it properly (here: its real timeout)."""
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [write_program("/slow.py", SLEEPY)]},
         {"tool_calls": [simulate("/slow.py")]}, {"content": SUMMARY}],
    ], problem={"time_limit_s": 4})
    process = start_cli("apply", str(spec))
    wait_for(lambda: any((tmp_path / "runs").glob("t/*/seed-0/agents/agent-1/experiments/exp-0002/program.py")))
    time.sleep(0.7)  # the evaluation is under way (it would time out after 4 s)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    run_dir = _run_dir(tmp_path)
    exp2 = run_dir / "seed-0/agents/agent-1/experiments/exp-0002"
    assert (exp2 / "program.py").is_file() and not (exp2 / "evaluation.json").exists()
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1]

    finish_cli("resume", str(run_dir))
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1, 2]
    assert json.loads((exp2 / "evaluation.json").read_text())["error_kind"] == "timeout"


def test_killed_during_an_evaluation(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [write_program("/slow.py", SLEEPY)]},
         {"tool_calls": [simulate("/slow.py")]}, {"content": SUMMARY}],
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
    ], problem={"time_limit_s": 4})
    process = start_cli("apply", str(spec))
    stored = "t/*/seed-0/agents/agent-1/experiments/exp-0002/program.py"
    kill_when(process, lambda: any((tmp_path / "runs").glob(stored)), settle_s=0.5)  # its evaluation is under way
    run_dir = _run_dir(tmp_path)
    exp2 = run_dir / "seed-0/agents/agent-1/experiments/exp-0002"
    assert not (exp2 / "evaluation.json").exists()
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1]

    finish_cli("resume", str(run_dir))
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1, 2, 3]
    assert json.loads((exp2 / "evaluation.json").read_text())["error_kind"] == "timeout"
    assert [(e["agent"], e["reason"]) for e in _events(run_dir, "agent_end")] == [(1, "interrupted"),
                                                                                  (2, "completed")]
    assert (run_dir / "seed-0/agents/agent-2/experiments/exp-0003/evaluation.json").is_file()
    result = json.loads((run_dir / "seed-0/result.json").read_text())
    assert result["evaluations"] == 3 and result["agents"] == 2


def test_killed_during_an_agent_turn_and_continued_by_apply(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]},
         {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]}, {"content": SUMMARY}],
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
    ])
    process = start_cli("apply", str(spec))
    scored = "t/*/seed-0/agents/agent-1/experiments/exp-0001/evaluation.json"
    kill_when(process, lambda: any((tmp_path / "runs").glob(scored)), settle_s=1.5)  # the shell command is running
    run_dir = _run_dir(tmp_path)
    assert not _events(run_dir, "agent_end")

    finish_cli("apply", str(spec))  # the same spec finds its unfinished run
    assert len(list((tmp_path / "runs" / "t").iterdir())) == 1
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1, 2]
    assert [e["reason"] for e in _events(run_dir, "agent_end")] == ["interrupted", "completed"]
    digest = (run_dir / "seed-0/digest.md").read_text()
    assert "## Agent 1" in digest and "the run was interrupted" in digest
    assert len(_events(run_dir, "resume")) == 1


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]},
         {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]}, {"content": SUMMARY}],
    ])
    process = subprocess.Popen([sys.executable, "-m", "engram.cli", "apply", str(spec), "--quiet"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((tmp_path / "runs").glob("t/*/seed-0/agents/agent-1/experiments/exp-0001/evaluation.json")))
    time.sleep(1.0)
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - interrupted_at < 30  # the 60 s shell command was killed, not waited for
    run_dir = _run_dir(tmp_path)
    assert process.returncode == 130
    assert f"engram resume {run_dir}" in stderr and "Traceback" not in stderr
    assert [e["experiment"] for e in _events(run_dir, "experiment")] == [1]
    finish_cli("resume", str(run_dir))
    assert [e["reason"] for e in _events(run_dir, "agent_end")] == ["interrupted"]
    assert (run_dir / "seed-0/result.json").is_file()
