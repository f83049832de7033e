"""The DVC pipeline's grid as a sweep: `dvc.yaml` stays the one list of the paper's experiments.

`dvc repro` runs a pipeline's stages one after another on one machine. To run the same grid on a
process pool or a Ray cluster, a sweep reads the `foreach` stages of `dvc.yaml` instead: for every
item it expands the stage's `cmd` exactly as DVC would (`${key}`, `${item}` and `${section.param}`
from `params.yaml`), and takes the spec and the `--set` overrides of its `engram apply` command.
So a changed knob in `params.yaml` reaches both ways of running the grid, and nothing is listed
twice. A grid file selects stages with

    dvc: dvc.yaml          # relative to the grid file
    stages: [offline]      # default: every foreach stage
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from engram.errors import ConfigError

_REFERENCE = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


def is_dvc_pipeline(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("stages"), dict)


def dvc_runs(pipeline: Path, stages: Sequence[str] = ()) -> list[tuple[Path, list[str]]]:
    """(spec path, overrides) for every item of the chosen foreach stages, in the pipeline's order."""
    data = _read_yaml(pipeline)
    if not is_dvc_pipeline(data):
        raise ConfigError(f"{pipeline}: not a DVC pipeline (no `stages:` mapping)")
    params = _params(pipeline)
    available = {name: stage for name, stage in data["stages"].items()
                 if isinstance(stage, dict) and "foreach" in stage}
    unknown = [name for name in stages if name not in available]
    if unknown:
        raise ConfigError(f"{pipeline}: no foreach stage named {', '.join(unknown)}; "
                          f"its foreach stages are {', '.join(available) or 'none'}")
    runs = []
    for name in stages or list(available):
        runs += _stage_runs(pipeline, name, available[name], params)
    if not runs:
        raise ConfigError(f"{pipeline}: the chosen stages list no experiment")
    return runs


def _stage_runs(pipeline: Path, name: str, stage: dict[str, Any],
                params: dict[str, Any]) -> list[tuple[Path, list[str]]]:
    foreach, body = stage.get("foreach"), stage.get("do")
    if not isinstance(body, dict) or "cmd" not in body:
        raise ConfigError(f"{pipeline}: stage {name}: a foreach stage needs `do: {{cmd: ...}}`")
    items = foreach.items() if isinstance(foreach, dict) else enumerate(foreach or [])
    runs = []
    for key, item in items:
        where = f"{pipeline}: stage {name}@{key}"
        context = {**params, "key": key, "item": item}
        command = body["cmd"] if isinstance(body["cmd"], str) else " && ".join(body["cmd"])
        spec, overrides = _apply_arguments(_expand(command, context, where), pipeline.parent, where)
        outs = [(pipeline.parent / _expand(_out_path(out), context, where)).resolve() for out in body.get("outs") or []]
        runs.append((spec, [_outside_outs(override, outs) for override in overrides]))
    return runs


SWEEP_SUFFIX = "-sweep"
"""A sweep of the pipeline writes beside DVC's outputs (`runs/dvc` -> `runs/dvc-sweep`): only `dvc repro`
may write what DVC tracks, or every stage the sweep touched would turn stale."""


def _out_path(out: Any) -> str:
    return str(next(iter(out)) if isinstance(out, dict) else out)


def _outside_outs(override: str, outs: Sequence[Path]) -> str:
    key, _, value = override.partition("=")
    if key.strip() != "output.dir" or not value:
        return override
    folder = Path(value)
    if any(out == folder or folder in out.parents or out in folder.parents for out in outs):
        return f"{key}={folder.with_name(folder.name + SWEEP_SUFFIX)}"
    return override


def _apply_arguments(command: str, base: Path, where: str) -> tuple[Path, list[str]]:
    """The spec and `--set` overrides of the `engram apply` in a stage's command."""
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        if "apply" not in words or not any(word.endswith("engram") or word == "engram" for word in words):
            continue
        arguments = words[words.index("apply") + 1:]
        spec = next((word for word in arguments if not word.startswith("-")), None)
        if spec is None:
            raise ConfigError(f"{where}: its `engram apply` names no spec")
        overrides = [arguments[i + 1] for i, word in enumerate(arguments[:-1]) if word == "--set"]
        overrides += [word.split("=", 1)[1] for word in arguments if word.startswith("--set=")]
        return (base / spec).resolve(), [_anchored(override, base) for override in overrides]
    raise ConfigError(f"{where}: its command runs no `engram apply`")


def _anchored(override: str, base: Path) -> str:
    """DVC runs a stage's command in the pipeline's folder: a relative output folder means one there."""
    key, _, value = override.partition("=")
    if key.strip() == "output.dir" and value and not Path(value).is_absolute():
        return f"{key}={(base / value).resolve()}"
    return override


def _expand(text: str, context: dict[str, Any], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        found: Any = context
        for part in match.group(1).split("."):
            if not isinstance(found, dict) or part not in found:
                raise ConfigError(f"{where}: ${{{match.group(1)}}} is not defined (params.yaml, key or item)")
            found = found[part]
        if isinstance(found, bool):
            return "true" if found else "false"  # YAML spelling, as --set parses values as YAML
        return str(found)

    return _REFERENCE.sub(value, text)


def _params(pipeline: Path) -> dict[str, Any]:
    path = pipeline.parent / "params.yaml"
    if not path.is_file():
        return {}
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters")
    return data


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
