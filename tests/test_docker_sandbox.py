"""The docker backend against a real engine: isolation, limits, exact scores, nothing left behind.

Skipped when no engine answers, except in CI (where `.ci/run` starts one), so the isolation claims
of the backend are always checked somewhere. No fake client: a mock would only test our own guesses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INITIAL_SCORE, TIGHT, require_backend

from engram.errors import SandboxError
from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem
from engram.sandbox import Limits, Mount, clean_environment, get_sandbox
from engram.sandbox.base import MiB
from engram.sandbox.docker import LABEL, OWNER_LABEL, DockerSandbox, DockerShell, Pruned
from engram.sandbox.docker import prune as prune_containers

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
ENTRY = "def search_algorithm(src, dsts, G, num_partitions):\n"


@pytest.fixture(scope="module")
def docker_sandbox() -> DockerSandbox:
    require_backend("docker")
    sandbox = get_sandbox("docker", quiet=True)
    assert isinstance(sandbox, DockerSandbox)
    return sandbox


@pytest.fixture(scope="module")
def docker_evaluator(docker_sandbox: DockerSandbox, cloudcast: Problem) -> Iterator[CandidateEvaluator]:
    with CandidateEvaluator(cloudcast, docker_sandbox, limits=TIGHT) as ev:
        yield ev


def _ours() -> set[str]:
    """Ids of labelled containers (other tests kill runners with SIGKILL and may leave some: compare sets)."""
    import docker

    client = docker.from_env()
    try:
        return {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"})}
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _leaves_nothing_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test here must leave no container of its own behind."""
    if "docker_sandbox" not in request.fixturenames:
        yield
        return
    before = _made_here()
    yield
    assert _made_here() <= before


def _made_here() -> set[str]:
    """Labelled containers this test process made (other runs may share the engine)."""
    import docker

    from engram.runs.leftovers import current_owner

    client = docker.from_env()
    try:
        return {c.id for c in client.containers.list(
            all=True, filters={"label": [f"{LABEL}=1", f"{OWNER_LABEL}={current_owner().label}"]})}
    finally:
        client.close()


def _sh(sandbox: DockerSandbox, command: str, workdir: Path, mounts: tuple[Mount, ...] = (), **limits: object):
    return sandbox.run(["/bin/bash", "-c", command], workdir=workdir, mounts=mounts, limits=Limits(**limits),
                       env=clean_environment(workdir))


def _py(sandbox: DockerSandbox, code: str, workdir: Path, **limits: object):
    return sandbox.run([sandbox.python, "-c", code], workdir=workdir, limits=Limits(**limits),
                       env=clean_environment(workdir))


def test_the_initial_program_scores_exactly_as_on_the_host(docker_evaluator: CandidateEvaluator,
                                                            cloudcast: Problem):
    result = docker_evaluator.evaluate(cloudcast.initial_program)
    assert result.ok, result.error
    assert result.sandbox == "docker"
    assert result.score == INITIAL_SCORE


def test_no_network_not_even_the_hosts_loopback(docker_sandbox: DockerSandbox, tmp_path: Path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n"
            "import os\nprint(sorted(os.listdir('/sys/class/net')))\n")
    try:
        result = _py(docker_sandbox, code, tmp_path, wall_seconds=10)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing is waiting in the backlog
            server.accept()
    finally:
        server.close()
    assert "CONNECTED" not in result.stdout.text() and "refused" in result.stdout.text()
    assert "['lo']" in result.stdout.text()


