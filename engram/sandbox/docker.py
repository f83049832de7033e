"""The `docker` backend: each evaluation in a fresh container of a pinned image, each agent's shell
in one container of its own (`DockerShell`).

This is the strongest isolation Engram offers: the command sees only the image's filesystem
(read-only), its own working directory (writable) and the paths it is given, has no network at all
(`network_mode="none"`), no capabilities, cannot gain privileges, and is held by the kernel's
cgroup limits for memory, processes and CPU share. Because the image is pinned (its id is recorded
in `resolved`), a candidate's score does not depend on what is installed on the host.

One container per evaluation keeps evaluations independent: nothing a candidate leaves behind
(files in /tmp, background processes) can affect the next one; an agent's shell keeps its state
between commands on purpose, as a terminal does. The wall-clock limit is enforced from outside (the
engine is asked to wait with a timeout, then to kill), since a process cannot be trusted to time
itself out. Every container carries the label `engram.sandbox=1` and its owner (`engram.owner`:
host, boot, pid and start time of the Engram process that made it, see `engram.runs.leftovers`), so
that `engram sandbox prune` can remove what a crash left behind without touching a live run's.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.errors import SandboxError
from engram.runs.leftovers import current_owner, is_dead
from engram.sandbox import identity
from engram.sandbox import workdir as workdirs
from engram.sandbox.base import Limits, Mount, Sandbox, SandboxResult, Shell, StreamCapture
from engram.sandbox.images import DEFAULT_TAG, ResolvedImage, resolve_image

DEFAULT_IMAGE = DEFAULT_TAG
IMAGE_ENV = "ENGRAM_SANDBOX_IMAGE"
LABEL = "engram.sandbox"
OWNER_LABEL = "engram.owner"
CONTAINER_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The image's own PATH: the host's PATH names the host interpreter, which does not exist inside."""

_PING_TIMEOUT_S = 3.0
_CONTROL_TIMEOUT_S = 60.0
_DRAIN_GRACE_S = 1.0
_POLL_S = 0.05
_BACKSTOP_S = 30
_IDLE = "sleep infinity"
"""What a shell container runs between commands."""
_START_HINT = ("start Docker (or, for Engram's developers, `eval \"$(../shared/tools/docker-engine-up.sh)\"`), "
               "or choose another backend: --set sandbox.backend=bwrap (apply) or --sandbox bwrap (evaluate, "
               "rescore, replay)")


_active: dict[str, str] = {}
"""Containers running now (id -> image), so Ctrl-C can kill them instead of waiting them out."""


def kill_active_runs() -> int:
    """Kill every container this process is running (on Ctrl-C); return how many.

    Safe to call from a signal handler: the kills happen on a fresh client in a helper thread, so
    no lock the interrupted main thread may hold is needed. Each run still removes its container."""
    running = list(_active)  # a copy without a lock: the handler must not wait for one
    if running:
        threading.Thread(target=_kill, args=(running,), name="engram-docker-kill", daemon=True).start()
    return len(running)


def _kill(container_ids: list[str]) -> None:
    import docker

    with contextlib.suppress(Exception):
        client = docker.from_env(timeout=10)
        try:
            for container_id in container_ids:
                with contextlib.suppress(Exception):
                    client.api.kill(container_id)
        finally:
            client.close()


