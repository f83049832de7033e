"""The run unit and the interface every executor implements.

A sweep is a list of independent `RunUnit`s, one per (spec, seed): each has its own seed
directory inside its spec's run directory, and running a unit twice is harmless -- a finished
seed is skipped and an unfinished one resumes from its archive. That makes retries (a lost worker,
a lost node, a re-launched sweep) correct by construction, so an executor only has to start units,
at most so many at once, notice how they ended, and cancel them.

Results never travel through an executor: a unit writes everything to its seed directory (and
MLflow) from inside the run, and the driver reads the directories. An executor's `UnitOutcome`
only says how the worker process ended.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engram.errors import EngramError

OutcomeState = Literal["done", "failed", "cancelled"]

WORKER_EXIT_DONE = 0
WORKER_EXIT_CRASHED = 1
WORKER_EXIT_BAD_INPUT = EngramError.exit_code
WORKER_EXIT_INTERRUPTED = 130

Tick = Callable[[], bool]
"""Called by an executor about once a second while units run; returning False cancels everything."""


class ExecutorError(EngramError):
    """An executor cannot start (Ray missing or unreachable, bad settings)."""


@dataclass(frozen=True)
class SweepCap:
    """A dollar cap over several runs: each run reads the others' spending from their seed directories."""

    max_dollars: float
    seed_dirs: tuple[str, ...]


@dataclass(frozen=True)
class RunUnit:
    """Everything a worker needs to run one seed of one spec, as plain JSON-ready data.

    Paths are absolute: a worker may start in another directory or on another machine that sees
    the same filesystem.
    """

    spec: dict[str, Any]
    """The resolved spec (`Spec.to_plain()`), validated again by the worker."""
    spec_file: str | None
    overrides: tuple[str, ...]
    run_dir: str
    seed: int
    tracking_uri: str | None = None
    sweep_cap: SweepCap | None = None
    sandbox: str | None = None
    """The backend the spec resolved to when the sweep was planned (`auto` may mean docker)."""

    @property
    def seed_dir(self) -> Path:
        return Path(self.run_dir) / f"seed-{self.seed}"

    @property
    def name(self) -> str:
        return f"{self.spec.get('name', '?')}/seed-{self.seed}"

    def uses_docker(self) -> bool:
        return (self.sandbox or (self.spec.get("sandbox") or {}).get("backend")) == "docker"

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> RunUnit:
        data = json.loads(text)
        cap = data.get("sweep_cap")
        return cls(
            spec=data["spec"], spec_file=data.get("spec_file"), overrides=tuple(data.get("overrides") or ()),
            run_dir=data["run_dir"], seed=int(data["seed"]), tracking_uri=data.get("tracking_uri"),
            sweep_cap=SweepCap(float(cap["max_dollars"]), tuple(cap["seed_dirs"])) if cap else None,
            sandbox=data.get("sandbox"),
        )


@dataclass
class UnitOutcome:
    unit: RunUnit
    state: OutcomeState
    attempts: int
    error: str | None = None


def outcome_from_exit(unit: RunUnit, returncode: int, attempts: int, error: str | None) -> UnitOutcome:
    """How a worker's exit status reads: done, cancelled (Ctrl-C), or failed with its message."""
    if returncode == WORKER_EXIT_DONE:
        return UnitOutcome(unit, "done", attempts)
    if returncode == WORKER_EXIT_INTERRUPTED:
        return UnitOutcome(unit, "cancelled", attempts)
    return UnitOutcome(unit, "failed", attempts, error or f"worker exited with status {returncode}")


def retryable(returncode: int) -> bool:
    """A worker killed by a signal or crashed may succeed when resumed; bad input or Ctrl-C will not."""
    return returncode not in (WORKER_EXIT_DONE, WORKER_EXIT_BAD_INPUT, WORKER_EXIT_INTERRUPTED)


class Executor(ABC):
    """Runs units, at most `capacity` at once; cancels all of them on Ctrl-C or when `tick` says so."""

    name: str

    @abstractmethod
    def run(self, units: Sequence[RunUnit], tick: Tick) -> list[UnitOutcome]:
        """Run every unit to its end and say how each ended (in the order given).

        A KeyboardInterrupt (Ctrl-C) cancels every running unit and leaves no worker behind
        before it propagates.
        """

    def describe(self) -> str:
        return self.name
