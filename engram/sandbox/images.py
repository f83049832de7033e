"""Docker sandbox images: building Engram's default image, and pinning the one a run uses.

A run's scores depend on the interpreter and libraries its candidates import, so the image is part
of the experiment. A spec pins it by content: `repo@sha256:<digest>` for an image from a registry,
or `sha256:<id>` for one built locally. A spec that names a mutable tag still runs, but gets a
warning naming the digest the tag resolved to, and the resolved spec records that digest either way.

`engram sandbox build` builds `engram/sandbox/image/Dockerfile` from the lock file
`requirements.lock` (every package by exact version and hash, compiled from `requirements.in`) with
`pip install --require-hashes --no-deps`, so the same lock gives the same packages on any machine,
whatever the index serves that day. Online it installs from PyPI inside the build, on a base named by
digest. Offline (`--offline`: no registry reachable, as on Engram's CI machines) it downloads the
locked wheels on the host first (checking their hashes) and installs them in a build with no network
at all, on top of any local Python 3.11 image given as `--base`.

Every build is also tagged `engram-sandbox:lock-<lock hash>` and labelled with the lock's hash. A
spec with `sandbox.image: locked` (the paper grid's) runs in that image: the lock in the checkout
names it, the label proves it was built from that lock, and a missing one stops the run with the
command that builds it. Image ids differ between rebuilds (timestamps), so the lock, not the id, is
what a spec can pin across machines; the run still records the id it ran in.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from engram.errors import SandboxError

DEFAULT_TAG = "engram-sandbox:latest"
DEFAULT_BASE = ("python:3.11-slim-bookworm"
                "@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b")
LABEL_PREFIX = "org.engram.sandbox"
LOCK_LABEL = f"{LABEL_PREFIX}.lock"
LOCKED = "locked"
"""The `sandbox.image` value that names the image built from this checkout's lock file."""
LOCK_FILE = "requirements.lock"
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64", "any")
_PINNED = re.compile(r"(^sha256:[0-9a-f]{64}$)|(@sha256:[0-9a-f]{64}$)")


@dataclass(frozen=True)
class ResolvedImage:
    """What a reference named, and the content it resolved to on this engine."""

    reference: str
    image_id: str
    repo_digests: tuple[str, ...]
    lock: str | None = None
    """The hash of the lock file the image was verified to be built from (`sandbox.image: locked`)."""

    @property
    def pinned(self) -> bool:
        return self.lock is not None or is_pinned(self.reference)

    @property
    def digest(self) -> str:
        """The most portable content reference: a registry digest if the image has one, else its id."""
        return self.repo_digests[0] if self.repo_digests else self.image_id

    def unpinned_warning(self) -> str | None:
        if self.pinned:
            return None
        return (f"sandbox image {self.reference!r} is not pinned; it resolved to {self.digest}. "
                f"Pin it for reproducible results: sandbox.image: {self.digest}")


def is_pinned(reference: str) -> bool:
    """True when a reference names image content (a digest or an id), not a mutable tag."""
    return bool(_PINNED.search(reference.strip()))


def resolve_image(client: Any, reference: str) -> ResolvedImage:
    """Look the image up on the engine; a missing one is an error saying how to get it."""
    import docker.errors

    if reference.strip() == LOCKED:
        return _resolve_locked(client)
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(
            f"the Docker sandbox image {reference!r} is not present on this engine: build it with "
            f"`engram sandbox build` (add --offline --base IMAGE when no registry is reachable), "
            f"pull it, or choose another image with sandbox.image / $ENGRAM_SANDBOX_IMAGE"
        ) from exc
    return ResolvedImage(reference, image.id, tuple(image.attrs.get("RepoDigests") or ()))


def _resolve_locked(client: Any) -> ResolvedImage:
    """The image built from this checkout's lock: its lock tag, checked against the label."""
    import docker.errors

    tag, digest = locked_tag(), lock_digest()
    build = ("build it with `engram sandbox build` (add --offline --base IMAGE when no registry is "
             "reachable); see docs/paper-grid.md")
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(f"the locked sandbox image {tag} (built from engram/sandbox/image/{LOCK_FILE}) "
                           f"is not present on this engine: {build}") from exc
    found = (image.labels or {}).get(LOCK_LABEL)
    if found != digest:
        raise SandboxError(f"the image tagged {tag} was not built from this checkout's lock file (its label "
                           f"says {found or 'nothing'}, the lock hashes to {digest}): {build}")
    return ResolvedImage(tag, image.id, tuple(image.attrs.get("RepoDigests") or ()), lock=digest)


