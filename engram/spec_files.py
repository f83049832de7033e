"""Which spec files a command line means: a folder stands for the specs in it, a grid file for its
entries, and a path that does not exist is matched to the spec its author most likely meant.

`engram validate` is the check to run before a long sweep, so it must accept whatever `engram
apply` accepts (grid files, `dvc.yaml`) and whole folders such as `specs/`; a mistyped path is the
most common first error and deserves the one hint that fixes it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from engram.errors import ConfigError

SPEC_SUFFIXES = (".yaml", ".yml")
SPECS_FOLDER = Path("specs")
"""Where the project keeps its specs: a bare name such as `smoke` is looked for there."""


@dataclass(frozen=True)
class SpecToCheck:
    label: str
    """How the spec is named in messages: its path, or the grid file and the entry's spec."""
    path: Path
    overrides: tuple[str, ...] = ()
    grid: Path | None = None
    """The grid file that lists it, which an error names first (the spec's own errors name the spec)."""


def specs_to_check(path: Path, overrides: tuple[str, ...] = ()) -> list[SpecToCheck]:
    """The specs `path` stands for, each with the overrides it runs with (a grid entry's, then `overrides`).

    A folder gives its own *.yaml files (not its subfolders': `specs/scripts/` holds the scripted
    model's scripts, not specs); a grid file gives its entries, as `engram apply` would run them."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
        if not found:
            raise ConfigError(f"{path}: no spec files (*.yaml) in this folder")
        return [check for spec in found for check in specs_to_check(spec, overrides)]
    from engram.runs.sweep import is_grid_file, load_grid

    if not is_grid_file(path):
        return [SpecToCheck(str(path), path, overrides)]
    grid = load_grid(path)
    return [SpecToCheck(f"{path}: {_shown(entry.path, path.parent)}", entry.path, (*entry.overrides, *overrides),
                        grid=path) for entry in grid.entries]


def _shown(spec: Path, base: Path) -> str:
    """The spec's path as a grid file names it: relative to the grid's folder."""
    return os.path.relpath(spec, base.resolve())


def nearest_spec(path: Path) -> Path | None:
    """The existing spec file a path that does not exist most likely meant, if one is close enough:
    `smoke` or `smoke.yaml` for `specs/smoke.yaml`, `specs/smok.yaml` for `specs/smoke.yaml`."""
    name = path.name if path.suffix in SPEC_SUFFIXES else f"{path.name}.yaml"
    folders = [path.parent] if path.parent != Path(".") else [Path("."), SPECS_FOLDER]
    for folder in folders:
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        if close:
            return folder / close[0]
    return None
