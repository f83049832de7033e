"""`engram new-problem`: write the skeleton of a problem directory for a researcher to fill in.

The skeleton is complete in shape -- it loads, lists its scenarios and has a task outline with
the sections an agent needs -- but its evaluator raises a clear "not written yet" error until the
researcher writes the scoring rules, so a half-finished problem can never produce scores.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from engram.errors import ConfigError

_FILES = {
    "problem.yaml": "problem.yaml.tmpl",
    "task.md": "task.md.tmpl",
    "initial_program.py": "initial_program.py.tmpl",
    "evaluator.py": "evaluator.py.tmpl",
    "adapter.py": "adapter.py.tmpl",
}


def problem_name_for(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "_", directory.name.lower()).strip("_-")
    if not name or not name[0].isalnum():
        raise ConfigError(f"cannot derive a problem name from {directory.name!r}: use letters, digits, - and _")
    return name


def write_skeleton(directory: Path) -> list[Path]:
    """Create `directory` with the skeleton files; refuses to overwrite anything that exists."""
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} already exists and is not empty; choose a new directory")
    name = problem_name_for(directory)
    class_name = "".join(part.capitalize() for part in re.split(r"[_-]", name)) or "Problem"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "baselines").mkdir()
    templates = resources.files("engram.templates").joinpath("problem")
    written = []
    for target, template in _FILES.items():
        text = templates.joinpath(template).read_text(encoding="utf-8").format(name=name, class_name=class_name)
        (directory / target).write_text(text, encoding="utf-8")
        written.append(directory / target)
    return written
