"""Reading YAML files into pydantic models with errors a person can act on.

Problem files and experiment specs are both written by hand, so a mistake must be reported with
the file, the dotted path of the field and what was expected, not as a pydantic stack trace.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

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
    if _expanded_size(data) > MAX_VALUES:
        raise ConfigError(f"{path}: the file expands to more than {MAX_VALUES:,} values (YAML aliases repeating "
                          "aliases?); write the values out instead")
    return data


MAX_VALUES = 100_000
"""A hand-written file never holds this many values; YAML aliases of aliases can make a 1 kB file hold millions."""


def _expanded_size(data: Any) -> int:
    """Values counted as they would be written out (an aliased node counts every time it is used),
    stopping as soon as the count passes MAX_VALUES."""
    count, pending = 0, [data]
    while pending and count <= MAX_VALUES:
        value = pending.pop()
        count += 1
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return count


def format_validation_error(source: str, error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem: `file: field.path: message (got: value)`, in words a person can act on.

    With the `model` that was validated, a misspelt key or method name gets a "did you mean"."""
    lines = [f"{source}: {error.error_count()} problem(s):"]
    for item in error.errors():
        lines.append(f"  {_location(item, model)}: {_message(item, model)}")
    return "\n".join(lines)


def _location(item: Any, model: type[BaseModel] | None) -> str:
    parts = list(item["loc"])
    if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str((item.get("ctx") or {}).get("discriminator", "name")).strip("'"))
    if model is not None:  # a tagged union puts the tag in the path (method.engram.digest): drop it
        parts = [part for i, part in enumerate(parts) if not _is_union_tag(model, parts[:i], part)]
    return ".".join(str(part) for part in parts) or "(top level)"


def _message(item: Any, model: type[BaseModel] | None) -> str:
    kind, got, context = item["type"], item.get("input"), item.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(item["loc"][-1])
        allowed = _fields_at(model, list(item["loc"][:-1])) if model is not None else []
        hint = _did_you_mean(key, allowed) or (f" (allowed here: {', '.join(allowed)})" if allowed else "")
        return f"unknown key{hint}"
    if kind == "union_tag_invalid":
        tags = [tag.strip().strip("'") for tag in str(context.get("expected_tags", "")).split(",")]
        what = str(item["loc"][-1]) if item["loc"] else "value"
        return (f"unknown {what} {context.get('tag')!r}{_did_you_mean(str(context.get('tag')), tags)} "
                f"(choose one of: {', '.join(tags)})")
    if kind == "union_tag_not_found":
        return f"give its {str(context.get('discriminator', 'name')).strip(chr(39))}"
    if got is None and kind in ("model_type", "dict_type", "model_attributes_type"):
        return "is empty: write its fields indented under it"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a section of fields{_section_example(model, list(item['loc']), got)} (got: {_short(got)})"
    if kind == "string_pattern_mismatch":
        return f"must match {context.get('pattern')} (got: {_short(got)})"
    if kind == "missing":
        return "missing (required)"
    if kind == "literal_error" and isinstance(got, str):
        choices = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return f"must be one of {', '.join(choices)}{_did_you_mean(got, choices)} (got: {_short(got)})"
    if kind == "finite_number":
        return f"must be a finite number (got: {_short(got)})"
    message = str(item["msg"]).removeprefix("Value error, ").replace("Input should be", "must be", 1)
    return message if isinstance(got, dict) else f"{message} (got: {_short(got)})"  # a section is too long to show


def _section_example(model: type[BaseModel] | None, path: list[Any], got: Any) -> str:
    """`, e.g. {name: cloudcast}` when the section has one required field and a bare value was given
    (`problem: cloudcast`): the value most likely meant for that field."""
    if model is None or isinstance(got, (dict, list)):
        return ""
    options = [option for option in _unwrap(_annotation_at(model, path)) if _is_model(option)]
    required = [name for name, info in options[0].model_fields.items() if info.is_required()] if options else []
    return f", e.g. {{{required[0]}: {got}}}" if len(required) == 1 else ""


def _annotation_at(model: type[BaseModel], path: list[Any]) -> Any:
    current: Any = model
    for part in path:
        current = _step(current, part)
        if current is None:
            return None
    return current


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], path: list[Any]) -> list[str]:
    """The keys allowed at `path` inside `model` (following nested models, lists, dicts, tagged unions)."""
    current: Any = model
    for part in path:
        current = _step(current, part)
        if current is None:
            return []
    return list(current.model_fields) if _is_model(current) else []


def _step(annotation: Any, part: Any) -> Any:
    options = _unwrap(annotation)
    for option in options:
        if _is_model(option) and isinstance(part, str) and part in option.model_fields:
            return option.model_fields[part].annotation
        if _is_model(option) and _tag_of(option) == part:
            return option
        origin = get_origin(option)
        if origin in (list, tuple) and isinstance(part, int):
            return get_args(option)[0]
        if origin is dict:
            return get_args(option)[1]
    return None


def _is_union_tag(model: type[BaseModel], path: list[Any], part: Any) -> bool:
    if not path or not isinstance(part, str):
        return False
    parent: Any = model
    for step in path:
        parent = _step(parent, step)
        if parent is None:
            return False
    members = [option for option in _unwrap(parent) if _is_model(option)]
    return len(members) > 1 and any(_tag_of(member) == part for member in members)


def _unwrap(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [inner for arg in get_args(annotation) for inner in _unwrap(arg)]
    return [annotation]


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("name")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    return get_args(field.annotation)[0]


def load_model(path: Path, model: type[ModelT], *, context: dict[str, Any] | None = None) -> ModelT:
    """Validate a YAML file against `model`, raising `ConfigError` that names file and field."""
    data = read_yaml_mapping(path)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc, model)) from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
