"""Hostile candidates, for every problem and every backend: none escapes, none beats its honest twin,
none hangs or crashes the runner, none sees the runner's secret."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unavailable

from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.result import Evaluation
from engram.sandbox import Limits, Sandbox
from engram.sandbox.base import KiB, MiB
from redteam.conftest import (
    BACKENDS,
    PROBLEMS,
    ROOT_WITHOUT_UID,
    SECRET_VARIABLE,
    Target,
    Targets,
    allowed_breaches,
    attack,
    decoy_intact,
    evaluate,
    host_places,
    leaked,
    markers,
    remove,
    reports,
    runner_identity,
    sandbox_for,
    unexpected_breaches,
)

pytestmark = [pytest.mark.redteam, pytest.mark.filterwarnings("ignore::ResourceWarning")]

ESCAPES = ["write-readonly", "remount-syscall", "remount-mount", "remount-unshare", "write-after-remount",
           "proc-environ", "proc-runner-visible", "proc-runner-files", "read-host-file", "ptrace-runner",
           "signal-runner", "network", "capabilities"]
"""What the escape battery tries (attacks/escape.py), each reported on its own line."""


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("problem", [*PROBLEMS])
def test_escape_battery(problem: str, backend: str, targets: Targets, decoy: subprocess.Popen[bytes],
                        bait: dict[str, object]) -> None:
    with targets.open(problem, backend) as target:
        _escape_battery(target, decoy, bait)


def test_escape_battery_behind_a_closed_interpreter(interpreter_behind_closed_directory: Path,
                                                    sandboxes: dict[str, Sandbox],
                                                    decoy: subprocess.Popen[bytes], bait: dict[str, object]) -> None:
    """The other path of `process` as root: its interpreter closed to an unprivileged uid, the
    command stays root without capabilities. Only what its note owns up to may break."""
    closed = Targets(sandboxes)
    try:
        notes = _escape_battery(closed.get("cloudcast", "process"), decoy, bait)
    finally:
        closed.close()
    assert ROOT_WITHOUT_UID in notes or os.geteuid() != 0, notes


def _escape_battery(target: Target, decoy: subprocess.Popen[bytes], bait: dict[str, object]) -> str:
    """Run the escape battery against `target`; returns the run's notes."""
    token = uuid.uuid4().hex
    params = {"token": token, "decoy_pid": decoy.pid, **runner_identity(), "secret_name": SECRET_VARIABLE,
              "targets": [str(p) for p in target.host_paths], **bait}
    places = host_places(*target.host_paths, target.evaluator._session)
    try:
        result = evaluate(target.evaluator, target.honest_source + attack("escape", **params))
    finally:
        landed = markers(places, token)
        remove(landed)
    verdicts = reports(result.stdout)
    assert set(verdicts) == set(ESCAPES), f"the battery did not run to the end: {result.error}\n{result.stdout}"
    notes = "\n".join(result.notes)
    expected = unexpected_breaches(result.stdout, target.backend, notes)
    assert not expected, "\n".join(expected)
    allowed = allowed_breaches(target.backend, notes)
    assert not landed or "write-readonly" in allowed, f"files written on the host: {landed}"
    assert not leaked(result), "the runner's secret reached the evaluation"
    assert decoy_intact(decoy) or "signal-runner" in allowed, "the runner's stand-in was signalled or traced"
    assert "TracerPid:\t0" in Path("/proc/self/status").read_text()
    assert target.not_better_than_honest(result), (result.score, target.honest_score)
    return notes


FRONTIER_ATTACK = r"""#include <cstdio>
#include <cstdlib>
static const char* ATTACK_SOURCE = R"REDTEAM(%s)REDTEAM";
int main() {
  const char* places[] = {"redteam_attack.py", "/tmp/redteam_attack.py"};
  for (const char* place : places) {
    FILE* f = fopen(place, "w");
    if (!f) continue;
    fputs(ATTACK_SOURCE, f);
    fclose(f);
    char command[256];
    snprintf(command, sizeof command, "python3 %%s 1>&2", place);
    if (system(command) == 0) break;
  }
  long long a, b;
  if (scanf("%%lld %%lld", &a, &b) != 2) return 1;
  printf("%%lld\n", a + b);
  return 0;
}
"""


