"""A dollar cap over all runs of a sweep, enforced by the runs themselves through their directories.

Runs of a sweep may execute on different machines, so no process sees all ledgers. Each run instead
publishes its ledger snapshot to `<seed dir>/usage.json` after every model call, and before every
model call and evaluation it adds up the snapshots of the other runs of its sweep. The directories
are on a filesystem all nodes share, which is already where the archive must live.

Granularity: a run sees another run's spending as of that run's last finished model call (the
snapshots are re-read at most once a second). Calls in flight elsewhere are not yet counted, so the
sweep can overshoot its cap by about one model call per run executing at that moment -- the same
bound each run's own cap has for its own calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram.runs.archive import write_json

USAGE_FILE = "usage.json"
_REREAD_S = 1.0
"""Others' snapshots are re-read at most this often: a burst of checks costs one read of each."""


def read_usage(seed_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((seed_dir / USAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class SweepBudget:
    """Implements `engram.models.llm.SharedBudget` for one run (`own`) of a sweep of `seed_dirs`."""

    def __init__(self, max_dollars: float, seed_dirs: Sequence[str | Path], own: Path) -> None:
        self.max_dollars = max_dollars
        self.own = own.resolve()
        self.others = [Path(d).resolve() for d in seed_dirs if Path(d).resolve() != self.own]
        self._others_read_at = float("-inf")
        self._others: tuple[float, int] = (0.0, 0)

    def publish(self, snapshot: dict[str, Any]) -> None:
        write_json(self.own / USAGE_FILE, {"dollars": snapshot.get("dollars", 0.0), "calls": snapshot.get("calls", 0),
                                           "total_tokens": snapshot.get("total_tokens", 0), "t": time.time()})

    def others_spent(self) -> tuple[float, int]:
        """Dollars and calls of the other runs, as of their last published snapshot."""
        now = time.monotonic()
        if now - self._others_read_at >= _REREAD_S:
            dollars, calls = 0.0, 0
            for seed_dir in self.others:
                usage = read_usage(seed_dir) or {}
                dollars += float(usage.get("dollars") or 0.0)
                calls += int(usage.get("calls") or 0)
            self._others, self._others_read_at = (dollars, calls), now
        return self._others

    def check(self, own_dollars: float, own_calls: int) -> None:
        from engram.models.llm import BudgetExceeded  # importing litellm is slow; `engram status` reads usage only

        dollars, calls = self.others_spent()
        if own_dollars + dollars > self.max_dollars:
            raise BudgetExceeded(cap="the sweep's max_dollars", limit=self.max_dollars, spent=own_dollars + dollars,
                                 calls=own_calls + calls)

    def stop_reason(self, own_dollars: float) -> str | None:
        total = own_dollars + self.others_spent()[0]
        if total >= self.max_dollars:
            runs = len(self.others) + 1
            return f"sweep dollar budget reached (${total:.4f} of ${self.max_dollars:g} over {runs} runs)"
        return None
