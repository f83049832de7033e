"""Sandboxes: where untrusted code (candidate programs, agents' shell commands) runs.

`get_sandbox("auto")` picks the strongest backend that works on this machine: bubblewrap when it
is installed and can create namespaces, else the plain process backend with a warning.
"""

from __future__ import annotations

import sys

from engram.errors import SandboxError
from engram.sandbox.base import (
    CapturedStream,
    Limits,
    Mount,
    Sandbox,
    SandboxResult,
    clean_environment,
)

BACKENDS = ("auto", "bwrap", "process")

__all__ = ["BACKENDS", "CapturedStream", "Limits", "Mount", "Sandbox", "SandboxResult",
           "clean_environment", "get_sandbox"]

_warned_process = False


def get_sandbox(name: str = "auto", *, quiet: bool = False) -> Sandbox:
    """Return a ready backend by name, or raise `SandboxError` explaining why it cannot run."""
    from engram.sandbox.bwrap import BwrapSandbox
    from engram.sandbox.process import ProcessSandbox

    if name == "auto":
        if BwrapSandbox.availability() is None:
            return BwrapSandbox()
        _warn_weak(f"{BwrapSandbox.availability()}; using the 'process' sandbox", quiet)
        return ProcessSandbox()
    if name == "bwrap":
        reason = BwrapSandbox.availability()
        if reason is not None:
            raise SandboxError(f"sandbox 'bwrap' is unavailable: {reason}. Choose --sandbox process instead.")
        return BwrapSandbox()
    if name == "process":
        _warn_weak("the 'process' sandbox isolates candidates only by limits, not by filesystem or network", quiet)
        return ProcessSandbox()
    raise SandboxError(f"unknown sandbox backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def _warn_weak(message: str, quiet: bool) -> None:
    global _warned_process
    if not quiet and not _warned_process:
        print(f"engram: warning: {message}", file=sys.stderr)
        _warned_process = True