def default_image() -> str:
    """The image named by `ENGRAM_SANDBOX_IMAGE`, else Engram's default."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


class DockerSandbox(Sandbox):
    """Runs each command in a fresh container; see the module docstring."""

    name = "docker"

    def __init__(self, image: str | None = None, *, labels: Mapping[str, str] | None = None,
                 cpus: float | None = None) -> None:
        import docker

        self.image = image or default_image()
        self.labels = {LABEL: "1", **(labels or {})}
        # One or two CPUs: enough for a candidate's helper threads, not enough to starve the host.
        self.cpus = cpus if cpus is not None else float(max(1, min(2, os.cpu_count() or 1)))
        try:
            # Control calls get a timeout so a hung engine cannot hang Engram; the output stream
            # has none because a quiet command may legitimately print nothing for minutes.
            self._client = docker.from_env(timeout=int(_CONTROL_TIMEOUT_S))
            self._stream_client = docker.from_env(timeout=None)  # type: ignore[arg-type]
            self.resolved: ResolvedImage = resolve_image(self._client, self.image)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"sandbox 'docker' is unavailable: {exc}; {_START_HINT}") from exc

    @property
    def python(self) -> str:
        """The image's interpreter: the host's path does not exist inside the container."""
        return "python3"

    @classmethod
    def availability(cls) -> str | None:
        try:
            import docker
        except ImportError:
            return f"the Python package 'docker' is not installed (pip install docker); or {_START_HINT}"
        try:
            client = docker.from_env(timeout=int(_PING_TIMEOUT_S))
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # the SDK raises many kinds (DockerException, requests errors)
            return f"no Docker engine answers ({type(exc).__name__}: {_first_line(exc)}); {_START_HINT}"
        return None

    def run(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount] = (),
        limits: Limits,
        env: Mapping[str, str],
    ) -> SandboxResult:
        import docker.errors

        notes: list[str] = []
        container = None
        stream: Any = None
        started = time.monotonic()
        if (uncapped := workdirs.seal(workdir, limits.file_size_bytes)) is not None:
            notes.append(uncapped)
        try:
            options = self._create_options(argv, workdir, mounts, limits, env)
            container = self._client.containers.create(self.resolved.image_id, **options)
            # Attach before start so no output is lost; the stream comes straight from the container's
            # stdio (the log driver is off, so a flood cannot fill the engine's disk).
            stream = self._stream_client.api.attach(container.id, stdout=True, stderr=True, stream=True,
                                                     demux=True, logs=False)
            captures = (StreamCapture(limits.output_bytes), StreamCapture(limits.output_bytes))
            reader = threading.Thread(target=_pump, args=(stream, captures), name="engram-docker-output",
                                      daemon=True)
            reader.start()
            started = time.monotonic()
            _active[container.id] = self.image
            container.start()
            watch = _CapWatch(_pids_cgroup(container.id) if limits.max_processes else None)
            try:
                status, timed_out = self._wait(container, started + limits.wall_seconds)
            finally:
                cap_hit = watch.stop()
            wall = time.monotonic() - started
            reader.join(_DRAIN_GRACE_S)
            with contextlib.suppress(Exception):
                stream.close()
            reader.join(_DRAIN_GRACE_S)
            state = self._client.api.inspect_container(container.id).get("State", {})
            oom_killed = bool(state.get("OOMKilled"))
            returncode = _translate(status)
            if not cap_hit and limits.max_processes and returncode != 0:
                # No view of the container's cgroup (e.g. Docker Desktop's VM), or a refusal just before
                # the exit: fork failing with EAGAIN is the sign. It can only relabel the command's own failure.
                stderr_text = captures[1].result().text()
                cap_hit = "Resource temporarily unavailable" in stderr_text
            if timed_out is None and returncode == -signal.SIGXCPU:
                timed_out = "cpu"
            if oom_killed:
                notes.append(f"killed by the kernel's OOM killer (memory limit {limits.memory_bytes} bytes)")
            return SandboxResult(
                returncode=returncode,
                timed_out=timed_out,  # type: ignore[arg-type]
                stdout=captures[0].result(),
                stderr=captures[1].result(),
                wall_seconds=wall,
                process_cap_hit=cap_hit,
                oom_killed=oom_killed,
                notes=notes,
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"the Docker sandbox image {self.image!r} disappeared: {exc}") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"the Docker engine refused to run the command: {_first_line(exc)}") from exc
        finally:
            if container is not None:
                _active.pop(container.id, None)
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            if container is not None:
                _remove(container)

    @contextlib.contextmanager
    def workdir(self, *, prefix: str = "engram-eval-", parent: Path | None = None) -> Iterator[Path]:
        """A tmpfs of its own where Engram may mount one (root): bound into the container, it caps
        what the command writes there in total, not only file by file."""
        with workdirs.capped_workdir(prefix=prefix, parent=parent) as path:
            yield path

    def remove_dead_containers(self, labels: Mapping[str, str]) -> int:
        """Remove containers with these labels whose Engram process is gone (a resumed run's own)."""
        return prune(self._client, labels=labels).removed

    def open_shell(self, *, workdir: Path, mounts: Sequence[Mount] = (), env: Mapping[str, str],
                   memory_bytes: int | None, max_processes: int | None, lifetime_s: float) -> Shell:
        return DockerShell(self, workdir=workdir, mounts=mounts, env=env,
                           limits=Limits(wall_seconds=lifetime_s, memory_bytes=memory_bytes,
                                         max_processes=max_processes))

    # -- helpers --------------------------------------------------------------------------------

    def _create_options(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount], limits: Limits,
                        env: Mapping[str, str]) -> dict[str, Any]:
        options = self._container_options([Mount(workdir, writable=True), *mounts], limits, env)
        # A backstop inside the container: if Engram dies (SIGKILL) nobody enforces the wall limit
        # from outside, and an orphan would otherwise run forever (`engram sandbox prune` removes it).
        options.update(command=["timeout", "-s", "KILL", f"{math.ceil(limits.wall_seconds) + _BACKSTOP_S}s", *argv],
                       working_dir=str(workdir), user=sandbox_user(workdir, mounts), init=True)
        return options

    def _container_options(self, mounts: Sequence[Mount], limits: Limits, env: Mapping[str, str]) -> dict[str, Any]:
        """Everything about a container but its command, working directory and user."""
        from docker.types import LogConfig, Ulimit
        from docker.types import Mount as DockerMount

        binds = [DockerMount(str(m.inside), str(m.path), type="bind", read_only=not m.writable) for m in mounts]
        options: dict[str, Any] = {
            "environment": {**env, "PATH": CONTAINER_PATH},
            "network_mode": "none",
            "hostname": "engram-sandbox",
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=256m"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mounts": binds,
            "labels": {**self.labels, OWNER_LABEL: current_owner().label},
            "nano_cpus": int(self.cpus * 1e9),
            "log_config": LogConfig(type="none"),
            "stdin_open": False,
            "tty": False,
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, s, h in _ulimits(limits)],
        }
        if limits.memory_bytes is not None:
            options["mem_limit"] = limits.memory_bytes
            options["memswap_limit"] = limits.memory_bytes  # no swap: overflow is an OOM kill, not a crawl
        if limits.max_processes is not None:
            options["pids_limit"] = limits.max_processes
        return options

    def _wait(self, container: Any, deadline: float) -> tuple[int, str | None]:
        """Wait for the container to exit; at the deadline kill it (a command cannot time itself out)."""
        import requests

        try:
            status = self._client.api.wait(container.id, timeout=max(0.01, deadline - time.monotonic()))
            return int(status.get("StatusCode", -1)), None
        except requests.exceptions.RequestException:
            with contextlib.suppress(Exception):
                container.kill()
            status = self._client.api.wait(container.id, timeout=int(_CONTROL_TIMEOUT_S))
            return int(status.get("StatusCode", -1)), "wall"


