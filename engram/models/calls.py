"""How an agent's model calls survive a real provider: one retry layer, hard deadlines, clear failures.

A provider fails in three ways, and each needs a different answer:

* transiently (429, 5xx, a dropped connection, a timeout, a 200 whose body is unusable): wait, as
  long as the provider asks (`Retry-After`) or with backoff, and try again -- never past the
  agent's deadline;
* permanently, because the run is misconfigured (401 bad key, 403, 404 unknown model, 400 a
  parameter the model refuses): retrying or starting the next agent cannot help, so the run
  stops with `ProviderError`, which names the cause, and resumes once the spec is fixed;
* by answering with tool calls that cannot be run (arguments that are not JSON): the agent gets a
  tool error back and can try again, instead of the loop taking the reply for a final answer.

Retries happen here and nowhere else: the OpenAI SDK and litellm are told not to retry
(`engram.models.llm.create_chat_model`), so every attempt is one HTTP request and one transcript entry.
The deadline holds during a call, too: each attempt is given only the time left as its HTTP
timeout, and the agent stops waiting for an attempt that outlives the deadline anyway.
"""

from __future__ import annotations

import contextvars
import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import litellm
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, ToolMessage

from engram.errors import ProviderError

GRACE_S = 2.0
"""How long past its own timeout a model call may take to give up before the agent stops waiting."""


class AgentStop(Exception):
    """The agent's own limit (time or steps) is reached."""


class MalformedReply(Exception):
    """The provider answered 200 but with nothing usable (no choices, no output): worth retrying.

    `usage` is what the provider reported for it, since such a reply may still be billed."""

    def __init__(self, message: str, *, usage: Any = None) -> None:
        super().__init__(message)
        self.usage = usage


BILLED_USAGE = "engram_billed_usage"
"""Attribute of a litellm error raised for a reply the provider billed although it held nothing usable
(litellm's Responses API bridge fails on an empty output): the usage the provider reported."""


def billed_tokens(error: BaseException) -> tuple[int, int] | None:
    """(input, output) tokens the provider billed for the reply that `error` refused, if it said."""
    usage = error.usage if isinstance(error, MalformedReply) else getattr(error, BILLED_USAGE, None)
    if not usage:
        return None

    def read(*names: str) -> int:
        for name in names:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if value is not None:
                return int(value)
        return 0

    return read("prompt_tokens", "input_tokens"), read("completion_tokens", "output_tokens")


RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    litellm.RateLimitError,
    litellm.APIConnectionError,
    litellm.Timeout,
    litellm.ServiceUnavailableError,
    litellm.InternalServerError,
    litellm.BadGatewayError,
    MalformedReply,
)
"""Transient provider errors: worth waiting for."""

AGENT_ERRORS: tuple[type[Exception], ...] = (
    litellm.ContextWindowExceededError,
    litellm.ContentPolicyViolationError,
)
"""Errors about this agent's conversation, not the run's settings: they end the agent, not the run."""

FATAL_ERRORS: tuple[type[Exception], ...] = (
    litellm.AuthenticationError,
    litellm.PermissionDeniedError,
    litellm.NotFoundError,
    litellm.BadRequestError,
    litellm.UnsupportedParamsError,
)
"""Errors from the run's own settings (key, model name, parameters): every later call would fail alike."""

_WHAT_TO_FIX = {
    401: "the API key was refused: check the key variable (the spec's api_key_env or the provider's usual one)",
    403: "the key may not use this model",
    404: "the provider does not know this model (or the api_base is wrong): check model.id and model.api_base",
}