def image_files() -> Path:
    """The directory holding the Dockerfile, requirements.in and the lock shipped with Engram."""
    return Path(str(resources.files("engram.sandbox") / "image"))


def lock_digest() -> str:
    """The identity of a locked image: the sha256 of its recipe, the lock file and the Dockerfile.

    The Dockerfile counts too: a step added to it (g++ for C++ candidates) changes what candidates run
    with as surely as a changed package does, so an image built before it must not pass for current."""
    recipe = hashlib.sha256((image_files() / LOCK_FILE).read_bytes())
    recipe.update(b"\0")
    recipe.update((image_files() / "Dockerfile").read_bytes())
    return recipe.hexdigest()


def locked_tag() -> str:
    """The tag every build gets for the lock it installed (what `sandbox.image: locked` runs)."""
    return f"engram-sandbox:lock-{lock_digest()[:12]}"


def requirements() -> dict[str, str]:
    """Every package of the lock (direct and transitive), by normalised name, with its exact version."""
    pins = {}
    for line in (image_files() / LOCK_FILE).read_text(encoding="utf-8").splitlines():
        match = _LOCK_LINE.match(line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (PuLP, pulp and scikit_learn match their lock lines)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    base: str
    base_id: str | None
    offline: bool


def build_image(
    *,
    tag: str = DEFAULT_TAG,
    base: str = DEFAULT_BASE,
    offline: bool = False,
    no_cache: bool = False,
    wheel_cache: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
    client: Any = None,
) -> BuildResult:
    """Build the default sandbox image from the lock, tag it `tag` and its lock tag, and return its id;
    see the module docstring for the two modes."""
    import docker

    own_client = client is None
    client = client or docker.from_env(timeout=600)
    try:
        base_id = _local_image_id(client, base)
        if offline and base_id is None:
            raise SandboxError(f"--offline needs the base image {base!r} on this engine already "
                               f"(no registry is reachable to pull it); name a local Python 3.11 image with --base")
        with tempfile.TemporaryDirectory(prefix="engram-image-") as context_dir:
            context = Path(context_dir)
            _write_context(context)
            options = ""
            if offline:
                wheels = download_wheels(wheel_cache or _default_wheel_cache(), say=say)
                for wheel in wheels:
                    shutil.copy2(wheel, context / "wheels" / wheel.name)
                options = "--no-index --find-links /tmp/engram-build/wheels"
                for deb in download_debs(client, base_id or base, _default_wheel_cache().parent / "sandbox-debs",
                                         say=say):
                    shutil.copy2(deb, context / "debs" / deb.name)
            say(f"building {tag} from {base}{' (offline)' if offline else ''}")
            image = _docker_build(client, context, tag=tag, base=base, pip_options=options,
                                  offline=offline, no_cache=no_cache, base_id=base_id, say=say)
            repository, _, name = locked_tag().partition(":")
            image.tag(repository, name)
        return BuildResult(tag=tag, image_id=image.id, base=base, base_id=base_id, offline=offline)
    finally:
        if own_client:
            client.close()


def download_wheels(cache: Path, *, say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Fetch the lock's CPython 3.11 Linux wheels into `cache`, each checked against its locked hash,
    and the host's pip (to install them on a base that has none; it is not left in the image).

    The cache is keyed by the lock, so a changed pin never reuses stale wheels."""
    target = cache / lock_digest()[:16]
    done = target / ".complete"
    if not done.is_file():
        target.mkdir(parents=True, exist_ok=True)
        say(f"downloading wheels into {target}")
        wheel_options = ["--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
                         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                         *[arg for platform in _WHEEL_PLATFORMS for arg in ("--platform", platform)],
                         "--dest", str(target)]
        _pip_download([*wheel_options, "--require-hashes", "-r", str(image_files() / LOCK_FILE)])
        _pip_download([*wheel_options, f"pip=={_host_version('pip')}"])
        done.write_text("ok\n", encoding="utf-8")
    return sorted(target.glob("*.whl"))


DEB_PACKAGES = ("g++",)
"""Debian packages the image adds to its base (with their dependencies): the C++ compiler."""


def download_debs(client: Any, base: str, cache: Path, *, say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Fetch, with the host's apt, the .deb files of `DEB_PACKAGES` and their dependencies that the base
    image lacks, so an offline build can install them without a network. The host must run the same
    Debian release as the base (Engram's CI does: bookworm)."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise SandboxError("an offline build fetches g++ for the image with the host's apt-get, which this host "
                           "lacks; build online instead (`engram sandbox build` without --offline)")
    listed = client.containers.run(base, ["dpkg-query", "-W", "-f=${Package}\\n"], remove=True,
                                   network_mode="none")
    installed = {line.split(":")[0] for line in listed.decode().split()}
    closure = _apt_closure()
    if closure.returncode != 0 or not closure.stdout.strip():  # no package lists yet: fetch them once
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        closure = _apt_closure()
    names = {line.strip() for line in closure.stdout.splitlines() if line.strip() and not line.startswith((" ", "<"))}
    if closure.returncode != 0 or not names:
        raise SandboxError(f"apt-cache could not resolve {', '.join(DEB_PACKAGES)} on this host: "
                           f"{closure.stderr.strip()[-500:]}")
    wanted = sorted(names - installed)
    target = cache / hashlib.sha256(" ".join(wanted).encode()).hexdigest()[:16]
    done = target / ".complete"
    if wanted and not done.is_file():
        target.mkdir(parents=True, exist_ok=True)
        say(f"downloading {len(wanted)} Debian package(s) into {target}")
        fetched = subprocess.run(["apt-get", "download", "-qq", *wanted], cwd=target, capture_output=True,
                                 text=True, check=False)
        if fetched.returncode != 0:
            raise SandboxError(f"could not download the image's Debian packages (apt-get download exited "
                               f"{fetched.returncode}): {fetched.stderr.strip()[-800:]}")
        done.write_text("ok\n", encoding="utf-8")
    return sorted(target.glob("*.deb")) if wanted else []


def _apt_closure() -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                           "--no-breaks", "--no-replaces", "--no-enhances", *DEB_PACKAGES],
                          capture_output=True, text=True, check=False)


def _pip_download(arguments: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "download", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SandboxError(f"could not download the sandbox image's wheels (pip download exited "
                           f"{completed.returncode}): {completed.stderr.strip()[-800:]}")


def _host_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def _default_wheel_cache() -> Path:
    from engram.problems.data import cache_root

    return cache_root().parent / "sandbox-wheels"


def _write_context(context: Path) -> None:
    for name in ("Dockerfile", LOCK_FILE):
        shutil.copy2(image_files() / name, context / name)
    (context / "wheels").mkdir()
    # COPY needs the folder to exist in the context even when an online build has no wheels.
    (context / "wheels" / "README").write_text("wheels for an offline build\n", encoding="utf-8")
    (context / "debs").mkdir()
    (context / "debs" / "README").write_text("Debian packages (g++) for an offline build\n", encoding="utf-8")


def _docker_build(client: Any, context: Path, *, tag: str, base: str, pip_options: str, offline: bool,
                  no_cache: bool, base_id: str | None, say: Callable[[str], None]) -> Any:
    import docker.errors

    labels = {
        f"{LABEL_PREFIX}.base": base,
        f"{LABEL_PREFIX}.base-id": base_id or "",
        f"{LABEL_PREFIX}.requirements": ",".join(f"{name}=={version}" for name, version in requirements().items()),
        LOCK_LABEL: lock_digest(),
    }
    try:
        image, log = client.images.build(
            path=str(context), tag=tag, rm=True, forcerm=True, pull=False, labels=labels, nocache=no_cache,
            buildargs={"BASE_IMAGE": base, "PIP_OPTIONS": pip_options},
            network_mode="none" if offline else None,
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)[-1500:]
        raise SandboxError(f"building the sandbox image failed: {exc.msg}\n{tail}") from exc
    except docker.errors.APIError as exc:
        raise SandboxError(f"the Docker engine refused the build: {exc}") from exc
    for chunk in log:
        line = str(chunk.get("stream", "")).strip()
        if line.startswith("Step "):
            say(line)
    return image


def _local_image_id(client: Any, reference: str) -> str | None:
    import docker.errors

    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None
