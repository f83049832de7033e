"""MkDocs hook: reference pages generated from the code at build time, so they cannot drift.

`spec-reference.md` renders the JSON schema of the experiment spec's pydantic models (every
section, field, type, default and constraint); `cli-reference.md` renders the `--help` of every
`engram` command from the click definitions.
"""

from __future__ import annotations

import json
from typing import Any

import click
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

SPEC_PAGE = "spec-reference.md"
CLI_PAGE = "cli-reference.md"
_CONSTRAINTS = {
    "exclusiveMinimum": "> {}",
    "minimum": "≥ {}",
    "exclusiveMaximum": "< {}",
    "maximum": "≤ {}",
    "pattern": "matches `{}`",
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages to the site (they exist only in the build, never in docs/)."""
    files.append(File.generated(config, SPEC_PAGE, content=spec_reference()))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files


def spec_reference() -> str:
    from engram.spec import Spec

    schema = Spec.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    lines = [
        "# Spec reference",
        "",
        "Every key an experiment spec accepts, generated from `engram/spec.py` when the site is built. "
        "Unknown keys are errors; `--set section.field=value` sets any of them. See [Experiment specs](specs.md) "
        "for an annotated example.",
        "",
    ]
    lines += _section("Top level (`Spec`)", schema, defs)
    for name, section in defs.items():
        lines += _section(f"`{name}`", section, defs)
    return "\n".join(lines) + "\n"


def _section(title: str, schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    lines = [f"## {title}", ""]
    if schema.get("description"):
        lines += [_one_line(schema["description"]), ""]
    required = set(schema.get("required", []))
    lines += ["| key | type | default | constraints | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, field in schema.get("properties", {}).items():
        default = "required" if key in required else _default(field)
        lines.append(
            f"| `{key}` | {_type(field, defs)} | {default} | {_constraints(field)} | "
            f"{_one_line(field.get('description', ''))} |"
        )
    return [*lines, ""]


def _type(field: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in field:
        name = field["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in field:
        return f"`{json.dumps(field['const'])}`"
    if "enum" in field:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in field["enum"])
    for key in ("anyOf", "oneOf"):
        if key in field:
            return " or ".join(_type(option, defs) for option in field[key])
    kind = field.get("type", "any")
    if kind == "array":
        return f"list of {_type(field.get('items', {}), defs)}"
    if kind == "object":
        return "mapping"
    return kind


def _default(field: dict[str, Any]) -> str:
    if "default" not in field:
        return ""
    return f"`{json.dumps(field['default'])}`"


def _constraints(field: dict[str, Any]) -> str:
    found = [fmt.format(field[key]) for key, fmt in _CONSTRAINTS.items() if key in field]
    for option in field.get("anyOf", []):
        found += [fmt.format(option[key]) for key, fmt in _CONSTRAINTS.items() if key in option]
    return ", ".join(found)


def _one_line(text: str) -> str:
    """A table cell: one line, pipes escaped, and `<dir>`-style placeholders shown rather than read as HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def cli_reference() -> str:
    from engram.cli import main

    lines = [
        "# CLI reference",
        "",
        "The `--help` of every `engram` command, generated from `engram/cli.py` when the site is built.",
        "",
    ]
    for path, command in _commands(main, ["engram"]):
        context = click.Context(command, info_name=" ".join(path))
        lines += [f"## `{' '.join(path)}`", "", "```text", command.get_help(context).rstrip(), "```", ""]
    return "\n".join(lines)


def _commands(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            found += _commands(command.commands[name], [*path, name])
    return found
