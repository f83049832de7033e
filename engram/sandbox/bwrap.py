"""The `bwrap` backend: the process backend's limits, inside a bubblewrap container.

The command sees a read-only view of only what it needs to run Python (system libraries, the
interpreter's prefix and site-packages), the read-only paths it is given, and one writable working
directory. It has no network, its own PID namespace (so killing bubblewrap kills every process in
it, and no process outside is visible), a private size-capped /tmp, and no view of the user's home,
credentials or other files.

It has no privilege either, whoever starts Engram:

* Engram not root: bubblewrap runs the command in a user namespace of its own with every
  capability dropped (`--cap-drop ALL`) and user namespaces not nestable (`--disable-userns`).
* Engram root: bubblewrap sets the container up as root, then `setpriv` turns the command into an
  unprivileged uid of its own (`identity`) with empty capability sets and `no_new_privs`. A user
  namespace is deliberately not used here: the command's uid would map to root outside, and a
  root-mapped uid owns every root-owned file, so it could `chmod` the host's device nodes even
  without capabilities. (Without `setpriv`, bubblewrap falls back to a user namespace with uid
  65534 inside and says so in the result's notes.)

In every case the system-call filter of `seccomp` (bubblewrap's `--seccomp FD`) refuses mount,
ptrace, new namespaces and the like.
"""

from __future__ import annotations

import functools
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from engram.sandbox import identity, seccomp
from engram.sandbox.base import MiB, Mount
from engram.sandbox.process import Launch, ProcessSandbox

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd",
              "group", "nsswitch.conf", "mime.types")
_TMP_BYTES = 256 * MiB
"""Size of the private /tmp: a tmpfs, whose pages also count against the command's memory limit."""
_SHM_BYTES = 64 * MiB
"""Size of the private /dev/shm (POSIX semaphores and shared memory, e.g. `multiprocessing`)."""
_NOBODY = 65534
_NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")
"""Every namespace but the user one (`--unshare-all` would add that too)."""
_USERNS = ("--unshare-user", "--disable-userns", "--cap-drop", "ALL")


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

    def launch(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> Launch:
        if not self.hardened:
            return Launch(_bwrap(["--unshare-all"], workdir, mounts, list(argv)),
                          filter_in_child=False, drop_in_child=False)
        fd = seccomp.bpf_pipe()
        launch = self._hardened(argv, workdir, mounts, ["--seccomp", str(fd)])
        launch.pass_fds = (fd,)
        return launch

    def _hardened(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount], seccomp_args: list[str]) -> Launch:
        if not identity.running_as_root():
            options = ["--unshare-all", *_USERNS, *seccomp_args]
            return Launch(_bwrap(options, workdir, mounts, list(argv)), filter_in_child=False)
        setpriv = _setpriv()
        if setpriv is None:
            options = ["--unshare-all", *_USERNS, "--uid", str(_NOBODY), "--gid", str(_NOBODY), *seccomp_args]
            return Launch(_bwrap(options, workdir, mounts, list(argv)), filter_in_child=False, drop_in_child=False,
                          notes=["setpriv (util-linux) is missing: the command's uid maps to root outside the "
                                 "sandbox (still without capabilities)"])
        uid = identity.uid_for(workdir)
        for path in [workdir, *(m.path for m in mounts if m.writable)]:
            identity.hand_over(path, uid)
        become = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--bounding-set=-all",
                  "--inh-caps=-all", "--no-new-privs", "--"]
        return Launch(_bwrap([*_NAMESPACES, *seccomp_args], workdir, mounts, [*become, *argv]),
                      filter_in_child=False, drop_in_child=False)

    def command(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount]) -> list[str]:
        """The bubblewrap argv, as `launch` builds it (without the seccomp descriptor)."""
        return self._hardened(argv, workdir, mounts, []).argv if self.hardened else self.launch(argv, workdir,
                                                                                                  mounts).argv


def _bwrap(options: list[str], workdir: Path, mounts: Sequence[Mount], argv: list[str]) -> list[str]:
    args = [_bwrap_path(), *options, "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(_SHM_BYTES), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(_TMP_BYTES), "--tmpfs", "/tmp"]
    args += list(_system_binds())
    for path in _python_dirs():
        args += [*_parent_dir(path), "--ro-bind", path, path]
    # The working directory first, so that mounts may sit inside it (e.g. a read-only archive).
    args += [*_parent_dir(str(workdir)), "--bind", str(workdir), str(workdir)]
    for mount in mounts:
        flag = "--bind" if mount.writable else "--ro-bind"
        args += [*_parent_dir(str(mount.inside)), flag, str(mount.path), str(mount.inside)]
    args += ["--chdir", str(workdir), "--", *argv]
    return args


def _parent_dir(path: str) -> list[str]:
    """Create the parents of a bind's target as 0755 first: bubblewrap 0.8 makes them 0700 (root's
    only), which an unprivileged command could not walk through."""
    parent = str(Path(path).parent)
    return [] if parent == "/" else ["--dir", parent]


def _bwrap_path() -> str:
    return shutil.which("bwrap") or "bwrap"


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


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
    """Whether the hardened command line works here: run `true` through it once, in a scratch
    working directory (which `launch` hands to the sandbox uid when Engram is root)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    filter_missing = seccomp.unavailable()
    if filter_missing is not None:
        return filter_missing
    scratch = Path(tempfile.mkdtemp(prefix="engram-bwrap-probe-"))
    try:
        argv = BwrapSandbox()._hardened(["true"], scratch, (), []).argv
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False, cwd=scratch)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        return f"bwrap is installed but cannot create a sandbox here: {message or done.returncode}"
    return None
