"""A Frontier-CS problem's `config.yaml`, read with the upstream judge's rules.

The upstream loader takes `time` (CPU seconds, "2s" or "250ms"), `memory` (binary units: "256m" is
256 MiB), the judge type, the checker or interactor file name (defaulting to `chk.cc` and
`interactor.cc`), an optional `filename` for the submitted source, and numbers the cases 1..n over
all subtasks in order (`time_limit`/`memory_limit` and per-subtask limits are accepted as upstream
does; no published problem uses them). Subtask scores are ignored: a problem's score is one plain
mean over its cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from engram.errors import ConfigError

_TIME = re.compile(r"^([\d.]+)\s*(ms|s)?$", re.IGNORECASE)
_MEMORY = re.compile(r"^([\d.]+)\s*([kmg]?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class TestCase:
    number: int
    """1-based over all subtasks: the case reads `testdata/<number>.in`."""
    time_s: float
    memory_bytes: int

    @property
    def input_name(self) -> str:
        return f"testdata/{self.number}.in"

    @property
    def answer_name(self) -> str:
        return f"testdata/{self.number}.ans"


@dataclass(frozen=True)
class JudgeConfig:
    kind: Literal["default", "interactive"]
    cases: tuple[TestCase, ...]
    checker: str
    """File name of the checker (`default`) or interactor (`interactive`) source in the problem folder."""
    source_name: str
    """Name the candidate's source file gets before it is compiled (`main.cpp`, or `filename`)."""

    @property
    def interactive(self) -> bool:
        return self.kind == "interactive"

    @property
    def time_s(self) -> float:
        return max(c.time_s for c in self.cases) if self.cases else 1.0

    @property
    def memory_bytes(self) -> int:
        return max(c.memory_bytes for c in self.cases) if self.cases else 256 << 20


def parse_time(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)  # upstream treats a bare number as nanoseconds only via its API; configs use units
    match = _TIME.match(str(value).strip())
    if not match:
        raise ConfigError(f"{where}: time {value!r} is not like '2s' or '250ms'")
    seconds = float(match.group(1))
    return seconds / 1000 if (match.group(2) or "s").lower() == "ms" else seconds


def parse_memory(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ConfigError(f"{where}: memory {value!r} is not like '256m'")
    return round(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])


def parse_config(text: str, where: str) -> JudgeConfig:
    """Read a config.yaml's text (a leading byte-order mark is allowed, as 12 upstream files have one)."""
    try:
        data = yaml.safe_load(text.lstrip("\ufeff"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with type, time, memory and subtasks")
    kind = str(data.get("type") or "default")
    if kind not in ("default", "interactive"):
        raise ConfigError(f"{where}: type {kind!r} is neither 'default' nor 'interactive'")
    subtasks = data.get("subtasks")
    if not isinstance(subtasks, list) or not subtasks:
        raise ConfigError(f"{where}: config.yaml must define subtasks (a list of {{score, n_cases}})")
    time_s = parse_time(data.get("time_limit") or data.get("time") or "1s", where)
    memory = parse_memory(data.get("memory_limit") or data.get("memory") or "256m", where)
    cases: list[TestCase] = []
    for index, subtask in enumerate(subtasks):
        if not isinstance(subtask, dict) or not isinstance(subtask.get("n_cases"), int) or subtask["n_cases"] < 0:
            raise ConfigError(f"{where}: subtasks[{index}] needs n_cases (a whole number)")
        sub_time = parse_time(subtask.get("time_limit") or subtask.get("time") or time_s, where)
        sub_memory = parse_memory(subtask.get("memory_limit") or subtask.get("memory") or memory, where)
        for _ in range(subtask["n_cases"]):
            cases.append(TestCase(len(cases) + 1, sub_time, sub_memory))
    if kind == "interactive":
        checker = str(data.get("interactor") or "interactor.cc")
    else:
        checker = str(data.get("checker") or "chk.cc")
    if "/" in checker or checker.startswith("."):
        raise ConfigError(f"{where}: checker file {checker!r} must be a plain file name in the problem folder")
    source_name = str(data.get("filename") or "main.cpp")
    if "/" in source_name or source_name.startswith(".") or source_name == "a":
        raise ConfigError(f"{where}: filename {source_name!r} must be a plain source file name")
    return JudgeConfig(kind, tuple(cases), checker, source_name)  # type: ignore[arg-type]