def _require_cpp_in_image(sandboxes: dict[str, Sandbox], workdir: Path) -> None:
    """An engine's older sandbox image may lack g++ (`engram sandbox build` adds it): skipped here, but
    CI builds the image afresh, so there it must be present."""
    sandbox = sandbox_for("docker", sandboxes)
    probe = sandbox.run(["g++", "--version"], workdir=workdir, limits=Limits(wall_seconds=60), env={})
    if probe.returncode != 0:
        unavailable(f"the Docker sandbox image here has no g++ (`engram sandbox build` adds it): "
                    f"{probe.stderr.text()[:200]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_escape_battery_from_a_cpp_program(backend: str, targets: Targets, decoy: subprocess.Popen[bytes],
                                           bait: dict[str, object], tmp_path: Path,
                                           sandboxes: dict[str, Sandbox]) -> None:
    """The Frontier-CS family's candidates are whole C++ programs: the same battery, started by one."""
    if backend == "docker":
        (tmp_path / "probe").mkdir()
        _require_cpp_in_image(sandboxes, tmp_path / "probe")
    target = targets.get("frontier", backend)
    token = uuid.uuid4().hex
    params = {"token": token, "decoy_pid": decoy.pid, **runner_identity(), "secret_name": SECRET_VARIABLE,
              "targets": [str(p) for p in target.host_paths], **bait}
    places = host_places(*target.host_paths)
    try:
        result = evaluate(target.evaluator, FRONTIER_ATTACK % attack("escape", **params), artifacts_dir=tmp_path)
    finally:
        landed = markers(places, token)
        remove(landed)
    output = "\n".join(case["stderr"] for case in json.loads((tmp_path / "cases.json").read_text()))
    assert set(reports(output)) == set(ESCAPES), f"the battery did not run to the end: {result.error}\n{output}"
    notes = "\n".join(result.notes)
    if backend == "process" and " uid=0" in reports(output)["capabilities"]:
        # The judge does not pass the sandbox's notes on, so the program's own report says it ran as root
        notes += f"\n{ROOT_WITHOUT_UID} (reported by the program: the judge records no note)"
    expected = unexpected_breaches(output, backend, notes)
    assert not expected, "\n".join(expected)
    allowed = allowed_breaches(backend, notes)
    assert not landed or "write-readonly" in allowed, f"files written on the host: {landed}"
    assert not leaked(result) and not leaked(output), "the runner's secret reached the evaluation"
    assert decoy_intact(decoy) or "signal-runner" in allowed, "the runner's stand-in was signalled or traced"
    assert target.not_better_than_honest(result), (result.score, target.honest_score)


# -- attacks on the trusted reader and scorer ---------------------------------------------------------------

ANSWER_FILE_ATTACKS = {
    "fifo": {"mode": "fifo"},
    "symlink-to-runner-environ": {"mode": "symlink", "link_to": "/proc/self/environ"},
    "giant": {"mode": "giant", "bytes": 96 << 20},
}
NUMBER_ATTACKS = ["nonfinite", "huge", "deep", "types"]
READER_BACKENDS = {"bwrap": [*PROBLEMS], "docker": ["cloudcast", "llm_sql"], "process": ["cloudcast", "llm_sql"]}
"""The trusted side reads and scores on the host whatever the backend: every problem on one backend, and
an interactive and a plain problem on the others."""


def _reader_cases() -> list[tuple[str, str]]:
    return [(problem, backend) for backend, problems in READER_BACKENDS.items() for problem in problems]


def _assert_contained(target: Target, result: Evaluation) -> None:
    assert not leaked(result), "the runner's secret reached the evaluation"
    assert target.not_better_than_honest(result), (result.score, target.honest_score)
    assert result.ok or result.error_kind is not None


@pytest.mark.parametrize("how", [*ANSWER_FILE_ATTACKS])
@pytest.mark.parametrize(("problem", "backend"), _reader_cases())
def test_answer_file_swaps(problem: str, backend: str, how: str, targets: Targets) -> None:
    """A FIFO must not hang the runner, a symlink must not be followed, a giant file must not be read whole."""
    target = targets.get(problem, backend)
    result = evaluate(target.evaluator, target.honest_source + attack("answer_files", **ANSWER_FILE_ATTACKS[how]))
    _assert_contained(target, result)


@pytest.mark.parametrize("mode", NUMBER_ATTACKS)
@pytest.mark.parametrize(("problem", "backend"), [(p, "bwrap") for p in PROBLEMS])
def test_poisoned_numbers(problem: str, backend: str, mode: str, targets: Targets) -> None:
    """NaN and infinities, integers beyond any float, absurd nesting and wrong types are the candidate's
    invalid output (or harmless), never a crash of the scorer and never a better score."""
    target = targets.get(problem, backend)
    result = evaluate(target.evaluator, target.honest_source + attack("numbers", mode=mode))
    _assert_contained(target, result)
    assert f"REDTEAM numbers-{mode} armed" in result.stdout


