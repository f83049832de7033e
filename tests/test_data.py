"""Data manifest: fetched once into the cache, verified by checksum, clear errors when not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engram.errors import DataError
from engram.problems import data


def _entry(source: Path, **overrides: str) -> data.DataFile:
    fields = {"path": "demo/values.csv", "url": source.as_uri(),
              "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    fields.update(overrides)
    return data.DataFile(**fields)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ENGRAM_DATA_DIR", raising=False)
    monkeypatch.setenv("ENGRAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    source = tmp_path / "origin" / "values.csv"
    source.parent.mkdir()
    source.write_text("a,b\n1,2\n")
    return source


def test_fetched_once_then_served_from_cache(cache: Path, origin: Path):
    entry = _entry(origin)
    first = data.resolve(entry)
    assert first == cache / "demo" / "values.csv"
    assert first.read_text() == "a,b\n1,2\n"
    origin.unlink()  # a second resolve must not need the origin
    assert data.resolve(entry) == first


def test_download_with_wrong_checksum_is_not_kept(cache: Path, origin: Path):
    entry = _entry(origin, sha256="0" * 64)
    with pytest.raises(DataError, match=r"manifest says sha256 0+, the download has sha256 "):
        data.resolve(entry)
    assert not (cache / "demo" / "values.csv").exists()
    assert not list((cache / "demo").glob("*.part"))


def test_unreachable_origin_says_where_to_put_the_file(cache: Path, tmp_path: Path):
    entry = data.DataFile(path="demo/values.csv", url=(tmp_path / "missing.csv").as_uri(), sha256="0" * 64)
    with pytest.raises(DataError) as caught:
        data.resolve(entry)
    message = str(caught.value)
    assert "demo/values.csv" in message and str(cache / "demo" / "values.csv") in message
    assert "ENGRAM_DATA_DIR" in message


def test_cached_file_changed_later_is_caught(cache: Path, origin: Path):
    entry = _entry(origin)
    path = data.resolve(entry)
    path.write_text("a,b\n9,9\n")
    with pytest.raises(DataError, match=r"does not match the problem's manifest"):
        data.resolve(entry)


def test_git_blob_ids_verify_too(cache: Path, origin: Path):
    blob = hashlib.sha1(b"blob %d\0" % origin.stat().st_size + origin.read_bytes()).hexdigest()
    entry = data.DataFile(path="demo/values.csv", url=origin.as_uri(), git_blob=blob)
    assert data.resolve(entry).read_bytes() == origin.read_bytes()


def test_mirror_directory_is_used_and_checked(tmp_path: Path, origin: Path, monkeypatch: pytest.MonkeyPatch):
    mirror = tmp_path / "mirror"
    (mirror / "demo").mkdir(parents=True)
    (mirror / "demo" / "values.csv").write_bytes(origin.read_bytes())
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(mirror))
    entry = _entry(origin)
    assert data.resolve(entry) == mirror / "demo" / "values.csv"
    (mirror / "demo" / "values.csv").unlink()
    with pytest.raises(DataError, match=r"not found at .*mirror/demo/values.csv"):
        data.resolve(entry)


def test_shared_mirror_matches_the_cloudcast_manifest(cloudcast):
    paths = cloudcast.ensure_data()
    assert len(paths) == 7 and all(p.is_file() for p in paths)
