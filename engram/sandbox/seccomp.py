"""The system-call filter every sandboxed command runs under (bubblewrap and the process backend).

Dropping capabilities already makes most of these calls fail; the filter is the second wall, for the
cases where a command still holds some privilege (a user namespace it is root in, a kernel that
grants a call without a capability) and for calls no candidate needs that have a history of kernel
escapes. Everything not listed is allowed, so ordinary programs (Python, numpy, compilers, shells)
are unaffected; a refused call fails with EPERM instead of killing the process, so a program that
probes for a feature (e.g. `unshare` in a test runner) gets an error it can handle.

The BPF program is compiled once per process with libseccomp (through `pyseccomp`), then either
handed to bubblewrap as a file descriptor (`--seccomp FD`) or installed by the process backend's
child just before `exec` with a single `prctl`, so no library code runs between fork and exec.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat

_REFUSED = (
    # Mounting and changing the filesystem view: the way out of read-only binds.
    "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    # New namespaces (a fresh user namespace would give back every capability inside it).
    "unshare", "setns",
    # Looking into or steering other processes.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # Kernel keyring: shared with the host, holds credentials.
    "keyctl", "add_key", "request_key",
    # Kernel code, tracing and attack surface no candidate needs.
    "bpf", "perf_event_open", "userfaultfd", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
    "quotactl_fd", "lookup_dcookie", "vhangup", "iopl", "ioperm", "open_by_handle_at",
    "name_to_handle_at", "nfsservctl", "io_uring_setup", "io_uring_enter", "io_uring_register",
    # The host's clock and names.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
)

_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                    0x00000080)
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME: refused in `clone`."""

_TIOCSTI = 0x5412
"""ioctl that pushes characters into a terminal's input: a way to type commands into the caller's."""

_CHMOD_CALLS = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2}
"""chmod-like calls and the index of their mode argument: set-uid/set-gid bits are refused."""

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.cache
def unavailable() -> str | None:
    """Why no filter can be built here (libseccomp or its binding missing), else None."""
    try:
        bpf_program()
    except (ImportError, RuntimeError, OSError) as exc:
        return (f"cannot build the seccomp filter ({exc}); install libseccomp "
                f"(Debian/Ubuntu: apt-get install libseccomp2) and `pip install pyseccomp`")
    return None


@functools.cache
def bpf_program() -> bytes:
    """The compiled filter for this machine's architecture, as raw `struct sock_filter` records."""
    import pyseccomp as sc

    refuse = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(sc.ALLOW)
    for name in _REFUSED:
        _add(rules, refuse, name)
    for flag in _NAMESPACE_FLAGS:
        _add(rules, refuse, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, where a filter cannot look: say it does not exist, and the C
    # library falls back to clone, whose flags the rule above checks.
    _add(rules, sc.ERRNO(errno.ENOSYS), "clone3")
    _add(rules, refuse, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
    # kill(-1, ...) signals every process the caller may signal: for a command left root (the process
    # backend when no unprivileged uid is possible) that is every root process on the machine.
    _add(rules, refuse, "kill", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 0xFFFFFFFF))
    for name, index in _CHMOD_CALLS.items():
        for bit in (stat.S_ISUID, stat.S_ISGID):
            _add(rules, refuse, name, sc.Arg(index, sc.MASKED_EQ, bit, bit))
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb", closefd=True) as sink:
            rules.export_bpf(sink)
        return _read_all(read_end)
    finally:
        os.close(read_end)


def _add(rules: object, action: int, name: str, *args: object) -> None:
    import pyseccomp as sc

    number = sc.resolve_syscall(sc.Arch.NATIVE, name)
    if number == -1:  # not a system call on this architecture
        return
    rules.add_rule(action, number, *args)  # type: ignore[attr-defined]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def bpf_pipe() -> int:
    """A readable descriptor holding the filter, for bubblewrap's `--seccomp FD` (caller closes it)."""
    program = bpf_program()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)  # a few hundred bytes: far below the pipe's capacity
    finally:
        os.close(write_end)
    return read_end


class ChildFilter:
    """The filter prepared in the parent so that the forked child installs it with system calls only."""

    def __init__(self) -> None:
        self._buffer = ctypes.create_string_buffer(bpf_program())
        self._program = _SockFprog(len(bpf_program()) // 8, ctypes.addressof(self._buffer))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        """In the child, just before exec: no new privileges, then the filter. Raises on failure so
        that the command never runs unfiltered."""
        if self._libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        address = ctypes.c_ulong(ctypes.addressof(self._program))
        if self._libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, address, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")


@functools.cache
def child_filter() -> ChildFilter:
    return ChildFilter()
