"""Scored programs as the LLM-call baselines see them, and the program database of best-shot.

An `Individual` is one scored experiment: its program, score and the model's description of its
idea. Programs that failed, and proposals that never produced a program, are not individuals:
only real scores enter a database or a population. Everything here is rebuilt from the archive,
which is what lets a killed run resume where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from engram.runs.archive import SeedArchive


@dataclass(frozen=True)
class Individual:
    experiment: int
    agent: int
    code: str
    score: float
    reasoning: str = ""

    @property
    def rank_key(self) -> tuple[float, int]:
        """Higher score first; on a tie the earlier experiment wins, so rankings never depend on timing."""
        return (-self.score, self.experiment)


def ranked(individuals: Iterable[Individual]) -> list[Individual]:
    """Best first."""
    return sorted(individuals, key=lambda individual: individual.rank_key)


def scored_individuals(archive: SeedArchive) -> dict[int, Individual]:
    """Every scored experiment of the seed, keyed by its agent index (its proposal slot)."""
    found: dict[int, Individual] = {}
    for experiment in archive.experiments():
        evaluation = experiment.evaluation()
        if evaluation is None or evaluation.score is None or not experiment.program.is_file():
            continue
        proposal = experiment.proposal() or {}
        found[experiment.agent] = Individual(
            experiment=experiment.number, agent=experiment.agent,
            code=experiment.program.read_text(encoding="utf-8", errors="replace"), score=evaluation.score,
            reasoning=str(proposal.get("reasoning") or ""),
        )
    return found


@dataclass
class ProgramDatabase:
    """The best `capacity` programs so far (best-shot's single island)."""

    capacity: int
    members: list[Individual] = field(default_factory=list)

    def add(self, individual: Individual) -> None:
        self.members = ranked([*self.members, individual])[: self.capacity]

    def sample(self, rng: random.Random, count: int) -> list[Individual]:
        """`count` distinct members drawn at random, shown from the lowest score to the highest.

        Ascending order puts the best program last, nearest to the request for a better one.
        """
        chosen = rng.sample(self.members, min(count, len(self.members)))
        return ranked(chosen)[::-1]
