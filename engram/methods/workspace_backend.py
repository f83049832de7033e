"""The agent's view of the world, as a deepagents backend.

File tools work on the agent's workspace directory (paths are virtual: `/x.py` is
`<workspace>/x.py`, and nothing outside can be named). `/archive/` routes to the earlier agents'
folders and is read-only for the file tools, as are the files the method hands over read-only
(the Research Digest). Shell commands (`execute`) never run on the host: they go through Engram's
sandbox with the workspace as the working directory, the archive and the read-only files mounted
read-only, no network, an allow-listed environment and a timeout that is also cut to what is left
of the agent's time.

One path convention for both: the sandbox sees the workspace at its real absolute path, and a
command's `/name...` whose first part names something in the workspace (or is not a directory of
the sandbox's root, such as a file about to be created) is rewritten to that real path, so that
`head /new_algorithm.py` reads the file the file tools call `/new_algorithm.py`. System paths
(`/tmp`, `/usr`, `/dev/null`, ...) are left alone.
"""

from __future__ import annotations

import contextlib
import re
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

from deepagents.backends import CompositeBackend, FilesystemBackend
from deepagents.backends.protocol import (
    DeleteResult,
    EditResult,
    ExecuteResponse,
    ReadResult,
    SandboxBackendProtocol,
    WriteResult,
)
from deepagents.backends.utils import perform_string_replacement
from deepagents.middleware.filesystem import FilesystemPermission

from engram.errors import SandboxError
from engram.evaluation.safe_read import UnsafeFile, read_untrusted, write_beneath
from engram.sandbox import Mount, Sandbox, SandboxResult, clean_environment
from engram.sandbox.base import KiB, MiB, Shell

ARCHIVE_ROUTE = "/archive/"
_MAX_FILE_BYTES = 16 * MiB
"""Largest workspace file the file tools read: the agent's shell can make files of any size."""
_MAX_OUTPUT_CHARS = 30_000
_SHELL_PROCESSES = 64
_SHELL_LIFETIME_S = 24 * 3600.0
"""Backstop for a shell container nobody closed (Engram killed): agents never run this long."""

