"""Proposal slots: one model conversation and at most one evaluation, numbered by the method.

Every program an LLM-call baseline asks for has a fixed slot number, decided by the method's plan
alone (one-shot: sample k; best-shot: step k; evolution: individual k of the generation order).
The slot number is the "agent" of the archive: slot k's experiment lives in
`agents/agent-<k>/experiments/`, its model calls in `agents/agent-<k>/transcript.jsonl`, and the
scripted model plays the script's k-th entry for it. Parallel workers therefore never share a
conversation, and a scripted run is the same whatever order the workers finish in.

A slot is finished once it has a stored program (an experiment) or a `proposal_failed` event. On
resume the methods rerun exactly the unfinished slots of their plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from langchain_core.messages import BaseMessage

from baselines.deadline import Deadline
from baselines.population import Individual
from baselines.prompting import first_sample_messages
from baselines.proposals import Proposal, ProposalFailure, request_program
from engram.evaluation.result import Evaluation
from engram.methods.context import MethodContext, StopRun
from engram.models.calls import RetryPolicy
from engram.runs.archive import Experiment, SeedArchive

FAILED_EVENT = "proposal_failed"


@dataclass(frozen=True)
class Slot:
    index: int
    messages: list[BaseMessage]
    record: dict[str, Any] = field(default_factory=dict)
    """The method's facts about this proposal (operator, parents, ...), stored with its experiment."""


@dataclass(frozen=True)
class SlotOutcome:
    slot: Slot
    experiment: Experiment | None = None
    evaluation: Evaluation | None = None
    failure: ProposalFailure | None = None

    @property
    def individual(self) -> Individual | None:
        """The scored program, if the slot produced one; failures and failed programs give none."""
        if self.experiment is None or self.evaluation is None or self.evaluation.score is None:
            return None
        proposal = self.experiment.proposal() or {}
        return Individual(experiment=self.experiment.number, agent=self.slot.index,
                          code=self.experiment.program.read_text(encoding="utf-8", errors="replace"),
                          score=self.evaluation.score, reasoning=str(proposal.get("reasoning") or ""))


def retry_policy(ctx: MethodContext) -> RetryPolicy:
    """The agents' retry policy (`engram.models.calls`), with the spec's retries and call timeout."""
    return RetryPolicy.of(ctx.spec.model)


def run_stop_reason(ctx: MethodContext, deadline: Deadline) -> str | None:
    return deadline.stop_reason() or ctx.stop_reason()


def check_run(ctx: MethodContext, deadline: Deadline) -> None:
    reason = run_stop_reason(ctx, deadline)
    if reason:
        raise StopRun(reason)


def run_slot(ctx: MethodContext, slot: Slot, deadline: Deadline, policy: RetryPolicy) -> SlotOutcome:
    """Ask for the slot's program and score it; a failed proposal is logged as an event."""
    transcript = ctx.archive.agent_dir(slot.index) / "transcript.jsonl"
    model = ctx.model_factory(agent=slot.index, role="agent", transcript=transcript)
    answer = request_program(model, slot.messages, policy, answer_retries=ctx.spec.method.answer_retries,
                             deadline=deadline, before_call=lambda: check_run(ctx, deadline))
    if isinstance(answer, ProposalFailure):
        ctx.archive.log(FAILED_EVENT, agent=slot.index, failure=answer.kind, error=answer.message,
                        attempts=answer.attempts, dollars=ctx.ledger.total_dollars, **slot.record)
        ctx.progress.note(f"proposal {slot.index}: {answer.kind.replace('_', ' ')} ({answer.message[:200]})")
        return SlotOutcome(slot, failure=answer)
    check_run(ctx, deadline)  # a program that arrives after the budget is spent is not scored
    experiment, evaluation = ctx.evaluate(answer.code, agent=slot.index, time_limit_s=_time_left(deadline),
                                          proposal=proposal_record(slot, answer))
    return SlotOutcome(slot, experiment=experiment, evaluation=evaluation)


def proposal_record(slot: Slot, answer: Proposal) -> dict[str, Any]:
    return {**slot.record, "reasoning": answer.reasoning, "model_calls": answer.attempts}


def _time_left(deadline: Deadline) -> float | None:
    left = deadline.remaining()
    return None if left is None else max(1.0, left)


def finished_slots(archive: SeedArchive) -> set[int]:
    """Slots that need no rerun: a stored program (scored by resume if need be) or a logged failure."""
    done = {experiment.agent for experiment in archive.experiments() if experiment.program.is_file()}
    done |= {int(event["agent"]) for event in archive.events(FAILED_EVENT) if "agent" in event}
    return done


def first_sample_jobs(ctx: MethodContext, deadline: Deadline, count: int,
                      record: Callable[[int], dict[str, Any]]) -> Iterator[Callable[[], SlotOutcome]]:
    """Slots 1..count that are still unfinished, each asking for a program from the task alone
    (one-shot's samples, best-shot's initial samples); `record` gives slot k's facts."""
    done = finished_slots(ctx.archive)
    messages = first_sample_messages(ctx.problem, solutions=ctx.spec.method.reference_solutions)
    policy = retry_policy(ctx)
    for index in range(1, count + 1):
        if index not in done:
            yield partial(run_slot, ctx, Slot(index, messages, record(index)), deadline, policy)


def failure_counts(archive: SeedArchive) -> dict[str, int]:
    counts = {"model_error": 0, "malformed": 0}
    for event in archive.events(FAILED_EVENT):
        kind = str(event.get("failure"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def run_details(ctx: MethodContext, **extra: Any) -> dict[str, Any]:
    """What a method returns besides its stop reason: the failures, so errors are never hidden."""
    counts = failure_counts(ctx.archive)
    return {"model_errors": counts["model_error"], "malformed_answers": counts["malformed"], **extra}
