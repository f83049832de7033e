"""The pinned upstream files of Frontier-CS's algorithmic track, as data-manifest entries.

`upstream.sha256` (beside this module) is the data copy's `MANIFEST.sha256`, verbatim: the sha256 of
every file under `algorithmic/` at commit 4d508c19, statements and tests as well as the checkers,
interactors and `testlib.h`, which the data copy leaves out because they are programs. Each line
becomes a `DataFile` at `frontier-cs/<path>`, so these files are fetched, cached and verified
exactly like any other problem's data, and a data directory (`ENGRAM_DATA_DIR`) that holds a file
is used as is. Files the manifest does not list (inputs too large for the data copy) do not exist
as far as the judge is concerned: their cases cannot be judged.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from engram.problems.data import DataFile

COMMIT = "4d508c1954766e0dda0347e1f14946978ef6b761"
DATA_PREFIX = "frontier-cs"
_RAW = f"https://raw.githubusercontent.com/FrontierCS/Frontier-CS/{COMMIT}/algorithmic/"
_MANIFEST = Path(__file__).with_name("upstream.sha256")
_UPSTREAM_PATHS = {"include/testlib.h": "judge/include/testlib.h", "include/langs.yaml": "judge/config/langs.yaml"}
"""Files the data copy keeps under another path than the upstream repository does."""
_PROBLEM_FILE = re.compile(r"^problems/(\d+)/(.+)$")
TESTLIB = "include/testlib.h"


@dataclass(frozen=True)
class UpstreamManifest:
    """Every upstream file by its path under `algorithmic/` (e.g. `problems/7/chk.cc`)."""

    entries: dict[str, DataFile]

    def problem_ids(self) -> list[int]:
        ids = {int(m.group(1)) for path in self.entries if (m := _PROBLEM_FILE.match(path))}
        return sorted(ids)

    def files_of(self, problem_id: int) -> dict[str, DataFile]:
        """A problem's files by their path inside its folder (`config.yaml`, `testdata/1.in`, ...)."""
        prefix = f"problems/{problem_id}/"
        return {path.removeprefix(prefix): entry for path, entry in self.entries.items() if path.startswith(prefix)}

    def entry(self, path: str) -> DataFile:
        return self.entries[path]


def data_file(relative: str, sha256: str) -> DataFile:
    """The manifest entry of one upstream file (path relative to `algorithmic/`)."""
    return DataFile(path=f"{DATA_PREFIX}/algorithmic/{relative}", url=_RAW + _UPSTREAM_PATHS.get(relative, relative),
                    sha256=sha256, description="Frontier-CS (MIT), FrontierCS/Frontier-CS@" + COMMIT[:8])


@functools.cache
def upstream_manifest() -> UpstreamManifest:
    entries: dict[str, DataFile] = {}
    for line in _MANIFEST.read_text(encoding="utf-8").splitlines():
        digest, _, path = line.partition("  ")
        if path.startswith("algorithmic/"):
            relative = path.removeprefix("algorithmic/")
            entries[relative] = data_file(relative, digest)
    return UpstreamManifest(entries)
