"""Sandbox backends: limits hold, nothing outlives a command, output is bounded, env is clean."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import BACKENDS, require_backend

from engram.errors import SandboxError
from engram.sandbox import Limits, clean_environment, get_sandbox


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest):
    require_backend(request.param)
    return get_sandbox(request.param, quiet=True)


def _run(sandbox, code: str, workdir: Path, **limits: object):
    return sandbox.run([sandbox.python, "-c", code], workdir=workdir, limits=Limits(**limits),
                       env=clean_environment(workdir))


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_detached_grandchildren_do_not_outlive_the_command(sandbox, tmp_path: Path):
    marker = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    code = (f"import subprocess\nsubprocess.Popen(['sleep', '9{marker}'], start_new_session=True)\n"
            "import time\ntime.sleep(30)\n")
    started = time.monotonic()
    result = _run(sandbox, code, tmp_path, wall_seconds=2)
    assert result.timed_out == "wall"
    assert time.monotonic() - started < 8
    time.sleep(0.2)
    assert _processes_with(f"9{marker}") == []


def test_background_process_left_after_exit_is_killed(sandbox, tmp_path: Path):
    marker = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '8{marker}'], start_new_session=True)\nprint('bye')\n"
    result = _run(sandbox, code, tmp_path, wall_seconds=10)
    assert result.returncode == 0 and result.stdout.text().strip() == "bye"
    time.sleep(0.2)
    assert _processes_with(f"8{marker}") == []


def test_cpu_limit_is_reported_as_cpu_timeout(sandbox, tmp_path: Path):
    result = _run(sandbox, "while True: pass", tmp_path, wall_seconds=20, cpu_seconds=1)
    assert result.timed_out == "cpu"
    if sandbox.name in ("process", "bwrap"):  # counted over the command's cgroup, bubblewrap's child included
        assert result.cpu_seconds >= 0.9


def test_output_keeps_head_and_tail_only(sandbox, tmp_path: Path):
    code = "import sys\nsys.stdout.write('A' * 100000 + 'B' * 100000 + 'END')\n"
    result = _run(sandbox, code, tmp_path, output_bytes=1000)
    assert result.stdout.total_bytes == 200003
    assert result.stdout.head == b"A" * 500
    assert result.stdout.tail.endswith(b"END") and len(result.stdout.tail) == 500


def test_file_size_limit(sandbox, tmp_path: Path):
    result = _run(sandbox, "open('big', 'wb').write(b'x' * 5_000_000)", tmp_path, file_size_bytes=1_000_000)
    assert result.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 1_000_000


def test_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "secret")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    env = clean_environment(tmp_path)
    assert "ANTHROPIC_API_KEY" not in env
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["HOME"] == str(tmp_path) and env["PYTHONHASHSEED"] == "0"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(SandboxError, match=r"unknown sandbox backend 'vm'.*auto, docker, bwrap, process"):
        get_sandbox("vm")
