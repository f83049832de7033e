"""One program run under a judge's limits: the compiled `launch.cc` inside an Engram sandbox.

The sandbox gives isolation (what the program can see, no network, a process cap, a backstop for
time and memory); the launcher inside it gives the judge's exact limits and measurements, the same
under every backend: CPU seconds and peak memory from `wait4`, the wall-clock limit on the program
alone (not on the sandbox's start-up), the address-space, data and stack limits the upstream judge
sets. Its report is read from the sandbox's stdout, where only the launcher can write.

Where the launcher runs is a `Runner`: a fresh sandbox per run (`SandboxRunner`, every backend), or
one container that serves many runs in turn (`engram.frontier_cs.slots`, the docker backend).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from engram.sandbox import Limits, Mount, Sandbox, SandboxResult, clean_environment
from engram.sandbox.base import KiB, MiB

LAUNCHER_SOURCE = Path(__file__).with_name("launch.cc")
_SANDBOX_SLACK_S = 15.0
"""Wall time the sandbox itself may take on top of the program's limit (a container's start-up)."""
_LAUNCHER_MEMORY = 64 * MiB
"""Memory the launcher needs beside the program it watches (the sandbox's limit covers both)."""


@dataclass(frozen=True)
class Stream:
    path: Path
    mode: Literal["r", "w"]
    fd: int


@dataclass(frozen=True)
class RunLimits:
    cpu_s: float
    wall_s: float
    memory_bytes: int
    """Kept for the verdict (peak memory above it is a memory-limit failure)."""
    address_space: int | None
    data: int | None
    stack: int | None
    file_size: int | None
    max_processes: int = 128


class Runner(Protocol):
    """Runs one launcher command with the sandbox's backstop limits."""

    sweeps: bool
    """Whether the launcher must clear its container after the program (`launch --sweep`)."""

    def run(self, command: list[str], *, workdir: Path, mounts: list[Mount], limits: Limits) -> SandboxResult: ...


@dataclass(frozen=True)
class SandboxRunner:
    """Each run in a fresh sandbox of its own: nothing of one run outlives it."""

    sandbox: Sandbox
    sweeps: bool = False

    def run(self, command: list[str], *, workdir: Path, mounts: list[Mount], limits: Limits) -> SandboxResult:
        return self.sandbox.run(command, workdir=workdir, mounts=mounts, limits=limits,
                                env=clean_environment(workdir))


@dataclass(frozen=True)
class ProgramRun:
    """What the launcher saw, or why it could not say (`report` is None)."""

    exit_code: int | None
    signal: int | None
    cpu_s: float
    wall_s: float
    rss_bytes: int
    killed: str | None
    """"wall" when the launcher killed the program at its wall-clock limit."""
    sandbox: SandboxResult
    clean: bool | None = None
    """With `--sweep`: whether the launcher left its container as it found it (None: not asked, or no report)."""

    @property
    def clean_exit(self) -> bool:
        return self.exit_code == 0 and self.signal is None and self.killed is None


def launch(runner: Runner, launcher: Path, argv: list[str], *, workdir: Path, streams: list[Stream],
           mounts: list[Mount], limits: RunLimits) -> ProgramRun:
    """Run `argv` (paths valid inside the sandbox) with `limits`; streams are opened in the given order."""
    command = [str(launcher), *(["--sweep"] if runner.sweeps else []), f"{limits.cpu_s:g}", f"{limits.wall_s:g}",
               *(str(value or 0) for value in (limits.address_space, limits.data, limits.stack, limits.file_size)),
               str(len(streams))]
    for stream in streams:
        command += [str(stream.path), stream.mode, str(stream.fd)]
    command += ["--", *argv]
    result = runner.run(command, workdir=workdir, mounts=[Mount(launcher.parent), *mounts], limits=backstop(limits))
    return parse_report(result)


def backstop(limits: RunLimits) -> Limits:
    """The sandbox's own limits around a launcher run: room for the launcher, and a wall-clock limit that
    stops it only if it fails to stop the program."""
    return Limits(
        wall_seconds=limits.wall_s + _SANDBOX_SLACK_S,
        cpu_seconds=math.ceil(limits.cpu_s) + 2,
        memory_bytes=max(limits.memory_bytes, limits.address_space or 0, limits.data or 0) + _LAUNCHER_MEMORY,
        file_size_bytes=(limits.file_size or 256 * MiB) + MiB,
        max_processes=limits.max_processes + 4,
        output_bytes=64 * KiB,
    )


def parse_report(result: SandboxResult) -> ProgramRun:
    report: dict[str, object] | None = None
    for line in reversed(result.stdout.text().splitlines()):
        if line.startswith("{"):
            try:
                loaded = json.loads(line)
            except ValueError:
                continue
            if isinstance(loaded, dict):
                report = loaded
                break
    if report is None:  # the sandbox ended the launcher itself (its backstop) or it could not start
        killed = "wall" if result.timed_out else None
        return ProgramRun(exit_code=None, signal=result.signal, cpu_s=result.cpu_seconds, wall_s=result.wall_seconds,
                          rss_bytes=result.max_rss_bytes, killed=killed, sandbox=result)
    if (_int(report.get("oom_kills")) or 0) > 0:  # counted by the launcher inside a container that serves many runs
        result = dataclasses.replace(result, oom_killed=True)
    return ProgramRun(
        exit_code=_int(report.get("exit")), signal=_int(report.get("signal")),
        cpu_s=_float(report.get("cpu_s")), wall_s=_float(report.get("wall_s")),
        rss_bytes=_int(report.get("rss_bytes")) or 0, killed="wall" if report.get("killed") == "wall" else None,
        sandbox=result, clean=report.get("clean") if isinstance(report.get("clean"), bool) else None,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _open_regular(path: Path) -> int | None:
    """A descriptor for a file a sandboxed program wrote: a regular file of its own only, never through a
    symbolic or hard link it may have planted in its place. (The directory it lies in was made by the
    trusted side and is the program's mount point, so only the file itself can have been swapped.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # a hard link could be some other file's bytes
        os.close(fd)
        return None
    return fd


def read_capped(path: Path, limit: int) -> bytes:
    """At most the first `limit` bytes of a file a sandboxed program wrote (b"" if not a regular file)."""
    fd = _open_regular(path)
    if fd is None:
        return b""
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def copy_regular(source: Path, destination: Path) -> bool:
    """Copy a file a sandboxed program wrote to where it cannot reach; False if it is not a regular file."""
    fd = _open_regular(source)
    if fd is None:
        return False
    with os.fdopen(fd, "rb") as handle, destination.open("wb") as out:
        shutil.copyfileobj(handle, out, 1 << 20)
    return True
