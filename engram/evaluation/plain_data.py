"""What an answer may look like before any scorer sees it: bounded, finite, plain JSON data.

A scorer is ordinary Python; given `10**400` where it expects a price it raises OverflowError, given
NaN it compares false both ways and can score a nonsense answer highly, given a list of ten million
items or lists nested ten thousand deep it exhausts memory or the stack. None of these is the
scorer's fault, and none may stop a run. So every value that crosses from the sandbox -- an answer
line, a channel reply -- is parsed and then checked here against limits no honest answer comes near,
and anything outside them is the candidate's `invalid_output`, with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from engram.evaluation.scoring import InvalidAnswer

MAX_INT = 2**63
"""Larger integers overflow floats in arithmetic and C integers in numpy: no answer needs them."""


@dataclass(frozen=True)
class PlainLimits:
    max_depth: int = 32
    max_items: int = 4_000_000
    """Values (numbers, strings, containers) in one answer, all levels together."""
    max_string: int = 4 * 1024 * 1024
    """Characters in one string (or dictionary key)."""


DEFAULT_LIMITS = PlainLimits()


def parse_untrusted(text: str | bytes) -> Any:
    """One JSON document written by untrusted code; `InvalidAnswer` says why it is not acceptable.

    Integers with more digits than any bounded one are refused while parsing, before Python spends
    quadratic time converting them."""
    try:
        return json.loads(text, parse_int=_bounded_int)
    except InvalidAnswer:
        raise
    except RecursionError:
        raise InvalidAnswer("the data is nested too deeply to be read") from None
    except (ValueError, TypeError) as exc:
        raise InvalidAnswer(f"the data is not valid JSON: {str(exc)[:200]}") from None


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > 19:
        raise InvalidAnswer(f"a number with {len(digits)} digits is larger than any answer may hold "
                            f"(at most {MAX_INT:.3g} in magnitude)")
    return int(digits)


def check_plain(value: Any, limits: PlainLimits = DEFAULT_LIMITS, *, what: str = "the answer") -> Any:
    """Return `value` unchanged if it is plain data within `limits`, else raise `InvalidAnswer`.

    Plain data: None, bools, finite floats, integers of magnitude at most 2**63, strings, lists
    and dicts with string keys -- nothing else, so a scorer never meets an object of the
    candidate's making. Iterative, so a deeply nested value cannot exhaust the checker's stack.
    """
    items = 1
    _check_scalar_or_container(value, None, limits, what)
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        container, depth, path = stack.pop()
        if not isinstance(container, list | dict):
            continue
        if depth >= limits.max_depth:
            raise InvalidAnswer(f"{what} is nested more than {limits.max_depth} levels deep (at {_where(path)})")
        items += len(container)
        if items > limits.max_items:
            raise InvalidAnswer(f"{what} holds more than {limits.max_items} values")
        if isinstance(container, dict):
            pairs: Any = container.items()
            if any(not isinstance(key, str) or len(key) > limits.max_string for key in container):
                raise InvalidAnswer(f"{what} holds a key that is not a short string at {_where(path)}")
        else:
            pairs = enumerate(container)
        for key, child in pairs:
            kind = type(child)
            if kind is float and child - child == 0.0:  # finite: inf - inf and nan - nan are nan
                continue
            if (kind is int and -MAX_INT <= child <= MAX_INT) or kind in _SIMPLE:
                continue
            child_path = (path, key)
            if _check_scalar_or_container(child, child_path, limits, what):
                stack.append((child, depth + 1, child_path))
    return value


_SIMPLE = frozenset({type(None), bool})


def _check_scalar_or_container(item: Any, path: _Path, limits: PlainLimits, what: str) -> bool:
    """Check one value; True when it is a container whose contents still need checking."""
    if item is None or isinstance(item, bool):
        return False
    if isinstance(item, int):
        if abs(item) > MAX_INT:
            raise InvalidAnswer(f"{what} holds an integer too large to score at {_where(path)} "
                                f"(at most {MAX_INT:.3g} in magnitude)")
        return False
    if isinstance(item, float):
        if not math.isfinite(item):
            raise InvalidAnswer(f"{what} holds {item!r} at {_where(path)}; only finite numbers are accepted")
        return False
    if isinstance(item, str):
        if len(item) > limits.max_string:
            raise InvalidAnswer(f"{what} holds a string of {len(item)} characters at {_where(path)} "
                                f"(at most {limits.max_string})")
        return False
    if isinstance(item, list | dict):
        return True
    raise InvalidAnswer(f"{what} holds a {type(item).__name__} at {_where(path)}, which is not plain data")


_Path = tuple[Any, int | str] | None
"""Where a value sits, as (parent's path, key): built cheaply, spelled out only for a message."""


def _where(path: _Path) -> str:
    keys: list[int | str] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return "".join(f"[{k!r:.40}]" for k in reversed(keys)) or "the top level"
