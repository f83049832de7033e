"""Runs inside the sandbox: start one program with a judge's limits and report what it used.

Copied beside the judge's other files and run by a bare interpreter (`python3 -I -S launch.py SPEC`),
so it imports nothing from Engram. It opens the program's standard streams (files, or the named
pipes of an interactive case, in the order given so that two launchers meeting on the same pipes
never wait for each other), sets the limits the upstream judge sets -- CPU time, address space
and/or data size, stack, file size -- forks, execs, enforces the wall-clock limit on the program's
whole process group, and prints one JSON line: exit status, signal, CPU and wall seconds, peak
resident memory.

Only this process holds the pipe that the report goes to: the program gets its own files as
streams, none of the launcher's descriptors, and the launcher makes itself non-dumpable so that a
program running as the same user cannot reach its descriptors through /proc. The sandbox around
both is what keeps the program from everything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import select
import signal
import sys
import time
from typing import Any

_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1


def _open_streams(streams: list[list[Any]]) -> dict[int, int]:
    """Open each [path, mode, fd] in order; a missing standard stream reads or writes /dev/null."""
    opened: dict[int, int] = {}
    for path, mode, target in streams:
        flags = os.O_RDONLY if mode == "r" else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        opened[int(target)] = os.open(path, flags | os.O_CLOEXEC, 0o644)
    for target in (0, 1, 2):
        if target not in opened:
            opened[target] = os.open(os.devnull, (os.O_RDONLY if target == 0 else os.O_WRONLY) | os.O_CLOEXEC)
    return opened


def _set_limits(spec: dict[str, Any]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = math.ceil(float(spec["cpu_s"]))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_hard != resource.RLIM_INFINITY:
        cpu = min(cpu, max(1, cpu_hard - 1))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for key, which in (("address_space", resource.RLIMIT_AS), ("data", resource.RLIMIT_DATA),
                       ("stack", resource.RLIMIT_STACK), ("file_size", resource.RLIMIT_FSIZE)):
        value = spec.get(key)
        if value is not None:
            _, hard = resource.getrlimit(which)
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(which, (value, value))


def _child(spec: dict[str, Any], streams: dict[int, int]) -> None:
    """Between fork and exec: become a process group, take the streams, drop everything else."""
    try:
        os.setpgid(0, 0)
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for target, fd in streams.items():
            os.dup2(fd, target, inheritable=True)
        os.closerange(3, 65536)
        _set_limits(spec)
        os.execve(spec["argv"][0], spec["argv"], spec.get("env") or {"PATH": "/usr/bin:/bin"})
    except BaseException as exc:
        os.write(2, f"launch: cannot start {spec['argv'][0]}: {exc}\n".encode())
    os._exit(127)


def _wait(pid: int, wall_s: float) -> tuple[int, Any, str | None]:
    """Wait for the program; at the wall-clock limit kill its whole process group."""
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + wall_s
    killed = None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed = "wall"
                break
            if poller.poll(remaining * 1000):
                break
    finally:
        os.close(pidfd)
    # Whatever the program started must not outlive it (nor keep writing its output).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage, killed


def main(spec: dict[str, Any]) -> dict[str, Any]:
    streams = _open_streams(spec.get("streams") or [])
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(spec, streams)
    for fd in streams.values():
        os.close(fd)
    status, usage, killed = _wait(pid, float(spec["wall_s"]))
    report: dict[str, Any] = {
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.monotonic() - started,
        "rss_bytes": usage.ru_maxrss * 1024,
        "killed": killed,
    }
    return report


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
