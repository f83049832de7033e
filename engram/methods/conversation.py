"""One agent's conversation, driven the way the reference drives it.

The conversation is kept by a checkpointer, so that Engram can add messages to it: the summary
request after a natural end, a "continue" message (tree search, single agent), or a notice after a
failed stream. Every message the agent writes is checked for its summary sections (when the method
wants a summary); the first one that has them ends the agent before its tool calls run. A stream
that fails (a model error that retries did not cure, the step limit of one stream) rebuilds the
agent, which continues the same conversation; `max_stream_errors` failures in a row end it. The
agent's time limit, a run budget and Engram's own errors end it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engram.errors import EngramError
from engram.methods.context import MethodContext, StopRun
from engram.methods.digest import has_summary_sections, message_text
from engram.models.calls import AgentStop

REFERENCE_STREAM_ERRORS = 5
"""Failed streams in a row that end an agent in the reference (it rebuilds the agent after each earlier one)."""
STREAM_ERROR_NOTICE = ("[Engram] A tool or model call failed ({error}); the agent was restarted with its "
                       "conversation. You can continue working; split long operations into smaller steps and "
                       "score programs with run_simulation.")


@dataclass
class AgentOutcome:
    reason: str
    run_stop: str | None = None


@dataclass
class Conversation:
    """How an agent's conversation ended, and what it holds."""

    outcome: AgentOutcome
    summary: str | None = None
    """The first message of the agent that had the summary sections, if any."""
    last_text: str = ""
    history: list[Any] = field(default_factory=list)
    turns: int = 0
    """Streams that ended naturally (the agent stopped calling tools)."""
    summary_requested: bool = False
    """The summary request was sent: a reply that calls tools instead ends the agent (the reference's rule)."""


NextMessage = Callable[[Conversation], str | None]
"""After a natural end: the message to send next in the same conversation, or None to end it."""


def converse(ctx: MethodContext, agent: int, build_graph: Callable[[Any], Any], deadline: float, first: str, *,
             max_steps: int, max_stream_errors: int, want_summary: bool, after_turn: NextMessage,
             thread: str | None = None) -> Conversation:
    """Run the agent from `first` until something ends it (see the module docstring).

    `build_graph(checkpointer)` makes (and remakes, after a failed stream) the agent's graph."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    checkpointer = InMemorySaver()
    config: dict[str, Any] = {"recursion_limit": max_steps,
                              "configurable": {"thread_id": thread or f"agent-{agent}"}}
    graph = build_graph(checkpointer)
    state = Conversation(outcome=AgentOutcome("completed"))
    message: str | None = first
    errors = 0
    while message is not None:
        failure = _stream(ctx, agent, graph, config, HumanMessage(content=message), deadline, state,
                          want_summary=want_summary)
        if failure is None:
            errors = 0
            if state.summary is not None or state.outcome.reason != "completed":
                break
            state.turns += 1
            message = after_turn(state)
            continue
        errors += 1
        if errors >= max_stream_errors:
            state.outcome = AgentOutcome(f"stream errors: {errors} in a row, the last: {failure}"[:500])
            break
        ctx.progress.note(f"agent {agent}: stream failed ({failure}); rebuilding it ({errors}/{max_stream_errors})")
        ctx.archive.log("agent_rebuild", agent=agent, error=failure[:500], errors=errors)
        graph = build_graph(checkpointer)
        message = STREAM_ERROR_NOTICE.format(error=failure[:300])
    state.history = _history(graph, config)
    return state


def _stream(ctx: MethodContext, agent: int, graph: Any, config: dict[str, Any], message: Any, deadline: float,
            state: Conversation, *, want_summary: bool) -> str | None:
    """Stream one message; update `state`. Returns a description of a failed stream, else None."""
    from langchain_core.messages import AIMessage
    from langgraph.errors import GraphRecursionError

    try:
        for update in graph.stream({"messages": [message]}, config, stream_mode="updates"):
            for reply in _messages_in(update):
                if not isinstance(reply, AIMessage):
                    continue
                text = message_text(reply.content)
                if text.strip():
                    state.last_text = text
                ctx.progress.agent_turn(agent, text, list(reply.tool_calls or []))
                if want_summary and has_summary_sections(text):
                    state.summary = text.strip()
                    return None  # stop here: its tool calls, if any, never run
                if state.summary_requested and reply.tool_calls:
                    state.outcome = AgentOutcome("tool calls instead of the requested summary")
                    return None
            if time.monotonic() >= deadline:
                state.outcome = AgentOutcome("time limit")
                return None
        return None
    except AgentStop as stop:
        state.outcome = AgentOutcome(str(stop))
    except StopRun as stop:
        state.outcome = AgentOutcome(f"stopped: {stop.reason}", run_stop=stop.reason)
    except GraphRecursionError:
        return f"step limit ({config['recursion_limit']})"
    except EngramError:
        raise  # the run itself is broken (tampered problem files, missing data): stop it, say why
    except Exception as exc:  # a model or provider error that retries did not cure
        if _is_budget_error(exc):
            state.outcome = AgentOutcome(f"stopped: {exc}", run_stop=str(exc))
            return None
        return f"{type(exc).__name__}: {exc}"
    return None


def _messages_in(update: Any) -> list[Any]:
    messages: list[Any] = []
    if isinstance(update, dict):
        for value in update.values():
            if isinstance(value, dict) and isinstance(value.get("messages"), list):
                messages.extend(value["messages"])
    return messages


def _history(graph: Any, config: dict[str, Any]) -> list[Any]:
    try:
        return list(graph.get_state(config).values.get("messages", []))
    except Exception:
        return []


def _is_budget_error(exc: BaseException) -> bool:
    from engram.models.llm import BudgetExceeded

    return isinstance(exc, BudgetExceeded)
