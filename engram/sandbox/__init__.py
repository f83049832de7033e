"""Sandboxes: where untrusted code (candidate programs, agents' shell commands) runs.

`get_sandbox("auto")` picks the strongest backend that works on this machine: Docker when an engine
answers and the sandbox image is present, else bubblewrap when it is installed and can create
namespaces, else it stops and says how to get one. It never falls back to the `process` backend,
which does not isolate candidates from the host's files and network: that one is used only when
asked for by name, and then a warning is printed on every run and the run records it
(`UNISOLATED`, `isolation_warning`).
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

__all__ = ["BACKENDS", "PROCESS_WARNING", "UNISOLATED", "CapturedStream", "Limits", "Mount", "Sandbox",
           "SandboxResult", "clean_environment", "get_sandbox", "isolation_warning"]

UNISOLATED = ("process",)
"""Backends that do not isolate the command from the host's files, processes and network."""

PROCESS_WARNING = ("the 'process' sandbox does not isolate candidates or agents' shell commands: they can read "
                   "this machine's files and use its network; use it only with code you trust (bwrap or Docker "
                   "isolate them)")


def isolation_warning(backend: str) -> str | None:
    """What a run on this backend must say about its isolation, or None when it isolates."""
    return PROCESS_WARNING if backend in UNISOLATED else None


def get_sandbox(name: str = "auto", *, quiet: bool = False, image: str | None = None,
                labels: Mapping[str, str] | None = None) -> Sandbox:
    """Return a ready backend by name, or raise `SandboxError` explaining why it cannot run.

    `image` and `labels` matter only to the docker backend (which image; labels for its containers).
    """
    from engram.sandbox.bwrap import BwrapSandbox
    from engram.sandbox.docker import DockerSandbox
    from engram.sandbox.process import ProcessSandbox

    if name == "auto":
        docker_reason = DockerSandbox.availability()
        if docker_reason is None:
            try:
                return DockerSandbox(image, labels=labels)
            except SandboxError as exc:  # engine up but no image: try bubblewrap rather than fail
                docker_reason = str(exc)
                if not quiet:
                    print(f"engram: note: {exc}; not using Docker", file=sys.stderr)
        bwrap_reason = BwrapSandbox.availability()
        if bwrap_reason is None:
            return BwrapSandbox()
        raise SandboxError(
            f"no isolating sandbox works here (bwrap: {bwrap_reason}; docker: {docker_reason}). Install bubblewrap "
            f"(apt-get install bubblewrap) or build the Docker image (engram sandbox build), or run candidates "
            f"without isolation by choosing it explicitly: --sandbox process (spec: sandbox.backend: process).")
    if name == "docker":
        reason = DockerSandbox.availability()
        if reason is not None:
            raise SandboxError(f"sandbox 'docker' is unavailable: {reason}.")
        return DockerSandbox(image, labels=labels)
    if name == "bwrap":
        reason = BwrapSandbox.availability()
        if reason is not None:
            raise SandboxError(f"sandbox 'bwrap' is unavailable: {reason}.")
        return BwrapSandbox()
    if name == "process":
        reason = ProcessSandbox.availability()
        if reason is not None:
            raise SandboxError(f"sandbox 'process' is unavailable: {reason}.")
        # Every time, whatever `quiet` says: a run without isolation must never go unnoticed.
        print(f"engram: warning: {PROCESS_WARNING}", file=sys.stderr)
        return ProcessSandbox()
    raise SandboxError(f"unknown sandbox backend {name!r}; choose one of: {', '.join(BACKENDS)}")
