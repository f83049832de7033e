"""Attacks on the host sandboxes (`process`, `bwrap`) as root: each must fail, and its honest twin must work.

Engram runs as root here and in CI, the case where an unhardened sandbox is weakest. What the
`process` backend does not promise (read-only paths, hiding the host) is tested on bwrap only; see
docs/security.md. The Docker backend has its own tests.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from conftest import (
    REPO,
    private_data_mirror,
    require_backend,
    require_unprivileged_process_sandbox,
    unavailable,
)

from engram.errors import SandboxError
from engram.sandbox import Limits, Mount, SandboxResult, clean_environment, get_sandbox
from engram.sandbox.base import MiB

HOST_BACKENDS = ["process", "process-closed", "bwrap"]
"""`process-closed`: the process backend with Engram's interpreter behind a closed directory, where
as root it cannot give commands a uid of their own (they keep uid 0, without capabilities). Plain
`process` runs from this interpreter: reachable by an unprivileged uid in CI (.ci/run)."""
ROOT_WITHOUT_UID = "ran as root without capabilities"


@pytest.fixture(params=HOST_BACKENDS)
def sandbox(request: pytest.FixtureRequest):
    backend = request.param.removesuffix("-closed")
    require_backend(backend)
    if request.param.endswith("-closed"):
        request.getfixturevalue("interpreter_behind_closed_directory")
    return get_sandbox(backend, quiet=True)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory like the evaluator's: under /tmp, reachable by an unprivileged uid."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="engram-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_python(sandbox, code: str, workdir: Path, mounts: tuple[Mount, ...] = (), **limits: object) -> SandboxResult:
    limits.setdefault("wall_seconds", 60)
    return sandbox.run([sandbox.python, "-c", textwrap.dedent(code)], workdir=workdir, mounts=mounts,
                       limits=Limits(**limits), env=clean_environment(workdir))


def lines(result: SandboxResult) -> list[str]:
    return result.stdout.text().split()


@pytest.fixture
def as_root() -> None:
    """These attacks are about a sandbox started by root, as Engram is in CI (where this must hold)."""
    if os.geteuid() != 0:
        unavailable("these attacks are about a sandbox started by root")


needs_root = pytest.mark.usefixtures("as_root")


@needs_root
def test_the_command_holds_no_capability(sandbox, workdir: Path):
    result = run_python(sandbox, """
        fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
        for name in ('CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs'):
            print(name, int(fields[name].strip(), 16))
    """, workdir)
    assert result.returncode == 0, result.stderr.text()
    values = dict(zip(lines(result)[::2], map(int, lines(result)[1::2]), strict=True))
    assert values == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0, "NoNewPrivs": 1}


SYSCALLS = """
    import ctypes, errno, os
    libc = ctypes.CDLL(None, use_errno=True)
    def outcome(rc):
        return 'ok' if rc == 0 else errno.errorcode[ctypes.get_errno()]
    print('mount', outcome(libc.mount(b'none', b'{target}', b'tmpfs', 0, None)))
    print('remount', outcome(libc.mount(None, b'{target}', None, 0x20 | 0x1000, None)))  # MS_REMOUNT|MS_BIND
    print('umount', outcome(libc.umount2(b'/proc', 2)))
    print('ptrace', outcome(libc.ptrace(0, 0, None, None)))  # PTRACE_TRACEME
    print('unshare', outcome(libc.unshare(0x10000000)))  # CLONE_NEWUSER
    print('keyctl', outcome(libc.syscall(250, 0, 0, 0, 0)))  # keyctl(KEYCTL_GET_KEYRING_ID)
    print('bpf', outcome(libc.syscall(321, 0, None, 0)))
    print('reboot', outcome(libc.syscall(169, 0, 0, 0, None)))
    print('kill-all', outcome(libc.kill(-1, 0)))  # signal 0: only asks whether it would be allowed
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    print('fork', os.waitpid(pid, 0)[1] >> 8)
"""


@needs_root
def test_mount_ptrace_namespaces_keyring_and_bpf_are_refused(sandbox, workdir: Path):
    target = workdir / "target"
    target.mkdir()
    result = run_python(sandbox, SYSCALLS.replace("{target}", str(target)), workdir)
    assert result.returncode == 0, result.stderr.text()
    outcomes = dict(zip(lines(result)[::2], lines(result)[1::2], strict=True))
    assert outcomes.pop("fork") == "7"  # the honest twin: ordinary process calls work
    assert set(outcomes.values()) == {"EPERM"}, outcomes


@needs_root
def test_a_read_only_bind_cannot_be_remounted_or_written(workdir: Path, tmp_path: Path):
    require_backend("bwrap")
    sandbox = get_sandbox("bwrap", quiet=True)
    protected = tmp_path / "problem"
    protected.mkdir()
    (protected / "evaluator.py").write_text("SCORE = 0.1\n")
    protected.chmod(0o755)
    (protected / "evaluator.py").chmod(0o644)
    result = sandbox.run(["/bin/bash", "-c", f"""
        cat {protected}/evaluator.py
        mount -o remount,bind,rw {protected} && echo REMOUNTED
        echo 'SCORE = 1.0' > {protected}/evaluator.py && echo WROTE
        chmod 666 {protected}/evaluator.py && echo CHMODDED
        echo honest > answer.txt && echo ANSWERED
    """], workdir=workdir, mounts=[Mount(protected)], limits=Limits(wall_seconds=60), env=clean_environment(workdir))
    out = result.stdout.text()
    assert "SCORE = 0.1" in out and "ANSWERED" in out  # honest reads and writes work
    assert "REMOUNTED" not in out and "WROTE" not in out and "CHMODDED" not in out
    assert (protected / "evaluator.py").read_text() == "SCORE = 0.1\n"
    assert (workdir / "answer.txt").read_text() == "honest\n"


@needs_root
def test_host_device_nodes_and_system_files_stay_untouched(workdir: Path):
    """A uid that maps to root outside could chmod the host's /dev/null without any capability."""
    require_backend("bwrap")
    sandbox = get_sandbox("bwrap", quiet=True)
    before = os.stat("/dev/null").st_mode
    result = sandbox.run(["/bin/bash", "-c", "chmod 600 /dev/null; touch /usr/engram-pwned; echo hi > /dev/null && "
                          "echo NULL-OK"], workdir=workdir, limits=Limits(wall_seconds=60),
                         env=clean_environment(workdir))
    assert "NULL-OK" in result.stdout.text()
    assert os.stat("/dev/null").st_mode == before
    assert not Path("/usr/engram-pwned").exists()


