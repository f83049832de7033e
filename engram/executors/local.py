"""The default executor: a bounded pool of worker processes on this machine.

At most `jobs` runs at once, each in a worker process of its own (never a thread: a run installs
signal handlers and owns process-wide MLflow and LangChain state), forked from a fork server that
has imported the heavy libraries once (or a fresh Python, see `engram.executors.launch`). A worker
that dies
abnormally -- killed by a signal, out of memory, a crash -- is started again up to `max_retries`
times and resumes from its archive. Ctrl-C stops every worker the way Ctrl-C stops a single run
(running candidates and shell commands are killed, containers removed), then anything still alive
after a grace period is killed with its process group, and Docker containers labelled with a
cancelled run's directory are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from engram.executors.base import (
    Executor,
    RunUnit,
    Tick,
    UnitOutcome,
    outcome_from_exit,
    retryable,
)
from engram.executors.launch import RunProcess, signal_group, start_run
from engram.executors.worker import read_lease

STOP_GRACE_S = 20.0
"""How long cancelled workers get to stop cleanly before they are killed."""
_POLL_S = 0.2


@dataclass
class _Running:
    unit: RunUnit
    process: RunProcess
    attempt: int

    def exitcode(self) -> int | None:
        return self.process.exitcode


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, jobs: int | None = None, max_retries: int = 2, *, fork_server: bool = True) -> None:
        self.jobs = jobs or os.cpu_count() or 1
        self.max_retries = max_retries
        self.fork_server = fork_server

    def describe(self) -> str:
        start = "" if self.fork_server else ", a fresh Python per run"
        return f"local, at most {self.jobs} run{'s' if self.jobs != 1 else ''} at once{start}"

    def run(self, units: Sequence[RunUnit], tick: Tick) -> list[UnitOutcome]:
        pending: deque[tuple[RunUnit, int]] = deque((unit, 1) for unit in units)
        running: list[_Running] = []
        outcomes: dict[int, UnitOutcome] = {}
        index = {id(unit): i for i, unit in enumerate(units)}
        last_tick = time.monotonic()
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    unit, attempt = pending.popleft()
                    running.append(_Running(unit, start_run(unit, os.getpid(), fork_server=self.fork_server),
                                            attempt))
                time.sleep(_POLL_S)
                for entry in [r for r in running if r.exitcode() is not None]:
                    running.remove(entry)
                    code = entry.exitcode()
                    assert code is not None
                    if retryable(code) and entry.attempt <= self.max_retries:
                        pending.appendleft((entry.unit, entry.attempt + 1))
                        continue
                    outcomes[index[id(entry.unit)]] = outcome_from_exit(entry.unit, code, entry.attempt,
                                                                        _error(entry.unit, code))
                if time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    if not tick():
                        self._stop(running)
                        for entry in running:
                            outcomes[index[id(entry.unit)]] = UnitOutcome(entry.unit, "cancelled", entry.attempt)
                        for unit, attempt in pending:
                            outcomes[index[id(unit)]] = UnitOutcome(unit, "cancelled", attempt - 1)
                        pending.clear()
                        running.clear()
        except BaseException:
            self._stop(running)
            raise
        return [outcomes[i] for i in range(len(units))]

    def _stop(self, running: list[_Running]) -> None:
        """Interrupt every worker like Ctrl-C, wait for them, kill what is left, remove its containers."""
        alive = [r for r in running if r.exitcode() is None]
        for entry in alive:
            signal_group(entry.process, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(r.exitcode() is None for r in alive) and time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C must not abandon the workers
                time.sleep(_POLL_S)
        for entry in alive:
            if entry.exitcode() is None:
                signal_group(entry.process, signal.SIGKILL)
                entry.process.join()
        remove_containers([r.unit for r in alive])


def _error(unit: RunUnit, returncode: int) -> str | None:
    lease = read_lease(unit.seed_dir) or {}
    if lease.get("error"):
        return str(lease["error"])
    if returncode < 0:
        return f"worker killed by {signal.Signals(-returncode).name}"
    return None


def remove_containers(units: Sequence[RunUnit]) -> int:
    """Remove Docker containers labelled with these runs' directories, if an engine answers."""
    if not any(unit.uses_docker() or (unit.spec.get("sandbox") or {}).get("backend") == "auto" for unit in units):
        return 0
    from engram.runs.runner import RUN_DIR_LABEL
    from engram.sandbox.docker import DockerSandbox

    if DockerSandbox.availability() is not None:
        return 0
    import docker

    removed = 0
    with contextlib.closing(docker.from_env(timeout=30)) as client:
        for run_dir in sorted({unit.run_dir for unit in units}):
            for container in client.containers.list(all=True, filters={"label": f"{RUN_DIR_LABEL}={run_dir}"}):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                    removed += 1
    return removed
