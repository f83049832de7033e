"""The `docker` backend: each command in a fresh, short-lived container of a pinned image.

This is the strongest isolation Engram offers: the command sees only the image's filesystem
(read-only), its own working directory (writable) and the paths it is given, has no network at all
(`network_mode="none"`), no capabilities, cannot gain privileges, and is held by the kernel's
cgroup limits for memory, processes and CPU share. Because the image is pinned (its id is recorded
by `image_digest`), a candidate's score does not depend on what is installed on the host.

One container per call keeps calls independent: nothing a command leaves behind (files in /tmp,
background processes) can affect the next one. The wall-clock limit is enforced from outside (the
engine is asked to wait with a timeout, then to kill), since a process cannot be trusted to time
itself out. Every container carries the label `engram.sandbox=1` so that `engram sandbox prune`
can remove any that a crash of Engram left behind.
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
from pathlib import Path
from typing import Any

from engram.errors import SandboxError
from engram.sandbox.base import Limits, Mount, Sandbox, SandboxResult, StreamCapture

DEFAULT_IMAGE = "engram-sandbox:offline"
IMAGE_ENV = "ENGRAM_SANDBOX_IMAGE"
LABEL = "engram.sandbox"
CONTAINER_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The image's own PATH: the host's PATH names the host interpreter, which does not exist inside."""

_PING_TIMEOUT_S = 3.0
_CONTROL_TIMEOUT_S = 60.0
_DRAIN_GRACE_S = 1.0
_POLL_S = 0.25
_START_HINT = ("start Docker (or, for Engram's developers, `eval \"$(../shared/tools/docker-engine-up.sh)\"`), "
               "or choose --sandbox bwrap|process")


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
            self._image_id: str = self._client.images.get(self.image).id
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(
                f"the Docker sandbox image {self.image!r} is not present: pull or build it "
                f"(developers: ../shared/tools/docker-engine-up.sh builds {DEFAULT_IMAGE}), or set {IMAGE_ENV}"
            ) from exc
        except docker.errors.DockerException as exc:
            raise SandboxError(f"sandbox 'docker' is unavailable: {exc}; {_START_HINT}") from exc

    @property
    def python(self) -> str:
        """The image's interpreter: the host's path does not exist inside the container."""
        return "python3"

    @property
    def image_digest(self) -> str:
        """The image's content id (`sha256:…`), resolved once so runs can record what they ran in."""
        return self._image_id

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
        try:
            container = self._client.containers.create(self.image, **self._create_options(argv, workdir, mounts,
                                                                                            limits, env))
            # Attach before start so no output is lost; the stream comes straight from the container's
            # stdio (the log driver is off, so a flood cannot fill the engine's disk).
            stream = self._stream_client.api.attach(container.id, stdout=True, stderr=True, stream=True,
                                                     demux=True, logs=False)
            captures = (StreamCapture(limits.output_bytes), StreamCapture(limits.output_bytes))
            reader = threading.Thread(target=_pump, args=(stream, captures), name="engram-docker-output",
                                      daemon=True)
            reader.start()
            started = time.monotonic()
            container.start()
            cgroup = _pids_cgroup(container.id)
            status, timed_out, cap_hit = self._wait(container, started + limits.wall_seconds, cgroup)
            wall = time.monotonic() - started
            reader.join(_DRAIN_GRACE_S)
            with contextlib.suppress(Exception):
                stream.close()
            reader.join(_DRAIN_GRACE_S)
            state = self._client.api.inspect_container(container.id).get("State", {})
            oom_killed = bool(state.get("OOMKilled"))
            returncode = _translate(status)
            if cgroup is None and not cap_hit and limits.max_processes and returncode != 0:
                # No view of the container's cgroup (e.g. Docker Desktop's VM): fork failing with
                # EAGAIN under a pids limit is the only sign. It can only mislabel the command's own failure.
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
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            if container is not None:
                _remove(container)

    # -- helpers --------------------------------------------------------------------------------

    def _create_options(self, argv: Sequence[str], workdir: Path, mounts: Sequence[Mount], limits: Limits,
                        env: Mapping[str, str]) -> dict[str, Any]:
        from docker.types import LogConfig, Ulimit
        from docker.types import Mount as DockerMount

        owner = workdir.stat()
        binds = [DockerMount(str(workdir), str(workdir), type="bind", read_only=False)]
        binds += [DockerMount(str(m.inside), str(m.path), type="bind", read_only=not m.writable) for m in mounts]
        environment = {**env, "PATH": CONTAINER_PATH}
        options: dict[str, Any] = {
            "command": list(argv),
            "environment": environment,
            "working_dir": str(workdir),
            "user": f"{owner.st_uid}:{owner.st_gid}",
            "network_mode": "none",
            "hostname": "engram-sandbox",
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=256m"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "init": True,
            "mounts": binds,
            "labels": dict(self.labels),
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

    def _wait(self, container: Any, deadline: float, cgroup: Path | None) -> tuple[int, str | None, bool]:
        """Wait for the container to exit or the deadline; kill it at the deadline.

        Waits in short slices when the container's pids cgroup is visible, to notice a fork that hit
        the process cap (the cgroup, and its counter, vanish when the container stops)."""
        import requests

        cap_hit = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(Exception):
                    container.kill()
                status = self._client.api.wait(container.id, timeout=int(_CONTROL_TIMEOUT_S))
                return int(status.get("StatusCode", -1)), "wall", cap_hit or _cap_hits(cgroup)
            slice_s = min(remaining, _POLL_S) if cgroup is not None else remaining
            try:
                status = self._client.api.wait(container.id, timeout=slice_s)
                return int(status.get("StatusCode", -1)), None, cap_hit
            except requests.exceptions.RequestException:
                cap_hit = cap_hit or _cap_hits(cgroup)


def _pump(stream: Iterator[tuple[bytes | None, bytes | None]], captures: tuple[StreamCapture, StreamCapture]) -> None:
    """Feed the demultiplexed output into the two captures until the stream ends or is closed."""
    with contextlib.suppress(Exception):
        for out, err in stream:
            if out:
                captures[0].feed(out)
            if err:
                captures[1].feed(err)


def _ulimits(limits: Limits) -> list[tuple[str, int, int]]:
    """CPU-time and file-size rlimits, never above the host's hard limits (the engine would refuse)."""
    wanted = [("cpu", resource.RLIMIT_CPU, math.ceil(limits.effective_cpu_seconds), 1)]
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


def _pids_cgroup(container_id: str) -> Path | None:
    """The container's pids cgroup on this host, if the engine runs here with a known layout."""
    for path in (Path("/sys/fs/cgroup/pids/docker", container_id),
                 Path("/sys/fs/cgroup/docker", container_id),
                 Path("/sys/fs/cgroup/system.slice", f"docker-{container_id}.scope")):
        if (path / "pids.events").exists():
            return path
    return None


def _cap_hits(cgroup: Path | None) -> bool:
    if cgroup is None:
        return False
    with contextlib.suppress(OSError, ValueError):
        for line in (cgroup / "pids.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and int(value) > 0:
                return True
    return False


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


def prune(client: Any = None) -> int:
    """Remove every container labelled `engram.sandbox=1` (left by a crash); return how many."""
    import docker

    own = client is None
    client = client or docker.from_env(timeout=int(_CONTROL_TIMEOUT_S))
    try:
        removed = 0
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
        return removed
    finally:
        if own:
            client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
