"""Checking recorded scores: `engram rescore` and the score comparison `engram replay` shares.

`engram rescore RUN_DIR` evaluates every archived candidate of every seed again with the problem's
evaluator as it is now (sandboxed, as always), writes each new evaluation next to the recorded one
(`exp-<m>/rescores/<stamp>/evaluation.json`, the original is never touched), saves the comparison
as `<run>/rescore-<stamp>.json` and exits with `SCORES_DIFFER_EXIT_CODE` when any score moved. Use
it after changing an evaluator, a sandbox or a dependency, to see which results still stand.

A score "moved" when the two evaluations differ in success, error kind or score (exactly, unless a
relative tolerance is given: problems whose score includes a measured runtime, like llm_sql's, need
one).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engram.evaluation.result import Evaluation
from engram.runs.archive import Experiment, SeedArchive, write_atomic, write_json

SCORES_DIFFER_EXIT_CODE = 4
"""Exit code of `engram rescore` and `engram replay` when any experiment's score moved."""

RESCORES_DIR = "rescores"


@dataclass(frozen=True)
class ScoreRecord:
    """What one evaluation of one experiment said, and of which program."""

    seed: int
    experiment: int
    agent: int
    program_sha256: str
    score: float | None
    ok: bool
    error_kind: str | None

    @classmethod
    def of(cls, seed: int, experiment: Experiment, evaluation: Evaluation) -> ScoreRecord:
        return cls(seed=seed, experiment=experiment.number, agent=experiment.agent,
                   program_sha256=program_sha256(experiment.program), score=evaluation.score, ok=evaluation.ok,
                   error_kind=str(evaluation.error_kind) if evaluation.error_kind else None)

    def describe(self) -> str:
        return repr(self.score) if self.ok else f"failed ({self.error_kind})"


@dataclass(frozen=True)
class ScorePair:
    """One experiment before and after; a side is None when that run has no such experiment."""

    before: ScoreRecord | None
    after: ScoreRecord | None
    same: bool
    reason: str = ""

    @property
    def seed(self) -> int:
        return (self.before or self.after).seed  # type: ignore[union-attr]

    @property
    def label(self) -> str:
        """The experiment as a user finds it: seed, number (in the recorded run, else the new one)."""
        record = self.before or self.after
        assert record is not None
        return f"seed-{record.seed}/exp-{record.experiment:04d}"


@dataclass
class ScoreComparison:
    pairs: list[ScorePair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def moved(self) -> list[ScorePair]:
        return [pair for pair in self.pairs if not pair.same]

    @property
    def identical(self) -> bool:
        return not self.moved

    def as_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "experiments": len(self.pairs), "moved": [p.label for p in self.moved],
                "notes": self.notes, "pairs": [asdict(p) for p in self.pairs]}


def program_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def seed_dirs(run_dir: Path) -> dict[int, Path]:
    """The seed directories a run has on disk, by seed (a run may be unfinished)."""
    found = {}
    for path in run_dir.glob("seed-*"):
        suffix = path.name.removeprefix("seed-")
        if path.is_dir() and suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))


def recorded_scores(run_dir: Path) -> list[ScoreRecord]:
    """Every scored experiment of every seed, as recorded (experiments never scored are skipped)."""
    records = []
    for seed, path in seed_dirs(run_dir).items():
        for experiment in SeedArchive(path).experiments():
            evaluation = experiment.evaluation()
            if evaluation is not None:
                records.append(ScoreRecord.of(seed, experiment, evaluation))
    return records


def same_score(before: ScoreRecord, after: ScoreRecord, tolerance: float = 0.0) -> tuple[bool, str]:
    """Whether two evaluations agree, and if not, in what."""
    if before.ok != after.ok or before.error_kind != after.error_kind:
        return False, f"{before.describe()} -> {after.describe()}"
    if before.score is None or after.score is None:
        return (before.score is None and after.score is None), f"{before.describe()} -> {after.describe()}"
    if math.isnan(before.score) or math.isnan(after.score):
        return math.isnan(before.score) and math.isnan(after.score), f"{before.score!r} -> {after.score!r}"
    limit = tolerance * max(abs(before.score), abs(after.score))
    if abs(before.score - after.score) <= limit:
        return True, ""
    return False, f"{before.score!r} -> {after.score!r}"


def compare_by_number(before: Iterable[ScoreRecord], after: Iterable[ScoreRecord],
                      tolerance: float = 0.0) -> ScoreComparison:
    """Pair the same experiments of one run (a rescore): by seed and experiment number."""
    later = {(r.seed, r.experiment): r for r in after}
    comparison = ScoreComparison()
    for record in before:
        new = later.get((record.seed, record.experiment))
        if new is None:
            comparison.pairs.append(ScorePair(record, None, False, "not evaluated again"))
            continue
        same, reason = same_score(record, new, tolerance)
        comparison.pairs.append(ScorePair(record, new, same, reason))
    return comparison


