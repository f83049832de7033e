"""How an executor starts a run's process: forked from a fork server, or as a fresh Python.

Importing LangChain, litellm and MLflow takes seconds (tens on a busy machine). By default
(`executor.fork_server: true`) a process that launches runs -- the local pool's driver, each Ray
worker -- starts one fork server with those libraries imported (`engram.executors.preload`) and
forks every run from it, so the imports are paid once per launching process instead of once per
run. `executor.fork_server: false` starts every run as a fresh `python -m engram.executors.worker`
instead: each run then imports the Engram code and libraries installed at the moment it starts
(the fork server keeps what was installed when it started, which matters when Engram is upgraded
on the nodes during a long sweep), and no server process stays resident beside the runs.

Either way the run gets a process of its own and a process group of its own (`child_main`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
from typing import Any, Protocol

from engram.executors.base import RunUnit
from engram.executors.worker import LOG_FILE, child_main

PRELOAD = "engram.executors.preload"


class RunProcess(Protocol):
    """What the executors use of a run's process (a `multiprocessing.Process` has it)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def join(self, timeout: float | None = None) -> None: ...


class FreshPython:
    """A run in a fresh interpreter, seen through the `RunProcess` interface."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int | None:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)


_fork_server: Any = None


def _fork_server_context() -> Any:
    """This process's fork server, started at the first run with the heavy libraries imported.

    The server is started once and inherits this process's environment at that moment, which every
    run forked from it sees (a Ray worker names its node in it before its first run)."""
    global _fork_server
    if _fork_server is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([PRELOAD])
        _fork_server = context
    return _fork_server


def start_run(unit: RunUnit, launcher_pid: int, *, fork_server: bool) -> RunProcess:
    """Start the process that runs `unit`; it stops like on Ctrl-C when `launcher_pid` exits."""
    unit.seed_dir.mkdir(parents=True, exist_ok=True)
    log_path = str(unit.seed_dir / LOG_FILE)
    if fork_server:
        process = _fork_server_context().Process(target=child_main, args=(unit.to_json(), log_path, launcher_pid),
                                                 name=f"engram-{unit.name}")
        process.start()
        return process
    with open(log_path, "ab") as log:
        popen = subprocess.Popen([sys.executable, "-m", "engram.executors.worker", log_path, str(launcher_pid)],
                                 stdin=subprocess.PIPE, stdout=log, stderr=log, process_group=0)
    assert popen.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # a worker that died at start-up says why in its log
        popen.stdin.write(unit.to_json().encode("utf-8"))
        popen.stdin.close()
    return FreshPython(popen)


def signal_group(process: RunProcess, signum: int) -> None:
    """Signal the run's whole process group (its candidates and shell commands included)."""
    if process.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)

