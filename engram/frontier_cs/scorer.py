"""The trusted side of a Frontier-CS problem: Engram's evaluator hands it the C++ source.

It compiles the problem's checker or interactor once (cached across runs), then for each program
lets the `Judge` compile and run it on the selected cases, and turns the per-case verdicts into
scenario results: every case counts (a failed one with ratio 0), so an evaluation fails only when
the program does not compile -- the upstream judge gives no score then either. The score is
100 x the mean ratio (bounded, or unbounded for `frontier_cs/<id>/unbounded`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engram.evaluation.result import ErrorKind, Metric, ScenarioResult
from engram.evaluation.scoring import Judgement, ProgramJudge, ScenarioScore
from engram.frontier_cs.config import TestCase
from engram.frontier_cs.judge import CaseFiles, CaseResult, Judge
from engram.frontier_cs.runs import LAUNCHER_SOURCE
from engram.frontier_cs.toolchain import CachedBinary, judge_binary
from engram.sandbox.base import MiB

if TYPE_CHECKING:
    from engram.frontier_cs.family import FrontierProblem
    from engram.problems.problem import ScenarioSpec
    from engram.sandbox import Limits, Sandbox

_ERROR_KINDS = {"WA": ErrorKind.INVALID_OUTPUT, "TLE": ErrorKind.TIMEOUT, "NR": ErrorKind.TIMEOUT,
                "MLE": ErrorKind.MEMORY, "OLE": ErrorKind.KILLED, "RE": ErrorKind.RUNTIME, "JE": ErrorKind.RUNTIME}
_SHOWN_MESSAGE = 160


def case_workers() -> int:
    """Cases judged at once: the cores this process may use (each case is one program at a time)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _staged(binary: CachedBinary, root: Path) -> CachedBinary:
    """A copy of a cached judge binary in a folder of its own under `root`, readable by any uid."""
    folder = root / binary.path.name
    folder.mkdir()
    os.chmod(folder, 0o755)
    copy = folder / binary.path.name
    shutil.copyfile(binary.path, copy)
    os.chmod(copy, 0o755)
    return CachedBinary(copy, binary.sha256)


class FrontierScorer(ProgramJudge):
    """Scores C++ programs on one Frontier-CS problem; see the module docstring."""

    problem: FrontierProblem

    def __init__(self, problem: FrontierProblem) -> None:  # type: ignore[override]
        super().__init__(problem)
        self._binaries: dict[int, tuple[CachedBinary, CachedBinary]] = {}
        self._lock = threading.Lock()

    def _judge_binaries(self, sandbox: Sandbox) -> tuple[CachedBinary, CachedBinary]:
        """The problem's checker (or interactor) and the launcher, compiled for this sandbox once."""
        with self._lock:
            if id(sandbox) not in self._binaries:
                checker, testlib = self.problem.judge_files()
                role = "interactor" if self.problem.judge_config.interactive else "chk"
                self._binaries[id(sandbox)] = (
                    judge_binary(sandbox, checker.read_bytes(), role, testlib.read_bytes() if testlib else None),
                    judge_binary(sandbox, LAUNCHER_SOURCE.read_bytes(), "launch", None),
                )
            return self._binaries[id(sandbox)]

    def judge(self, source: str, scenarios: list[ScenarioSpec], *, sandbox: Sandbox, workdir: Path,
              limits: Limits) -> Judgement:
        deadline = time.monotonic() + limits.wall_seconds
        by_number = {c.number: c for c in self.problem.judge_config.cases}
        cases: dict[TestCase, CaseFiles] = {}
        for scenario in scenarios:
            case = by_number[int(scenario.name)]
            cases[case] = CaseFiles(*self.problem.case_files(case.number))
        checker, launcher = self._judge_binaries(sandbox)
        # The cache may sit under a closed home (/root) that the sandbox's unprivileged uid cannot enter, so
        # each evaluation runs copies from a scratch folder it can reach (the judge checks their hashes).
        with tempfile.TemporaryDirectory(prefix="engram-judge-") as scratch:
            root = Path(scratch)
            os.chmod(root, 0o755)
            judge = Judge(sandbox, self.problem.judge_config, _staged(checker, root), _staged(launcher, root),
                          workers=min(case_workers(), len(cases)))
            verdicts = judge.judge(source, cases, workdir, deadline)
        notes = [note] if (note := self.problem.missing_note()) else []
        if verdicts.compile_error is not None:
            return Judgement(failure=(ErrorKind.SYNTAX, f"compilation failed:\n{verdicts.compile_error[-4000:]}"),
                             stderr=verdicts.compile_error[-8000:], notes=notes)
        results = {str(r.number): (_scenario_result(r), _scenario_score(r)) for r in verdicts.cases}
        failing = [r for r in verdicts.cases if r.verdict not in ("AC", "PC")]
        stderr = ""
        if failing:
            first = failing[0]
            stderr = f"case {first.number} ({first.verdict}): {first.message}\n{first.stderr}".rstrip()
        artifacts = {"cases.json": json.dumps([r.as_json() for r in verdicts.cases], indent=1)}
        return Judgement(results=results, stderr=stderr, notes=notes, artifacts=artifacts,
                         candidate_s=sum(r.time_s for r in verdicts.cases))

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Metric]]:
        bounded = [_finite(s.metrics.get("ratio")) for s in results.values()]
        unbounded = [_finite(s.metrics.get("ratio_unbounded")) for s in results.values()]
        score_bounded = 100 * sum(bounded) / len(bounded) if bounded else 0.0
        score_unbounded = 100 * sum(unbounded) / len(unbounded) if unbounded else 0.0
        full = sum(1 for r in bounded if r == 1.0)
        totals: dict[str, Metric] = {"score_bounded": score_bounded, "score_unbounded": score_unbounded,
                                     "cases": len(bounded), "full_cases": full}
        return (score_unbounded if self.problem.unbounded else score_bounded), totals


def _finite(value: Any) -> float:
    """A ratio for the mean: a NaN (a checker printing `Ratio: .`) counts as 0 instead of poisoning it."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _scenario_result(result: CaseResult) -> ScenarioResult:
    metrics: dict[str, Metric] = {
        "verdict": result.verdict,
        "ratio": result.ratio if math.isfinite(result.ratio) else None,
        "ratio_unbounded": result.ratio_unbounded if math.isfinite(result.ratio_unbounded) else None,
        "time_s": round(result.time_s, 3),
        "memory_mb": round(result.memory_bytes / MiB, 1),
        "message": _short(result.message),
    }
    ok = result.verdict in ("AC", "PC")
    return ScenarioResult(name=str(result.number), ok=ok, metrics=metrics,
                          error_kind=None if ok else _ERROR_KINDS.get(result.verdict, ErrorKind.RUNTIME),
                          error=None if ok else result.message, candidate_seconds=result.time_s)


def _scenario_score(result: CaseResult) -> ScenarioScore:
    return ScenarioScore(metrics={"ratio": result.ratio, "ratio_unbounded": result.ratio_unbounded})


def _short(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= _SHOWN_MESSAGE else line[: _SHOWN_MESSAGE - 3] + "..."
