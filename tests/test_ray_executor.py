"""Sweeps on a real two-node Ray cluster on 127.0.0.1: runs spread over both nodes, and a node lost
mid-run costs nothing -- its run is retried on the other node and resumes with every evaluation.

Marked `ray`: CI runs these tests (Ray is in the dev extra); skip them with `pytest -m "not ray"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port, unavailable
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, simulate, write_program

from engram.runs.archive import read_jsonl

pytestmark = pytest.mark.ray

SLEEPY = "import time\n\ndef search_algorithm(src, dsts, G, num_partitions):\n    time.sleep(60)\n"


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    groups: list[int]
    """Process groups of the head's and the second node's daemons."""

    def raylet_of(self, group: int) -> tuple[int, str]:
        """(pid, node id) of the raylet started in `group`."""
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if not args[0].endswith(b"/raylet") or os.getpgid(int(proc.name)) != group:
                    continue
            except (OSError, IndexError):
                continue
            node = next(a.decode().split("=", 1)[1] for a in args if a.startswith(b"--node_id="))
            return int(proc.name), node
        raise AssertionError(f"no raylet in process group {group}")


def _ray_start(args: list[str], env: dict[str, str]) -> int:
    """Run `ray start` in a session of its own; its daemons stay in that process group."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    process = subprocess.Popen([ray, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
                                *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    return process.pid


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed (pip install -e '.[dev]' or 'engram[ray]')")
    token = secrets.token_hex(16)
    temp = tmp_path_factory.mktemp("ray")
    # These tests are about Ray, not Docker: `auto` resolves to bwrap on every node and the driver even
    # where an engine runs (CI's, for the Docker tests), as the nodes offer no `engram_docker` resource.
    # Ray starts its workers at niceness 15, and a run inherits it: on a loaded machine the runs would
    # wait behind every other process (docs/scale-out.md); the tests start their nodes at 0.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ADDRESS": "",
           "RAY_worker_niceness": "0", "DOCKER_HOST": f"unix://{temp / 'no-docker-engine.sock'}"}
    port = free_port()
    groups = [_ray_start(["--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false"], env)]
    try:
        groups.append(_ray_start([f"--address=127.0.0.1:{port}"], env))
        yield Cluster(f"127.0.0.1:{port}", env, groups)
    finally:
        for group in reversed(groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        time.sleep(1)  # workers exit when their raylet is gone


def _wait_for(condition: Callable[[], bool], timeout: float = 180,
              driver: subprocess.Popen[str] | None = None) -> None:
    """Wait for the sweep to reach a point; on a stalled or ended driver, fail with what it said."""
    deadline = time.monotonic() + float(os.environ.get("ENGRAM_TEST_RAY_WAIT_S", timeout))
    while not condition():
        ended = driver is not None and driver.poll() is not None
        if ended or time.monotonic() >= deadline:
            said = ""
            if driver is not None:
                if not ended:
                    driver.kill()
                said = "\n".join(part or "" for part in driver.communicate())[-3000:]
            raise AssertionError(f"the sweep never reached the expected point; the driver said:\n{said}")
        time.sleep(0.1)


def _experiments(seed_dir: Path) -> list[int]:
    return [e["experiment"] for e in read_jsonl(seed_dir / "events.jsonl") if e["type"] == "experiment"]


def test_runs_spread_over_two_nodes_and_survive_losing_one(tmp_path: Path, cluster: Cluster):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [write_program("/slow.py", SLEEPY)]},
         {"tool_calls": [simulate("/slow.py")]}, {"content": SUMMARY}],
        [{"content": SUMMARY}],  # the second agent shows the resumed run goes on; it need not evaluate
    ], problem={"time_limit_s": 4})
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"specs": [{"spec": str(spec), "set": {"runs": 2}}],
                                    "executor": {"name": "ray", "address": cluster.address, "max_retries": 2}}))
    driver = subprocess.Popen([sys.executable, "-m", "engram.cli", "apply", str(grid), "--quiet"], cwd=REPO,
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        raylet, second_node = cluster.raylet_of(cluster.groups[1])
        runs = tmp_path / "runs" / "t"
        _wait_for(lambda: len(list(runs.glob("*/seed-*/worker.json"))) == 2, driver=driver)
        seeds = sorted(runs.glob("*/seed-*"))
        first_nodes = {s.name: json.loads((s / "worker.json").read_text())["node"] for s in seeds}
        assert len(set(first_nodes.values())) == 2 and second_node in first_nodes.values()  # one run per node
        [lost] = [s for s in seeds if first_nodes[s.name] == second_node]
        _wait_for(lambda: (lost / "agents/agent-1/experiments/exp-0002/program.py").is_file(), driver=driver)
        time.sleep(0.5)  # the evaluation of exp-0002 is under way on the second node
        os.kill(raylet, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr
    for seed_dir in seeds:
        assert _experiments(seed_dir) == [1, 2]  # nothing lost, nothing twice
        assert json.loads((seed_dir / "result.json").read_text())["agents"] == 2
    attempts = [a["node"] for a in read_jsonl(lost / "attempts.jsonl")]
    assert attempts[0] == second_node and attempts[-1] != second_node  # retried on the head
    assert [e["type"] for e in read_jsonl(lost / "events.jsonl")].count("resume") == 1
    assert json.loads((lost / "agents/agent-1/experiments/exp-0002/evaluation.json").read_text())[
        "error_kind"] == "timeout"
    assert "2 runs (2 done)" in stdout


def _signal_blocked(pid: int, signum: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    raise AssertionError(f"no SigBlk line for {pid}")


def _sleeping(command: str) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip() == command:
                found.append(int(proc.name))
    return found


def test_ctrl_c_stops_ray_runs_cleanly(tmp_path: Path, cluster: Cluster):
    """Ray's workers block SIGINT; Engram's worker takes it back, so the cancel file stops each run like
    Ctrl-C (shell commands killed, lease closed as interrupted) instead of by the forced kill."""
    shell = {"tool_calls": [{"name": "execute", "args": {"command": "sleep 62.5"}}]}
    spec = make_spec(tmp_path, [[shell, {"content": SUMMARY}]])
    grid = tmp_path / "grid.yaml"
    # One run: the module's first test took the second node away, and the head has one CPU.
    grid.write_text(yaml.safe_dump({"specs": [{"spec": str(spec)}],
                                    "executor": {"name": "ray", "address": cluster.address}}))
    driver = subprocess.Popen([sys.executable, "-m", "engram.cli", "apply", str(grid), "--quiet"], cwd=REPO,
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = tmp_path / "runs" / "t"
        _wait_for(lambda: len(_sleeping("sleep 62.5")) == 1, driver=driver)  # the run is inside its shell command
        workers = [json.loads(p.read_text())["pid"] for p in runs.glob("*/seed-*/worker.json")]
        assert len(workers) == 1 and not _signal_blocked(workers[0], signal.SIGINT)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr
    leases = [json.loads(p.read_text())["state"] for p in runs.glob("*/seed-*/worker.json")]
    assert leases == ["interrupted"], "a forced kill leaves the lease open"
    assert not _sleeping("sleep 62.5")