def compare_by_program(before: Iterable[ScoreRecord], after: Iterable[ScoreRecord],
                       tolerance: float = 0.0) -> ScoreComparison:
    """Pair the experiments of two runs (a recording and its replay) by seed, agent and program.

    Numbers alone would mis-pair parallel evaluations, which may take their numbers in another
    order in the replay; the n-th evaluation of the same program by the same agent is the same
    experiment. An experiment only one side has is a difference too (the replay diverged).
    """
    def grouped(records: Iterable[ScoreRecord]) -> dict[tuple[int, int, str], list[ScoreRecord]]:
        groups: dict[tuple[int, int, str], list[ScoreRecord]] = defaultdict(list)
        for record in sorted(records, key=lambda r: (r.seed, r.experiment)):
            groups[(record.seed, record.agent, record.program_sha256)].append(record)
        return groups

    old, new = grouped(before), grouped(after)
    comparison = ScoreComparison()
    for key in sorted(set(old) | set(new)):
        olds, news = old.get(key, []), new.get(key, [])
        for index in range(max(len(olds), len(news))):
            a = olds[index] if index < len(olds) else None
            b = news[index] if index < len(news) else None
            if a is None:
                comparison.pairs.append(ScorePair(None, b, False, "only in the replay (a program the recording "
                                                                  "did not evaluate)"))
            elif b is None:
                comparison.pairs.append(ScorePair(a, None, False, "not evaluated in the replay"))
            else:
                same, reason = same_score(a, b, tolerance)
                if same and a.experiment != b.experiment:
                    reason = f"numbered exp-{b.experiment:04d} in the replay"
                comparison.pairs.append(ScorePair(a, b, same, reason))
    comparison.pairs.sort(key=lambda p: (p.seed, (p.before or p.after).experiment))  # type: ignore[union-attr]
    return comparison


def format_comparison(comparison: ScoreComparison, *, before: str, after: str, changes_only: bool = False) -> str:
    """A table of experiments, recorded score and new score, the moved ones marked."""
    rows = [("experiment", "agent", before, after, "")]
    for pair in comparison.pairs:
        if changes_only and pair.same:
            continue
        record = pair.before or pair.after
        assert record is not None
        rows.append((pair.label, str(record.agent), pair.before.describe() if pair.before else "-",
                     pair.after.describe() if pair.after else "-", "same" if pair.same else f"MOVED {pair.reason}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    moved = comparison.moved
    summary = (f"{len(comparison.pairs)} experiment(s): all scores identical" if not moved else
               f"{len(moved)} of {len(comparison.pairs)} experiment(s) moved: {', '.join(p.label for p in moved)}")
    return "\n".join([*(line.rstrip() for line in lines), *comparison.notes, summary])


# -- rescoring -------------------------------------------------------------------------------------------


@dataclass
class RescoreOutcome:
    run_dir: Path
    stamp: str
    comparison: ScoreComparison
    summary_file: Path


def rescore_run(run_dir: Path, *, problem_path: str | None = None, sandbox_name: str | None = None,
                tolerance: float = 0.0, accept_changed_problem: bool = False) -> RescoreOutcome:
    """Evaluate every archived candidate of `run_dir` again; see the module docstring. A problem
    whose trusted files differ from the run's is refused unless `accept_changed_problem`."""
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.evaluation.run_secrets import TrustedSecrets
    from engram.problems.problem import load_problem
    from engram.problems.record import check_problem, record_acceptance
    from engram.runs.runner import load_run_spec
    from engram.sandbox import get_sandbox

    spec = load_run_spec(run_dir)
    problem = load_problem(problem_path or spec.problem.name)
    accepted = check_problem(run_dir, problem, command="rescore", accept=accept_changed_problem)
    if accepted is not None:
        record_acceptance(run_dir, accepted, adopt=False)
    problem.ensure_data(problem.select_scenarios(spec.problem.scenarios))
    sandbox = get_sandbox(sandbox_name or spec.sandbox.backend, quiet=True, image=spec.sandbox.image)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    before: list[ScoreRecord] = []
    after: list[ScoreRecord] = []
    with CandidateEvaluator(problem, sandbox, scenarios=spec.problem.scenarios,
                            time_limit_s=spec.problem.time_limit_s,
                            secrets=TrustedSecrets.of_run(run_dir)) as evaluator:
        for seed, path in seed_dirs(run_dir).items():
            for experiment in SeedArchive(path).experiments():
                recorded = experiment.evaluation()
                if recorded is None or not experiment.program.is_file():
                    continue
                fresh = _rescore_experiment(evaluator, experiment, stamp)
                before.append(ScoreRecord.of(seed, experiment, recorded))
                after.append(ScoreRecord.of(seed, experiment, fresh))
    comparison = compare_by_number(before, after, tolerance)
    comparison.notes += fingerprint_notes(run_dir, problem.fingerprint())
    summary = run_dir / f"rescore-{stamp}.json"
    write_json(summary, {"run_dir": str(run_dir), "problem": str(problem.root), "sandbox": sandbox.name,
                         "tolerance": tolerance, "problem_fingerprint": problem.fingerprint(),
                         "accepted_problem_change": accepted, **comparison.as_dict()})
    return RescoreOutcome(run_dir, stamp, comparison, summary)


def _rescore_experiment(evaluator: Any, experiment: Experiment, stamp: str) -> Evaluation:
    target = experiment.path / RESCORES_DIR / stamp
    scratch = Path(tempfile.mkdtemp(prefix="engram-rescore-"))
    try:
        evaluation = evaluator.evaluate(experiment.program, artifacts_dir=scratch)
        if any(scratch.iterdir()):
            shutil.copytree(scratch, target / "results", dirs_exist_ok=True)
        write_atomic(target / "evaluation.json", evaluation.model_dump_json(indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return evaluation


def fingerprint_notes(run_dir: Path, fingerprint: str) -> list[str]:
    """Say whether the problem's trusted files are the ones the run was scored with."""
    import yaml

    from engram.runs.runner import RESOLVED_SPEC

    stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
    recorded = (stored.get("meta") or {}).get("problem_fingerprint")
    if not recorded or recorded == fingerprint:
        return []
    return [f"note: the problem's trusted files changed since the run (fingerprint {recorded[:12]} -> "
            f"{fingerprint[:12]})"]
