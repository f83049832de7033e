"""The `bwrap` backend: the process backend's limits, inside a bubblewrap container.

The command sees a read-only view of only what it needs to run Python (system libraries, the
interpreter's prefix and site-packages), the read-only paths it is given, and one writable working
directory. It has no network, its own PID namespace (so killing bubblewrap kills every process in
it), a private /tmp, and no view of the user's home, credentials or other files.
"""

from __future__ import annotations

import functools
import shutil
import signal
import site
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from engram.sandbox.base import Mount
from engram.sandbox.process import ProcessSandbox

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd",
              "group", "nsswitch.conf", "mime.types")


class BwrapSandbox(ProcessSandbox):
    """Process sandbox whose commands run under bubblewrap; see the module docstring."""

    name = "bwrap"

    @classmethod
    def availability(cls) -> str | None:
        return _probe()

    def translate_returncode(self, returncode: int) -> int:
        # bubblewrap reports a child killed by signal N as exit status 128 + N.
        if 128 < returncode < 128 + signal.NSIG:
            return -(returncode - 128)
        return returncode

    def command(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> list[str]:
        args = [_bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        args += list(_system_binds())
        for path in _python_dirs():
            args += ["--ro-bind", path, path]
        # The working directory first, so that mounts may sit inside it (e.g. a read-only archive).
        args += ["--bind", str(workdir), str(workdir)]
        for mount in mounts:
            flag = "--bind" if mount.writable else "--ro-bind"
            args += [flag, str(mount.path), str(mount.inside)]
        args += ["--chdir", str(workdir), "--", *argv]
        return args


def _bwrap_path() -> str:
    return shutil.which("bwrap") or "bwrap"


def _system_binds() -> Iterator[str]:
    for directory in _SYSTEM_DIRS:
        path = Path(directory)
        if path.is_symlink():
            yield from ("--symlink", str(path.readlink()), directory)
        elif path.is_dir():
            yield from ("--ro-bind", directory, directory)
    for name in _ETC_FILES:
        if Path("/etc", name).exists():
            yield from ("--ro-bind", f"/etc/{name}", f"/etc/{name}")


@functools.cache
def _python_dirs() -> tuple[str, ...]:
    """The interpreter's prefixes and site-packages: all a Python child needs, nothing else."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).resolve().parent.parent)}
    candidates.update(site.getsitepackages())
    with_user = site.getusersitepackages()
    if isinstance(with_user, str):
        candidates.add(with_user)
    existing = sorted(p for p in candidates if Path(p).is_dir() and not p.startswith(_SYSTEM_DIRS))
    # Drop paths already covered by a parent in the list.
    kept: list[str] = []
    for path in existing:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return tuple(kept)


@functools.cache
def _probe() -> str | None:
    binary = shutil.which("bwrap")
    if binary is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        done = subprocess.run(
            [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
            capture_output=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be started: {exc}"
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        return f"bwrap is installed but cannot create a sandbox here: {message or done.returncode}"
    return None
