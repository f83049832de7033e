"""Reading YAML files into pydantic models with errors a person can act on.

Problem files and experiment specs are both written by hand, so a mistake must be reported with
the file, the dotted path of the field and what was expected, not as a pydantic stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from engram.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping at its top level."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, found {type(data).__name__}")
    return data


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: `file: field.path: message (got: value)`."""
    lines = [f"{source}: {error.error_count()} problem(s):"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; unknown keys are not allowed)"
        got = item.get("input")
        shown = "" if item["type"] in ("missing", "extra_forbidden") else f" (got: {_short(got)})"
        lines.append(f"  {location}: {message}{shown}")
    return "\n".join(lines)


def load_model(path: Path, model: type[ModelT], *, context: dict[str, Any] | None = None) -> ModelT:
    """Validate a YAML file against `model`, raising `ConfigError` that names file and field."""
    data = read_yaml_mapping(path)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
