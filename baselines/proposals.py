"""Asking a model for one program through a forced tool call.

The LLM-call baselines (one-shot, best-shot, evolution) all ask the model the same thing: write a
whole program. The model answers by calling `implement_algorithm(code, reasoning)`, so the code
needs no fishing out of a Markdown reply. Two kinds of trouble are handled differently:

* a provider error goes through the agents' retry layer (`engram.models.calls.call_model`): a
  transient one (rate limit, 5xx, timeout, an empty or unreadable reply) is retried up to the
  spec's `model.max_retries`, waiting as long as `Retry-After` asks, never past the run's time
  budget; one that no retry can cure (a bad key) stops the run with `ProviderError`;
* an answer without one usable call is sent back with what was wrong, up to `answer_retries`
  times, in the same conversation.

What is still wrong after that is a `ProposalFailure`: an error, never a score (the reference
scored model errors 0.0, which could outrank a valid negative score). A spent dollar budget or the
end of the time budget stops the run (`StopRun`) instead of failing the proposal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field, ValidationError

from baselines.deadline import Deadline
from engram.errors import EngramError
from engram.methods.context import StopRun
from engram.models.calls import AgentStop, RetryPolicy, call_model
from engram.models.llm import BudgetExceeded

TOOL_NAME = "implement_algorithm"


class ImplementAlgorithm(BaseModel):
    """Submit your program. Call this exactly once, with the complete program and its idea."""

    code: str = Field(description="The complete Python program: every import and helper, and the function "
                                  "the task asks for. It replaces the starting program as a whole.")
    reasoning: str = Field(description="The idea behind the program and why it should score well, in two to "
                                       "five sentences.")


IMPLEMENT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": ImplementAlgorithm.__doc__,
        "parameters": ImplementAlgorithm.model_json_schema(),
    },
}


@dataclass(frozen=True)
class Proposal:
    """A program the model submitted, with its stated idea and how many model calls it took."""

    code: str
    reasoning: str
    attempts: int


@dataclass(frozen=True)
class ProposalFailure:
    """No program: the model kept failing (`model_error`) or kept answering unusably (`malformed`)."""

    kind: Literal["model_error", "malformed"]
    message: str
    attempts: int


def request_program(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    policy: RetryPolicy,
    *,
    answer_retries: int,
    deadline: Deadline | None = None,
    before_call: Callable[[], None] = lambda: None,
) -> Proposal | ProposalFailure:
    """Ask `model` for a program until it answers usably or the retries run out.

    `before_call` runs before every model call (every attempt) and raises `StopRun` when the run
    must end (budget, time), so no call is sent once the run is over.
    """
    bound = model.bind_tools([IMPLEMENT_TOOL], tool_choice=TOOL_NAME)
    conversation = list(messages)
    attempts = 0

    def counted() -> None:
        nonlocal attempts
        before_call()
        attempts += 1

    problem = "no answer"
    for _ in range(answer_retries + 1):
        try:
            reply = _ask(bound, conversation, policy, deadline, counted)
        except _ModelCallFailed as failed:
            return ProposalFailure("model_error", str(failed)[:2000], attempts)
        answer = read_answer(reply)
        if isinstance(answer, ImplementAlgorithm):
            return Proposal(code=answer.code, reasoning=answer.reasoning.strip(), attempts=attempts)
        problem = answer
        conversation += [reply, *feedback(reply, problem)]
    return ProposalFailure("malformed", problem, attempts)


class _ModelCallFailed(Exception):
    """The retries are spent, or the error was about this conversation only (its context window)."""


def _ask(model: Any, conversation: list[BaseMessage], policy: RetryPolicy, deadline: Deadline | None,
         before_attempt: Callable[[], None]) -> AIMessage:
    """One answer through the retry layer; errors that end the run are raised as such."""
    try:
        reply = call_model(model, conversation, policy, deadline=deadline.instant if deadline else None,
                           before_attempt=before_attempt)
    except BudgetExceeded as exc:
        raise StopRun(str(exc)) from None
    except AgentStop:
        raise StopRun(deadline.reason if deadline else "time limit") from None
    except (EngramError, StopRun):
        raise
    except Exception as exc:
        raise _ModelCallFailed(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(reply, AIMessage):
        raise _ModelCallFailed(f"TypeError: the model returned {type(reply).__name__}, not a message")
    return reply


_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(?P<body>.*?)\n\s*```\s*$", re.DOTALL)


def read_answer(reply: AIMessage) -> ImplementAlgorithm | str:
    """The submitted program, or what is wrong with the reply (sent back to the model)."""
    calls = [call for call in reply.tool_calls if call.get("name") == TOOL_NAME]
    if not calls:
        invalid = [call for call in getattr(reply, "invalid_tool_calls", None) or []
                   if call.get("name") in (TOOL_NAME, None)]
        if invalid:
            reason = invalid[0].get("error") or "unparsable"
            return f"the arguments of your {TOOL_NAME} call were not valid JSON ({reason})"
        others = sorted({str(call.get("name")) for call in reply.tool_calls})
        if others:
            return f"you called {', '.join(others)}; the only tool is {TOOL_NAME}"
        return f"your answer did not call {TOOL_NAME}"
    if len(calls) > 1:
        return f"you called {TOOL_NAME} {len(calls)} times; call it exactly once, with one program"
    try:
        answer = ImplementAlgorithm.model_validate(calls[0].get("args") or {})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, error["loc"])) or "arguments" for error in exc.errors())
        return f"the {TOOL_NAME} call needs string arguments `code` and `reasoning` (problem with: {fields})"
    code = _unfence(answer.code)
    if not code.strip():
        return "the `code` argument was empty; it must hold the complete program"
    return ImplementAlgorithm(code=code, reasoning=answer.reasoning)


def _unfence(code: str) -> str:
    """Models sometimes wrap the code argument in a Markdown fence; the program is what is inside."""
    match = _FENCE.match(code)
    return match.group("body") + "\n" if match else code


def feedback(reply: AIMessage, problem: str) -> list[BaseMessage]:
    """The message(s) that send an unusable answer back: every tool call must get its tool reply."""
    text = f"That answer cannot be used: {problem}. Call {TOOL_NAME} once, with the complete program in `code`."
    if reply.tool_calls:
        return [ToolMessage(content=text, tool_call_id=str(call.get("id") or ""), status="error")
                for call in reply.tool_calls]
    return [HumanMessage(content=text)]
