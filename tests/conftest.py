"""Shared fixtures: the data mirror, the cloudcast problem and evaluators for each sandbox backend."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import Limits, get_sandbox
from engram.sandbox.base import GiB
from engram.sandbox.bwrap import BwrapSandbox

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if not os.environ.get("ENGRAM_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["ENGRAM_DATA_DIR"] = str(SHARED_DATA)
if os.environ.get("ENGRAM_DATA_DIR"):
    # The README's command gives a relative path; tests run engram in other working directories too.
    os.environ["ENGRAM_DATA_DIR"] = os.path.abspath(os.environ["ENGRAM_DATA_DIR"])
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BACKENDS = ["process", "bwrap", "docker"]
"""Backends every evaluator test runs on (docker is skipped without an engine, except in CI)."""

INITIAL_TOTAL_COST = 1045.860405
INITIAL_SCORE = 0.0009552371980292827

TIGHT = Limits(wall_seconds=120, memory_bytes=1 * GiB, max_processes=32, output_bytes=16 * 1024)
"""Limits for tests of misbehaving candidates: memory, processes and output small enough to hit
quickly. The wall limit is roomy, so a loaded machine never turns another failure into a timeout;
tests that want the timeout pass `time_limit_s=SHORT_WALL_S` to `evaluate`."""

SHORT_WALL_S = 4.0
"""The wall limit of candidates that are meant to time out (they never finish, whatever the load)."""


def unavailable(reason: str) -> NoReturn:
    """A prerequisite of the test is missing here: a skip that says why, or, in CI (where .ci/run
    provides every prerequisite), a failure. No test is skipped in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"in CI {reason}")
    pytest.skip(reason)


def require_module(name: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed ({hint})")


@pytest.fixture(scope="session")
def cpp_compiler() -> str:
    """g++, which the Frontier-CS judge compiles with (.ci/run installs it)."""
    import shutil

    found = shutil.which("g++")
    if found is None:
        unavailable("g++ is required (apt-get install g++; .ci/run installs it)")
    return found


def require_backend(name: str) -> None:
    if name == "docker":
        from engram.sandbox.docker import DockerSandbox

        reason = DockerSandbox.availability()
        if reason is not None:
            unavailable(f"a Docker engine must answer: {reason}")
        ensure_sandbox_image()
    if name == "bwrap" and (reason := BwrapSandbox.availability()) is not None:
        unavailable(f"bwrap must work: {reason}")


_image_checked = False


def ensure_sandbox_image() -> None:
    """Build the default sandbox image once if the engine lacks it, with the product's own builder.

    No registry is reachable here, so the build is offline on top of the Debian image that
    `docker-engine-up.sh` imports (override with $ENGRAM_TEST_IMAGE_BASE)."""
    global _image_checked
    if _image_checked:
        return
    import docker

    from engram.sandbox.docker import default_image
    from engram.sandbox.images import LOCK_LABEL, build_image, lock_digest, locked_tag

    client = docker.from_env(timeout=600)
    try:
        try:
            # Built from this lock, and tagged for it (a changed lock rebuilds).
            current = client.images.get(default_image()).labels.get(LOCK_LABEL) == lock_digest()
            current = current and client.images.get(locked_tag()) is not None
        except docker.errors.ImageNotFound:
            current = False
        if not current:
            base = os.environ.get("ENGRAM_TEST_IMAGE_BASE", "engram-sandbox:offline")
            build_image(tag=default_image(), base=base, offline=True, client=client)
    finally:
        client.close()
    _image_checked = True


@contextmanager
def mlflow_state_restored() -> Iterator[None]:
    """In-process runs point MLflow's process-wide tracking URI and experiment at their store; put
    them back afterwards so later tests (and their subprocesses) do not inherit them."""
    import mlflow
    from mlflow.tracking import fluent

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        fluent._active_experiment_id = None
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def restore_mlflow() -> Iterator[None]:
    with mlflow_state_restored():
        yield


def evaluator_on(request: pytest.FixtureRequest, problem: Problem, **options: Any) -> Iterator[CandidateEvaluator]:
    """The body of a per-backend evaluator fixture (`params=BACKENDS`): `options` go to the
    evaluator; an unavailable backend skips (fails in CI). Under `process`, a problem with hidden
    data reads it from a private mirror (the shared one is world-readable, which process refuses)."""
    require_backend(request.param)
    if request.param == "process" and problem.config.hidden_data:
        require_unprivileged_process_sandbox()
    private = private_data_mirror(problem) if request.param == "process" else contextlib.nullcontext()
    with private, CandidateEvaluator(problem, get_sandbox(request.param, quiet=True), **options) as ev:
        yield ev


def require_unprivileged_process_sandbox() -> None:
    """Problems with hidden data run under `process` only where candidates get an unprivileged uid:
    Engram is root and an unprivileged uid can reach its interpreter (`.ci/run` runs the suite from a
    venv under /opt for that). Elsewhere the runs cannot happen: a skip saying why, a failure in CI.
    Where the interpreter is closed, the refusal is tested on its own (`interpreter_behind_closed_directory`)."""
    import tempfile

    from engram.sandbox import identity

    if os.geteuid() != 0:
        reason = "process runs candidates with hidden data only when Engram is root (they get a uid of their own)"
    elif (blocked := identity.reachable_by_others([*identity.interpreter_paths(), Path(tempfile.gettempdir())])):
        reason = (f"process refuses problems with hidden data here: candidates would stay root ({blocked} is closed "
                  f"to an unprivileged uid); run the tests from an interpreter every user can reach, as .ci/run does")
    else:
        return
    unavailable(reason)


def link_interpreter_into(directory: Path) -> tuple[Path, Path | None]:
    """Engram's interpreter reached through `directory`, closed to other users (mode 0700) as a
    pyenv under /root is: a link there to the interpreter's prefix, so that a venv still finds its
    pyvenv.cfg and packages. Returns the interpreter's path and the prefix's path through it."""
    import sys

    directory.chmod(0o700)
    executable = Path(sys.executable)
    if not executable.is_relative_to(sys.prefix):
        (directory / executable.name).symlink_to(executable)
        return directory / executable.name, None
    prefix = directory / "prefix"
    prefix.symlink_to(sys.prefix, target_is_directory=True)
    return prefix / executable.relative_to(sys.prefix), prefix


@pytest.fixture
def interpreter_behind_closed_directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This runner, for the test, as if started through an interpreter in a closed directory: the
    path where `process`, started by root, cannot give candidates a uid of their own (they stay root
    without capabilities, and problems with hidden data are refused). Yields the interpreter's path."""
    import shutil
    import sys
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="engram-closed-"))
    try:
        executable, prefix = link_interpreter_into(directory)
        monkeypatch.setattr(sys, "executable", str(executable))
        if prefix is not None:
            monkeypatch.setattr(sys, "prefix", str(prefix))
            monkeypatch.setattr(sys, "exec_prefix", str(prefix))
        yield executable
    finally:
        shutil.rmtree(directory)


