"""One-shot: `samples` independent programs from the task prompt; the best of them is the result.

Every sample sees the same prompt (the task and the starting program) and nothing of the others,
so the method measures what a model writes without feedback. Samples run up to `workers` at a
time; sample k is slot (archive agent) k. A killed run resumes with the samples it had not
finished. Settings: `engram.spec.OneShotMethod`.
"""

from __future__ import annotations

from baselines.deadline import Deadline
from baselines.parallel import run_parallel
from baselines.slots import first_sample_jobs, run_details, run_stop_reason
from engram.methods.context import MethodContext, MethodResult

METHOD = "one_shot"


def run_one_shot(ctx: MethodContext) -> MethodResult:
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments(workers=settings.workers)
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    jobs = first_sample_jobs(ctx, deadline, settings.samples, lambda index: {"method": METHOD, "sample": index})
    stopped = run_parallel(jobs, workers=settings.workers,
                           stop_reason=lambda: run_stop_reason(ctx, deadline))
    return MethodResult(stop_reason=stopped or f"all {settings.samples} samples done", best_score=ctx.best_score(),
                        evaluations=ctx.evaluations_done(), details=run_details(ctx))