def test_the_environment_is_exactly_the_given_one(docker_sandbox: DockerSandbox, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("DOCKER_SECRET_TOKEN", "secret")
    result = _py(docker_sandbox, "import os, json\nprint(json.dumps(dict(os.environ)))", tmp_path)
    assert "secret" not in result.stdout.text()
    import json

    inside = json.loads(result.stdout.text())
    given = clean_environment(tmp_path)
    assert set(inside) - {"HOSTNAME"} == set(given)
    assert inside["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert inside["HOME"] == str(tmp_path) and inside["PYTHONHASHSEED"] == "0"


def test_memory_limit_is_an_oom_kill_classified_as_memory(docker_sandbox: DockerSandbox, tmp_path: Path,
                                                          docker_evaluator: CandidateEvaluator, cloudcast: Problem):
    code = "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))\n"
    result = _py(docker_sandbox, code, tmp_path, wall_seconds=20, memory_bytes=200 * MiB)
    assert result.oom_killed and result.returncode == -9 and result.timed_out is None
    evaluation = docker_evaluator.evaluate(ENTRY + "    " + code.replace("\n", "\n    "))
    assert evaluation.error_kind == ErrorKind.MEMORY, evaluation.error
    assert docker_evaluator.evaluate(cloudcast.initial_program).score == INITIAL_SCORE


def test_process_cap_holds_and_is_reported(docker_sandbox: DockerSandbox, tmp_path: Path):
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
            "    print('stopped at', n, e, flush=True)\n    time.sleep(0.5)\n")
    result = _py(docker_sandbox, code, tmp_path, wall_seconds=20, max_processes=16)
    assert "stopped at" in result.stdout.text()
    assert int(result.stdout.text().split()[2]) < 16
    assert result.process_cap_hit


def test_wall_timeout_kills_and_removes_the_container(docker_sandbox: DockerSandbox, tmp_path: Path):
    started = time.monotonic()
    result = _sh(docker_sandbox, "sleep 300 & sleep 300", tmp_path, wall_seconds=1.5)
    assert result.timed_out == "wall"
    assert time.monotonic() - started < 6


def test_only_the_workdir_and_tmp_are_writable(docker_sandbox: DockerSandbox, tmp_path: Path):
    workdir, shared = tmp_path / "work", tmp_path / "shared"
    workdir.mkdir()
    shared.mkdir()
    (shared / "data.txt").write_text("trusted")
    command = (f"for p in /usr/x /etc/x /x {shared}/data.txt {shared}/new; do "
               "(echo hi > $p) 2>/dev/null && echo WROTE $p; done; "
               f"echo ok > {workdir}/out.txt && echo ok > /tmp/scratch && cat {shared}/data.txt")
    result = _sh(docker_sandbox, command, workdir, mounts=(Mount(shared),))
    assert "WROTE" not in result.stdout.text(), result.stdout.text()
    assert result.stdout.text().strip() == "trusted" and result.returncode == 0
    assert (workdir / "out.txt").read_text() == "ok\n"
    assert (shared / "data.txt").read_text() == "trusted" and not (shared / "new").exists()
    # A mount may sit inside the working directory at another path (the agents' read-only archive).
    result = _sh(docker_sandbox, "cat archive/data.txt; echo; echo x > archive/y 2>/dev/null || echo RO", workdir,
                 mounts=(Mount(shared, target=workdir / "archive"),))
    assert result.stdout.text().split() == ["trusted", "RO"]


def test_runs_as_the_workdir_owner_without_privileges(docker_sandbox: DockerSandbox, tmp_path: Path):
    result = _sh(docker_sandbox, "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status", tmp_path)
    lines = result.stdout.text().split("\n")
    owner = tmp_path.stat()  # when Engram is root, the working directory was handed to the sandbox's uid
    assert lines[:2] == [str(owner.st_uid), str(owner.st_gid)]
    assert os.geteuid() != 0 or lines[0] != "0", "a container ran as root"
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines


def test_an_interrupt_still_removes_the_container(docker_sandbox: DockerSandbox, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(docker_sandbox, "_wait", interrupted)
    before = _ours()
    with pytest.raises(KeyboardInterrupt):
        _sh(docker_sandbox, "sleep 60", tmp_path)
    assert _ours() <= before


def test_prune_removes_containers_a_crash_left_behind(docker_sandbox: DockerSandbox):
    import docker

    client = docker.from_env()
    try:
        left = client.containers.run(docker_sandbox.image, ["sleep", "600"], detach=True, init=True,
                                     network_mode="none", labels={LABEL: "1"})
        assert left.id in _ours()
        done = subprocess.run([sys.executable, "-m", "engram.cli", "sandbox", "prune"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "removed " in done.stdout and " sandbox container" in done.stdout
        assert left.id not in _ours()  # no owner label: nothing alive can claim it
    finally:
        client.close()


def test_prune_keeps_the_containers_of_a_live_run_unless_all(docker_sandbox: DockerSandbox):
    """The owner label names a process by pid and start time: alive, its container stays."""
    import docker

    from engram.runs.leftovers import current_owner

    owner = subprocess.Popen(["sleep", "600"])
    client = docker.from_env()
    try:
        label = current_owner().label.rsplit(":", 2)[0]
        start = Path(f"/proc/{owner.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        live = client.containers.run(docker_sandbox.image, ["sleep", "600"], detach=True, network_mode="none",
                                     labels={LABEL: "1", OWNER_LABEL: f"{label}:{owner.pid}:{start}"})
        prune = [sys.executable, "-m", "engram.cli", "sandbox", "prune"]
        done = subprocess.run(prune, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert live.id in _ours() and "kept" in done.stdout and "--all" in done.stdout
        owner.kill()
        owner.wait()
        done = subprocess.run(prune, capture_output=True, text=True, timeout=60, check=False)
        assert live.id not in _ours(), done.stdout
        # `--all` (tried on this test's own container only: other runs may share the engine)
        mine = {LABEL: "1", OWNER_LABEL: current_owner().label, "engram.test": str(os.getpid())}
        again = client.containers.run(docker_sandbox.image, ["sleep", "600"], detach=True, network_mode="none",
                                      labels=mine)
        assert prune_containers(client, labels=mine) == Pruned(removed=0, kept=1)
        assert prune_containers(client, everything=True, labels=mine) == Pruned(removed=1, kept=0)
        assert again.id not in _ours()
    finally:
        owner.kill()
        client.close()


def test_containers_carry_their_owner(docker_sandbox: DockerSandbox, tmp_path: Path):
    from engram.runs.leftovers import current_owner

    options = docker_sandbox._create_options(["true"], tmp_path, (), Limits(), {})
    assert options["labels"][OWNER_LABEL] == current_owner().label and options["labels"][LABEL] == "1"


def test_the_image_is_resolved_to_its_content(docker_sandbox: DockerSandbox):
    assert docker_sandbox.resolved.digest.startswith("sha256:")
    assert not docker_sandbox.resolved.pinned  # the default is a tag: runs warn and record the digest


def test_what_counts_as_pinned():
    from engram.sandbox.images import is_pinned

    digest = "sha256:" + "ab" * 32
    assert is_pinned(digest) and is_pinned(f"ghcr.io/org/engram-sandbox@{digest}")
    assert is_pinned(f"engram-sandbox:1.0@{digest}")
    assert not is_pinned("engram-sandbox:latest") and not is_pinned("python:3.11") and not is_pinned("sha256:abc")


def test_explicit_docker_without_an_engine_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    assert DockerSandbox.availability() is not None
    with pytest.raises(SandboxError, match=r"(?s)sandbox 'docker' is unavailable.*start Docker.*--sandbox bwrap"):
        get_sandbox("docker")
    assert get_sandbox("auto", quiet=True).name in ("bwrap", "process")


def test_cli_evaluates_with_the_docker_sandbox(docker_sandbox: DockerSandbox, cloudcast: Problem):
    done = subprocess.run([sys.executable, "-m", "engram.cli", "evaluate", "cloudcast", str(cloudcast.initial_program),
                           "--sandbox", "docker", "--json"], capture_output=True, text=True, timeout=120,
                          check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    import json

    payload = json.loads(done.stdout)
    assert payload["sandbox"] == "docker" and payload["score"] == INITIAL_SCORE


# -- the agent's shell: one long-lived container per agent ------------------------------------------------


@pytest.fixture
def shell(docker_sandbox: DockerSandbox, tmp_path: Path) -> Iterator[DockerShell]:
    opened = docker_sandbox.open_shell(workdir=tmp_path, env=clean_environment(tmp_path), memory_bytes=256 * MiB,
                                       max_processes=32, lifetime_s=600)
    assert isinstance(opened, DockerShell)
    yield opened
    opened.close()


def test_a_shell_keeps_one_container_for_all_its_commands(shell: DockerShell, tmp_path: Path):
    first = shell.run("echo kept > /tmp/state; echo from-shell > made.txt; hostname", wall_seconds=30,
                      output_bytes=4096)
    container = shell.container_id
    (tmp_path / "from-host.txt").write_text("host\n")
    second = shell.run("cat /tmp/state from-host.txt", wall_seconds=30, output_bytes=4096)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr.text(), second.stderr.text())
    assert shell.container_id == container is not None
    assert second.stdout.text() == "kept\nhost\n"  # /tmp survives between commands: the same container
    assert (tmp_path / "made.txt").read_text() == "from-shell\n"  # and the workspace is the host's folder


def test_a_shell_command_past_its_limit_is_stopped_with_its_children(shell: DockerShell):
    started = time.monotonic()
    result = shell.run("sleep 300 & sleep 301; echo never", wall_seconds=1.5, output_bytes=4096)
    assert time.monotonic() - started < 10
    assert result.timed_out == "wall" and "never" not in result.stdout.text()
    left = shell.run("ps -eo args | grep -c '^sleep 30[01]' || true", wall_seconds=30, output_bytes=4096)
    assert left.stdout.text().strip() == "0"  # timeout(1) signalled the whole process group


def test_a_shell_has_no_network_and_no_secrets(shell: DockerShell, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-show-this")
    result = shell.run("env; python3 -c \"import socket; print(sorted(n for _, n in socket.if_nameindex()))\"",
                       wall_seconds=30, output_bytes=16384)
    assert "sk-never-show-this" not in result.stdout.text()
    assert "['lo']" in result.stdout.text()
    denied = shell.run("touch /usr/planted || echo denied; touch $HOME/ok && echo allowed", wall_seconds=30,
                       output_bytes=4096)
    assert denied.stdout.text() == "denied\nallowed\n"  # read-only root; the workspace is the home


def test_a_shell_command_over_the_memory_limit_is_reported_as_oom(shell: DockerShell):
    result = shell.run("python3 -c \"b = bytearray(1 << 30); print(len(b))\"", wall_seconds=60, output_bytes=4096)
    assert result.returncode == -9 and result.oom_killed and result.timed_out is None
    assert shell.run("echo alive", wall_seconds=30, output_bytes=4096).stdout.text() == "alive\n"


def test_a_shell_whose_processes_were_all_killed_is_replaced_and_says_so(shell: DockerShell):
    """`kill -KILL -1` ends the container's idle process and so the container: no 409 for the next
    command, which runs in a fresh container and tells the agent what it lost."""
    assert shell.run("echo kept > /tmp/state; kill -9 1; echo init-survives", wall_seconds=30,
                     output_bytes=4096).stdout.text() == "init-survives\n"  # pid 1 ignores its namespace's SIGKILL
    first = shell.container_id
    killed = shell.run("kill -KILL -1", wall_seconds=30, output_bytes=4096)
    assert killed.notes == [DockerShell.STOPPED]
    after = shell.run("cat /tmp/state 2>&1; echo alive", wall_seconds=30, output_bytes=4096)
    assert after.returncode == 0 and after.stdout.text().endswith("alive\n")
    assert after.notes == [DockerShell.RESTARTED] and "No such file" in after.stdout.text()
    assert shell.container_id not in (None, first)
    assert shell.run("echo again", wall_seconds=30, output_bytes=4096).notes == []


def test_a_shell_container_removed_behind_its_back_is_replaced(shell: DockerShell, docker_sandbox: DockerSandbox):
    shell.run("true", wall_seconds=30, output_bytes=1024)
    docker_sandbox._client.api.remove_container(shell.container_id, force=True)
    result = shell.run("echo fresh", wall_seconds=30, output_bytes=1024)
    assert result.stdout.text() == "fresh\n" and result.notes == [DockerShell.RESTARTED]


def test_the_process_cap_of_a_shell_command_is_reported(shell: DockerShell):
    result = shell.run("for i in $(seq 100); do sleep 5 & done; wait", wall_seconds=30, output_bytes=4096)
    assert result.process_cap_hit and not result.oom_killed


def test_closing_a_shell_removes_its_container(docker_sandbox: DockerSandbox, tmp_path: Path):
    opened = docker_sandbox.open_shell(workdir=tmp_path, env=clean_environment(tmp_path), memory_bytes=None,
                                       max_processes=None, lifetime_s=600)
    opened.run("true", wall_seconds=30, output_bytes=1024)
    assert opened.container_id in _ours()
    opened.close()
    assert opened.container_id is None and not _shell_containers()


def _shell_containers() -> list[str]:
    """Our running containers whose command is the shell's idle `sleep infinity`."""
    import docker

    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
                if "infinity" in " ".join(c.attrs["Config"]["Cmd"] or [])]
    finally:
        client.close()


def test_an_engram_run_with_the_docker_backend_uses_one_container_per_agent(tmp_path: Path):
    from engram_runs import SUMMARY, make_spec, run

    require_backend("docker")
    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "execute", "args": {"command": "echo agent-state > /tmp/mark"}}]},
        {"tool_calls": [{"name": "execute", "args": {"command": "cat /tmp/mark; id -u"}}]},
        {"tool_calls": [{"name": "run_simulation", "args": {"file_path": "/initial_program.py"}}]},
        {"content": SUMMARY},
    ]], sandbox={"backend": "docker"})
    before = _ours()
    outcome = run(spec)
    seed = next(outcome.run_dir.glob("seed-*"))
    transcript = (seed / "agents/agent-1/transcript.jsonl").read_text()
    assert "agent-state" in transcript and str(os.getuid()) in transcript
    assert not (_ours() - before) and not _shell_containers()
    import yaml

    meta = yaml.safe_load((outcome.run_dir / "spec.resolved.yaml").read_text())["meta"]
    assert meta["sandbox"] == "docker" and meta["sandbox_image"]["digest"].startswith("sha256:")
    assert meta["sandbox_image"]["pinned"] is False