_WORKSPACE_PATH = re.compile(r"(?<![\w.~/$:@-])/([A-Za-z0-9_][A-Za-z0-9_.+-]*)")
"""A `/name` that starts a path (not a path's later part, a URL, a variable's value or `~/x`)."""

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
        readonly_files: Sequence[str] = (),
        shell_timeout_s: float,
        memory_mb: int,
        remaining_s: Callable[[], float],
    ) -> None:
        super().__init__(root_dir=workspace, virtual_mode=True)
        self._workspace = workspace
        self._sandbox = sandbox
        self._readonly = readonly
        self._readonly_files = {name.strip("/") for name in readonly_files}
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

    def _refused(self, file_path: str) -> str | None:
        """The error for a change to a read-only file (deepagents' permission rules cannot be used
        on a backend that also runs commands)."""
        name = file_path.strip().lstrip("/")
        if name in self._readonly_files:
            return f"Error: /{name} is read-only; write your own notes to another file."
        return None

    # The agent's shell writes the workspace too, and may put a FIFO (an open that never returns),
    # a link or a giant file where a file tool will look: so the file tools read and write it the
    # way the evaluator reads a candidate's files (`engram.evaluation.safe_read`), never by a
    # check-then-open.

    def read(self, file_path: str, offset: int = 0, limit: int = 2000) -> ReadResult:
        try:
            data = self._workspace_bytes(file_path)
        except UnsafeFile as exc:
            return ReadResult(error=f"Error reading file '{file_path}': {exc}")
        if data is None:
            return ReadResult(error=f"File '{file_path}' not found")
        with tempfile.TemporaryDirectory(prefix="engram-read-") as private:
            name = "/" + (Path(file_path).name or "file")  # the name decides text or binary
            Path(private, name.lstrip("/")).write_bytes(data)
            return FilesystemBackend(root_dir=private, virtual_mode=True).read(name, offset, limit)

    def write(self, file_path: str, content: str) -> WriteResult:
        error = self._refused(file_path)
        if error:
            return WriteResult(error=error)
        try:
            write_beneath(self._real(file_path), content.encode("utf-8"), within=self.cwd)
        except (UnsafeFile, UnicodeEncodeError) as exc:
            return WriteResult(error=f"Error writing file '{file_path}': {exc}")
        return WriteResult(path=file_path)

    def edit(self, file_path: str, old_string: str, new_string: str,
             replace_all: bool = False) -> EditResult:
        error = self._refused(file_path)
        if error:
            return EditResult(error=error)
        try:
            data = self._workspace_bytes(file_path)
            if data is None:
                return EditResult(error=f"Error: File '{file_path}' not found")
            content = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except (UnsafeFile, UnicodeDecodeError) as exc:
            return EditResult(error=f"Error editing file '{file_path}': {exc}")
        old_string = old_string.replace("\r\n", "\n").replace("\r", "\n")
        new_string = new_string.replace("\r\n", "\n").replace("\r", "\n")
        result = perform_string_replacement(content, old_string, new_string, replace_all)
        if isinstance(result, str):
            return EditResult(error=result)
        new_content, occurrences = result
        try:
            write_beneath(self._real(file_path), new_content.encode("utf-8"), within=self.cwd)
        except (UnsafeFile, UnicodeEncodeError) as exc:
            return EditResult(error=f"Error editing file '{file_path}': {exc}")
        return EditResult(path=file_path, occurrences=int(occurrences))

    def _real(self, file_path: str) -> Path:
        try:
            return self._resolve_path(file_path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise UnsafeFile(str(exc)) from None

    def _workspace_bytes(self, file_path: str) -> bytes | None:
        """The file's bytes (None if it does not exist), read without following links or waiting."""
        return read_untrusted(self._real(file_path), within=self.cwd, max_bytes=_MAX_FILE_BYTES, missing_ok=True)

    def delete(self, file_path: str) -> DeleteResult:
        error = self._refused(file_path)
        return DeleteResult(error=error) if error else super().delete(file_path)

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        remaining = self._remaining_s()
        if remaining <= 1:
            return ExecuteResponse(output="Not run: your time is up. Write your summary now.", exit_code=None)
        limit = min(self._shell_timeout_s, remaining, float(timeout) if timeout else float("inf"))
        started = time.monotonic()
        protected = self._protected_contents()
        try:
            result = self.shell().run(workspace_paths(command, self._workspace), wall_seconds=limit,
                                      output_bytes=64 * KiB)
        except SandboxError as exc:  # the agent's problem to hear about, not a reason to stop the run
            return ExecuteResponse(output=f"[not run: the sandbox failed: {exc}]", exit_code=None)
        output = result.stdout.text()
        if result.stderr.total_bytes:
            output += ("\n" if output and not output.endswith("\n") else "") + result.stderr.text()
        for line in self._explain(result, limit, time.monotonic() - started) + self._restore(protected):
            output += ("\n" if output and not output.endswith("\n") else "") + f"[{line}]"
        truncated = result.stdout.truncated or result.stderr.truncated or len(output) > _MAX_OUTPUT_CHARS
        return ExecuteResponse(output=output[-_MAX_OUTPUT_CHARS:], exit_code=result.returncode, truncated=truncated)

    def _protected_contents(self) -> dict[str, bytes | None]:
        contents: dict[str, bytes | None] = {}
        for name in self._readonly_files:
            path = self._workspace / name
            contents[name] = _bytes_or_none(path, self._workspace)
        return contents

    def _restore(self, before: dict[str, bytes | None]) -> list[str]:
        """Undo, and report, a change a command made to a read-only file. The mounts of `bwrap` and
        `docker` refuse such writes themselves; the `process` backend has no mounts, so this is
        what keeps its agents from losing notes silently there."""
        notes = []
        for name, content in before.items():
            path = self._workspace / name
            now = _bytes_or_none(path, self._workspace)
            if now != content and content is not None:
                with contextlib.suppress(OSError):  # a directory in its place: unlink fails, the write reports it
                    path.unlink(missing_ok=True)
                with contextlib.suppress(UnsafeFile):
                    write_beneath(path, content, within=self._workspace)
                notes.append(f"/{name} is read-only: this command's change to it was undone")
        return notes

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


def _bytes_or_none(path: Path, workspace: Path) -> bytes | None:
    """A workspace file's bytes, or None if it is missing or not a plain file."""
    try:
        return read_untrusted(path, within=workspace, max_bytes=_MAX_FILE_BYTES, missing_ok=True)
    except UnsafeFile:
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def workspace_paths(command: str, workspace: Path) -> str:
    """`command` with the file tools' `/name...` paths made the workspace's real paths (see the module
    docstring): a name in the workspace always, any other name unless the sandbox's root has it."""
    entries = {entry.name for entry in workspace.iterdir()} if workspace.is_dir() else set()

    def real(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in entries or not Path("/", name).exists():
            return f"{workspace}/{name}"
        return match.group(0)

    return _WORKSPACE_PATH.sub(real, command)


def build_backend(
    workspace: Path,
    archive_dir: Path | None,
    sandbox: Sandbox,
    *,
    shell_timeout_s: float,
    memory_mb: int,
    remaining_s: Callable[[], float],
    readonly_files: Sequence[str] = (),
) -> tuple[CompositeBackend | SandboxedWorkspace, list[FilesystemPermission]]:
    """The backend for one agent, and the permission rules that keep the archive and `readonly_files`
    (workspace names such as `digest.md`) read-only: a write to them is refused with an error the
    agent sees, in the file tools and in the shell alike."""
    workspace = workspace.resolve()  # the sandbox mounts and the shell's paths need the real path
    readonly = [(workspace / name, workspace / name) for name in readonly_files]
    if archive_dir is not None:
        readonly.append((archive_dir.resolve(), workspace / "archive"))
    default = SandboxedWorkspace(workspace, sandbox, readonly=readonly, readonly_files=readonly_files,
                                 shell_timeout_s=shell_timeout_s, memory_mb=memory_mb, remaining_s=remaining_s)
    rules: list[FilesystemPermission] = []
    if archive_dir is None:
        return default, rules
    backend = CompositeBackend(default=default, routes={
        ARCHIVE_ROUTE: FilesystemBackend(root_dir=archive_dir.resolve(), virtual_mode=True)})
    rules.append(FilesystemPermission(operations=["write"], paths=[f"{ARCHIVE_ROUTE}**"], mode="deny"))
    return backend, rules