class DockerShell(Shell):
    """One long-lived container for an agent's shell; each command is an `exec` in it.

    The container starts at the first command (about 0.3 s, paid once per agent instead of per
    command) with the agent's limits for the whole container: memory, processes, CPU. Each command
    runs under `timeout -s KILL`, which signals the command's whole process group, and a command
    that outlives its limit by a grace period anyway gets the container killed. Files are shared
    with the agent's file tools through the workspace bind mount; background processes live until
    the agent ends. The container removes itself when it stops (`auto_remove`), also when its
    lifetime backstop expires because Engram died.

    A command may end the container itself (`kill -KILL -1` kills its idle process, and the
    container with it). The shell then starts a fresh one for the next command and says so in that
    command's notes (`RESTARTED`), and in the notes of the command that ended it (`STOPPED`), so
    the agent learns that its background processes and files outside the workspace are gone."""

    _GRACE_S = 2.0
    STOPPED = ("the shell's container stopped during this command (its processes were killed); "
               "the next command starts a fresh one")
    RESTARTED = ("the shell's container had stopped, so this command ran in a fresh one: background "
                 "processes and files outside the workspace (e.g. in /tmp) from earlier commands are gone")

    def __init__(self, sandbox: DockerSandbox, *, workdir: Path, mounts: Sequence[Mount], env: Mapping[str, str],
                 limits: Limits) -> None:
        self._sandbox = sandbox
        self._workdir = workdir
        self._mounts = tuple(mounts)
        self._env = {**env, "PATH": CONTAINER_PATH}
        self._limits = limits
        self._lock = threading.Lock()
        self._container_id: str | None = None
        self._lost = False
        """A container of this shell stopped without `close`: the next one is announced as a restart."""
        self._pids: Path | None = None
        self._memory: Path | None = None

    @property
    def container_id(self) -> str | None:
        return self._container_id

    def run(self, command: str, *, wall_seconds: float, output_bytes: int) -> SandboxResult:
        notes: list[str] = []
        argv = ["timeout", "-s", "KILL", f"{max(wall_seconds, 0.1):.3f}s", "/bin/bash", "-c", command]
        container_id, exec_id, stream = self._exec_start(argv, sandbox_user(self._workdir, self._mounts), notes)
        captures = (StreamCapture(output_bytes), StreamCapture(output_bytes))
        reader = threading.Thread(target=_pump, args=(stream, captures), name="engram-docker-shell", daemon=True)
        reader.start()
        pids, memory = self._pids, self._memory
        pids_before, ooms_before = _cap_count(pids), _oom_count(memory)
        started = time.monotonic()
        info, forced = self._wait(exec_id, started + wall_seconds + self._GRACE_S)
        wall = time.monotonic() - started
        cap_hit, oom = _cap_count(pids) > pids_before, _oom_count(memory) > ooms_before
        reader.join(_DRAIN_GRACE_S)
        with contextlib.suppress(Exception):
            stream.close()
        returncode = _translate(int(info.get("ExitCode") if info.get("ExitCode") is not None else -signal.SIGKILL))
        if not forced and returncode < 0 and not self._idle_process_alive(container_id):
            self._forget(container_id)
            notes.append(self.STOPPED)
        timed_out = "wall" if forced or (returncode == -signal.SIGKILL and wall >= wall_seconds and not oom) else None
        return SandboxResult(returncode=returncode, timed_out=timed_out,  # type: ignore[arg-type]
                             stdout=captures[0].result(), stderr=captures[1].result(), wall_seconds=wall,
                             process_cap_hit=cap_hit, oom_killed=oom, notes=notes)

    def close(self) -> None:
        with self._lock:
            container_id, self._container_id = self._container_id, None
            self._lost = False
        if container_id is None:
            return
        _active.pop(container_id, None)
        with contextlib.suppress(Exception):
            self._sandbox._client.api.remove_container(container_id, force=True)

    def _exec_start(self, argv: list[str], user: str, notes: list[str]) -> tuple[str, str, Any]:
        """Start the command's exec; if the container died since the last command, replace it once."""
        import docker.errors

        api = self._sandbox._client.api
        for attempt in range(2):
            container_id = self._ensure_container(notes)
            try:
                exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True, environment=self._env,
                                          workdir=str(self._workdir), user=user)["Id"]
                stream = self._sandbox._stream_client.api.exec_start(exec_id, stream=True, demux=True)
                return container_id, exec_id, stream
            except docker.errors.APIError as exc:
                if attempt == 0 and not self._running(container_id):  # 404 gone or 409 not running
                    self._forget(container_id)
                    continue
                self.close()  # a wedged engine: the next command tries a fresh container
                raise SandboxError(f"the Docker engine refused the shell command: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _running(self, container_id: str) -> bool:
        import docker.errors

        try:
            state = self._sandbox._client.api.inspect_container(container_id).get("State", {})
        except docker.errors.NotFound:
            return False
        return bool(state.get("Running")) and not state.get("Restarting")

    def _idle_process_alive(self, container_id: str) -> bool:
        """Whether the container still runs its idle process; once that is killed the container is
        stopping, even if the engine does not say so yet."""
        try:
            listing = self._sandbox._client.api.top(container_id, ps_args="-o args")
        except Exception:  # stopped (409) or gone (404)
            return False
        return any(_IDLE in " ".join(process) for process in listing.get("Processes") or [])

    def _forget(self, container_id: str) -> None:
        """The container stopped on its own: drop it (auto_remove may not have finished yet)."""
        with self._lock:
            if self._container_id == container_id:
                self._container_id = None
                self._lost = True
        _active.pop(container_id, None)
        with contextlib.suppress(Exception):
            self._sandbox._client.api.remove_container(container_id, force=True)

    def _ensure_container(self, notes: list[str]) -> str:
        with self._lock:
            if self._container_id is not None:
                return self._container_id
            options = self._sandbox._create_options(_IDLE.split(), self._workdir, self._mounts,
                                                    self._limits, self._env)
            options["auto_remove"] = True
            self._container_id = container_id = _start_long_lived(self._sandbox, options)
            if self._lost:
                notes.append(self.RESTARTED)
                self._lost = False
            self._pids, self._memory = _pids_cgroup(container_id), _memory_cgroup(container_id)
            return container_id

    def _wait(self, exec_id: str, deadline: float) -> tuple[dict[str, Any], bool]:
        """Poll the exec until it ends; past the deadline (timeout(1) failed to end it) kill the container."""
        api = self._sandbox._client.api
        while True:
            try:
                info = api.exec_inspect(exec_id)
            except Exception:  # the container is gone (killed by Ctrl-C or closed): the command is over
                return {"ExitCode": -signal.SIGKILL}, False
            if not info.get("Running"):
                return info, False
            if time.monotonic() > deadline:
                self.close()
                return {"ExitCode": 128 + signal.SIGKILL}, True
            time.sleep(_POLL_S)


class ExecContainer:
    """One long-lived container whose commands are `exec`s, for a caller with many short commands that
    share their mounts and limits (a judge's test cases): the container starts once (about 0.7 s on a
    quiet machine) instead of once per command (an exec costs about 0.1 s).

    Its PID 1 is `sleep <lifetime>`: the container's backstop if Engram dies, and, being its pid
    namespace's init, out of reach of the commands' signals (`kill(-1)` spares it), so no command can
    end the container under the next one. It has no /dev/shm (`ipc_mode="none"`). Unlike
    `DockerSandbox.run`, nothing here makes one command independent of the one before: processes and
    files outside the mounts stay. The caller resets what it must between commands, or `close`s the
    container; the next command then starts a fresh one. A command still running at its wall-clock
    limit gets the whole container killed (it cannot be trusted to stop)."""

    def __init__(self, sandbox: DockerSandbox, *, mounts: Sequence[Mount], limits: Limits, user: str,
                 lifetime_s: float) -> None:
        self._sandbox = sandbox
        self._mounts = tuple(mounts)
        self._limits = limits
        self.user = user
        self._lifetime_s = lifetime_s
        self._container_id: str | None = None
        self.starts = 0
        """Containers started so far (a fresh one after each `close`)."""

    def run(self, argv: Sequence[str], *, workdir: Path, wall_seconds: float, output_bytes: int) -> SandboxResult:
        """Run `argv` as an exec in `workdir` (inside one of the mounts) and return when its output ends."""
        import docker.errors

        api = self._sandbox._client.api
        for attempt in range(2):
            try:
                container_id = self._ensure_container()
                exec_id = api.exec_create(container_id, list(argv), stdout=True, stderr=True, user=self.user,
                                          workdir=str(workdir), environment={"PATH": CONTAINER_PATH})["Id"]
                stream = self._sandbox._stream_client.api.exec_start(exec_id, stream=True, demux=True)
                break
            except docker.errors.APIError as exc:
                self.close()  # gone or stopped (e.g. its lifetime ran out): the next attempt starts a fresh one
                if attempt == 1:
                    raise SandboxError(f"the Docker engine refused to run the command: {_first_line(exc)}") from exc
        captures = (StreamCapture(output_bytes), StreamCapture(output_bytes))
        reader = threading.Thread(target=_pump, args=(stream, captures), name="engram-docker-exec", daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(wall_seconds)
        wall = time.monotonic() - started
        timed_out = reader.is_alive()
        if timed_out:
            self.close()  # the exec's processes die with the container, and the stream ends
            reader.join(_DRAIN_GRACE_S)
        with contextlib.suppress(Exception):
            stream.close()
        returncode = -signal.SIGKILL
        if not timed_out:
            with contextlib.suppress(Exception):
                code = api.exec_inspect(exec_id).get("ExitCode")
                returncode = _translate(int(code)) if code is not None else returncode
        return SandboxResult(returncode=returncode, timed_out="wall" if timed_out else None,
                             stdout=captures[0].result(), stderr=captures[1].result(), wall_seconds=wall)

    def close(self) -> None:
        container_id, self._container_id = self._container_id, None
        if container_id is None:
            return
        _active.pop(container_id, None)
        with contextlib.suppress(Exception):
            self._sandbox._client.api.remove_container(container_id, force=True)

    def _ensure_container(self) -> str:
        if self._container_id is not None:
            return self._container_id
        options = self._sandbox._container_options(self._mounts, self._limits, {})
        options.update(command=["sleep", f"{math.ceil(self._lifetime_s)}"], user=self.user, init=False,
                       ipc_mode="none", auto_remove=True)
        self._container_id = container_id = _start_long_lived(self._sandbox, options)
        self.starts += 1
        return container_id


def _start_long_lived(sandbox: DockerSandbox, options: dict[str, Any]) -> str:
    """Create and start a container that outlives one command (an agent's shell, a judge's slot),
    registered for clean-up first, so a failed start leaves nothing behind."""
    container = sandbox._client.containers.create(sandbox.resolved.image_id, **options)
    _active[container.id] = sandbox.image
    try:
        container.start()
    except Exception:
        _active.pop(container.id, None)
        _remove(container)
        raise
    return container.id


class _CapWatch:
    """Watches the container's pids cgroup for forks refused by the cap.

    The counter vanishes with the container's cgroup as soon as it stops, so it is sampled while the
    command runs; a refusal in its last few milliseconds may be missed (then stderr is the hint)."""

    def __init__(self, cgroup: Path | None) -> None:
        self.cgroup = cgroup
        self.hit = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engram-docker-pids", daemon=True)
        if cgroup is not None:
            self._thread.start()

    def _loop(self) -> None:
        while not self.hit and not self._stop.is_set():
            self.hit = _cap_hits(self.cgroup)
            self._stop.wait(_POLL_S)

    def stop(self) -> bool:
        self.hit = self.hit or _cap_hits(self.cgroup)
        self._stop.set()
        return self.hit


def sandbox_user(workdir: Path, mounts: Sequence[Mount]) -> str:
    """Who a command runs as inside: when Engram is root, the unprivileged uid of its own that the
    host backends use (`identity`), with the working directory (and writable mounts) handed to it
    first, so that no container ever runs as uid 0; otherwise the working directory's owner."""
    if not identity.running_as_root():
        owner = workdir.stat()
        return f"{owner.st_uid}:{owner.st_gid}"
    uid = identity.uid_for(workdir)
    for path in [workdir, *(m.path for m in mounts if m.writable)]:
        identity.hand_over(path, uid)
    return f"{uid}:{uid}"


def _pump(stream: Iterator[tuple[bytes | None, bytes | None]], captures: tuple[StreamCapture, StreamCapture]) -> None:
    """Feed the demultiplexed output into the two captures until the stream ends or is closed."""
    with contextlib.suppress(Exception):
        for out, err in stream:
            if out:
                captures[0].feed(out)
            if err:
                captures[1].feed(err)


def _ulimits(limits: Limits) -> list[tuple[str, int, int]]:
    """Core-size, CPU-time and file-size rlimits, never above the host's hard limits (the engine would refuse)."""
    # No core dumps: a crashing command would otherwise write one into its (host-visible) working directory.
    wanted = [("core", resource.RLIMIT_CORE, 0, 0),
              ("cpu", resource.RLIMIT_CPU, math.ceil(limits.effective_cpu_seconds), 1)]
    if limits.file_size_bytes is not None:
        wanted.append(("fsize", resource.RLIMIT_FSIZE, limits.file_size_bytes, 0))
    result = []
    for name, which, soft, extra in wanted:
        _, host_hard = resource.getrlimit(which)
        hard = soft + extra  # a second of CPU after SIGXCPU, then SIGKILL
        if host_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, host_hard), min(hard, host_hard)
        result.append((name, soft, hard))
    return result


def _translate(status: int) -> int:
    # docker-init reports a command killed by signal N as 128 + N, like a shell.
    if 128 < status < 128 + signal.NSIG:
        return -(status - 128)
    return status


def _cgroup(container_id: str, controller: str, *markers: str) -> Path | None:
    """The container's cgroup for `controller` on this host (v1, or v2 with the cgroupfs or systemd
    driver), found by one of its `markers` files; None when the engine runs elsewhere (a VM)."""
    for path in (Path("/sys/fs/cgroup", controller, "docker", container_id),
                 Path("/sys/fs/cgroup/docker", container_id),
                 Path("/sys/fs/cgroup/system.slice", f"docker-{container_id}.scope")):
        if any((path / marker).exists() for marker in markers):
            return path
    return None


def _pids_cgroup(container_id: str) -> Path | None:
    return _cgroup(container_id, "pids", "pids.events")


def _memory_cgroup(container_id: str) -> Path | None:
    return _cgroup(container_id, "memory", "memory.oom_control", "memory.events")


def _cap_hits(cgroup: Path | None) -> bool:
    return _cap_count(cgroup) > 0


def _cap_count(cgroup: Path | None) -> int:
    """How many forks the pids cgroup has refused so far."""
    return _counter(cgroup / "pids.events" if cgroup else None, "max")


def _oom_count(cgroup: Path | None) -> int:
    """How many processes the memory cgroup's OOM killer has ended so far (cgroup v1 or v2)."""
    if cgroup is None:
        return 0
    return max(_counter(cgroup / "memory.oom_control", "oom_kill"), _counter(cgroup / "memory.events", "oom_kill"))


def _counter(path: Path | None, key: str) -> int:
    if path is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def _remove(container: Any) -> None:
    """Remove the container whatever happened, even while a KeyboardInterrupt is on its way."""
    import docker.errors

    for _ in range(3):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except Exception:  # removal in progress, engine busy: retry briefly
            time.sleep(0.1)


@dataclass(frozen=True)
class Pruned:
    """What `prune` did: containers removed, and containers kept because their run is alive (or
    was started on another host, where its liveness cannot be checked)."""

    removed: int
    kept: int


def prune(client: Any = None, *, everything: bool = False, labels: Mapping[str, str] | None = None) -> Pruned:
    """Remove the sandbox containers whose owning Engram process is gone (all of them with
    `everything`), optionally only those carrying `labels` (e.g. one run's directory)."""
    import docker

    own = client is None
    client = client or docker.from_env(timeout=int(_CONTROL_TIMEOUT_S))
    wanted = [f"{LABEL}=1"] + [f"{key}={value}" for key, value in (labels or {}).items()]
    try:
        removed = kept = 0
        for container in client.containers.list(all=True, filters={"label": wanted}):
            if not everything and not is_dead(container.labels.get(OWNER_LABEL)):
                kept += 1
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
        return Pruned(removed, kept)
    finally:
        if own:
            client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
