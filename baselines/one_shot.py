"""One-shot: `samples` independent programs from the task prompt; the best of them is the result.

Every sample sees the same prompt (the task and the starting program) and nothing of the others,
so the method measures what a model writes without feedback. Samples run up to `workers` at a
time; sample k is slot (archive agent) k. A killed run resumes with the samples it had not
finished. Settings: `engram.spec.OneShotMethod`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from baselines.deadline import Deadline
from baselines.parallel import run_parallel
from baselines.prompting import first_sample_messages
from baselines.slots import Slot, SlotOutcome, finished_slots, retry_policy, run_details, run_slot, run_stop_reason
from engram.methods.context import MethodContext, MethodResult

METHOD = "one_shot"


def run_one_shot(ctx: MethodContext) -> MethodResult:
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments(workers=settings.workers)
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    stopped = run_parallel(_jobs(ctx, deadline), workers=settings.workers,
                           stop_reason=lambda: run_stop_reason(ctx, deadline))
    return MethodResult(stop_reason=stopped or f"all {settings.samples} samples done", best_score=ctx.best_score(),
                        evaluations=ctx.evaluations_done(), details=run_details(ctx))


def _jobs(ctx: MethodContext, deadline: Deadline) -> Iterator[Callable[[], SlotOutcome]]:
    done = finished_slots(ctx.archive)
    messages = first_sample_messages(ctx.problem)
    policy = retry_policy(ctx)
    for index in range(1, ctx.spec.method.samples + 1):
        if index not in done:
            slot = Slot(index, messages, {"method": METHOD, "sample": index})
            yield partial(run_slot, ctx, slot, deadline, policy)
