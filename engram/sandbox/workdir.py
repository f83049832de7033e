"""Working directories whose total size is capped: a tmpfs of its own per evaluation.

`RLIMIT_FSIZE` caps each file, not their sum: six files of 250 MB pass a 256 MB limit, and a disk
can be filled. When Engram is root, each evaluation's working directory is therefore a tmpfs
mounted for it alone. Just before the command starts, its size is set to what the runner put there
plus the file limit, so the command can write at most `Limits.file_size_bytes` in total. A tmpfs
lives in memory, and its pages are charged to the memory cgroup of the process that writes them, so
what a candidate writes there also counts against its memory limit.

Without root nothing is mounted (the directory is an ordinary one) and the run says so in a note.
A directory is unmounted and removed when its evaluation ends; `remove` also cleans up one that a
killed Engram left mounted.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MNT_DETACH = 0x2
_INITIAL_BYTES = 4 * 1024 * 1024 * 1024
"""Room for the runner's own inputs before the cap is set (tmpfs takes memory only as it is used)."""
_LIBC = ctypes.CDLL(None, use_errno=True)

_capped: set[str] = set()
_uncapped: dict[str, str] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def capped_workdir(*, prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A fresh directory (a tmpfs when we can mount one), unmounted and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    key = str(path)
    reason = _mount(path)
    with _lock:
        if reason is None:
            _capped.add(key)
        else:
            _uncapped[key] = reason
    try:
        yield path
    finally:
        with _lock:
            _capped.discard(key)
            _uncapped.pop(key, None)
        remove(path)


def _mount(path: Path) -> str | None:
    if os.geteuid() != 0:
        return "not root, so no tmpfs could be mounted for it"
    options = f"size={_INITIAL_BYTES},mode=0700".encode()
    if _LIBC.mount(b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        return f"mounting a tmpfs failed ({os.strerror(ctypes.get_errno())})"
    return None


def seal(workdir: Path, file_bytes: int | None) -> str | None:
    """Called just before the command starts: cap what it may add to `workdir` at `file_bytes`.
    Returns a note when the directory's total is not capped."""
    key = str(workdir)
    with _lock:
        capped, reason = key in _capped, _uncapped.get(key)
    if file_bytes is None:
        return None
    if reason is not None:
        return f"total size of the working directory not capped ({reason}); each file is capped"
    if not capped:
        return None  # not made here (an agent's workspace): its files are capped one by one
    info = os.statvfs(workdir)
    used = (info.f_blocks - info.f_bfree) * info.f_frsize
    size = f"size={used + file_bytes}".encode()
    if _LIBC.mount(b"tmpfs", key.encode(), None, _MS_REMOUNT | _MS_NOSUID | _MS_NODEV, size) != 0:
        return f"total size of the working directory not capped (remount failed: {os.strerror(ctypes.get_errno())})"
    return None


def remove(path: Path) -> None:
    """Unmount `path` if it is a mount point, then delete it."""
    if os.path.ismount(path):
        _LIBC.umount2(str(path).encode(), _MNT_DETACH)
    shutil.rmtree(path, ignore_errors=True)


def unmount_below(root: Path) -> int:
    """Detach every mount at or below `root` (the working directories a killed Engram left mounted),
    deepest first, so that `root` can then be deleted. Returns how many."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape") if len(fields) > 4 else ""
            if point == prefix.rstrip("/") or point.startswith(prefix):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        _LIBC.umount2(point.encode(), _MNT_DETACH)
    return len(points)
