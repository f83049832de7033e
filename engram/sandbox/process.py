"""The `process` backend: a child process in its own session, held by a cgroup and rlimits.

This is the weakest backend -- the command sees the host's filesystem and network -- so it is only
used when chosen explicitly. It still gives the guarantees a score depends on: a wall-clock timeout
that kills every descendant, memory, process and CPU limits over all of the command's processes
(a cgroup, where the host lets us make one; rlimits per process besides), a file-size cap, bounded
output capture, a clean working directory and an allow-listed environment. And it takes away what
it can without namespaces (see `identity` and `seccomp`): its own session, `no_new_privs`, no
capabilities, a system-call filter, and, when Engram runs as root and the interpreter and working
directory are reachable by an ordinary user, an unprivileged uid of its own.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engram.sandbox import identity, seccomp
from engram.sandbox import workdir as workdirs
from engram.sandbox.base import Limits, Mount, Sandbox, SandboxResult, StreamCapture
from engram.sandbox.cgroup import CommandCgroup

_READ_CHUNK = 1 << 16
_DRAIN_GRACE_S = 1.0
_CPU_CHECK_S = 0.25

_active: dict[int, CommandCgroup | None] = {}
_active_lock = threading.Lock()


def kill_active_runs() -> int:
    """Kill every command this process is running in a sandbox (on Ctrl-C, so the runner stops at
    once instead of waiting for a candidate or shell command to time out). Returns how many."""
    with _active_lock:
        running = list(_active.items())
    for pid, cgroup in running:
        _kill_everything(pid, cgroup)
    return len(running)


@dataclass
class Launch:
    """How one command is started: the argv to execute and what the child does before `exec`."""

    argv: list[str]
    uid: int | None = None
    """Become this uid before exec (Engram is root); None: stay who we are."""
    filter_in_child: bool = True
    """Install the seccomp filter in the child (bubblewrap installs it itself, from `pass_fds`)."""
    drop_in_child: bool = True
    """Drop capabilities in the child (False: the wrapper needs them and drops them itself)."""
    pass_fds: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class ProcessSandbox(Sandbox):
    """Runs commands as plain child processes with limits; see the module docstring.

    `hardened=False` is the sandbox as it was before issue 13 (no uid switch, capability drop,
    system-call filter, memory or CPU cgroup, capped working directory): only the overhead benchmark
    uses it, to measure in one run what the hardening costs."""

    name = "process"

    def __init__(self, *, hardened: bool = True) -> None:
        self.hardened = hardened

    @classmethod
    def availability(cls) -> str | None:
        return seccomp.unavailable()

    @contextlib.contextmanager
    def workdir(self, *, prefix: str = "engram-eval-", parent: Path | None = None) -> Iterator[Path]:
        if not self.hardened:
            with super().workdir(prefix=prefix, parent=parent) as path:
                yield path
            return
        with workdirs.capped_workdir(prefix=prefix, parent=parent) as path:
            yield path

    def command(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> list[str]:
        """The argv actually executed; isolating backends wrap it."""
        return list(argv)

    def launch(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> Launch:
        """Decide how to start `argv`: as root, an unprivileged uid when everything the command
        needs is reachable by one, else root with no capabilities (noted: it can still write what
        root owns and signal root's processes)."""
        command = self.command(argv, workdir, mounts)
        if not self.hardened or not identity.running_as_root():
            return Launch(command)
        needed = [workdir.parent, *identity.interpreter_paths(),
                  *(m.path.parent if m.writable else m.path for m in mounts)]
        if command and os.path.isabs(command[0]):
            needed.append(Path(command[0]).parent)
        blocked = identity.reachable_by_others(needed)
        if blocked is not None:
            return Launch(command, notes=[f"ran as root without capabilities: {blocked} is closed to "
                                          f"unprivileged users, so no unprivileged uid could be used"])
        uid = identity.uid_for(workdir)
        for path in [workdir, *(m.path for m in mounts if m.writable)]:
            identity.hand_over(path, uid)
        return Launch(command, uid=uid)

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
        if self.hardened:
            cgroup = CommandCgroup.create(memory_bytes=limits.memory_bytes, max_pids=limits.max_processes,
                                          cpus=limits.cpus, notes=notes)
        else:  # as before the hardening: a pids cgroup only
            cgroup = CommandCgroup.create(memory_bytes=None, max_pids=limits.max_processes, only=("pids",))
        nproc = _nproc_limit(limits, cgroup, notes)
        started = time.monotonic()
        launch: Launch | None = None
        try:
            if (uncapped := workdirs.seal(workdir, limits.file_size_bytes)) is not None:
                notes.append(uncapped)
            launch = self.launch(argv, workdir, mounts)
            notes += launch.notes
            proc = subprocess.Popen(
                launch.argv,
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=launch.pass_fds,
                preexec_fn=_child_setup(limits, cgroup, nproc, launch, self.hardened),
            )
        except BaseException:
            if cgroup:
                cgroup.remove()
            raise
        finally:
            if launch is not None:
                launch.close()
        with _active_lock:
            _active[proc.pid] = cgroup
        try:
            result = _supervise(proc, started, limits, cgroup, notes, self.translate_returncode)
            if cgroup is not None:
                result.process_cap_hit = cgroup.cap_hits() > 0
                result.oom_killed = cgroup.oom_kills() > 0
                if result.oom_killed:
                    notes.append(f"killed by the kernel's OOM killer (memory limit {limits.memory_bytes} bytes "
                                 f"over all processes)")
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


def _nproc_limit(limits: Limits, cgroup: CommandCgroup | None, notes: list[str]) -> int | None:
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


def _child_setup(limits: Limits, cgroup: CommandCgroup | None, nproc: int | None, launch: Launch,
                 hardened: bool) -> Callable[[], None]:
    cpu = math.ceil(limits.effective_cpu_seconds)
    last_cap = identity.last_capability()
    child_filter = seccomp.child_filter() if hardened and launch.filter_in_child else None

    def apply() -> None:
        # Runs between fork and exec: keep it to system calls. Order matters: joining the cgroup
        # needs root, the filter must come last (it refuses calls made before it), and the
        # parent-death signal is reset by a change of uid.
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
        if hardened and launch.drop_in_child:
            identity.drop_privileges(launch.uid, last_cap)
        # If Engram itself is killed (even by SIGKILL), the command goes with it.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if child_filter is not None:
            child_filter.install()

    return apply


def _supervise(
    proc: subprocess.Popen[bytes], started: float, limits: Limits, cgroup: CommandCgroup | None,
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
    # With a cgroup the CPU time of all processes together is checked a few times a second: the
    # per-process RLIMIT_CPU alone would let each of N processes use the whole limit.
    cpu_check_s = _CPU_CHECK_S if cgroup is not None and cgroup.cpu_seconds() is not None else None
    try:
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = "wall"
                break
            for key, _ in selector.select(min(remaining, cpu_check_s or remaining)):
                if key.fd == pidfd:
                    exited = True
                else:
                    _read_into(key.fd, captures, selector)
            if cpu_check_s and not exited and (cgroup.cpu_seconds() or 0.0) > limits.effective_cpu_seconds:  # type: ignore[union-attr]
                timed_out = "cpu"
                break
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
    cpu_seconds = max(usage.ru_utime + usage.ru_stime, (cgroup.cpu_seconds() if cgroup else None) or 0.0)
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


def _kill_everything(pid: int, cgroup: CommandCgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill_all()