@needs_root
def test_files_the_command_writes_are_not_owned_by_root(workdir: Path):
    require_backend("bwrap")
    sandbox = get_sandbox("bwrap", quiet=True)
    (workdir / "given.txt").write_text("from the runner\n")
    result = sandbox.run(["/bin/bash", "-c", "cat given.txt >> made.txt && cat made.txt"], workdir=workdir,
                         limits=Limits(wall_seconds=60), env=clean_environment(workdir))
    assert result.returncode == 0 and result.stdout.text() == "from the runner\n"
    assert (workdir / "made.txt").stat().st_uid != 0


@needs_root
def test_the_runners_environment_and_memory_are_out_of_reach(sandbox, workdir: Path):
    result = run_python(sandbox, f"""
        import os
        print('self', 'PATH=' in open('/proc/self/environ', 'rb').read().decode())
        for name in ('environ', 'mem'):
            try:
                open('/proc/{os.getpid()}/' + name, 'rb').read(64)
                print(name, 'READ')
            except OSError as exc:
                print(name, type(exc).__name__)
    """, workdir)
    assert result.returncode == 0, result.stderr.text()
    outcomes = dict(zip(lines(result)[::2], lines(result)[1::2], strict=True))
    assert outcomes.pop("self") == "True"
    assert "READ" not in outcomes.values(), outcomes


MEMORY_HOG = """
    import subprocess, sys
    child = "b = b'x' * ({mb} * 1024 * 1024); print('held', flush=True); import time; time.sleep(3)"
    procs = [subprocess.Popen([sys.executable, '-c', child]) for _ in range({count})]
    print('codes', *[p.wait() for p in procs])
"""


def test_memory_limit_holds_over_all_processes_together(sandbox, workdir: Path):
    attack = run_python(sandbox, MEMORY_HOG.format(mb=300, count=4), workdir, memory_bytes=512 * MiB)
    assert attack.oom_killed, (attack.stdout.text(), attack.stderr.text(), attack.notes)
    assert "-9" in attack.stdout.text()
    honest = run_python(sandbox, MEMORY_HOG.format(mb=60, count=2), workdir, memory_bytes=512 * MiB)
    assert not honest.oom_killed and honest.returncode == 0
    assert honest.stdout.text().count("held") == 2 and "codes 0 0" in honest.stdout.text()


def test_a_fork_bomb_stops_at_the_process_cap(sandbox, workdir: Path):
    attack = run_python(sandbox, """
        import os, time
        for _ in range(200):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
            except OSError:
                print('refused')
                break
        os._exit(0)
    """, workdir, max_processes=16, wall_seconds=30)
    assert attack.process_cap_hit and "refused" in attack.stdout.text()
    honest = run_python(sandbox, """
        import subprocess, sys
        print(sum(subprocess.run([sys.executable, '-c', 'pass']).returncode for _ in range(4)))
    """, workdir, max_processes=16)
    assert honest.returncode == 0 and not honest.process_cap_hit and honest.stdout.text().strip() == "0"


