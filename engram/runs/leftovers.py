"""What an Engram process leaves behind when it dies without cleaning up, and how to recognise it.

A runner killed with SIGKILL (or by the OOM killer, or a reboot) cannot remove its agents' shell
containers or its scratch directories. To clean them up later without touching the leftovers of a
run that is still going, everything a process creates is tagged with its *owner*: host name, boot
id, pid and the pid's start time. A pid alone is not enough (pids are reused); together with its
start time since boot it names one process, and the boot id tells a reboot from a live process.

Scratch files go under one directory per process (`engram-proc-*` in the system temp directory,
set as `tempfile.tempdir` while a run executes), so that removing a dead owner's leftovers is one
`rmtree`. Docker containers carry the owner as a label (see `engram.sandbox.docker`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEMP_PREFIX = "engram-proc-"
_OWNER_FILE = ".owner"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Owner:
    """One process on one boot of one host."""

    host: str
    boot_id: str
    pid: int
    start_ticks: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.boot_id}:{self.pid}:{self.start_ticks}"

    @classmethod
    def parse(cls, label: str) -> Owner | None:
        parts = label.strip().split(":")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))

    def alive(self) -> bool | None:
        """Whether the process still runs; None when it ran on another host (or in another container
        with its own host name), where this process cannot look."""
        if self.host != socket.gethostname():
            return None
        if self.boot_id != _boot_id():
            return False
        return _start_ticks(self.pid) == self.start_ticks


def current_owner() -> Owner:
    """This process (computed per call: a forked child is another owner than its parent)."""
    pid = os.getpid()
    return Owner(socket.gethostname(), _boot_id(), pid, _start_ticks(pid) or 0)


def is_dead(label: str | None) -> bool:
    """True only when the owner is known and certainly gone; an unknown label counts as dead (no
    live Engram writes one), another host's owner as alive (it cannot be checked from here)."""
    if not label:
        return True
    owner = Owner.parse(label)
    return owner is None or owner.alive() is False


@functools.cache
def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may contain spaces and parentheses
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


# -- scratch directories --------------------------------------------------------------------------------


def temp_base() -> Path:
    """The system temp directory, where per-process roots are made (even while one is in use)."""
    current = Path(tempfile.gettempdir())
    return current.parent if current.name.startswith(TEMP_PREFIX) else current


@contextlib.contextmanager
def owned_temp_root() -> Iterator[Path]:
    """Make this process's scratch root and point `tempfile` at it until the block ends, then remove it.

    Re-entrant: a nested call in the same process uses the root already set. The root's mode lets
    sandboxed users traverse it (their own directories inside keep their own modes)."""
    current = Path(tempfile.gettempdir())
    if current.name.startswith(TEMP_PREFIX) and Owner.parse(_read_owner(current) or "") == current_owner():
        yield current
        return
    owner = current_owner()
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{owner.pid}-", dir=temp_base()))
    root.chmod(0o711)
    (root / _OWNER_FILE).write_text(owner.label + "\n")
    previous = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(root, ignore_errors=True)


def _read_owner(root: Path) -> str | None:
    try:
        return (root / _OWNER_FILE).read_text().strip()
    except OSError:
        return None


def dead_temp_roots(base: Path | None = None) -> list[Path]:
    """Scratch roots whose owner is gone. A root without an owner file yet is being created: kept."""
    base = base or temp_base()
    found = []
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            if not entry.name.startswith(TEMP_PREFIX) or entry.is_symlink() or not entry.is_dir():
                continue
            label = _read_owner(entry)
            if label is not None and is_dead(label):
                found.append(entry)
    return sorted(found)


def remove_temp_root(root: Path) -> bool:
    """Remove one dead owner's scratch root; only `engram-proc-*` directories are ever removed."""
    if not root.name.startswith(TEMP_PREFIX) or root.is_symlink() or not root.is_dir():
        return False
    from engram.sandbox.workdir import unmount_below

    unmount_below(root)  # evaluations' tmpfs working directories, when their owner was killed
    shutil.rmtree(root, ignore_errors=True)
    return not root.exists()


def remove_dead_temp_roots(base: Path | None = None) -> int:
    """Remove every scratch root whose owner is gone; return how many went."""
    return sum(remove_temp_root(root) for root in dead_temp_roots(base))
