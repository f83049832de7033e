"""The outcome of evaluating one candidate program, as plain data.

An `Evaluation` is what every method, the archive and the command line see. A failed candidate
is an `Evaluation` too -- with `ok=False`, an `error_kind` and the candidate's own traceback -- so
callers never have to catch exceptions from user code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class ErrorKind(StrEnum):
    """Why a candidate failed. `killed`: ended by a signal, or by a sandbox cap other than time
    and memory (processes, file size)."""

    SYNTAX = "syntax"
    IMPORT = "import"
    MISSING_ENTRY_POINT = "missing_entry_point"
    RUNTIME = "runtime"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    KILLED = "killed"
    INVALID_OUTPUT = "invalid_output"


Metric = float | int | bool | str | None


class ScenarioResult(BaseModel):
    name: str
    ok: bool
    metrics: dict[str, Metric] = Field(default_factory=dict)
    error_kind: ErrorKind | None = None
    error: str | None = None
    candidate_seconds: float | None = Field(default=None, description="Time the candidate took (as it reported)")


class Timings(BaseModel):
    sandbox_start_s: float = 0.0
    candidate_s: float = 0.0
    scoring_s: float = 0.0


class Evaluation(BaseModel):
    problem: str
    score: float | None
    ok: bool
    error_kind: ErrorKind | None = None
    error: str | None = None
    scenarios: dict[str, ScenarioResult] = Field(default_factory=dict)
    metrics: dict[str, Metric] = Field(default_factory=dict, description="Totals over the scenarios")
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timings: Timings = Field(default_factory=Timings)
    sandbox: str = ""
    program_sha256: str = ""
    problem_fingerprint: str = ""
    artifacts: list[str] = Field(default_factory=list, description="Files written next to the evaluation")
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"score {self.score}"
        return f"failed ({self.error_kind}): {self.error}"

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