def test_cpu_time_is_limited_over_all_processes_together(sandbox, workdir: Path):
    spinner = """
        import subprocess, sys
        procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(3)]
        [p.wait() for p in procs]
    """
    attack = run_python(sandbox, spinner, workdir, cpu_seconds=3, wall_seconds=120)
    assert attack.timed_out == "cpu", attack
    honest = run_python(sandbox, "print(sum(range(10**6)))", workdir, cpu_seconds=3)
    assert honest.timed_out is None and honest.stdout.text().strip() == str(sum(range(10**6)))


def test_private_tmp_is_capped(workdir: Path):
    require_backend("bwrap")
    sandbox = get_sandbox("bwrap", quiet=True)
    result = sandbox.run(["/bin/bash", "-c", "head -c 1000000 /dev/zero > /tmp/small && echo SMALL; "
                          "head -c 2000000000 /dev/zero > /tmp/huge; cat /tmp/small /tmp/huge | wc -c"],
                         workdir=workdir, limits=Limits(wall_seconds=60, file_size_bytes=None, memory_bytes=None),
                         env=clean_environment(workdir))
    assert "SMALL" in result.stdout.text()
    assert "No space left on device" in result.stderr.text()
    assert int(result.stdout.text().split()[-1]) <= 256 * MiB


def test_auto_stops_rather_than_run_without_isolation(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]):
    from engram.sandbox.bwrap import BwrapSandbox
    from engram.sandbox.docker import DockerSandbox

    monkeypatch.setattr(BwrapSandbox, "availability", classmethod(lambda cls: "bwrap is not installed"))
    monkeypatch.setattr(DockerSandbox, "availability", classmethod(lambda cls: "no engine answers"))
    with pytest.raises(SandboxError) as refused:
        get_sandbox("auto")
    message = str(refused.value)
    assert "\n" not in message
    for hint in ("apt-get install bubblewrap", "engram sandbox build", "--sandbox process"):
        assert hint in message
    # Chosen by name, the unisolated backend runs -- and says so every time.
    for _ in range(2):
        assert get_sandbox("process", quiet=True).name == "process"
        assert "does not isolate" in capsys.readouterr().err


FILE_WRITER = """
    written = 0
    for i in range({count}):
        try:
            with open(f'part{{i}}', 'wb') as out:
                out.write(b'x' * ({mb} * 1024 * 1024))
            written += 1
        except OSError as exc:
            print('refused', exc.strerror)
            break
    print('files', written)
"""


@needs_root
def test_the_working_directory_holds_at_most_the_file_limit_in_total(sandbox):
    """Six files under the per-file limit, together far over it: the total is what is capped."""
    with sandbox.workdir(prefix="engram-test-") as workdir:
        (workdir / "request.json").write_bytes(b"r" * 10 * MiB)  # the runner's inputs do not count
        attack = run_python(sandbox, FILE_WRITER.format(count=6, mb=20), workdir, file_size_bytes=64 * MiB)
        assert "No space left on device" in attack.stdout.text(), attack.stderr.text()
        assert sum(p.stat().st_size for p in workdir.glob("part*")) <= 64 * MiB
        assert not attack.notes or "not capped" not in " ".join(attack.notes)
    assert not workdir.exists()
    with sandbox.workdir(prefix="engram-test-") as workdir:
        honest = run_python(sandbox, FILE_WRITER.format(count=2, mb=20), workdir, file_size_bytes=64 * MiB)
        assert honest.returncode == 0 and honest.stdout.text().split() == ["files", "2"]


@needs_root
def test_an_agents_shell_cannot_edit_the_archive_but_keeps_editing_its_workspace(tmp_path: Path):
    """Between two commands the runner writes a file (the agent's file tools): the next command may
    still append to it, while the archive of earlier agents stays read-only."""
    require_backend("bwrap")
    sandbox = get_sandbox("bwrap", quiet=True)
    workspace, archive = tmp_path / "workspace", tmp_path / "archive"
    workspace.mkdir()
    archive.mkdir()
    (archive / "evaluation.json").write_text('{"score": 0.006}')
    shell = sandbox.open_shell(workdir=workspace, mounts=[Mount(archive, target=workspace / "archive")],
                               env=clean_environment(workspace), memory_bytes=512 * MiB, max_processes=32,
                               lifetime_s=600)
    try:
        first = shell.run("echo one > notes.md", wall_seconds=60, output_bytes=4096)
        (workspace / "plan.md").write_text("from the file tool\n")  # the runner, as root
        attack = shell.run("echo '{\"score\": 0.5}' > archive/evaluation.json; "
                           "mount -o remount,rw archive; echo pwned > archive/evaluation.json; "
                           "echo two >> notes.md && echo more >> plan.md && cat archive/evaluation.json",
                           wall_seconds=60, output_bytes=4096)
    finally:
        shell.close()
    assert first.returncode == 0
    assert (archive / "evaluation.json").read_text() == '{"score": 0.006}'
    assert attack.stdout.text() == '{"score": 0.006}'
    assert (workspace / "notes.md").read_text() == "one\ntwo\n"
    assert (workspace / "plan.md").read_text() == "from the file tool\nmore\n"