def test_an_unpinned_image_is_warned_about_and_a_pinned_one_is_not(docker_sandbox: DockerSandbox, tmp_path: Path):
    from engram_runs import SUMMARY, make_spec

    image_id = docker_sandbox.resolved.image_id
    outputs = {}
    for label, image in (("tag", docker_sandbox.image), ("id", image_id)):
        (tmp_path / label).mkdir()
        spec = make_spec(tmp_path / label, [[
            {"tool_calls": [{"name": "run_simulation", "args": {"file_path": "/initial_program.py"}}]},
            {"content": SUMMARY},
        ]], sandbox={"backend": "docker", "image": image})
        done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", str(spec), "-q"], capture_output=True,
                              text=True, timeout=300, check=False, env=os.environ.copy())
        assert done.returncode == 0, done.stderr
        outputs[label] = done.stderr
    assert f"is not pinned; it resolved to {image_id}" in outputs["tag"]
    assert f"sandbox.image: {image_id}" in outputs["tag"]
    assert "not pinned" not in outputs["id"]


def test_sandbox_build_reuses_the_cache_and_labels_what_it_installed(docker_sandbox: DockerSandbox):
    import docker

    from engram.sandbox.images import requirements

    done = subprocess.run([sys.executable, "-m", "engram.cli", "sandbox", "build", "--tag", "engram-sandbox:test-build",
                           "--base", "engram-sandbox:offline", "--offline"], capture_output=True, text=True,
                          timeout=900, check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "pin it in a spec with:  sandbox: {backend: docker, image: sha256:" in done.stdout
    client = docker.from_env()
    try:
        labels = client.images.get("engram-sandbox:test-build").labels
        client.images.remove("engram-sandbox:test-build")  # the tag only: the layers stay cached
    finally:
        client.close()
    assert labels["org.engram.sandbox.base"] == "engram-sandbox:offline"
    pins = dict(item.split("==") for item in labels["org.engram.sandbox.requirements"].split(","))
    assert pins == requirements()


def test_the_images_packages_are_the_pinned_ones(docker_sandbox: DockerSandbox, tmp_path: Path):
    """A program must score the same under every backend: the image carries the pinned versions."""
    from engram.sandbox.images import requirements

    code = ("import importlib.metadata as m, json\n"
            f"print(json.dumps({{n: m.version(n) for n in {sorted(requirements())!r}}}))")
    result = _py(docker_sandbox, code, tmp_path)
    import json

    installed = {name.lower(): version for name, version in json.loads(result.stdout.text()).items()}
    assert installed == requirements()


def _scratch_roots() -> set[Path]:
    from engram.runs.leftovers import TEMP_PREFIX, temp_base

    return set(temp_base().glob(f"{TEMP_PREFIX}*"))


def test_a_killed_runners_leftovers_are_removed_by_its_resume(docker_sandbox: DockerSandbox, tmp_path: Path):
    """SIGKILL gives Engram no chance to clean up: its shell container and scratch directory stay
    until the run resumes (or `engram sandbox prune`)."""
    import signal

    from engram_runs import SUMMARY, make_spec

    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "execute", "args": {"command": "sleep 30"}}]},
        {"content": SUMMARY},
    ]], sandbox={"backend": "docker"})
    before, roots_before = _ours(), _scratch_roots()
    runner = subprocess.Popen([sys.executable, "-m", "engram.cli", "apply", str(spec), "-q"], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (set(_shell_containers()) - before) and time.monotonic() < deadline:
            time.sleep(0.3)
        left = set(_shell_containers()) - before
        assert left, "the agent's shell container never started"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
    assert left <= _ours()  # still there: nobody removed it
    roots = _scratch_roots() - roots_before
    assert roots, "the runner made no scratch directory of its own"
    [run_dir] = (tmp_path / "runs").glob("*/*")
    done = subprocess.run([sys.executable, "-m", "engram.cli", "resume", str(run_dir), "-q"], capture_output=True,
                          text=True, timeout=300, check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "removed 1 container(s) of this run" in done.stderr
    assert not (left & _ours()) and not (roots & _scratch_roots())


def test_the_smoke_spec_runs_end_to_end_in_docker(docker_sandbox: DockerSandbox, tmp_path: Path):
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", str(repo / "specs" / "smoke.yaml"), "--json",
                           "--set", "sandbox.backend=docker", "--set", f"output.dir={tmp_path}",
                           "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
                          capture_output=True, text=True, timeout=600, check=False, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    scores = [e["score"] for e in events if e.get("event") == "experiment"]
    assert scores[0] == INITIAL_SCORE  # the same score as on the host
    assert max(s for s in scores if s is not None) > INITIAL_SCORE and scores.count(None) == 1  # the scripted lie
    [resolved] = tmp_path.glob("smoke/*/spec.resolved.yaml")
    assert "sandbox: docker" in resolved.read_text()
