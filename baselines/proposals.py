"""Asking a model for one program through a forced tool call, with bounded retries.

The LLM-call baselines (one-shot, best-shot, evolution) all ask the model the same thing: write a
whole program. The model answers by calling `implement_algorithm(code, reasoning)`, so the code
needs no fishing out of a Markdown reply. Two kinds of trouble are handled differently:

* a provider error that is transient (rate limit, 5xx, timeout) is retried with exponential
  backoff, up to the spec's `model.max_retries`;
* an answer without one usable call is sent back with what was wrong, up to `answer_retries`
  times, in the same conversation.

What is still wrong after that is a `ProposalFailure`: an error, never a score (the reference
scored model errors 0.0, which could outrank a valid negative score). A spent dollar budget stops
the run (`StopRun`) instead of failing the proposal.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field, ValidationError

from engram.errors import EngramError
from engram.methods.context import StopRun
from engram.models.llm import BudgetExceeded, is_retryable, provider_error

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


@dataclass(frozen=True)
class RetryPolicy:
    answer_retries: int = 2
    transient_retries: int = 6
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lockstep."""
        return min(self.max_delay_s, self.initial_delay_s * 2 ** attempt) * random.uniform(0.5, 1.0)


class _ModelCallFailed(Exception):
    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.attempts = attempts


def request_program(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    policy: RetryPolicy,
    *,
    before_call: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Proposal | ProposalFailure:
    """Ask `model` for a program until it answers usably or the retries run out.

    `before_call` runs before every model call and raises `StopRun` when the run must end (budget,
    time), so no call is sent once the run is over.
    """
    bound = model.bind_tools([IMPLEMENT_TOOL], tool_choice=TOOL_NAME)
    conversation = list(messages)
    attempts = 0
    problem = "no answer"
    for _ in range(policy.answer_retries + 1):
        try:
            reply, calls = _invoke(bound, conversation, policy, before_call, sleep)
        except _ModelCallFailed as failed:
            return ProposalFailure("model_error", str(failed)[:2000], attempts + failed.attempts)
        attempts += calls
        answer = read_answer(reply)
        if isinstance(answer, ImplementAlgorithm):
            return Proposal(code=answer.code, reasoning=answer.reasoning.strip(), attempts=attempts)
        problem = answer
        conversation += [reply, *feedback(reply, problem)]
    return ProposalFailure("malformed", problem, attempts)


def _invoke(model: Any, conversation: list[BaseMessage], policy: RetryPolicy, before_call: Callable[[], None],
            sleep: Callable[[float], None]) -> tuple[AIMessage, int]:
    """One answer, retrying transient provider errors; returns it with the number of calls made."""
    for attempt in range(policy.transient_retries + 1):
        before_call()
        try:
            reply = model.invoke(conversation)
        except BudgetExceeded as exc:
            raise StopRun(str(exc)) from None
        except (EngramError, StopRun):
            raise
        except Exception as exc:
            if (fatal := provider_error(exc)) is not None:  # a bad key or parameter fails every proposal alike
                raise fatal from exc
            if not is_retryable(exc) or attempt >= policy.transient_retries:
                raise _ModelCallFailed(exc, attempt + 1) from exc
            sleep(policy.delay(attempt))
            continue
        if not isinstance(reply, AIMessage):
            raise _ModelCallFailed(TypeError(f"the model returned {type(reply).__name__}, not a message"), attempt + 1)
        return reply, attempt + 1
    raise AssertionError("unreachable")


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
