"""Sweeps on the local executor: runs in parallel (bounded), a killed worker resumes, Ctrl-C leaves nothing.

Every test drives `engram apply` as a separate process, the way a user launches a sweep, on grids of
scripted specs (no model, no network).
"""

from __future__ import annotations

import json
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
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, simulate, write_program

from engram.runs.archive import read_jsonl

SLEEPY = "import time\n\ndef search_algorithm(src, dsts, G, num_partitions):\n    time.sleep(60)\n"


def _grid(tmp_path: Path, specs: dict[str, list[list[dict[str, Any]]]], *, runs: dict[str, int] | None = None,
          **spec_sections: dict[str, Any]) -> Path:
    """A grid file of scripted specs named by `specs`' keys, all writing runs under tmp_path/runs."""
    entries = []
    for name, agents in specs.items():
        folder = tmp_path / name
        folder.mkdir()
        spec = make_spec(folder, agents, **spec_sections)
        entries.append({"spec": str(spec), "name": name, "set": {"runs": (runs or {}).get(name, 1)}})
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"specs": entries, "set": {"output.dir": str(tmp_path / "runs")}}))
    return grid


def _engram(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engram.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engram.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the sweep never reached the expected point"
        time.sleep(0.1)


def _seed_dirs(tmp_path: Path) -> dict[str, Path]:
    return {f"{p.parent.parent.name}/{p.name}": p for p in sorted((tmp_path / "runs").glob("*/*/seed-*"))}


def _experiments(seed_dir: Path) -> list[int]:
    return [e["experiment"] for e in read_jsonl(seed_dir / "events.jsonl") if e["type"] == "experiment"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_runs_in_parallel_at_most_jobs_at_once_and_a_relaunch_repeats_nothing(tmp_path: Path):
    agent = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]
    grid = _grid(tmp_path, {"a": [agent], "b": [agent]}, runs={"a": 2})
    done = _engram("apply", str(grid), "--jobs", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    seeds = _seed_dirs(tmp_path)
    assert sorted(seeds) == ["a/seed-0", "a/seed-1", "b/seed-0"]
    spans = []
    for seed_dir in seeds.values():
        assert _experiments(seed_dir) == [1]
        assert json.loads((seed_dir / "result.json").read_text())["evaluations"] == 1
        [attempt] = read_jsonl(seed_dir / "attempts.jsonl")
        spans.append((attempt["started"], (seed_dir / "result.json").stat().st_mtime))
    overlapping = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlapping == 2  # two ran side by side, never three
    assert "3 runs (3 done)" in done.stdout and done.stdout.count(" done ") == 3

    again = _engram("apply", str(grid), "--jobs", "2", "--quiet")
    assert again.returncode == 0, again.stderr
    assert all(len(read_jsonl(s / "attempts.jsonl")) == 1 for s in seeds.values())  # nothing ran again
    assert len(list((tmp_path / "runs").glob("*/*/seed-*"))) == 3

    status = _engram("status", str(tmp_path / "runs"))
    assert status.returncode == 0, status.stderr
    assert "total: 3 runs (3 done), 3 evaluations" in status.stdout
    assert "a/" in status.stdout and "all 1 agents finished" in status.stdout


def test_a_killed_worker_is_restarted_and_resumes_its_run(tmp_path: Path):
    grid = _grid(tmp_path, {"slow": [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [write_program("/slow.py", SLEEPY)]},
         {"tool_calls": [simulate("/slow.py")]}, {"content": SUMMARY}],
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
    ]}, problem={"time_limit_s": 4})
    driver = _start("apply", str(grid), "--jobs", "1", "--quiet")
    seed_dir = tmp_path / "runs" / "slow"
    _wait_for(lambda: any(seed_dir.glob("*/seed-0/agents/agent-1/experiments/exp-0002/program.py")))
    time.sleep(0.5)  # the sandboxed evaluation of exp-0002 is under way
    [seed_dir] = list(seed_dir.glob("*/seed-0"))
    worker = json.loads((seed_dir / "worker.json").read_text())["pid"]
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=240)
    assert driver.returncode == 0, stderr
    assert _experiments(seed_dir) == [1, 2, 3]  # exp-0002 was scored after the restart, nothing twice
    assert json.loads((seed_dir / "agents/agent-1/experiments/exp-0002/evaluation.json").read_text())[
        "error_kind"] == "timeout"
    assert len(read_jsonl(seed_dir / "attempts.jsonl")) == 2
    assert [e["type"] for e in read_jsonl(seed_dir / "events.jsonl")].count("resume") == 1
    assert json.loads((seed_dir / "result.json").read_text())["agents"] == 2
    assert "1 runs (1 done)" in stdout or "1 run (1 done)" in stdout


