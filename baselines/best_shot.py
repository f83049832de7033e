"""Best-shot (the paper's "FunSearch"): improve on a few of the best programs so far, again and again.

1. `initial_samples` programs from the task prompt alone (slots 1..initial_samples).
2. `iterations` steps (the following slots): each draws `shown_programs` distinct programs at
   random from a database of the `database_size` best scored programs, shows them with their
   scores in ascending score order (the best last), and asks for a better one. The new program
   joins the database if it scores well enough. One island.

Each step's draw uses its own random stream, seeded by the run's seed and the step number, so a
run with one worker is reproducible and a resumed run draws what the killed one would have.
With several workers, steps overlap: a step draws from the database as it is when the step starts
(as FunSearch's asynchronous samplers do), so the draws then depend on timing. Programs that fail,
and proposals that never produce a program, never enter the database. Settings:
`engram.spec.BestShotMethod`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial

from baselines.deadline import Deadline
from baselines.parallel import run_parallel
from baselines.population import ProgramDatabase, scored_individuals
from baselines.prompting import best_shot_messages
from baselines.slots import (
    Slot,
    SlotOutcome,
    finished_slots,
    first_sample_jobs,
    retry_policy,
    run_details,
    run_slot,
    run_stop_reason,
)
from engram.methods.context import MethodContext, MethodResult

METHOD = "best_shot"


def run_best_shot(ctx: MethodContext) -> MethodResult:
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments(workers=settings.workers)
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    database = ProgramDatabase(settings.database_size)
    for individual in scored_individuals(ctx.archive).values():
        database.add(individual)

    def admit(outcome: SlotOutcome) -> None:
        if outcome.individual is not None:
            database.add(outcome.individual)

    def stop_reason() -> str | None:
        return run_stop_reason(ctx, deadline)

    initial = first_sample_jobs(ctx, deadline, settings.initial_samples,
                                lambda _: {"method": METHOD, "phase": "initial"})
    stopped = run_parallel(initial, workers=settings.workers, stop_reason=stop_reason,
                           on_done=admit)
    if stopped is None:
        stopped = run_parallel(_step_jobs(ctx, deadline, database), workers=settings.workers,
                               stop_reason=stop_reason, on_done=admit)
    total = settings.initial_samples + settings.iterations
    return MethodResult(stop_reason=stopped or f"all {total} proposals done", best_score=ctx.best_score(),
                        evaluations=ctx.evaluations_done(),
                        details=run_details(ctx, database=[m.experiment for m in database.members]))


def _step_jobs(ctx: MethodContext, deadline: Deadline,
               database: ProgramDatabase) -> Iterator[Callable[[], SlotOutcome]]:
    """Built lazily: each step's prompt comes from the database as it is when the step starts."""
    settings = ctx.spec.method
    done = finished_slots(ctx.archive)
    policy = retry_policy(ctx)
    first = settings.initial_samples + 1
    for index in range(first, first + settings.iterations):
        if index in done:
            continue
        shown = database.sample(step_rng(ctx.seed, index), settings.shown_programs)
        record = {"method": METHOD, "phase": "improve", "step": index - settings.initial_samples,
                  "shown": [individual.experiment for individual in shown]}
        messages = best_shot_messages(ctx.problem, shown, solutions=ctx.spec.method.reference_solutions)
        slot = Slot(index, messages, record)
        yield partial(run_slot, ctx, slot, deadline, policy)


def step_rng(seed: int, slot: int) -> random.Random:
    return random.Random(f"{METHOD}:{seed}:{slot}")
