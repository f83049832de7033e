"""What each run of a sweep is doing, read from the run directories alone.

The same rows serve the live display of `engram apply` on a sweep and `engram status RUN_DIR...`
for runs started elsewhere (another shell, another machine, a Ray cluster): everything comes from
files the runs write anyway -- `events.jsonl`, `result.json`, `usage.json` (the ledger snapshot of
a sweep's runs) and the worker's lease `worker.json` -- so no process needs to be asked.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from engram.errors import ConfigError
from engram.executors.budget import read_usage
from engram.executors.worker import read_lease
from engram.runs.archive import read_jsonl
from engram.runs.runner import RESOLVED_SPEC

STALE_HEARTBEAT_S = 30.0
"""A lease not renewed for this long belongs to a worker that died (lost node, SIGKILL)."""


@dataclass
class RunStatus:
    run: str
    """`<spec name>/<run id>/seed-<k>`"""
    seed_dir: Path
    state: str
    """pending, running, done, stopped (unfinished, resumable), failed (bad input) or crashed."""
    agent: str
    evaluations: int
    best_score: float | None
    dollars: float
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "seed_dir": str(self.seed_dir)}


def seed_status(seed_dir: Path, *, max_agents: int | None = None, now: float | None = None) -> RunStatus:
    """The state of one seed directory (which need not exist yet)."""
    run_dir = seed_dir.parent
    events = read_jsonl(seed_dir / "events.jsonl")
    result = _read_json(seed_dir / "result.json")
    lease = read_lease(seed_dir) or {}
    experiments = [e for e in events if e.get("type") == "experiment"]
    best = next((e.get("best_score") for e in reversed(experiments) if e.get("best_score") is not None), None)
    dollars = max([float(e["dollars"]) for e in events if isinstance(e.get("dollars"), int | float)] +
                  [float((read_usage(seed_dir) or {}).get("dollars") or 0.0)])
    state, detail = _state(result, lease, bool(events), time.time() if now is None else now)
    if state == "stopped" and events and events[-1].get("type") == "run_error":
        state, detail = "failed", f"{events[-1].get('error')}; fix it, then: engram resume {run_dir}"
    if result is not None:
        best = result.get("best_score", best)
        dollars = float(result.get("dollars") or dollars)
    return RunStatus(run=f"{run_dir.parent.name}/{run_dir.name}/{seed_dir.name}", seed_dir=seed_dir, state=state,
                     agent=_agent(events, max_agents), evaluations=len({e.get("experiment") for e in experiments}),
                     best_score=best, dollars=dollars, detail=detail)


def _state(result: dict[str, Any] | None, lease: dict[str, Any], started: bool, now: float) -> tuple[str, str]:
    if result is not None:
        return "done", str(result.get("stop_reason") or "")
    where = "@".join(str(part) for part in (lease.get("pid"), lease.get("host")) if part)
    if lease.get("node"):
        where += f" node {str(lease['node'])[:8]}"
    if lease.get("state") == "running" and now - float(lease.get("heartbeat") or 0) < STALE_HEARTBEAT_S:
        return "running", where
    if lease.get("state") in ("failed", "crashed"):
        return str(lease["state"]), str(lease.get("error") or "")
    if lease.get("state") == "running":
        since = time.strftime("%H:%M:%S", time.localtime(float(lease.get("heartbeat") or 0)))
        return "stopped", f"worker lost (no heartbeat since {since})"
    if started or lease:
        return "stopped", "interrupted; resumable"
    return "pending", ""


def _agent(events: list[dict[str, Any]], max_agents: int | None) -> str:
    started = [int(e["agent"]) for e in events if e.get("type") == "agent_start" and "agent" in e]
    finished = {int(e["agent"]) for e in events if e.get("type") == "agent_end" and "agent" in e}
    running = [a for a in started if a not in finished]
    current = running[-1] if running else len(finished)
    if not started:
        return "-"
    return f"{current}/{max_agents}" if max_agents else str(current)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- finding runs ---------------------------------------------------------------------------------------


def run_seeds(run_dir: Path) -> tuple[list[Path], int | None]:
    """The seed directories a run directory is meant to have (from its resolved spec), and its agent cap."""
    stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
    spec = stored.get("spec") or {}
    first, count = int(spec.get("first_seed") or 0), int(spec.get("runs") or 1)
    seeds = set(range(first, first + count))
    seeds |= {int(p.name.removeprefix("seed-")) for p in run_dir.glob("seed-*") if p.name[5:].isdigit()}
    return [run_dir / f"seed-{seed}" for seed in sorted(seeds)], planned_agents(spec)


def planned_agents(spec: dict[str, Any]) -> int | None:
    """The N of "agent n/N": the Engram chain's budget.max_agents, tree search's rounds. None for
    methods that run no agents or an open-ended number of sessions (budget.max_agents means nothing there)."""
    method = spec.get("method") or {}
    name = method.get("name", "engram")
    if name == "engram":
        return (spec.get("budget") or {}).get("max_agents")
    if name == "tree_search":
        return method.get("rounds")
    return None


def find_seed_dirs(paths: Iterable[Path]) -> list[tuple[Path, int | None]]:
    """Seed directories under each path: a seed directory, a run directory, or a folder of run directories."""
    found: list[tuple[Path, int | None]] = []
    for path in paths:
        if (path.parent / RESOLVED_SPEC).is_file() and path.name.startswith("seed-"):
            _, max_agents = run_seeds(path.parent)
            found.append((path, max_agents))
            continue
        run_dirs = [path] if (path / RESOLVED_SPEC).is_file() else sorted(
            {p.parent for pattern in (f"*/{RESOLVED_SPEC}", f"*/*/{RESOLVED_SPEC}") for p in path.glob(pattern)})
        if not run_dirs:
            raise ConfigError(f"{path}: no run directory here (a run directory holds {RESOLVED_SPEC}); "
                              f"pass a run directory, one of its seed-<k> folders, or a folder of runs such as runs/")
        for run_dir in run_dirs:
            seed_dirs, max_agents = run_seeds(run_dir)
            found += [(seed_dir, max_agents) for seed_dir in seed_dirs]
    return found


def collect(seed_dirs: Sequence[tuple[Path, int | None]]) -> list[RunStatus]:
    now = time.time()
    return [seed_status(seed_dir, max_agents=max_agents, now=now) for seed_dir, max_agents in seed_dirs]


# -- rendering ------------------------------------------------------------------------------------------


def render(rows: Sequence[RunStatus]) -> str:
    """One aligned line per run, then the totals."""
    table = [["run", "state", "agent", "evals", "best", "dollars", ""]]
    for row in rows:
        best = "-" if row.best_score is None else f"{row.best_score:.6g}"
        table.append([row.run, row.state, row.agent, str(row.evaluations), best, f"${row.dollars:.4f}",
                      row.detail[:80]])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    right = {3, 4, 5}
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in table]
    return "\n".join([*lines, totals(rows)])


def totals(rows: Sequence[RunStatus]) -> str:
    states = Counter(row.state for row in rows)
    order = ("done", "running", "pending", "stopped", "failed", "crashed")
    counted = ", ".join(f"{states[s]} {s}" for s in order if states[s])
    return (f"total: {len(rows)} run{'s' if len(rows) != 1 else ''} ({counted}), "
            f"{sum(r.evaluations for r in rows)} evaluations, ${sum(r.dollars for r in rows):.4f}")