@contextmanager
def private_data_mirror(problem: Problem) -> Iterator[Path | None]:
    """ENGRAM_DATA_DIR pointed at a directory closed to other users, holding copies of `problem`'s
    hidden data and links to the rest: what the process sandbox asks for (as root) before it lets
    candidates near a problem scored against hidden data. Nothing changes for other problems."""
    if not problem.config.hidden_data or os.geteuid() != 0:
        yield None
        return
    import shutil
    import tempfile

    shared = Path(os.environ["ENGRAM_DATA_DIR"])
    with tempfile.TemporaryDirectory(prefix="engram-private-data-") as directory:
        root = Path(directory)
        os.chmod(root, 0o700)
        for entry in problem.config.data:
            target = root / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.path in problem.config.hidden_data:
                shutil.copyfile(shared / entry.path, target)
            else:
                target.symlink_to(shared / entry.path)
        os.environ["ENGRAM_DATA_DIR"] = str(root)
        try:
            yield root
        finally:
            os.environ["ENGRAM_DATA_DIR"] = str(shared)


@pytest.fixture(scope="session")
def cloudcast() -> Problem:
    return load_problem("cloudcast")


@pytest.fixture(scope="session")
def initial_source(cloudcast: Problem) -> str:
    return cloudcast.initial_program.read_text()


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, cloudcast: Problem) -> Iterator[CandidateEvaluator]:
    """An evaluator with the problem's own limits, once per backend."""
    yield from evaluator_on(request, cloudcast)


@pytest.fixture(scope="module", params=BACKENDS)
def tight_evaluator(request: pytest.FixtureRequest, cloudcast: Problem) -> Iterator[CandidateEvaluator]:
    """An evaluator with small limits, for candidates that misbehave on purpose."""
    yield from evaluator_on(request, cloudcast, limits=TIGHT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port`: the event tests wait for after starting a server."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
