"""The sandbox interface: run one untrusted command under limits and report what happened.

Every backend (plain process, bubblewrap, Docker) takes the same request -- an argv, a
working directory, the paths the command may see, resource limits and an environment -- and returns
a `SandboxResult` of plain data. Callers never learn how the isolation is done, so a candidate's
score cannot depend on the backend.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed command. `None` means "no limit of that kind"."""

    wall_seconds: float = 60.0
    cpu_seconds: float | None = None
    memory_bytes: int | None = 4 * GiB
    file_size_bytes: int | None = 256 * MiB
    max_processes: int | None = 64
    output_bytes: int = 64 * KiB
    """How much of stdout and of stderr is kept (half from the start, half from the end)."""
    cpus: float | None = None
    """CPU bandwidth over all the command's processes, in cores (a cgroup cap); None: no cap."""

    @property
    def effective_cpu_seconds(self) -> float:
        # A single-threaded candidate cannot use more CPU than wall time; allow two cores' worth.
        return self.cpu_seconds if self.cpu_seconds is not None else 2 * self.wall_seconds


@dataclass(frozen=True)
class Mount:
    """A host path made visible inside the sandbox, at the same path unless `target` is given.

    Backends without their own filesystem view (`process`) cannot honour `target` or read-only
    mounts; callers that need the path at `target` there make a symlink themselves.
    """

    path: Path
    writable: bool = False
    target: Path | None = None

    @property
    def inside(self) -> Path:
        return self.target or self.path


@dataclass
class CapturedStream:
    """Start and end of one output stream, with the total size, so a flood cannot exhaust memory."""

    head: bytes = b""
    tail: bytes = b""
    total_bytes: int = 0

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        skipped = self.total_bytes - len(self.head) - len(self.tail)
        return f"{head}\n[... {skipped} bytes not kept ...]\n{tail}"


class StreamCapture:
    """Accumulates a stream while keeping at most `limit` bytes of it."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    def result(self) -> CapturedStream:
        return CapturedStream(bytes(self._head), bytes(self._tail), self._total)


@dataclass
class SandboxResult:
    """What one sandboxed command did, as plain data."""

    returncode: int
    """Exit status; negative -N when the process was ended by signal N (as in `subprocess`)."""
    timed_out: Literal["wall", "cpu"] | None
    stdout: CapturedStream
    stderr: CapturedStream
    wall_seconds: float
    cpu_seconds: float = 0.0
    """CPU time of all the command's processes (from its cgroup; without one, of the direct child and
    the descendants it reaped)."""
    max_rss_bytes: int = 0
    process_cap_hit: bool = False
    """The command tried to run more processes than `Limits.max_processes` allows."""
    oom_killed: bool = False
    """The kernel killed a process of the command for exceeding its memory cgroup limit.

    A cgroup OOM kill looks like any SIGKILL; this flag is how callers can still call it a memory error."""
    notes: list[str] = field(default_factory=list)

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


class Sandbox(ABC):
    """Runs untrusted commands. Implementations must be safe to call from several threads."""

    name: str

    @property
    def python(self) -> str:
        """The interpreter to run Python children with, as a path valid inside the sandbox.

        Host-based backends use Engram's own interpreter (same packages); a container backend
        uses the image's."""
        return sys.executable

    @classmethod
    @abstractmethod
    def availability(cls) -> str | None:
        """`None` when this backend works on this machine, else the reason it does not."""

    @contextlib.contextmanager
    def workdir(self, *, prefix: str = "engram-eval-", parent: Path | None = None) -> Iterator[Path]:
        """A fresh working directory for one evaluation, removed afterwards. Host backends make it a
        tmpfs of its own where they can, so that `Limits.file_size_bytes` caps the total written."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount] = (),
        limits: Limits,
        env: Mapping[str, str],
    ) -> SandboxResult:
        """Run `argv` in `workdir` (writable) and return once it and all its children are gone."""

    def open_shell(self, *, workdir: Path, mounts: Sequence[Mount] = (), env: Mapping[str, str],
                   memory_bytes: int | None, max_processes: int | None, lifetime_s: float) -> Shell:
        """A shell for one agent's commands; closed when the agent ends.

        Host backends run each command as a fresh sandboxed process; a container backend keeps one
        container for the whole agent, so that it pays the start-up cost once."""
        return PerCommandShell(self, workdir=workdir, mounts=mounts, env=env, memory_bytes=memory_bytes,
                               max_processes=max_processes)


class Shell(ABC):
    """Runs an agent's shell commands (`bash -c`) in its workspace, one at a time or concurrently."""

    @abstractmethod
    def run(self, command: str, *, wall_seconds: float, output_bytes: int) -> SandboxResult:
        """Run one command; the wall-clock limit must really stop it and whatever it started."""

    def close(self) -> None:  # noqa: B027 -- most shells hold nothing between commands
        """Release what the shell holds (a container); later commands may re-open it."""


class PerCommandShell(Shell):
    """Each command in a fresh sandboxed process with the agent's limits."""

    def __init__(self, sandbox: Sandbox, *, workdir: Path, mounts: Sequence[Mount], env: Mapping[str, str],
                 memory_bytes: int | None, max_processes: int | None) -> None:
        self._sandbox = sandbox
        self._workdir = workdir
        self._mounts = tuple(mounts)
        self._env = dict(env)
        self._memory_bytes = memory_bytes
        self._max_processes = max_processes

    def run(self, command: str, *, wall_seconds: float, output_bytes: int) -> SandboxResult:
        limits = Limits(wall_seconds=wall_seconds, memory_bytes=self._memory_bytes, output_bytes=output_bytes,
                        max_processes=self._max_processes)
        return self._sandbox.run(["/bin/bash", "-c", command], workdir=self._workdir, mounts=self._mounts,
                                 limits=limits, env=self._env)


PASSTHROUGH_ENV = ("LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                   "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Host variables that change how numeric libraries behave but hold no secrets."""


def clean_environment(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build a candidate's environment from an allow-list, so no API key or token can leak in.

    `PYTHONHASHSEED` is fixed so that set and dict-of-set iteration, and hence a candidate's choices,
    are the same on every run.
    """
    python_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join([python_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    if extra:
        env.update(extra)
    return env
