"""Sandboxes: where untrusted code (candidate programs, agents' shell commands) runs.

`get_sandbox("auto")` picks the strongest backend that works on this machine: Docker when an engine
answers and the sandbox image is present, else bubblewrap when it is installed and can create
namespaces, else the plain process backend with a warning.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from engram.errors import SandboxError
from engram.sandbox.base import (
    CapturedStream,
    Limits,
    Mount,
    Sandbox,
    SandboxResult,
    clean_environment,
)

BACKENDS = ("auto", "docker", "bwrap", "process")

__all__ = ["BACKENDS", "CapturedStream", "Limits", "Mount", "Sandbox", "SandboxResult",
           "clean_environment", "get_sandbox"]

_warned_process = False


def get_sandbox(name: str = "auto", *, quiet: bool = False, image: str | None = None,
                labels: Mapping[str, str] | None = None) -> Sandbox:
    """Return a ready backend by name, or raise `SandboxError` explaining why it cannot run.

    `image` and `labels` matter only to the docker backend (which image; labels for its containers).
    """
    from engram.sandbox.bwrap import BwrapSandbox
    from engram.sandbox.docker import DockerSandbox
    from engram.sandbox.process import ProcessSandbox

    if name == "auto":
        if DockerSandbox.availability() is None:
            try:
                return DockerSandbox(image, labels=labels)
            except SandboxError as exc:  # engine up but no image: fall back rather than fail
                if not quiet:
                    print(f"engram: note: {exc}; not using Docker", file=sys.stderr)
        if BwrapSandbox.availability() is None:
            return BwrapSandbox()
        _warn_weak(f"{BwrapSandbox.availability()}; using the 'process' sandbox", quiet)
        return ProcessSandbox()
    if name == "docker":
        reason = DockerSandbox.availability()
        if reason is not None:
            raise SandboxError(f"sandbox 'docker' is unavailable: {reason}.")
        return DockerSandbox(image, labels=labels)
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
