"""The agent's view of the world, as a deepagents backend.

File tools work on the agent's workspace directory (paths are virtual: `/x.py` is
`<workspace>/x.py`, and nothing outside can be named). `/archive/` routes to the earlier agents'
folders and is read-only for the file tools. Shell commands (`execute`) never run on the host:
they go through Engram's sandbox with the workspace as the working directory, the archive mounted
read-only, no network, an allow-listed environment and a timeout that is also cut to what is left
of the agent's time.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from deepagents.backends import CompositeBackend, FilesystemBackend
from deepagents.backends.protocol import ExecuteResponse, SandboxBackendProtocol
from deepagents.middleware.filesystem import FilesystemPermission

from engram.errors import SandboxError
from engram.sandbox import Mount, Sandbox, SandboxResult, clean_environment
from engram.sandbox.base import KiB, MiB, Shell

ARCHIVE_ROUTE = "/archive/"
_MAX_OUTPUT_CHARS = 30_000
_SHELL_PROCESSES = 64
_SHELL_LIFETIME_S = 24 * 3600.0
"""Backstop for a shell container nobody closed (Engram killed): agents never run this long."""

_open_workspaces: ContextVar[list[SandboxedWorkspace] | None] = ContextVar("engram_open_workspaces", default=None)


@contextlib.contextmanager
def closing_shells() -> Iterator[None]:
    """Close the shells of every workspace created inside, however the block ends (Ctrl-C too).

    A method wraps each agent in this, so that an agent's shell container lives exactly as long as
    the agent; the runner wraps each seed as a safety net."""
    opened: list[SandboxedWorkspace] = []
    token = _open_workspaces.set(opened)
    try:
        yield
    finally:
        _open_workspaces.reset(token)
        for workspace in opened:
            workspace.close()


class SandboxedWorkspace(FilesystemBackend, SandboxBackendProtocol):
    """Workspace files plus `execute` through an Engram sandbox."""

    def __init__(
        self,
        workspace: Path,
        sandbox: Sandbox,
        *,
        readonly: list[tuple[Path, Path]],
        shell_timeout_s: float,
        memory_mb: int,
        remaining_s: Callable[[], float],
    ) -> None:
        super().__init__(root_dir=workspace, virtual_mode=True)
        self._workspace = workspace
        self._sandbox = sandbox
        self._readonly = readonly
        self._shell_timeout_s = shell_timeout_s
        self._memory_mb = memory_mb
        self._remaining_s = remaining_s
        self._id = f"engram-{uuid.uuid4().hex[:8]}"
        self._shell: Shell | None = None
        collector = _open_workspaces.get()
        if collector is not None:
            collector.append(self)

    @property
    def id(self) -> str:
        return self._id

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        remaining = self._remaining_s()
        if remaining <= 1:
            return ExecuteResponse(output="Not run: your time is up. Write your summary now.", exit_code=None)
        limit = min(self._shell_timeout_s, remaining, float(timeout) if timeout else float("inf"))
        started = time.monotonic()
        try:
            result = self.shell().run(command, wall_seconds=limit, output_bytes=64 * KiB)
        except SandboxError as exc:  # the agent's problem to hear about, not a reason to stop the run
            return ExecuteResponse(output=f"[not run: the sandbox failed: {exc}]", exit_code=None)
        output = result.stdout.text()
        if result.stderr.total_bytes:
            output += ("\n" if output and not output.endswith("\n") else "") + result.stderr.text()
        for line in self._explain(result, limit, time.monotonic() - started):
            output += ("\n" if output and not output.endswith("\n") else "") + f"[{line}]"
        truncated = result.stdout.truncated or result.stderr.truncated or len(output) > _MAX_OUTPUT_CHARS
        return ExecuteResponse(output=output[-_MAX_OUTPUT_CHARS:], exit_code=result.returncode, truncated=truncated)

    def _explain(self, result: SandboxResult, limit: float, elapsed: float) -> list[str]:
        """Why the command ended, in words: a bare `exit code -9` tells the agent nothing."""
        lines = []
        if result.timed_out:
            lines.append(f"stopped after {elapsed:.0f} s: time limit of {limit:.0f} s")
        elif result.oom_killed:
            lines.append(f"killed: out of memory (the shell's limit is {self._memory_mb} MiB for all its processes "
                         "together); use less memory")
        elif result.process_cap_hit:
            lines.append(f"the shell's limit of {_SHELL_PROCESSES} processes was reached: a fork failed or the "
                         "command was killed; run fewer processes at once")
        elif result.signal is not None:
            lines.append(f"killed by signal {_signal_name(result.signal)}")
        return lines + list(result.notes)

    def shell(self) -> Shell:
        """The agent's shell, opened at its first command."""
        if self._shell is None:
            (self._workspace / ".tmp").mkdir(exist_ok=True)
            self._shell = self._sandbox.open_shell(
                workdir=self._workspace,
                mounts=[Mount(source, target=target) for source, target in self._readonly if source.exists()],
                env=clean_environment(self._workspace, {"TMPDIR": str(self._workspace / ".tmp")}),
                memory_bytes=self._memory_mb * MiB, max_processes=_SHELL_PROCESSES, lifetime_s=_SHELL_LIFETIME_S)
        return self._shell

    def close(self) -> None:
        """End the shell (for Docker: remove the agent's container); a later command would re-open it."""
        shell, self._shell = self._shell, None
        if shell is not None:
            shell.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def build_backend(
    workspace: Path,
    archive_dir: Path | None,
    sandbox: Sandbox,
    *,
    shell_timeout_s: float,
    memory_mb: int,
    remaining_s: Callable[[], float],
) -> tuple[CompositeBackend | SandboxedWorkspace, list[FilesystemPermission]]:
    """The backend for one agent, and the permission rules that keep the archive read-only."""
    readonly = [(archive_dir, workspace / "archive")] if archive_dir is not None else []
    default = SandboxedWorkspace(workspace, sandbox, readonly=readonly, shell_timeout_s=shell_timeout_s,
                                 memory_mb=memory_mb, remaining_s=remaining_s)
    if archive_dir is None:
        return default, []
    backend = CompositeBackend(default=default,
                               routes={ARCHIVE_ROUTE: FilesystemBackend(root_dir=archive_dir, virtual_mode=True)})
    rules = [FilesystemPermission(operations=["write"], paths=[f"{ARCHIVE_ROUTE}**"], mode="deny")]
    return backend, rules
