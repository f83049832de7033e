"""Where a Frontier-CS problem's files come from: the pinned upstream manifest, or a folder on disk.

`UpstreamSource` is one of the 156 published problems: each file is a data-manifest entry, fetched
into the cache (or taken from `ENGRAM_DATA_DIR`) and verified against its sha256 before use.
`FolderSource` is a folder laid out like an upstream problem (`config.yaml`, `statement.txt`,
`testdata/<k>.in|.ans`, the checker or interactor source), used as it is: a user's own problem,
or the test suite's. Its `testlib.h` is `../../include/testlib.h` beside it when present, else the
pinned upstream one.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from engram.errors import DataError
from engram.frontier_cs.manifest import TESTLIB, upstream_manifest
from engram.problems import data as data_files
from engram.problems.data import DataFile


class ProblemSource(ABC):
    """A problem's files by their path inside its folder (`config.yaml`, `testdata/1.in`, ...)."""

    label: str

    @abstractmethod
    def has(self, relative: str) -> bool:
        """Whether the file exists at all (for the upstream source: whether the manifest lists it)."""

    @abstractmethod
    def path(self, relative: str) -> Path:
        """The verified local file, fetched on first use; `DataError` if it cannot be had."""

    @abstractmethod
    def testlib(self) -> Path | None:
        """The `testlib.h` its checker or interactor is compiled with (None: compiled without one)."""

    @abstractmethod
    def where(self, relative: str) -> str:
        """Where the file was looked for, for a message saying it is missing."""

    @abstractmethod
    def how_to_get(self, relative: str, name: str) -> str:
        """What to do when the file is missing."""

    @abstractmethod
    def checksums(self) -> list[str]:
        """One line per file the score depends on, for the problem's fingerprint."""

    def data_entries(self) -> list[DataFile]:
        return []

    def cached_text(self, relative: str) -> str | None:
        """The file's text if it is already local (nothing is fetched), else None."""
        try:
            return self.path(relative).read_text(encoding="utf-8", errors="replace") if self.is_local(relative) \
                else None
        except (DataError, OSError):
            return None

    def is_local(self, relative: str) -> bool:
        return self.has(relative)


@dataclass(frozen=True)
class UpstreamSource(ProblemSource):
    problem_id: int

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"Frontier-CS problem {self.problem_id}"

    @property
    def entries(self) -> dict[str, DataFile]:
        return upstream_manifest().files_of(self.problem_id)

    def has(self, relative: str) -> bool:
        return relative in self.entries

    def path(self, relative: str) -> Path:
        entry = self.entries.get(relative)
        if entry is None:
            raise DataError(f"{self.label} has no file {relative} in the upstream manifest")
        return data_files.resolve(entry)

    def testlib(self) -> Path:
        return data_files.resolve(upstream_manifest().entry(TESTLIB))

    def _entry(self, relative: str) -> DataFile:
        return upstream_manifest().entry(TESTLIB) if relative == TESTLIB else self.entries[relative]

    def where(self, relative: str) -> str:
        mirror = data_files.mirror_root()
        if mirror is not None:
            return f"not in {data_files.DATA_DIR_ENV}={mirror}"
        return f"not in the cache {data_files.cache_root()} and not downloadable from here"

    def how_to_get(self, relative: str, name: str) -> str:
        entry = self._entry(relative)
        mirror = data_files.mirror_root()
        target = (mirror if mirror is not None else data_files.cache_root()) / entry.path
        return (f"run `engram data {name}` where GitHub is reachable (unset {data_files.DATA_DIR_ENV} to use the "
                f"cache), or download {entry.url} to {target}")

    def checksums(self) -> list[str]:
        return [f"{e.sha256}  {p}" for p, e in sorted(self.entries.items())] + \
            [f"{upstream_manifest().entry(TESTLIB).sha256}  {TESTLIB}"]

    def data_entries(self) -> list[DataFile]:
        return [*self.entries.values(), upstream_manifest().entry(TESTLIB)]

    def is_local(self, relative: str) -> bool:
        entry = self.entries.get(relative)
        if entry is None:
            return False
        mirror = data_files.mirror_root()
        local = (mirror if mirror is not None else data_files.cache_root()) / entry.path
        return local.is_file()


@dataclass(frozen=True)
class FolderSource(ProblemSource):
    root: Path

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"the Frontier-CS-style problem in {self.root}"

    def has(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def path(self, relative: str) -> Path:
        path = self.root / relative
        if not path.is_file():
            raise DataError(f"{self.label} has no file {relative}")
        return path

    def testlib(self) -> Path | None:
        """`../../include/testlib.h` beside the folder, else the pinned upstream one if it is already in the
        data directory or the cache (nothing is downloaded for a folder problem), else None: a checker
        that includes it then fails to compile, saying so."""
        beside = self.root.parent.parent / "include" / "testlib.h"
        if beside.is_file():
            return beside
        entry = upstream_manifest().entry(TESTLIB)
        mirror = data_files.mirror_root()
        if not ((mirror if mirror is not None else data_files.cache_root()) / entry.path).is_file():
            return None
        try:
            return data_files.resolve(entry)
        except DataError:
            return None

    def where(self, relative: str) -> str:
        return f"not in {self.root}"

    def how_to_get(self, relative: str, name: str) -> str:
        return f"put it at {self.root / relative}"

    def checksums(self) -> list[str]:
        lines = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(self.root)}")
        return lines