def test_ctrl_c_cancels_every_run_and_leaves_no_process(tmp_path: Path):
    shell = {"tool_calls": [{"name": "execute", "args": {"command": "sleep 61.5"}}]}
    agent = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, shell, {"content": SUMMARY}]
    grid = _grid(tmp_path, {"c": [agent]}, runs={"c": 3})
    driver = _start("apply", str(grid), "--jobs", "2", "--quiet")
    runs = tmp_path / "runs" / "c"
    _wait_for(lambda: len(list(runs.glob("*/seed-*/agents/agent-1/experiments/exp-0001/evaluation.json"))) == 2)
    # Both agents' `sleep` commands are running (the third run waits for a slot).
    _wait_for(lambda: len([p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == "sleep 61.5"]) >= 2)
    workers = [json.loads(p.read_text())["pid"] for p in runs.glob("*/seed-*/worker.json")]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=90)
    assert driver.returncode == 130, stderr
    assert "Run the same command again to continue" in stderr and "Traceback" not in stderr
    assert not any(_alive(pid) for pid in workers)
    assert not [p for p in Path("/proc").glob("[0-9]*") if "sleep 61.5" in _cmdline(p)]
    leases = {p.parent.name: json.loads(p.read_text())["state"] for p in runs.glob("*/seed-*/worker.json")}
    assert sorted(leases.values()) == ["interrupted", "interrupted"]
    status = _engram("status", str(next(runs.iterdir())))
    assert "3 runs (1 pending, 2 stopped)" in status.stdout, status.stdout


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_sweep_dollar_cap_stops_runs_across_processes(tmp_path: Path):
    costly = {"content": "reading", "tool_calls": [{"name": "read_file", "args": {"file_path": "/task.md"}}],
              "usage": {"input_tokens": 100_000, "output_tokens": 0}}  # $0.20 as o3
    agent = [costly, costly, costly, {"content": SUMMARY}]
    grid = _grid(tmp_path, {"first": [agent], "second": [agent]})
    done = _engram("apply", str(grid), "--jobs", "1", "--max-dollars", "0.3", "--quiet")
    assert done.returncode == 0, done.stderr
    results = {name: json.loads(p.read_text()) for name, p in
               ((p.parent.parent.parent.name, p) for p in (tmp_path / "runs").glob("*/*/seed-0/result.json"))}
    first, second = results["first"], results["second"]
    assert "sweep's max_dollars" in first["stop_reason"]  # the call that crossed $0.30 was the last one
    assert abs(first["dollars"] - 0.4) < 1e-9
    assert second["stop_reason"].startswith("sweep dollar budget reached") and second["dollars"] == 0
    assert second["agents"] == 0


def test_a_killed_driver_loses_nothing_and_a_relaunch_finishes_only_the_unfinished(tmp_path: Path):
    quick = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]
    slow = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [write_program("/slow.py", SLEEPY)]},
            {"tool_calls": [simulate("/slow.py")]}, {"content": SUMMARY}]
    grid = _grid(tmp_path, {"quick": [quick], "slow": [slow]}, problem={"time_limit_s": 4})
    driver = _start("apply", str(grid), "--jobs", "2", "--quiet")
    runs = tmp_path / "runs"
    _wait_for(lambda: any(runs.glob("quick/*/seed-0/result.json"))
              and any(runs.glob("slow/*/seed-0/agents/agent-1/experiments/exp-0002/program.py")))
    time.sleep(0.5)  # the slow run's second evaluation is under way
    workers = [json.loads(p.read_text())["pid"] for p in runs.glob("*/*/seed-*/worker.json")]
    driver.kill()  # SIGKILL: no handler runs, the workers must die with the driver
    driver.communicate(timeout=60)
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=60)
    seeds = _seed_dirs(tmp_path)
    # The slow worker got SIGINT from the kernel and stopped like a Ctrl-C'd run: the evaluation the
    # stop killed is not recorded as a failure, but left for the relaunch to score.
    assert _experiments(seeds["quick/seed-0"]) == [1] and _experiments(seeds["slow/seed-0"]) == [1]
    assert not (seeds["slow/seed-0"] / "result.json").exists()

    again = _engram("apply", str(grid), "--jobs", "2", "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(seeds["quick/seed-0"] / "attempts.jsonl")) == 1  # finished: not run again
    assert _experiments(seeds["slow/seed-0"]) == [1, 2]  # exp-0002 scored once, after the relaunch
    assert json.loads((seeds["slow/seed-0"] / "agents/agent-1/experiments/exp-0002/evaluation.json").read_text())[
        "error_kind"] == "timeout"
    assert json.loads((seeds["slow/seed-0"] / "result.json").read_text())["evaluations"] == 2


def test_without_the_fork_server_a_run_starts_as_a_fresh_python(tmp_path: Path):
    agent = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]
    grid = _grid(tmp_path, {"a": [agent]})
    done = _engram("apply", str(grid), "--jobs", "2", "--json", "--set", "executor.fork_server=false")
    assert done.returncode == 0, done.stderr
    notes = [json.loads(line)["message"] for line in done.stdout.splitlines() if '"event": "note"' in line]
    assert any("a fresh Python per run" in note for note in notes), notes
    [seed_dir] = _seed_dirs(tmp_path).values()
    assert _experiments(seed_dir) == [1]
    assert json.loads((seed_dir / "worker.json").read_text())["state"] == "done"


def test_a_fresh_python_worker_reads_its_unit_and_reports_bad_input(tmp_path: Path):
    """The fresh-Python entry point (`python -m engram.executors.worker`) gets the unit on stdin and
    exits like a forked worker: here with the bad-input status and the reason in its lease."""
    from engram.executors.base import WORKER_EXIT_BAD_INPUT, RunUnit
    from engram.executors.launch import FreshPython, start_run

    unit = RunUnit(spec={"name": "t", "problem": {"name": "cloudcast"}, "model": {"id": "scripted"}},  # no script
                   spec_file=None, overrides=(), run_dir=str(tmp_path / "run"), seed=0)
    process = start_run(unit, os.getpid(), fork_server=False)
    assert isinstance(process, FreshPython)
    process.join(timeout=120)
    assert process.exitcode == WORKER_EXIT_BAD_INPUT, (unit.seed_dir / "worker.log").read_text()
    lease = json.loads((unit.seed_dir / "worker.json").read_text())
    assert lease["state"] == "failed" and "needs `script:`" in lease["error"]
    assert "needs `script:`" in (unit.seed_dir / "worker.log").read_text()
