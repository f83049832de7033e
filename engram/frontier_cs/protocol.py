"""What a Frontier-CS checker or interactor says, read the way the upstream judge reads it.

A checker is run as `chk input output answer` (testlib's order) and an interactor as
`interactor input transcript answer`. Its message is its stdout if that is not empty, else its
stderr (testlib writes its verdict line there, e.g. `points 0.94 Ratio: 0.944 (...)`). The case's
ratio is the first `Ratio: <digits and dots>` in the message, read as JavaScript's `parseFloat`
reads it; without one, 1 if the checker exited 0 and 0 otherwise. The unbounded ratio is the first
`RatioUnbounded: ...`, else the bounded ratio. No ratio is clipped: checkers clip their own.

Unlike upstream, only the checker's (or interactor's) own output is ever read here; a case whose
program failed scores 0 whatever that program printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_BOUNDED = re.compile(r"Ratio: ([\d.]+)")
_UNBOUNDED = re.compile(r"RatioUnbounded: ([\d.]+)")
_JS_FLOAT_PREFIX = re.compile(r"\d*(?:\.\d*)?")
MESSAGE_LIMIT = 1 << 20
"""Bytes of a checker's stdout or stderr that are kept (upstream keeps 1 MiB of each)."""


@dataclass(frozen=True)
class CheckerVerdict:
    ok: bool
    """The checker exited normally with status 0 (testlib's `_ok`)."""
    ratio: float
    unbounded: float
    message: str


def message_of(stdout: str, stderr: str) -> str:
    return stdout if stdout else stderr


def js_parse_float(text: str) -> float:
    """`parseFloat` of a string of digits and dots: the longest leading decimal number, NaN if none."""
    match = _JS_FLOAT_PREFIX.match(text)
    number = match.group(0) if match else ""
    if not any(ch.isdigit() for ch in number):
        return math.nan
    return float(number + "0" if number.endswith(".") else number)


def read_verdict(ok: bool, message: str) -> CheckerVerdict:
    bounded = _BOUNDED.search(message)
    ratio = js_parse_float(bounded.group(1)) if bounded else (1.0 if ok else 0.0)
    unbounded_match = _UNBOUNDED.search(message)
    unbounded = js_parse_float(unbounded_match.group(1)) if unbounded_match else ratio
    return CheckerVerdict(ok=ok, ratio=ratio, unbounded=unbounded, message=message)
