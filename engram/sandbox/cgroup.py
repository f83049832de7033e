"""One control group per sandboxed command: its limits hold over all of its processes together.

Resource limits (`setrlimit`) bind one process each, so four processes of 700 MB pass a 1 GB limit,
and `RLIMIT_NPROC` does not bind root at all. A cgroup counts every process the command starts,
whatever it does (`setsid`, double fork):

* memory: `memory.max` (v2) or `memory.limit_in_bytes` (v1) over all processes, including the pages
  of files they write to a tmpfs, with swap included where the kernel accounts it (v2
  `memory.swap.max = 0`, v1 `memory.memsw.limit_in_bytes`); the kernel's OOM kills are counted so
  that the caller can say "memory" rather than "killed";
* pids: `pids.max` caps the tasks (a fork bomb stops there) and lists every process to kill;
* CPU: the time of all processes together is read (`cpu.stat`, `cpuacct.usage`) so that one CPU
  limit holds per command (accounting only: see `_V2_ENABLED` for why no group is CPU-scheduled),
  and a CPU bandwidth cap is set on v1 when the caller asks for one.

Both layouts are handled: the unified v2 hierarchy (modern hosts) and v1 controllers mounted one by
one (older hosts, and hybrid ones whose v2 mount has no controllers). Where a controller cannot be
used (no root, no delegation) the command still runs, and `create` says what is not enforced so that
the result carries it as a note.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_PARENT_NAME = "engram"
_STALE_AFTER_S = 120.0
_CONTROLLERS = ("memory", "pids", "cpu")
_V2_ENABLED = ("memory", "pids")
"""Controllers Engram enables in v2. Not `cpu`: a group with the cpu controller is scheduled as one
entity, so under load a command would get one task's share of the machine where its processes had
one share each before, and run up to twice as slow (measured); CPU time is read from `cpu.stat`,
which every v2 group has."""
_V1_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class _Layout:
    """Where per-command groups go: one parent directory per hierarchy, and what each one controls."""

    version: int
    parents: dict[str, Path] = field(default_factory=dict)
    """controller ("memory", "pids", "cpu", "cpuacct") -> the directory new groups are made in."""
    missing: tuple[str, ...] = ()


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """cgroup mounts as (mount point, root inside the hierarchy, fs type, options)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                found.append((fields[4], fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its v2 cgroup."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _inside(mount_point: str, mount_root: str, own: str) -> Path:
    relative = own
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root.rstrip("/") + "/")):
        relative = own[len(mount_root):]
    return Path(mount_point) / relative.lstrip("/")


def _prepare_parent(parent: Path, enable: Iterable[str] = ()) -> bool:
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return False
    _enable(parent, enable)
    return True


def _enable(group: Path, controllers: Iterable[str]) -> list[str]:
    """Enable each controller for `group`'s children on its own (one refused, e.g. cpu while
    real-time tasks exist, must not cost the others); returns those enabled."""
    control = group / "cgroup.subtree_control"
    for controller in controllers:
        with contextlib.suppress(OSError):
            if controller not in control.read_text().split():
                control.write_text(f"+{controller}")
    try:
        return control.read_text().split()
    except OSError:
        return []


def _v2_layout(mount_point: str, mount_root: str, own: str) -> _Layout | None:
    root = Path(mount_point)
    try:
        available = set((root / "cgroup.controllers").read_text().split())
    except OSError:
        return None
    wanted = [c for c in _V2_ENABLED if c in available]
    if "memory" not in wanted and "pids" not in wanted:
        return None
    # The hierarchy's root may hold processes and still delegate controllers; any other cgroup that
    # holds ours may not (the "no internal processes" rule), so try the root first, then a cgroup
    # delegated to us (its subtree_control already lists the controllers).
    for parent in (root / _PARENT_NAME, _inside(mount_point, mount_root, own) / _PARENT_NAME):
        if parent.parent == root:
            enabled = [c for c in wanted if c in _enable(root, wanted)]
        else:
            enabled = [c for c in wanted if c in _enable(parent.parent, ())]
        if "memory" not in enabled and "pids" not in enabled:
            continue
        if _prepare_parent(parent, enabled):
            enabled = [c for c in enabled if c in _enable(parent, ())]
        if enabled and _usable(parent, enabled):
            controls = {c: parent for c in enabled}
            controls["cpuacct"] = parent  # cpu.stat exists in every v2 group
            return _Layout(2, controls, tuple(c for c in _CONTROLLERS if c not in enabled))
    return None


def _v1_layout(mounts: list[tuple[str, str, str, set[str]]], own: dict[str, str]) -> _Layout:
    parents: dict[str, Path] = {}
    for controller in (*_CONTROLLERS, "cpuacct"):
        for mount_point, mount_root, fstype, options in mounts:
            if fstype != "cgroup" or controller not in options:
                continue
            if controller == "cpuacct" and "cpu" in options:
                break  # mounted with cpu: joining it for accounting would change scheduling (see _V2_ENABLED)
            if controller in own:
                parent = _inside(mount_point, mount_root, own[controller]) / _PARENT_NAME
                if _prepare_parent(parent) and _usable(parent, [controller]):
                    parents[controller] = parent
                break
    return _Layout(1, parents, tuple(c for c in _CONTROLLERS if c not in parents))


_PROBE_FILE = {"memory": ("memory.max", "memory.limit_in_bytes"), "pids": ("pids.max",),
               "cpu": ("cpu.max", "cpu.cfs_quota_us"), "cpuacct": ("cpuacct.usage",)}


