"""Single agent (the paper's "Glia"): one researcher, alone, for the whole time budget.

The agent has exactly the tools and sandbox of an Engram agent (file tools, sandboxed shell,
`run_simulation`, the helper sub-agent) but no Research Digest and no other agents' archive: it
sees its own experiments only. Its system prompt tells it to run many experiments and never to
wrap up. Whenever it ends a turn (it stops calling tools, or a turn reaches its step limit), it is
sent a "keep going" message in the same conversation. The run ends when `max_minutes` (the whole
session, across resumes) are up, a run budget (evaluations, dollars, target score) is reached,
`patience` consecutive continuations bring no new best score, `max_continuations` is reached, or
a model error survives the retries.

Resume: the conversation lives in memory, so a run killed mid-session continues with a fresh
session (the next agent number) that gets the best program so far, the log of every earlier
experiment, and the time, continuation count and no-improvement count the killed session left.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any

from baselines.deadline import Deadline
from engram.methods.agent_chain import (
    PATHS,
    agent_model,
    build_agent_graph,
    close_agent,
    close_interrupted_agents,
    prepare_workspace,
    start_agent,
    workspace_map,
)
from engram.methods.context import MethodContext, MethodResult
from engram.methods.conversation import REFERENCE_STREAM_ERRORS, AgentOutcome, Conversation, converse
from engram.methods.digest import experiment_log, prompt, summary_from_log
from engram.methods.result_file_reply import REPLY_DESCRIPTIONS
from engram.methods.workspace_backend import closing_shells
from engram.runs.archive import SeedArchive

MIN_EXPERIMENTS_ADVICE = 20
"""The reference asks its single agent for at least 20 simulations."""

ARCHIVE = ("your experiments, `agent-<k>/experiments/exp-<m>/` with `program.py`, `evaluation.json` and "
           "`results/` (k is the session number, which changes only when a crashed run is restarted)")
CONTINUABLE = ("completed",)
"""Turn endings after which the agent is sent a continuation message; any other ends the session."""


@dataclass
class SessionState:
    """What survives a restart besides the time: continuations sent, and the current run of idle ones."""

    continuations: int = 0
    idle: int = 0

    @classmethod
    def from_archive(cls, archive: SeedArchive) -> SessionState:
        turns = archive.events("turn_end")
        last = turns[-1] if turns else {}
        return cls(continuations=int(last.get("continuations", 0)), idle=int(last.get("idle", 0)))

    def after_turn(self, *, continuation: bool, improved: bool) -> None:
        """A new best resets the idle count; a continuation that brings none adds to it."""
        if improved:
            self.idle = 0
        elif continuation:
            self.idle += 1

    def stop_reason(self, settings: Any) -> str | None:
        if self.idle >= settings.patience:
            plural = "s" if self.idle != 1 else ""
            return f"no new best score in {self.idle} consecutive continuation{plural}"
        if settings.max_continuations is not None and self.continuations >= settings.max_continuations:
            return f"continuation limit reached ({settings.max_continuations})"
        return None


def run_single_agent(ctx: MethodContext) -> MethodResult:
    """Run (or continue) the single agent's session for one seed."""
    archive = ctx.archive
    started = close_interrupted_agents(ctx, digest=False)
    state = SessionState.from_archive(archive)
    deadline = Deadline.for_run(ctx.spec.method.max_minutes, archive.events())
    stop = state.stop_reason(ctx.spec.method) or deadline.stop_reason() or ctx.stop_reason()
    if stop is None:
        stop = run_session(ctx, max(started, default=0) + 1, state, deadline)
    return MethodResult(stop_reason=stop, best_score=ctx.best_score(), evaluations=ctx.evaluations_done(),
                        details={"continuations": state.continuations, "sessions": len(archive.started_agents())})


