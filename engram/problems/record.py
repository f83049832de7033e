"""The problem a run was scored with, and the changes to it a user accepted on purpose.

A run records its problem's fingerprint (the digest of every trusted file, `Problem.fingerprint`)
in `spec.resolved.yaml`. Resuming, rescoring or replaying with different trusted files would mix
scores of two problems, or score candidates with an evaluator someone rewrote -- possibly an agent
or a candidate, if a sandbox ever let one write there. So those commands refuse a changed problem
with a one-line error, and go on only when told to (`--accept-changed-problem`); each acceptance
is written into the run (`accepted_problem_changes` in the spec's meta, and an event in each
seed's `events.jsonl`), so that whoever reads the run later sees that its scores span two problems.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engram.errors import EngramError
from engram.runs.archive import SeedArchive, write_atomic

if TYPE_CHECKING:
    from engram.problems.problem import Problem

RESOLVED_SPEC = "spec.resolved.yaml"
ACCEPT_FLAG = "--accept-changed-problem"


class ProblemChangedError(EngramError):
    """The problem's trusted files differ from those a run was scored with."""


def recorded_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint the run recorded, or None for a run from before fingerprints were kept."""
    meta = _stored(run_dir).get("meta") or {}
    value = meta.get("problem_fingerprint")
    return str(value) if value else None


def check_problem(run_dir: Path, problem: Problem, *, command: str, accept: bool) -> dict[str, Any] | None:
    """Refuse (`ProblemChangedError`) when `problem` is not the one `run_dir` was scored with,
    unless `accept`: then return the acceptance, for the caller to `record_acceptance` where the
    new scores go. None when nothing changed."""
    recorded = recorded_fingerprint(run_dir)
    current = problem.fingerprint()
    if recorded is None or recorded == current:
        return None
    if not accept:
        raise ProblemChangedError(
            f"the trusted files of problem {problem.name} ({problem.root}) differ from those run {run_dir} was "
            f"scored with (fingerprint {recorded[:12]}, now {current[:12]}); restore them, or pass {ACCEPT_FLAG} "
            f"to {command} anyway (recorded in the run)")
    return {"command": command, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "problem": str(problem.root),
            "run": str(run_dir), "recorded_fingerprint": recorded, "accepted_fingerprint": current}


def record_acceptance(run_dir: Path, acceptance: dict[str, Any], *, adopt: bool) -> None:
    """Write the acceptance into the spec meta of `run_dir` and each of its seeds' event logs.

    `adopt`: the run goes on scoring with the new problem (a resume), so its recorded fingerprint
    becomes the new one and the next resume needs no flag; a rescore leaves it as it was."""
    stored = _stored(run_dir)
    meta = stored.setdefault("meta", {})
    meta.setdefault("accepted_problem_changes", []).append(acceptance)
    if adopt:
        meta["problem_fingerprint"] = acceptance["accepted_fingerprint"]
    write_atomic(run_dir / RESOLVED_SPEC, yaml.safe_dump(stored, sort_keys=False))
    for seed_dir in sorted(run_dir.glob("seed-*")):
        if seed_dir.is_dir():
            SeedArchive(seed_dir).log("problem_change_accepted", **acceptance)


def _stored(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESOLVED_SPEC
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
