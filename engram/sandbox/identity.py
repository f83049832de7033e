"""Who a sandboxed command runs as: never with a capability, and not as root when Engram is root.

Dropping capabilities is not enough when Engram runs as root: a root process without capabilities
still owns every root-owned file, so it may rewrite the virtualenv, `chmod` the host's `/dev/null`
or signal the runner. So when Engram is root a command runs as an unprivileged uid of its own,
derived from its working directory (one uid per evaluation or agent workspace, so two sandboxes
running at once cannot signal or share files with each other either), and its working directory is
handed to that uid before it starts. The uids are taken far above the ranges distributions give to
users and to containers' subordinate ids, so they own nothing else on the host.

Without root nothing changes hands: the command runs as the caller, which already has no privilege
to lose; the capability and `no_new_privs` steps below still apply.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

UID_BASE = 1_900_000_000
UID_SPAN = 1 << 24

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LIBC = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def running_as_root() -> bool:
    return os.geteuid() == 0


def uid_for(workdir: Path) -> int:
    """The unprivileged uid (and gid) a command in `workdir` runs as when Engram is root."""
    info = os.stat(workdir)
    return UID_BASE + hash((info.st_dev, info.st_ino)) % UID_SPAN


def hand_over(workdir: Path, uid: int) -> None:
    """Give `workdir` and everything under it to `uid`, so the command can use the files the runner
    put there. Links are never followed and other file systems never entered."""
    if Path(workdir).resolve() == Path("/"):
        raise ValueError("refusing to hand the root directory to a sandbox uid")
    root_dev = os.lstat(workdir).st_dev
    os.chown(workdir, uid, uid, follow_symlinks=False)
    for _, dirnames, filenames, dir_fd in os.fwalk(workdir, follow_symlinks=False):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if info.st_dev != root_dev or (info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode)):
                    continue  # another file system, or a hard link that may lead outside
                if info.st_uid != uid or info.st_gid != uid:
                    os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)
        dirnames[:] = [d for d in dirnames if _same_device(d, dir_fd, root_dev)]


def _same_device(name: str, dir_fd: int, device: int) -> bool:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_dev == device
    except FileNotFoundError:
        return False


def reachable_by_others(paths: Iterable[Path]) -> Path | None:
    """The first path an unprivileged user cannot reach (a directory on the way without `x` for
    others, e.g. `/root`), or None when every one is reachable."""
    for path in paths:
        current = Path(path).absolute()
        for directory in [*reversed(current.parents), current]:
            try:
                mode = os.stat(directory).st_mode
            except OSError:
                return directory
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return directory
    return None


def interpreter_paths() -> list[Path]:
    """What a command must be able to reach to start Engram's interpreter (`Sandbox.python`): the
    directory it is named in, the one it resolves to (a venv's `python` links to its base
    interpreter) and the prefixes holding the standard library, the site-packages and, for a shared
    build, libpython (pyenv's find it through a run path under their prefix: an unprivileged uid that
    cannot reach it would silently start another Python, or none)."""
    executable = Path(sys.executable)
    prefixes = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    return list(dict.fromkeys([executable.parent, executable.resolve().parent, *map(Path, prefixes)]))


def last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63


def drop_privileges(uid: int | None, last_cap: int) -> None:
    """In the child between fork and exec: empty the bounding and ambient sets (so no later exec can
    regain a capability), then become `uid`, or stay root with every capability cleared.

    Raises on any failure so that the command never starts with privileges."""
    if os.geteuid() != 0:
        return
    for cap in range(last_cap + 1):
        if _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: unknown cap
            raise OSError(ctypes.get_errno(), f"dropping capability {cap} from the bounding set failed")
    _LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 clears the permitted and effective sets
        return
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _LIBC.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "clearing capabilities failed")
