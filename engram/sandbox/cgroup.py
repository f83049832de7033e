"""A pids cgroup per sandboxed command, where the host lets us make one.

`RLIMIT_NPROC` does not bind root, and a process that calls `setsid` leaves its process group, so
neither stops a fork bomb nor finds every descendant when it is time to kill them. A cgroup does
both: `pids.max` caps the number of tasks, and its member list names every process to kill.
Works with cgroup v1 (a `pids` hierarchy) and v2 (the `pids` controller enabled); elsewhere the
caller falls back to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

_V1_ROOT = Path("/sys/fs/cgroup/pids")
_V2_ROOT = Path("/sys/fs/cgroup")
_PARENT_NAME = "engram"


def _own_v1_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                return _V1_ROOT / path.lstrip("/")
    except OSError:
        return None
    return None


def _parent_dir() -> Path | None:
    """The directory under which per-command cgroups are created, or None if we cannot."""
    candidates: list[Path] = []
    if (_V1_ROOT / "cgroup.procs").exists():
        candidates.append((_own_v1_cgroup() or _V1_ROOT) / _PARENT_NAME)
    if (_V2_ROOT / "cgroup.controllers").exists():
        with contextlib.suppress(OSError):
            if "pids" in (_V2_ROOT / "cgroup.controllers").read_text().split():
                candidates.append(_V2_ROOT / _PARENT_NAME)
    for parent in candidates:
        try:
            parent.mkdir(exist_ok=True)
            if parent.parent == _V2_ROOT:
                (parent / "cgroup.subtree_control").write_text("+pids")
            probe = parent / f"probe-{uuid.uuid4().hex[:8]}"
            probe.mkdir()
            ok = (probe / "pids.max").exists()
            probe.rmdir()
            if ok:
                return parent
        except OSError:
            continue
    return None


_parent_cache: list[Path | None] = []


def pids_cgroup_parent() -> Path | None:
    if not _parent_cache:
        _parent_cache.append(_parent_dir())
    return _parent_cache[0]


class PidsCgroup:
    """One cgroup that caps and tracks all processes of one sandboxed command."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs = str(path / "cgroup.procs")

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        parent = pids_cgroup_parent()
        if parent is None:
            return None
        path = parent / f"run-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            return None
        return cls(path)

    def join_current_process(self) -> None:
        """Called in the child between fork and exec, so the command starts inside the cgroup."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def members(self) -> list[int]:
        try:
            return [int(pid) for pid in Path(self._procs).read_text().split()]
        except OSError:
            return []

    def cap_hits(self) -> int:
        """How often a fork was refused because the cap was reached."""
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every member until none is left (members may fork while we kill)."""
        deadline = time.monotonic() + timeout
        while (pids := self.members()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