def _usable(parent: Path, controllers: Iterable[str]) -> bool:
    probe = parent / f"probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        return all(any((probe / name).exists() for name in _PROBE_FILE[c]) for c in controllers)
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@functools.cache
def layout() -> _Layout:
    """How this host lets us make cgroups, found once per process; stale groups are swept then."""
    mounts = _mounts()
    own = _own_paths()
    found: _Layout | None = None
    for mount_point, mount_root, fstype, _ in mounts:
        if fstype == "cgroup2":
            found = _v2_layout(mount_point, mount_root, own.get("", "/"))
            if found is not None:
                break
    if found is None:
        found = _v1_layout(mounts, own) if any(m[2] == "cgroup" for m in mounts) else _Layout(1, {}, _CONTROLLERS)
    for parent in set(found.parents.values()):
        _sweep_stale(parent)
    return found


def _sweep_stale(parent: Path) -> None:
    """Remove the empty groups a killed Engram left behind (an empty group cannot be removed by
    anything but rmdir, and a fresh one may still be waiting for its first process)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if entry.name.startswith(("run-", "probe-")) and now - entry.stat().st_mtime > _STALE_AFTER_S:
                with contextlib.suppress(OSError):
                    entry.rmdir()


class CommandCgroup:
    """The cgroup(s) holding one sandboxed command: one directory per hierarchy."""

    def __init__(self, version: int, paths: dict[str, Path]) -> None:
        self.version = version
        self.paths = paths
        self._dirs = list(dict.fromkeys(paths.values()))
        self._procs = [str(d / "cgroup.procs") for d in self._dirs]

    @property
    def path(self) -> Path:
        return self._dirs[0]

    @classmethod
    def create(cls, *, memory_bytes: int | None, max_pids: int | None, cpus: float | None = None,
               notes: list[str] | None = None, only: tuple[str, ...] | None = None) -> CommandCgroup | None:
        """A fresh group with these limits, or None when the host lets us make none. What cannot be
        enforced is appended to `notes`. `only` restricts the hierarchies used (v1)."""
        found = layout()
        if only is not None:
            found = _Layout(found.version, {c: p for c, p in found.parents.items() if c in only}, found.missing)
        wanted = {"memory": memory_bytes is not None, "pids": max_pids is not None, "cpu": cpus is not None}
        lacking = [c for c, needed in wanted.items() if needed and c not in found.parents]
        if lacking and notes is not None:
            notes.append(f"no {'/'.join(lacking)} cgroup on this host: "
                         f"{', '.join(_WHAT[c] for c in lacking)} per process only")
        if not found.parents:
            return None
        name = f"run-{uuid.uuid4().hex[:12]}"
        # The cpu hierarchy only when a bandwidth cap is asked for (group scheduling: see _V2_ENABLED).
        paths = {c: parent / name for c, parent in found.parents.items() if c != "cpu" or cpus is not None}
        group = cls(found.version, paths)
        try:
            for directory in group._dirs:
                directory.mkdir()
            group._apply(memory_bytes, max_pids, cpus)
        except OSError as exc:
            group.remove()
            if notes is not None:
                notes.append(f"could not set up a cgroup ({exc}): limits per process only")
            return None
        return group

    def _apply(self, memory_bytes: int | None, max_pids: int | None, cpus: float | None) -> None:
        if memory_bytes is not None and "memory" in self.paths:
            memory = self.paths["memory"]
            if self.version == 2:
                (memory / "memory.max").write_text(str(memory_bytes))
                _write_if_present(memory / "memory.swap.max", "0")
                _write_if_present(memory / "memory.oom.group", "1")
            else:
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                _write_if_present(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        if max_pids is not None and "pids" in self.paths:
            (self.paths["pids"] / "pids.max").write_text(str(max_pids))
        if cpus is not None and "cpu" in self.paths:
            quota = max(1000, int(cpus * _V1_CPU_PERIOD_US))
            if self.version == 2:
                (self.paths["cpu"] / "cpu.max").write_text(f"{quota} {_V1_CPU_PERIOD_US}")
            else:
                (self.paths["cpu"] / "cpu.cfs_period_us").write_text(str(_V1_CPU_PERIOD_US))
                (self.paths["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))

    def join_current_process(self) -> None:
        """Called in the child between fork and exec, so the command starts inside the group."""
        pid = str(os.getpid()).encode()
        for procs in self._procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def members(self) -> list[int]:
        found: set[int] = set()
        for procs in self._procs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(pid) for pid in Path(procs).read_text().split())
        return sorted(found)

    def cap_hits(self) -> int:
        """How often a fork was refused because the process cap was reached."""
        if "pids" not in self.paths:
            return 0
        return _counter(self.paths["pids"] / "pids.events", "max")

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the memory limit."""
        if "memory" not in self.paths:
            return 0
        memory = self.paths["memory"]
        return max(_counter(memory / "memory.events", "oom_kill"), _counter(memory / "memory.oom_control", "oom_kill"))

    def cpu_seconds(self) -> float | None:
        """CPU time of every process the command ran, or None when not accounted."""
        directory = self.paths.get("cpuacct")
        if directory is None:
            return None
        if self.version == 2:
            usec = _counter(directory / "cpu.stat", "usage_usec", default=-1)
            return usec / 1e6 if usec >= 0 else None
        try:
            return int((directory / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every member until none is left (members may fork while we kill)."""
        if self.version == 2:
            _write_if_present(self.path / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        while (pids := self.members()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        self.kill_all()
        for directory in self._dirs:
            for _ in range(200):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


PidsCgroup = CommandCgroup
"""Former name, kept for callers written against it."""

_WHAT = {"memory": "memory limit", "pids": "process cap", "cpu": "CPU bandwidth cap"}


def _write_if_present(path: Path, value: str) -> None:
    """For settings some kernels lack (swap accounting, cgroup.kill): best effort."""
    with contextlib.suppress(OSError):
        path.write_text(value)


def _counter(path: Path, key: str, default: int = 0) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return default
