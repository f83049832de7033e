"""The agent's `execute` tool on every backend: why a command died reaches the agent in words, and
a broken shell is the agent's news, never the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, require_backend

from engram.errors import SandboxError
from engram.methods.workspace_backend import SandboxedWorkspace
from engram.sandbox import get_sandbox
from engram.sandbox.base import SandboxResult, Shell

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(params=BACKENDS)
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SandboxedWorkspace]:
    require_backend(request.param)
    opened = SandboxedWorkspace(tmp_path, get_sandbox(request.param, quiet=True), readonly=[],
                                shell_timeout_s=60, memory_mb=256, remaining_s=lambda: 600.0)
    yield opened
    opened.close()


def test_a_memory_hog_is_told_it_ran_out_of_memory(workspace: SandboxedWorkspace):
    response = workspace.execute("python3 -c 'b = bytearray(2 << 30); print(len(b))'")
    assert response.exit_code != 0
    assert "out of memory" in response.output or "MemoryError" in response.output, response.output
    assert "exit code" not in response.output


def test_a_fork_flood_is_told_about_the_process_limit(workspace: SandboxedWorkspace):
    response = workspace.execute("for i in $(seq 200); do sleep 3 & done; wait; echo done")
    assert "limit of 64 processes was reached" in response.output, response.output


def test_a_command_killed_by_a_signal_says_which(workspace: SandboxedWorkspace):
    response = workspace.execute("kill -SEGV $$")
    assert response.exit_code == -11 and "[killed by signal SIGSEGV]" in response.output, response.output


def test_a_failing_sandbox_is_reported_to_the_agent_not_raised(workspace: SandboxedWorkspace,
                                                              monkeypatch: pytest.MonkeyPatch):
    class Broken(Shell):
        def run(self, command: str, *, wall_seconds: float, output_bytes: int) -> SandboxResult:
            raise SandboxError("the engine went away")

    monkeypatch.setattr(workspace, "_shell", Broken())
    response = workspace.execute("echo hi")
    assert response.exit_code is None and "the engine went away" in response.output


def test_a_killed_docker_shell_is_replaced_and_the_agent_told(tmp_path: Path):
    require_backend("docker")
    workspace = SandboxedWorkspace(tmp_path, get_sandbox("docker", quiet=True), readonly=[], shell_timeout_s=60,
                                   memory_mb=256, remaining_s=lambda: 600.0)
    try:
        workspace.execute("sleep 300 &")
        killed = workspace.execute("kill -KILL -1")
        assert "container stopped during this command" in killed.output, killed.output
        after = workspace.execute("echo alive")
        assert after.exit_code == 0 and after.output.startswith("alive\n")
        assert "background processes and files outside the workspace" in after.output
    finally:
        workspace.close()