def test_without_cgroups_the_result_says_which_limits_are_per_process(monkeypatch: pytest.MonkeyPatch, workdir: Path):
    """A host that lets Engram make no cgroup (no root, no delegation): the command still runs, and
    the result says the memory limit and process cap hold per process only."""
    from engram.sandbox import cgroup

    monkeypatch.setattr(cgroup, "layout", lambda: cgroup._Layout(1, {}, ("memory", "pids", "cpu")))
    sandbox = get_sandbox("process", quiet=True)
    result = run_python(sandbox, "print('ran')", workdir, memory_bytes=256 * MiB, max_processes=8)
    assert result.returncode == 0 and result.stdout.text() == "ran\n"
    assert any("no memory/pids cgroup" in note and "per process only" in note for note in result.notes), result.notes


# -- who a `process` command runs as, when Engram is root -----------------------------------------------------

UID_PROBE = """
    import os
    print(os.getuid(), os.geteuid(), os.getgid())
"""


@needs_root
def test_process_gives_each_command_a_uid_of_its_own_where_the_interpreter_is_reachable(workdir: Path):
    from engram.sandbox.identity import UID_BASE

    require_unprivileged_process_sandbox()
    result = run_python(get_sandbox("process", quiet=True), UID_PROBE, workdir)
    assert result.returncode == 0, result.stderr.text()
    assert all(int(value) >= UID_BASE for value in lines(result)), lines(result)
    assert not any(ROOT_WITHOUT_UID in note for note in result.notes), result.notes


@needs_root
def test_behind_a_closed_interpreter_process_commands_stay_root_and_every_result_says_so(
        interpreter_behind_closed_directory: Path, workdir: Path):
    sandbox = get_sandbox("process", quiet=True)
    closed = _closed_directory(interpreter_behind_closed_directory)
    for _ in range(2):
        result = run_python(sandbox, UID_PROBE, workdir)
        assert result.returncode == 0, result.stderr.text()
        assert lines(result) == ["0", "0", "0"]
        said = [note for note in result.notes if ROOT_WITHOUT_UID in note]
        assert len(said) == 1 and str(closed) in said[0], result.notes


def _closed_directory(interpreter: Path) -> Path:
    return next(path for path in interpreter.parents if path.name.startswith("engram-closed-"))


def _problems_with_hidden_data() -> list[str]:
    from engram.problems.problem import list_problems

    return [problem.name for problem in list_problems() if problem.config.hidden_data]


@needs_root
@pytest.mark.parametrize("name", _problems_with_hidden_data())
def test_behind_a_closed_interpreter_process_refuses_problems_with_hidden_data(
        name: str, interpreter_behind_closed_directory: Path):
    """Even with the data store closed to other users: candidates would be root, who reads it anyway."""
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.problems.problem import load_problem

    problem = load_problem(name)
    closed = _closed_directory(interpreter_behind_closed_directory)
    with private_data_mirror(problem), pytest.raises(SandboxError) as refused:
        CandidateEvaluator(problem, get_sandbox("process", quiet=True))
    message = str(refused.value)
    assert "\n" not in message
    assert f"candidates would run as root: {closed} is closed to an unprivileged uid" in message
    assert "--sandbox bwrap or docker" in message


@needs_root
def test_a_runner_started_through_a_closed_interpreter_notes_it_and_refuses_hidden_data(
        interpreter_behind_closed_directory: Path, tmp_path: Path):
    """End to end: `engram` itself started through the closed path, as from a pyenv under /root."""
    import json
    import subprocess

    from engram.problems.problem import load_problem

    def engram(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(interpreter_behind_closed_directory), "-m", "engram.cli", *arguments],
                              capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    done = engram("evaluate", "cloudcast", "evaluators/cloudcast/initial_program.py", "--sandbox", "process",
                  "--scenarios", "intra_aws", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["ok"] and any(ROOT_WITHOUT_UID in note for note in result["notes"]), result["notes"]
    with private_data_mirror(load_problem("telemetry_repair")):
        refused = engram("evaluate", "telemetry_repair", "evaluators/telemetry_repair/initial_program.py",
                         "--sandbox", "process")
    assert refused.returncode == 2, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]  # after the warning every process run prints
    assert error.startswith("engram: error: ") and "candidates would run as root" in error, refused.stderr