# -- limits hold for the whole evaluation, not per process or per file --------------------------------------

LIMITS = Limits(wall_seconds=60, memory_bytes=256 * MiB, file_size_bytes=16 * MiB, max_processes=16,
                output_bytes=16 * KiB)


LIMITED = "prism"
"""The problem the limits are tried on: the fastest, with nothing hidden that would keep it off `process`."""


@pytest.fixture(scope="module")
def limited() -> Iterator[dict[str, CandidateEvaluator]]:
    """Per backend, an evaluator of the fastest problem with small limits."""
    made: dict[str, CandidateEvaluator] = {}
    yield made
    for evaluator in made.values():
        evaluator.close()


def _limited(backend: str, made: dict[str, CandidateEvaluator], targets: Targets) -> tuple[Target, CandidateEvaluator]:
    target = targets.get(LIMITED, backend)
    if backend not in made:
        made[backend] = CandidateEvaluator(target.problem, target.evaluator.sandbox, limits=LIMITS,
                                           scenarios=[PROBLEMS[LIMITED]], secrets=targets.secrets(LIMITED))
    return target, made[backend]


def _last_number(output: str, prefix: str) -> int:
    values = [int(line.split()[2]) for line in output.splitlines() if line.startswith(prefix)]
    return max(values, default=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_processes_stay_under_the_cap(backend: str, targets: Targets, limited: dict[str, CandidateEvaluator]):
    target, evaluator = _limited(backend, limited, targets)
    result = evaluate(evaluator, target.honest_source + attack("limits", mode="processes", count=200))
    assert 0 < _last_number(result.stdout, "REDTEAM processes ") <= LIMITS.max_processes, result.stdout[-500:]
    assert target.not_better_than_honest(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_over_several_processes_is_one_limit(backend: str, targets: Targets,
                                                    limited: dict[str, CandidateEvaluator]):
    target, evaluator = _limited(backend, limited, targets)
    each = int(LIMITS.memory_bytes * 0.4)  # type: ignore[operator]
    result = evaluate(evaluator, target.honest_source + attack("limits", mode="memory", count=4, each=each))
    held = _last_number(result.stdout, "REDTEAM memory-held ")
    assert held * each <= LIMITS.memory_bytes, f"{held} processes held {each} bytes each at once"  # type: ignore[operator]
    assert target.not_better_than_honest(result)


@pytest.mark.parametrize("folder", ["work", "tmp"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_many_files_are_one_limit(backend: str, folder: str, targets: Targets, limited: dict[str, CandidateEvaluator]):
    """The working directory holds at most the file-size limit in all; a private /tmp counts against
    memory. `process` has no /tmp of its own: there the temp directory it gives ($TMPDIR) is tried,
    which lies in the working directory."""
    target, evaluator = _limited(backend, limited, targets)
    each = LIMITS.file_size_bytes * 3 // 4  # type: ignore[operator]
    if backend == "process" and folder == "tmp":
        folder = "$TMPDIR"
    result = evaluate(evaluator, target.honest_source + attack("limits", mode="files", folder=folder, count=24,
                                                                  each=each))
    written = _last_number(result.stdout, "REDTEAM files-written ")
    cap = LIMITS.memory_bytes if folder == "tmp" else LIMITS.file_size_bytes
    assert 0 < written <= cap, f"{written} bytes written to {folder} under a {cap}-byte limit"  # type: ignore[operator]
    assert target.not_better_than_honest(result)


# -- what is scored stays hidden ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_eplb_windows_cannot_be_regenerated(backend: str, targets: Targets):
    target = targets.get("eplb", backend)
    result = evaluate(target.evaluator, target.honest_source + attack("eplb_future"))
    assert "REDTEAM eplb-future BREACH" not in result.stdout, result.stdout[-1000:]
    assert target.not_better_than_honest(result), (result.score, target.honest_score)


@pytest.mark.parametrize("backend", BACKENDS)
def test_telemetry_ground_truth_cannot_be_read(backend: str, targets: Targets):
    with targets.open("telemetry_repair", backend) as target:
        data_dirs = [os.environ["ENGRAM_DATA_DIR"]] if os.environ.get("ENGRAM_DATA_DIR") else []
        result = evaluate(target.evaluator, target.honest_source + attack("telemetry_truth", data_dirs=data_dirs))
    assert "REDTEAM telemetry-truth BREACH" not in result.stdout, result.stdout[-1000:]
    assert target.not_better_than_honest(result), (result.score, target.honest_score)
