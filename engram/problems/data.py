"""Benchmark data files: declared in a problem's manifest, fetched once, always verified.

Each file is pinned by a public URL (at a fixed commit) and a checksum. Files are looked up in a
local mirror when `ENGRAM_DATA_DIR` is set (how tests and CI run), otherwise in a per-user cache
(`$XDG_CACHE_HOME/engram/data`), downloading on first use. A file is re-hashed whenever its inode
metadata changes, so a file edited behind Engram's back (for example by a candidate program run
without isolation) is caught before it is used again. Tar archives are unpacked once into the
cache (`unpacked`), the members a problem reads only, checked against their sha256 on every use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engram.errors import DataError

DATA_DIR_ENV = "ENGRAM_DATA_DIR"
CACHE_DIR_ENV = "ENGRAM_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 60

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Hex40 = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]


class DataFile(BaseModel):
    """One entry of a problem's data manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Path relative to the data root, e.g. cloudcast/profiles/cost.csv")
    url: str = Field(description="Public URL pinned to a commit, so the bytes never change")
    sha256: Hex64 | None = None
    git_blob: Hex40 | None = Field(default=None, description="git blob id, for files known only by it")
    description: str = ""

    @model_validator(mode="after")
    def _needs_a_checksum(self) -> DataFile:
        if not self.sha256 and not self.git_blob:
            raise ValueError("give sha256 (or git_blob) so the file can be verified")
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ValueError("path must be relative to the data root and stay inside it")
        return self

    def checksum_label(self) -> str:
        return f"sha256 {self.sha256}" if self.sha256 else f"git blob {self.git_blob}"


def cache_root() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / "data"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "engram" / "data"


def mirror_root() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser().resolve() if value else None


@dataclass(frozen=True)
class _StatKey:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _StatKey:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


_verified: dict[Path, _StatKey] = {}


def digest_matches(entry: DataFile, path: Path) -> bool:
    if entry.sha256:
        return _sha256(path) == entry.sha256
    return _git_blob_id(path) == entry.git_blob


def verify(entry: DataFile, path: Path) -> None:
    """Raise `DataError` unless `path` holds exactly the bytes the manifest pins."""
    key = _StatKey.of(path)
    if _verified.get(path) == key:
        return
    if not digest_matches(entry, path):
        _verified.pop(path, None)
        raise DataError(
            f"data file {entry.path} at {path} does not match the problem's manifest: the manifest says "
            f"{entry.checksum_label()}, the file has {_actual_label(entry, path)}. Either the manifest's checksum "
            f"is wrong (fix it in the problem's problem.yaml) or the file is not the published one "
            f"(restore it from {entry.url}{'' if mirror_root() else ', or delete it so Engram fetches it again'})."
        )
    _verified[path] = key


def resolve(entry: DataFile) -> Path:
    """Return the verified local path of a data file, fetching it into the cache if needed."""
    mirror = mirror_root()
    if mirror is not None:
        path = mirror / entry.path
        if not path.is_file():
            raise DataError(
                f"data file {entry.path} not found at {path} ({DATA_DIR_ENV}={mirror}). Put the file there "
                f"(it is published at {entry.url}), or unset {DATA_DIR_ENV} to let Engram download it."
            )
        verify(entry, path)
        return path
    path = cache_root() / entry.path
    if not path.is_file():
        _download(entry, path)
    verify(entry, path)
    return path


def unpacked(entry: DataFile, expected: Mapping[str, str]) -> Path:
    """Directory holding members of a verified tar archive, unpacked once into the cache.

    `expected` maps the member paths the caller reads to their sha256; only those are unpacked.
    They are checked on every call, and unpacked afresh if any is missing or altered, so a file
    changed in the cache behind Engram's back (by a candidate run without isolation) is never read.
    """
    archive = resolve(entry)
    root = cache_root() / "unpacked" / (entry.sha256 or entry.git_blob or "")
    if root.is_dir() and _members_match(root, expected):
        return root
    staging = Path(tempfile.mkdtemp(dir=_ensure_dir(root.parent), prefix=root.name, suffix=".part"))
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.name in expected:
                    _extract_regular_file(tar, member, staging)
        if not _members_match(staging, expected):
            raise DataError(f"data file {entry.path} ({archive}) does not contain the expected files; "
                            f"the problem's list of members does not belong to this archive")
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(staging, root)
        except OSError:  # another process unpacked it at the same moment
            if not _members_match(root, expected):
                raise
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot unpack data file {entry.path} ({archive}) into {root}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _extract_regular_file(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
    """Copy one member's bytes under `staging`, refusing anything but a regular file at a relative path
    inside it. Written by hand, not with `extract(filter="data")`: that filter exists only from Python
    3.11.4, and Debian's 3.11.2 must be as safe."""
    parts = Path(member.name).parts
    if not member.isfile() or not parts or Path(member.name).is_absolute() or ".." in parts:
        raise tarfile.TarError(f"member {member.name!r} is not a regular file inside the archive's folder")
    target = staging.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise tarfile.TarError(f"member {member.name!r} has no contents")
    with source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _members_match(root: Path, expected: Mapping[str, str]) -> bool:
    for member, digest in expected.items():
        path = root / member
        if not path.is_file() or _sha256(path) != digest:
            return False
    return True


def _download(entry: DataFile, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    print(f"engram: fetching {entry.path} from {entry.url}", file=sys.stderr)
    fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if not digest_matches(entry, Path(partial)):
            raise DataError(
                f"downloaded {entry.url} but it does not match the problem's manifest: the manifest says "
                f"{entry.checksum_label()}, the download has {_actual_label(entry, Path(partial))}; the file was "
                f"not saved. Check the manifest's checksum and that the URL is pinned to the right commit."
            )
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(
            f"cannot fetch data file {entry.path} from {entry.url} ({exc}). Without internet, point Engram at a "
            f"local copy of the data: export {DATA_DIR_ENV}=DIR, where DIR holds {entry.path} (and the problems' "
            f"other files, laid out as in their manifests); or download this file by hand to {destination}."
        ) from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _actual_label(entry: DataFile, path: Path) -> str:
    return f"sha256 {_sha256(path)}" if entry.sha256 else f"git blob {_git_blob_id(path)}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_regular(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with _open_regular(path) as handle:
        digest.update(f"blob {os.fstat(handle.fileno()).st_size}\0".encode())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _open_regular(path: Path) -> BinaryIO:
    """Open a data file for hashing; something else put in its place (a FIFO would block the
    runner forever) is a corrupt data file, not a wait."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"data file {path} is not a regular file; remove it so that it is fetched again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