TRANSIENT_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: request timeout, conflict (OpenAI's "try again"), rate limit."""


def is_retryable(error: BaseException) -> bool:
    """Transient errors by type or by HTTP status, whatever class litellm gave them (its Responses API
    bridge raises `BadRequestError` for a 429 or a 500 whose body says `invalid_request_error`), and a
    2xx whose body could not be read (the bridge reports a malformed reply as an `APIError` 200)."""
    if isinstance(error, RETRYABLE_ERRORS):
        return True
    status = _status(error)
    if status is None:
        return False
    if status in TRANSIENT_STATUSES or status >= 500:
        return True
    return isinstance(error, litellm.APIError) and 200 <= status < 300


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def provider_error(error: BaseException, model: str | None = None) -> ProviderError | None:
    """The run-stopping error for `error`, or None when it is transient or about one conversation."""
    if isinstance(error, ProviderError):
        return error
    if isinstance(error, AGENT_ERRORS) or is_retryable(error) or not isinstance(error, FATAL_ERRORS):
        return None
    status = _status(error)
    advice = _WHAT_TO_FIX.get(status or 0, "the provider refused the request as sent: check model.params")
    where = f" from {model}" if model else ""
    detail = " ".join(str(error).split())[:600]
    code = f"HTTP {status}" if status else type(error).__name__
    return ProviderError(f"model call failed{where} ({code}), and retrying cannot help: {advice}. "
                         f"Provider said: {detail}", status_code=status)


def retry_after(error: BaseException) -> float | None:
    """Seconds the provider asked to wait (`retry-after-ms` or `Retry-After`, seconds or a date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "litellm_response_headers", None)
    if not headers:
        return None
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait; `max_delay` bounds even a provider's Retry-After."""

    max_retries: int = 6
    initial_delay: float = 1.0
    backoff_factor: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    timeout_s: float = 600.0
    """HTTP timeout of one attempt, shortened to the time an agent has left."""

    @classmethod
    def of(cls, model: Any) -> RetryPolicy:
        """The policy a spec's model settings (`max_retries`, `timeout_s`) give every method's calls."""
        return cls(max_retries=model.max_retries, timeout_s=model.timeout_s)

    def delay(self, attempt: int, asked: float | None = None) -> float:
        backoff = self.initial_delay * self.backoff_factor**attempt
        if self.jitter:
            backoff *= random.uniform(0.75, 1.25)
        return min(self.max_delay, max(backoff, asked or 0.0))


def pause(seconds: float) -> None:
    """How the retry layer waits between attempts (a module function, so a test can watch the waits)."""
    time.sleep(seconds)


def retrying(attempt: Callable[[float], Any], policy: RetryPolicy, *, deadline: float | None = None,
             model: str | None = None, sleep: Callable[[float], None] | None = None) -> Any:
    """`attempt(seconds_left)` until it succeeds: transient errors are retried as `policy` says (never
    waiting past `deadline`, a `time.monotonic()` value), errors no retry can cure raise
    `ProviderError`, and the deadline raises `AgentStop`."""

    def left() -> float:
        return float("inf") if deadline is None else deadline - time.monotonic()

    tries = 0
    while True:
        if left() <= 0:
            raise AgentStop("time limit")
        try:
            return attempt(left())
        except Exception as exc:
            if (fatal := provider_error(exc, model)) is not None:
                raise fatal from exc
            if not is_retryable(exc) or tries >= policy.max_retries:
                raise
            wait = policy.delay(tries, retry_after(exc))
            if wait >= left():
                raise AgentStop("time limit") from exc
            (sleep or pause)(wait)
            tries += 1


def call_model(model: Any, messages: list[Any], policy: RetryPolicy, *, deadline: float | None = None,
               before_attempt: Callable[[], None] | None = None) -> Any:
    """`model.invoke(messages)` through the retry layer, for calls made outside an agent loop (a
    baseline's proposal, a summary, a digest distillation, OpenEvolve's requests): each attempt is
    one call of `model`, and so one transcript entry.

    With a `deadline` (a `time.monotonic()` value) each attempt gets the time left as its HTTP
    timeout (or `policy.timeout_s`, if shorter) and is abandoned a moment after the deadline should
    the client not return; reaching the deadline raises `AgentStop`. `before_attempt` runs before
    every attempt, in the caller's thread, and may raise to stop (a spent budget)."""
    name = getattr(model, "model", None)

    def attempt(left: float) -> Any:
        if before_attempt is not None:
            before_attempt()
        if deadline is None:
            return model.invoke(messages)
        timeout = min(policy.timeout_s, left)
        return call_within(lambda: model.invoke(messages, timeout=timeout), left + GRACE_S)

    return retrying(attempt, policy, deadline=deadline, model=name if isinstance(name, str) else None)


def invoke_with_retries(model: Any, messages: list[Any], policy: RetryPolicy | None = None, *,
                        within: float | None = None) -> Any:
    """`call_model` for a one-off call (a summary over an agent's history, a digest distillation).

    All attempts together take at most `within` seconds (default: the model's own timeout for one
    call), so that a summary asked for after an agent's time limit cannot hold it much longer."""
    if within is None:
        timeout = getattr(model, "request_timeout", None)
        within = float(timeout) if isinstance(timeout, int | float) else None
    deadline = None if within is None else time.monotonic() + within
    try:
        return call_model(model, messages, policy or RetryPolicy(), deadline=deadline)
    except AgentStop as stop:  # not an agent's limit here: the call's own
        raise TimeoutError(f"model call gave no answer within {within:g} s") from stop


class ModelCallMiddleware(AgentMiddleware):
    """Around every model call of an agent: the retry layer, the deadline, and unusable tool calls.

    `deadline` is a `time.monotonic()` value (None: no limit). `model` names the model in errors.
    """

    def __init__(self, policy: RetryPolicy, *, deadline: float | None = None, model: str | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.deadline = deadline
        self.model = model
        self._sleep = sleep

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        response = retrying(lambda left: self._attempt(request, handler, left), self.policy, deadline=self.deadline,
                            model=self.model, sleep=self._sleep)
        return answer_unusable_tool_calls(response)

    def _attempt(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse],
                 left: float) -> ModelResponse:
        """One call with an HTTP timeout of at most the time left; with a deadline, the call runs in a
        worker thread so that the agent stops at its deadline even if the client does not."""
        timeout = min(self.policy.timeout_s, left)
        request = request.override(model_settings={**request.model_settings, "timeout": timeout})
        if self.deadline is None:
            return handler(request)
        return call_within(lambda: handler(request), left + GRACE_S)


def call_within(call: Callable[[], Any], seconds: float) -> Any:
    """`call()` in a daemon thread (with this thread's context: LangChain callbacks and config live
    in context variables), its result or exception, or `AgentStop` once `seconds` have passed.

    An abandoned call goes on until its own HTTP timeout ends it; its callbacks still record it.
    """
    context = contextvars.copy_context()
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="engram-model-call", daemon=True).start()
    if not done.wait(max(0.0, seconds)):
        raise AgentStop("time limit (a model call was still running)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def answer_unusable_tool_calls(response: Any) -> Any:
    """Turn tool calls whose arguments were not JSON into calls answered with a tool error.

    Left alone, such a reply has no (valid) tool calls, and the agent loop takes it for the agent's
    final answer. The calls go back into the history with empty arguments, each followed by an
    error message that quotes what was sent, so the model sees what went wrong and can retry.
    """
    if not isinstance(response, ModelResponse):
        return response
    messages = list(response.result)
    index = next((i for i, m in enumerate(messages) if isinstance(m, AIMessage) and m.invalid_tool_calls), None)
    if index is None:
        return response
    reply: AIMessage = messages[index]
    calls, answers = list(reply.tool_calls), []
    for number, invalid in enumerate(reply.invalid_tool_calls):
        call_id = invalid.get("id") or f"invalid_call_{number}"
        name = invalid.get("name") or "unknown"
        calls.append({"name": name, "args": {}, "id": call_id, "type": "tool_call"})
        raw = str(invalid.get("args") or "")[:500]
        answers.append(ToolMessage(
            content=f"Error: the arguments of this {name} call are not valid JSON, so it was not run. "
                    f"You sent: {raw!r}. Call {name} again with a JSON object of arguments.",
            tool_call_id=call_id, name=name, status="error"))
    fixed = reply.model_copy(update={"tool_calls": calls, "invalid_tool_calls": []})
    messages[index:index + 1] = [fixed, *answers]
    return ModelResponse(result=messages, structured_response=response.structured_response)
