"""Helpers for tests that run whole experiments with the scripted model."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO

from engram.runs.progress import QuietProgress
from engram.runs.runner import RunOutcome, apply

INITIAL_PROGRAM_CALL = {"name": "run_simulation", "args": {"file_path": "/initial_program.py"}}


def write_program(path: str, source: str) -> dict[str, Any]:
    return {"name": "write_file", "args": {"file_path": path, "content": source}}


def simulate(path: str) -> dict[str, Any]:
    return {"name": "run_simulation", "args": {"file_path": path}}


SUMMARY = """## Mode
Exploration.
### Best Result
See the experiments.
### What I Tried
- one thing
### Key Insights
- something
### Recommended Next Steps
- more
### Approaches That Didn't Work (and Why)
- none
"""


def make_spec(tmp_path: Path, agents: list[list[dict[str, Any]]], *, distill: list[str] = (),
              **sections: dict[str, Any]) -> Path:
    """A spec for the scripted model playing `agents` (one list of turns per agent) on cloudcast."""
    script = {"agents": [{"turns": turns} for turns in agents]}
    if distill:
        script["distill"] = [{"content": text} for text in distill]
    (tmp_path / "turns.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    spec: dict[str, Any] = {
        "name": "t",
        "problem": {"name": "cloudcast", "scenarios": ["quick"]},
        "model": {"id": "scripted", "script": "turns.yaml", "price_as": "openai/o3", "max_retries": 3},
        "budget": {"max_agents": len(agents), "minutes_per_agent": 2},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, values in sections.items():
        merged = copy.deepcopy(spec.get(key, {}))
        merged.update(values)
        spec[key] = merged
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(spec: Path, overrides: list[str] = ()) -> RunOutcome:
    return apply(spec, list(overrides), QuietProgress())


def start_cli(*args: str) -> subprocess.Popen[bytes]:
    """`engram ARGS --quiet` in a session of its own, so killing its group takes its sandboxes and shells too."""
    return subprocess.Popen([sys.executable, "-m", "engram.cli", *args, "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_for(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the run never reached the point where it should be killed"
        time.sleep(0.05)


def kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool], *, settle_s: float) -> None:
    """SIGKILL a `start_cli` run once `condition` holds and `settle_s` more seconds have passed: the
    time for the step the test interrupts (an evaluation, a shell command) to be under way."""
    wait_for(condition)
    time.sleep(settle_s)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def finish_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`engram ARGS --quiet` to its end, which must be a success."""
    done = subprocess.run([sys.executable, "-m", "engram.cli", *args, "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done
