"""The locked sandbox image: a lock file pinning every package by version and hash, equal to what the
host's backends import (so a program scores the same everywhere), and an image built from it that holds
exactly the lock, is found by `sandbox.image: locked`, and stops a run that lacks it with the command
that builds it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
from conftest import require_backend

from engram.errors import SandboxError
from engram.sandbox import images
from engram.sandbox.images import LOCK_FILE, image_files, lock_digest, locked_tag, normalise, requirements

REPO = Path(__file__).resolve().parents[1]
LISTING = ("import importlib.metadata as m, json, sysconfig\n"
           "site = sysconfig.get_paths()['purelib']\n"
           "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions(path=[site])}))")


def _lock_entries() -> list[str]:
    """The lock's requirement entries, each with its continuation lines joined."""
    text = (image_files() / LOCK_FILE).read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_locked_package_has_an_exact_version_and_hashes():
    entries = _lock_entries()
    assert len(entries) == len(requirements()) >= 20
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9._-]+==\S+ ", entry), entry
        assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", entry)) >= 1, entry


def test_the_lock_holds_the_inputs_pins():
    """requirements.in names what candidates import; the lock must carry each at its pinned version."""
    pins = {}
    for line in (image_files() / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalise(name)] = version
    locked = requirements()
    assert {"numpy", "pandas", "scipy", "networkx", "pulp", "scikit-learn"} <= set(pins)
    assert {name: locked.get(name) for name in pins} == pins
    assert locked["pandas"].startswith("2.")


def test_the_host_imports_the_locked_versions():
    """The process and bwrap backends import the host's packages: they must be the lock's, or the same
    program could score differently in Docker. Fix: pip install --no-deps -r engram/sandbox/image/requirements.lock"""
    host = {}
    for name in requirements():
        try:
            host[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            host[name] = None
    assert host == requirements()


def test_the_locked_tag_names_the_lock():
    assert locked_tag() == f"engram-sandbox:lock-{lock_digest()[:12]}"
    recipe = REPO / "engram/sandbox/image"
    expected = hashlib.sha256((recipe / LOCK_FILE).read_bytes() + b"\0" + (recipe / "Dockerfile").read_bytes())
    assert lock_digest() == expected.hexdigest()  # the Dockerfile is part of the image's identity


# -- against a real engine (the image the tests build with `engram sandbox build`'s code) ---------------


@pytest.fixture(scope="module")
def locked_sandbox():
    require_backend("docker")
    from engram.sandbox import get_sandbox

    return get_sandbox("docker", quiet=True, image="locked")


def test_the_built_image_holds_exactly_the_lock(locked_sandbox, tmp_path: Path):
    from engram.runs.runner import _image_record
    from engram.sandbox import Limits, clean_environment

    resolved = locked_sandbox.resolved
    assert resolved.reference == locked_tag() and resolved.lock == lock_digest() and resolved.pinned
    # What a run records: the lock's tag and hash, and the id of the image its candidates ran in.
    assert _image_record(locked_sandbox) == {"reference": locked_tag(), "digest": resolved.image_id,
                                             "image_id": resolved.image_id, "pinned": True, "lock": lock_digest()}
    result = locked_sandbox.run([locked_sandbox.python, "-c", LISTING], workdir=tmp_path, limits=Limits(),
                                env=clean_environment(tmp_path))
    installed = {normalise(name): version for name, version in json.loads(result.stdout.text()).items()}
    installed.pop("pip", None)  # a base's own installer (the online base has one), never a candidate's import
    assert installed == requirements()
    cbc = locked_sandbox.run([locked_sandbox.python, "-c", "import pulp; print(pulp.PULP_CBC_CMD().available())"],
                             workdir=tmp_path, limits=Limits(), env=clean_environment(tmp_path))
    assert "cbc" in cbc.stdout.text()


def test_a_missing_locked_image_stops_the_run_before_anything_is_created(locked_sandbox, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    from engram.runs.progress import QuietProgress
    from engram.runs.runner import apply

    monkeypatch.setattr(images, "lock_digest", lambda: "0" * 64)  # a lock no image was built from
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    with pytest.raises(SandboxError, match=r"engram-sandbox:lock-000000000000 .* is not present on this engine: "
                                           r"build it with `engram sandbox build`"):
        apply(REPO / "specs" / "cloudcast_o3.yaml", [f"output.dir={tmp_path}"], QuietProgress())
    assert not any(tmp_path.iterdir())


def test_an_image_from_another_lock_is_refused(locked_sandbox, monkeypatch: pytest.MonkeyPatch):
    import docker

    from engram.sandbox import get_sandbox

    client = docker.from_env()
    image = client.images.get(locked_tag())
    image.tag("engram-sandbox", "lock-ffffffffffff")
    try:
        monkeypatch.setattr(images, "lock_digest", lambda: "f" * 64)
        with pytest.raises(SandboxError, match="was not built from this checkout's lock file"):
            get_sandbox("docker", quiet=True, image="locked")
    finally:
        client.images.remove("engram-sandbox:lock-ffffffffffff")
        client.close()
