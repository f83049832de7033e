"""Evolution of Heuristics (EoH): a population of programs, each with a description of its idea.

1. Generation 0: `population_size` (N) programs from the task prompt. The best `elitism` (M) scored
   ones become the parents.
2. Each of `generations` generations makes N - M children. For each child, with probability
   `mutation_rate` one parent is chosen by tournament and one mutation operator at random
   (modify, tweak, simplify); otherwise two distinct parents are chosen by tournament and one
   crossover operator at random (diversify, recombine). The prompt holds the task, the parents'
   code with score and description, and the operator's instruction.
3. Survivors: the best M of the parents and the scored children become the next parents.

A tournament draws `tournament_size` distinct parents at random (all of them if there are fewer)
and the best wins; the second parent of a crossover is drawn from the parents left. Each child
has its own random stream, seeded by the run's seed, its generation and its number, so a run is
reproducible whatever order its parallel workers finish in, and a resumed run plans exactly the
children the killed one would have. Children of a generation are proposed and scored in parallel,
up to `workers` at a time. Failed programs and failed proposals are never parents. Settings:
`engram.spec.EvolutionMethod`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from baselines.deadline import Deadline
from baselines.parallel import run_parallel
from baselines.population import Individual, ranked, scored_individuals
from baselines.prompting import evolution_messages, first_sample_messages, format_score
from baselines.slots import Slot, SlotOutcome, finished_slots, retry_policy, run_details, run_slot, run_stop_reason
from engram.methods.context import MethodContext, MethodResult

METHOD = "evolution"
FRESH = "fresh"
"""The operator of a program written from the task prompt alone (generation 0, or no parents yet)."""

MUTATIONS: dict[str, str] = {
    "modify": "Find the weaknesses of this program and write an improved version that removes them.",
    "tweak": "Keep the structure of this program and retune its parameters (weights, thresholds, limits, "
             "counts) to score higher.",
    "simplify": "Write a simpler version of this program: drop the parts that do not help its score, "
                "keeping or improving what it achieves.",
}
CROSSOVERS: dict[str, str] = {
    "diversify": "Write a new program built on an idea as different as possible from these parents.",
    "recombine": "Work out what each parent does well and write a new program that combines those strengths.",
}


@dataclass(frozen=True)
class ChildPlan:
    operator: str
    parents: tuple[Individual, ...] = ()

    @property
    def instruction(self) -> str:
        return {**MUTATIONS, **CROSSOVERS}[self.operator]


# -- selection (pure) ---------------------------------------------------------------------------------


def tournament(pool: Sequence[Individual], rng: random.Random, size: int) -> Individual:
    contenders = rng.sample(list(pool), min(size, len(pool)))
    return ranked(contenders)[0]


def select_parents(pool: Sequence[Individual], count: int, rng: random.Random, size: int) -> list[Individual]:
    """`count` distinct parents, each the winner of a tournament among the parents not yet chosen."""
    left = ranked(pool)
    chosen: list[Individual] = []
    for _ in range(min(count, len(left))):
        winner = tournament(left, rng, size)
        chosen.append(winner)
        left.remove(winner)
    return chosen


def plan_child(pool: Sequence[Individual], rng: random.Random, *, mutation_rate: float,
               tournament_size: int) -> ChildPlan:
    """Operator and parents of one child. With one parent only, crossover is impossible: it mutates."""
    if not pool:
        return ChildPlan(FRESH)
    mutate = rng.random() < mutation_rate or len(pool) < 2
    operators = MUTATIONS if mutate else CROSSOVERS
    operator = rng.choice(sorted(operators))
    parents = select_parents(pool, 1 if mutate else 2, rng, tournament_size)
    return ChildPlan(operator, tuple(parents))


def survivors(parents: Sequence[Individual], children: Sequence[Individual], elitism: int) -> list[Individual]:
    """The best `elitism` of parents and children (best first); a tie goes to the earlier experiment."""
    unique = {individual.experiment: individual for individual in [*parents, *children]}
    return ranked(unique.values())[:elitism]


def child_rng(seed: int, generation: int, child: int) -> random.Random:
    return random.Random(f"{METHOD}:{seed}:{generation}:{child}")


def slot_of(generation: int, child: int, *, population: int, elitism: int) -> int:
    """Generation 0 holds slots 1..N; generation g >= 1 the next N - M after generation g - 1."""
    if generation == 0:
        return child
    return population + (generation - 1) * (population - elitism) + child


# -- the run ------------------------------------------------------------------------------------------


def run_evolution(ctx: MethodContext) -> MethodResult:
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments(workers=settings.workers)
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    scored = scored_individuals(ctx.archive)
    run = _Generations(ctx, deadline, scored)
    stopped = run.generation(0, [ChildPlan(FRESH)] * settings.population_size)
    parents: list[Individual] = []
    generation = 0
    while stopped is None:
        parents = survivors(parents, run.scored_of(generation), settings.elitism)
        run.log_generation(generation, parents)
        generation += 1
        if generation > settings.generations:
            break
        plans = [plan_child(parents, child_rng(ctx.seed, generation, child), mutation_rate=settings.mutation_rate,
                            tournament_size=settings.tournament_size)
                 for child in range(1, settings.population_size - settings.elitism + 1)]
        stopped = run.generation(generation, plans)
    return MethodResult(stop_reason=stopped or f"all {settings.generations} generations done",
                        best_score=ctx.best_score(), evaluations=ctx.evaluations_done(),
                        details=run_details(ctx, generation_reached=min(generation, settings.generations),
                                            parents=[p.experiment for p in parents]))


class _Generations:
    """Runs the unfinished slots of one generation at a time and keeps the scored individuals."""

    def __init__(self, ctx: MethodContext, deadline: Deadline, scored: dict[int, Individual]) -> None:
        self.ctx = ctx
        self.deadline = deadline
        self.scored = scored
        self.settings = ctx.spec.method
        self.policy = retry_policy(ctx)

    def slots(self, generation: int, count: int) -> list[int]:
        return [slot_of(generation, child, population=self.settings.population_size, elitism=self.settings.elitism)
                for child in range(1, count + 1)]

    def scored_of(self, generation: int) -> list[Individual]:
        count = self.settings.population_size if generation == 0 else (self.settings.population_size
                                                                       - self.settings.elitism)
        return [self.scored[slot] for slot in self.slots(generation, count) if slot in self.scored]

    def generation(self, generation: int, plans: list[ChildPlan]) -> str | None:
        """Propose and score the generation's unfinished children; why the run stopped, if it did."""
        def admit(outcome: SlotOutcome) -> None:
            if outcome.individual is not None:
                self.scored[outcome.slot.index] = outcome.individual

        return run_parallel(self._jobs(generation, plans), workers=self.settings.workers,
                            stop_reason=lambda: run_stop_reason(self.ctx, self.deadline), on_done=admit)

    def _jobs(self, generation: int, plans: list[ChildPlan]) -> Iterator[Callable[[], SlotOutcome]]:
        done = finished_slots(self.ctx.archive)
        for index, plan in zip(self.slots(generation, len(plans)), plans, strict=True):
            if index in done:
                continue
            slot = Slot(index, self._messages(plan), _record(generation, plan))
            yield partial(run_slot, self.ctx, slot, self.deadline, self.policy)

    def _messages(self, plan: ChildPlan) -> list[Any]:
        if plan.operator == FRESH:
            return first_sample_messages(self.ctx.problem, solutions=self.ctx.spec.method.reference_solutions)
        return evolution_messages(self.ctx.problem, plan.parents, plan.instruction,
                                  solutions=self.ctx.spec.method.reference_solutions)

    def log_generation(self, generation: int, parents: list[Individual]) -> None:
        """One event per generation with its survivors (a resumed run does not log it twice)."""
        archive = self.ctx.archive
        if any(event.get("generation") == generation for event in archive.events("generation")):
            return
        best = parents[0].score if parents else None
        archive.log("generation", generation=generation, parents=[p.experiment for p in parents], best_score=best,
                    dollars=self.ctx.ledger.total_dollars)
        shown = format_score(best) if best is not None else "none"
        self.ctx.progress.note(f"generation {generation}/{self.settings.generations}: best parent score {shown}")


def _record(generation: int, plan: ChildPlan) -> dict[str, Any]:
    return {"method": METHOD, "generation": generation, "operator": plan.operator,
            "parents": [parent.experiment for parent in plan.parents]}
