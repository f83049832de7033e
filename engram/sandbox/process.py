"""The `process` backend: a child process in its own session, held by rlimits and a pids cgroup.

This is the weakest backend -- the command runs as the same user with the host's filesystem -- so
it is meant for machines without bubblewrap or Docker. It still gives the guarantees a score
depends on: a wall-clock timeout that kills every descendant, CPU, memory, file-size and process
caps, bounded output capture, a clean working directory and an allow-listed environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from engram.sandbox.base import Limits, Mount, Sandbox, SandboxResult, StreamCapture
from engram.sandbox.cgroup import PidsCgroup

_READ_CHUNK = 1 << 16
_DRAIN_GRACE_S = 1.0

_active: dict[int, PidsCgroup | None] = {}
_active_lock = threading.Lock()


def kill_active_runs() -> int:
    """Kill every command this process is running in a sandbox (on Ctrl-C, so the runner stops at
    once instead of waiting for a candidate or shell command to time out). Returns how many."""
    with _active_lock:
        running = list(_active.items())
    for pid, cgroup in running:
        _kill_everything(pid, cgroup)
    return len(running)


class ProcessSandbox(Sandbox):
    """Runs commands as plain child processes with limits; see the module docstring."""

    name = "process"

    @classmethod
    def availability(cls) -> str | None:
        return None

    def command(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> list[str]:
        """The argv actually executed; isolating backends wrap it."""
        return list(argv)

    def translate_returncode(self, returncode: int) -> int:
        """The command's own status, for wrappers that report it differently."""
        return returncode

    def run(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount] = (),
        limits: Limits,
        env: Mapping[str, str],
    ) -> SandboxResult:
        notes: list[str] = []
        cgroup = PidsCgroup.create(limits.max_processes) if limits.max_processes else None
        nproc = _nproc_limit(limits, cgroup, notes)
        command = self.command(argv, workdir, mounts)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_limits_in_child(limits, cgroup, nproc),
            )
        except BaseException:
            if cgroup:
                cgroup.remove()
            raise
        with _active_lock:
            _active[proc.pid] = cgroup
        try:
            result = _supervise(proc, started, limits, cgroup, notes, self.translate_returncode)
            result.process_cap_hit = cgroup is not None and cgroup.cap_hits() > 0
            return result
        finally:
            with _active_lock:
                _active.pop(proc.pid, None)
            if proc.returncode is None:  # supervision failed half-way: leave nothing behind
                _kill_everything(proc.pid, cgroup)
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
            if cgroup:
                cgroup.remove()


def _nproc_limit(limits: Limits, cgroup: PidsCgroup | None, notes: list[str]) -> int | None:
    """RLIMIT_NPROC counts all tasks of the user, so the cap is added to what the user runs now."""
    if cgroup is not None or limits.max_processes is None:
        return None
    if os.geteuid() == 0:
        notes.append("process cap not enforced: running as root without a usable pids cgroup")
        return None
    return _tasks_of_current_user() + limits.max_processes


def _tasks_of_current_user() -> int:
    uid = str(os.getuid())
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = Path(entry.path, "status").read_text()
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("Uid", "").split()[0] == uid:
                count += int(fields.get("Threads", "1").strip())
    return count


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _limits_in_child(limits: Limits, cgroup: PidsCgroup | None, nproc: int | None) -> Callable[[], None]:
    cpu = math.ceil(limits.effective_cpu_seconds)

    def apply() -> None:
        # Runs between fork and exec: keep it to system calls.
        # If Engram itself is killed (even by SIGKILL), the command goes with it.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if cgroup is not None:
            cgroup.join_current_process()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if limits.file_size_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def _supervise(
    proc: subprocess.Popen[bytes], started: float, limits: Limits, cgroup: PidsCgroup | None,
    notes: list[str], translate: Callable[[int], int],
) -> SandboxResult:
    assert proc.stdout is not None and proc.stderr is not None
    captures = {proc.stdout.fileno(): StreamCapture(limits.output_bytes),
                proc.stderr.fileno(): StreamCapture(limits.output_bytes)}
    pidfd = os.pidfd_open(proc.pid)
    selector = selectors.DefaultSelector()
    for fd in captures:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(pidfd, selectors.EVENT_READ)
    deadline = started + limits.wall_seconds
    timed_out: str | None = None
    exited = False
    try:
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = "wall"
                break
            for key, _ in selector.select(remaining):
                if key.fd == pidfd:
                    exited = True
                else:
                    _read_into(key.fd, captures, selector)
        # The main process is gone (or out of time): nothing it started may outlive it.
        _kill_everything(proc.pid, cgroup)
        selector.unregister(pidfd)
        drain_until = time.monotonic() + _DRAIN_GRACE_S
        while selector.get_map() and time.monotonic() < drain_until:
            for key, _ in selector.select(max(0.0, drain_until - time.monotonic())):
                _read_into(key.fd, captures, selector)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        selector.close()
        os.close(pidfd)
    proc.returncode = os.waitstatus_to_exitcode(status)
    returncode = translate(proc.returncode)
    cpu_seconds = usage.ru_utime + usage.ru_stime
    if timed_out is None and _hit_cpu_limit(returncode, cpu_seconds, limits):
        timed_out = "cpu"
    return SandboxResult(
        returncode=returncode,
        timed_out=timed_out,  # type: ignore[arg-type]
        stdout=captures[proc.stdout.fileno()].result(),
        stderr=captures[proc.stderr.fileno()].result(),
        wall_seconds=time.monotonic() - started,
        cpu_seconds=cpu_seconds,
        max_rss_bytes=usage.ru_maxrss * 1024,
        notes=notes,
    )


def _read_into(fd: int, captures: dict[int, StreamCapture], selector: selectors.BaseSelector) -> None:
    try:
        chunk = os.read(fd, _READ_CHUNK)
    except BlockingIOError:
        return
    if chunk:
        captures[fd].feed(chunk)
    else:
        selector.unregister(fd)


def _hit_cpu_limit(returncode: int, cpu_seconds: float, limits: Limits) -> bool:
    if returncode == -signal.SIGXCPU:
        return True
    return returncode == -signal.SIGKILL and cpu_seconds >= limits.effective_cpu_seconds - 0.5


def _kill_everything(pid: int, cgroup: PidsCgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill_all()
