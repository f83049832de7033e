"""Hostile candidates, for every problem and every backend: none escapes, none beats its honest twin,
none hangs or crashes the runner, none sees the runner's secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from redteam.conftest import (
    BACKENDS,
    PROBLEMS,
    SECRET_VARIABLE,
    Target,
    Targets,
    attack,
    breaches,
    decoy_intact,
    evaluate,
    leaked,
    markers,
    remove,
    reports,
)

pytestmark = [pytest.mark.redteam, pytest.mark.filterwarnings("ignore::ResourceWarning")]

ESCAPES = ["write-readonly", "remount-syscall", "remount-mount", "remount-unshare", "write-after-remount",
           "proc-environ", "proc-runner-visible", "proc-runner-files", "read-host-file", "ptrace-runner",
           "signal-runner", "network", "capabilities"]
"""What the escape battery tries (attacks/escape.py), each reported on its own line."""
PROCESS_ALLOWS = {"network", "proc-runner-visible"}
"""What the `process` backend does not promise to stop (docs/security.md): it has no network or PID
namespace of its own. Everything else -- no capabilities, another user, seccomp -- it must hold too."""


@pytest.fixture
def bait(tmp_path: Path) -> Iterator[dict[str, object]]:
    """What the escape battery aims at on the host: a listening port and a file only root may read."""
    secret_file = tmp_path / "credentials"
    secret_file.write_text("host-credential-never-readable\n")
    secret_file.chmod(0o600)
    tmp_path.chmod(0o700)
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield {"port": server.getsockname()[1], "secret_file": str(secret_file)}
    finally:
        server.close()


def _places(target: Target) -> list[Path]:
    """Every host directory the battery tries to write (to find and remove what landed)."""
    import site

    places = {*target.host_paths, Path(sys.prefix), Path("/usr/lib"), Path("/usr/local/lib"), Path("/etc"),
              Path("/"), *(Path(p) for p in site.getsitepackages()), target.evaluator._session}
    return sorted(p for p in places if p.is_dir())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("problem", [*PROBLEMS])
def test_escape_battery(problem: str, backend: str, targets: Targets, decoy: subprocess.Popen[bytes],
                        bait: dict[str, object]) -> None:
    target = targets.get(problem, backend)
    token = uuid.uuid4().hex
    params = {"token": token, "decoy_pid": decoy.pid, "runner_pid": os.getpid(), "secret_name": SECRET_VARIABLE,
              "targets": [str(p) for p in target.host_paths], **bait}
    places = _places(target)
    try:
        result = evaluate(target.evaluator, target.honest_source + attack("escape", **params))
    finally:
        landed = markers(places, token)
        remove(landed)
    verdicts = reports(result.stdout)
    assert set(verdicts) == set(ESCAPES), f"the battery did not run to the end: {result.error}\n{result.stdout}"
    expected = [line for line in breaches(result.stdout)
                if not (backend == "process" and line.split()[1] in PROCESS_ALLOWS)]
    assert not expected, "\n".join(expected)
    assert not landed, f"files written on the host: {landed}"
    assert not leaked(result), "the runner's secret reached the evaluation"
    assert decoy_intact(decoy), "the runner's stand-in was signalled or traced"
    assert "TracerPid:\t0" in Path("/proc/self/status").read_text()
    assert target.not_better(result.score), (result.score, target.honest_score)