def run_session(ctx: MethodContext, session: int, state: SessionState, run_deadline: Deadline) -> str:
    """One conversation: the first message, then continuation messages until something ends it.
    Returns why the run stops."""
    settings = ctx.spec.method
    deadline = time.monotonic() + (run_deadline.remaining() or 0.0)
    resumed = session > 1
    archive_view = prepare_workspace(ctx, session, whole_archive=True)
    best = ctx.archive.best()
    if resumed and best is not None:
        shutil.copyfile(best[1].program, ctx.archive.workspace / ctx.problem.workspace_name("best_program"))
    start_agent(ctx, session, session)
    model = agent_model(ctx, session)
    system = system_prompt(ctx, resumed=resumed)
    turn = {"before": ctx.best_score(), "continuation": False, "stop": None}

    def end_turn(outcome: AgentOutcome) -> str | None:
        """Book the turn that just ended; returns why the session stops, or None to continue."""
        state.after_turn(continuation=turn["continuation"], improved=_better(ctx.best_score(), turn["before"]))
        ctx.archive.log("turn_end", agent=session, continuation=turn["continuation"], reason=outcome.reason,
                        best_score=ctx.best_score(), idle=state.idle, continuations=state.continuations)
        return _turn_stop(ctx, outcome, state, run_deadline)

    def after_turn(conversation: Conversation) -> str | None:
        turn["stop"] = end_turn(conversation.outcome)
        if turn["stop"] is not None:
            return None
        state.continuations += 1
        turn.update(before=ctx.best_score(), continuation=True)
        return prompt("keep_going")

    with closing_shells():
        conversation = converse(
            ctx, session, lambda saver: build_agent_graph(ctx, session, model, deadline, archive_view, system=system,
                                                          checkpointer=saver),
            deadline, first_message(ctx, resumed=resumed), max_steps=settings.max_steps_per_turn,
            max_stream_errors=REFERENCE_STREAM_ERRORS, want_summary=False, after_turn=after_turn,
            thread=f"session-{session}")
    stop = turn["stop"] or end_turn(conversation.outcome) or conversation.outcome.reason
    experiments = [e for e in ctx.archive.experiments() if e.agent == session]
    summary = summary_from_log(session, experiments, f"a single agent is not asked for one; it ended: {stop}")
    close_agent(ctx, session, summary, stop, digest=False)
    return stop


def _turn_stop(ctx: MethodContext, outcome: AgentOutcome, state: SessionState, deadline: Deadline) -> str | None:
    """Why the session ends after this turn, or None to send a continuation."""
    if outcome.run_stop is not None:
        return outcome.run_stop
    time_up = deadline.stop_reason()
    if not outcome.reason.startswith(CONTINUABLE):
        return time_up if outcome.reason == "time limit" and time_up else outcome.reason
    return time_up or state.stop_reason(ctx.spec.method) or ctx.stop_reason()


def _better(after: float | None, before: float | None) -> bool:
    return after is not None and (before is None or after > before)


def system_prompt(ctx: MethodContext, *, resumed: bool) -> str:
    best_name = ctx.problem.workspace_name("best_program")
    extra = [f"- `/{best_name}`: your best program so far"] if resumed and ctx.archive.best() else []
    return prompt("single_agent_system").format(
        minutes=f"{ctx.spec.method.max_minutes:g}", min_experiments=MIN_EXPERIMENTS_ADVICE,
        workspace_map=workspace_map(ctx, extra, archive=ARCHIVE), paths=PATHS,
        simulation_reply=REPLY_DESCRIPTIONS[ctx.spec.method.simulation_reply],
    )


def first_message(ctx: MethodContext, *, resumed: bool) -> str:
    if not resumed:
        start = f"`/{ctx.problem.workspace_name('initial_program')}` is the starting program."
    else:
        best = ctx.archive.best()
        start = ("Your session was interrupted and restarted: you lost the conversation, not the work. Every "
                 "experiment you ran is under `/archive/agent-<k>/experiments/`; here is their log.\n\n"
                 + experiment_log(ctx.archive.experiments()))
        if best is not None:
            code = best[1].program.read_text(encoding="utf-8")
            start += (f"\n\nThe best so far scored {best[0]} (exp-{best[1].number:04d}), also at "
                      f"`/{ctx.problem.workspace_name('best_program')}`:\n\n```{ctx.problem.language}\n{code}\n```")
    return prompt("single_agent_first_message").format(task=ctx.problem.task_prompt.strip(), start=start)
