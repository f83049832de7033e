"""Sweeps over the family: one spec, many Frontier-CS problems, and the leaderboard-style summary.

A spec names the family and its members (`problem: {name: frontier_cs, members: [0, 1, 5]}`, or a tag:
`all`, `default`, `interactive`); `engram apply` turns it into one run per problem, named
`<spec name>-<id>`, and prints each problem's best score and their mean, where a run without a
score counts as 0 (as the upstream leaderboard counts a failed submission).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram.errors import ConfigError
from engram.frontier_cs.family import FAMILY, UNBOUNDED
from engram.frontier_cs.manifest import upstream_manifest

TAGS = ("all", "default", "interactive")


def _kind(problem_id: int) -> str:
    files = upstream_manifest().files_of(problem_id)
    return "interactive" if any(name.startswith("interactor.") for name in files) else "default"


def _judgeable(problem_id: int) -> bool:
    """Whether any of its test inputs was published (five problems have none)."""
    files = upstream_manifest().files_of(problem_id)
    return any(name.startswith("testdata/") and name.endswith(".in") for name in files)


def member_names(family: str, members: Sequence[Any] | str) -> list[str]:
    """The problem names a family selector stands for, in id order (`frontier_cs/<id>`)."""
    base, _, variant = family.partition("/")
    if base != FAMILY or variant not in ("", UNBOUNDED):
        raise ConfigError(f"problem.members is for a problem family; problem.name must be {FAMILY} "
                          f"(or {FAMILY}/{UNBOUNDED}), not {family!r}")
    suffix = f"/{UNBOUNDED}" if variant else ""
    known = upstream_manifest().problem_ids()
    if isinstance(members, str):
        if members not in TAGS:
            raise ConfigError(f"problem.members: unknown tag {members!r}; give a list of ids or one of "
                              f"{', '.join(TAGS)}")
        ids = [i for i in known if _judgeable(i) and (members == "all" or _kind(i) == members)]
    else:
        ids = []
        for item in members:
            text = str(item).removeprefix(f"{FAMILY}/")
            if not text.isdigit() or int(text) not in known:
                raise ConfigError(f"problem.members: {item!r} is not a Frontier-CS problem id (`engram problems`)")
            ids.append(int(text))
        if len(set(ids)) != len(ids):
            raise ConfigError("problem.members lists a problem twice")
    if not ids:
        raise ConfigError("problem.members selects no problem")
    return [f"{FAMILY}/{i}{suffix}" for i in ids]


def member_overrides(spec_name: str, name: str) -> tuple[str, ...]:
    """`--set` overrides that make a family spec the run of one member."""
    tail = name.split("/", 1)[1].replace("/", "-")
    return (f"problem.name={name}", "problem.members=null", f"name={spec_name}-{tail}")


def family_summary(problems: dict[Path, str], best_scores: dict[Path, float | None]) -> str:
    """Per-problem best score (mean over seeds) and the mean over problems; seed dirs map to problems."""
    by_problem: dict[str, list[float]] = {}
    for seed_dir, problem in problems.items():
        score = best_scores.get(seed_dir)
        by_problem.setdefault(problem, []).append(float(score) if score is not None else 0.0)
    if not by_problem:
        return ""
    width = max(len(p) for p in by_problem)
    lines = [f"{'problem':<{width}}  best score (mean over seeds)"]
    means = {}
    for problem in sorted(by_problem, key=_order):
        values = by_problem[problem]
        means[problem] = sum(values) / len(values)
        lines.append(f"{problem:<{width}}  {means[problem]:.2f}")
    lines.append(f"{'mean':<{width}}  {sum(means.values()) / len(means):.2f}  over {len(means)} problem(s); "
                 f"a run without a score counts 0")
    return "\n".join(lines)


def _order(name: str) -> tuple[int, str]:
    parts = name.split("/")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, name)
