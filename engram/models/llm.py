"""The model layer: every chat model an agent talks to, and what each call costs.

Agents are built on LangChain, which talks to any provider through litellm. This module is the one
place that knows about providers, so the rest of Engram sees a plain `BaseChatModel` and a ledger:

* `create_chat_model` builds the model named in a spec (`ChatLiteLLM`, or the `scripted` model that
  plays back a file so tests, the smoke spec and replays need no network);
* `retry_middleware` puts an agent's calls through the one retry layer (`engram.models.calls`, whose
  `call_model` serves every other caller: baselines, summaries, OpenEvolve);
* `UsageCallback` and `UsageLedger` count tokens and dollars of every call, write a transcript and
  stop a run that goes over its dollar cap;
* `price_per_token`, `price_snapshot` and `missing_api_keys` answer questions before a run starts,
  from litellm's local price map and its environment check, without contacting anyone.
"""

from __future__ import annotations

import os

# litellm downloads its price map at import unless told otherwise; Engram never needs the network
# for prices, and a run's costs must not depend on when it started.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import difflib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import UUID

import litellm
from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_litellm import ChatLiteLLM
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from engram.config_files import load_model
from engram.errors import ConfigError, EngramError, ProviderError
from engram.models.api import ModelApi, responses_kwargs, uses_responses_api
from engram.models.calls import (
    RETRYABLE_ERRORS,
    MalformedReply,
    ModelCallMiddleware,
    RetryPolicy,
    billed_tokens,
    is_retryable,
    provider_error,
)

litellm.suppress_debug_info = True  # litellm's "Give Feedback" banner on every error says nothing to a user

__all__ = ["RETRYABLE_ERRORS", "ProviderError", "is_retryable", "provider_error"]

SCRIPTED = "scripted"
"""Model id of the offline model that plays back a script file."""

# ---------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------


class BudgetExceeded(Exception):
    """A run spent more than its cap; raised so the agent loop stops instead of spending more."""

    def __init__(self, *, cap: str, limit: float, spent: float, calls: int) -> None:
        self.cap = cap
        self.limit = limit
        self.spent = spent
        self.calls = calls
        super().__init__(
            f"budget exceeded: {cap} is ${limit:.4f}, but {calls} model call(s) have cost ${spent:.4f} "
            "(calls whose price is unknown are not included)"
        )


class SharedBudget(Protocol):
    """A dollar cap shared with other runs (a sweep's): the ledger publishes its own spending and asks
    before every model call whether the runs together are over the cap (see engram/executors/budget.py)."""

    def publish(self, snapshot: dict[str, Any]) -> None: ...

    def check(self, own_dollars: float, own_calls: int) -> None:
        """Raise `BudgetExceeded` when the runs together have spent more than the cap."""

    def stop_reason(self, own_dollars: float) -> str | None: ...


@dataclass
class _Tally:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    dollars: float = 0.0
    unknown_price_calls: int = 0

    def add(self, input_tokens: int, output_tokens: int, dollars: float | None) -> None:
        self.calls += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if dollars is None:
            self.unknown_price_calls += 1
        else:
            self.dollars += dollars

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "dollars": self.dollars,
            "unknown_price_calls": self.unknown_price_calls,
        }


class UsageLedger:
    """Thread-safe token and dollar accounting for one run, with an optional hard dollar cap.

    Agents may run in threads and share one ledger, so every update holds a lock. A call whose
    price is unknown adds its tokens but not dollars, and is counted in `unknown_price_calls`:
    reporting it as $0 would make a run look cheaper than it was.
    """

    def __init__(self, max_dollars: float | None = None) -> None:
        if max_dollars is not None and max_dollars < 0:
            raise ValueError(f"max_dollars must be >= 0, got {max_dollars}")
        self.max_dollars = max_dollars
        self._lock = threading.Lock()
        self._total = _Tally()
        self._per_agent: dict[str, _Tally] = {}
        self._per_model: dict[str, _Tally] = {}
        self.shared: SharedBudget | None = None

    def share(self, budget: SharedBudget) -> None:
        """Count this run against `budget` too, and publish what it has spent so far."""
        self.shared = budget
        budget.publish(self.snapshot())

    def record(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        dollars: float | None,
        agent: int | None = None,
    ) -> None:
        """Count one finished call; the call is recorded even when it is the one that breaks the cap."""
        with self._lock:
            for tally in (self._total, self._agent_tally(agent), self._per_model.setdefault(model, _Tally())):
                tally.add(input_tokens, output_tokens, dollars)
        if self.shared is not None:
            self.shared.publish(self.snapshot())
        self.check()

    def check(self) -> None:
        """Refuse further spending once over the cap, so no new request is sent."""
        with self._lock:
            spent, calls = self._total.dollars, self._total.calls
        if self.max_dollars is not None and spent > self.max_dollars:
            raise BudgetExceeded(cap="max_dollars", limit=self.max_dollars, spent=spent, calls=calls)
        if self.shared is not None:
            self.shared.check(spent, calls)

    @property
    def total_dollars(self) -> float:
        with self._lock:
            return self._total.dollars

    @property
    def total_tokens(self) -> int:
        with self._lock:
            return self._total.input_tokens + self._total.output_tokens

    @property
    def unknown_price_calls(self) -> int:
        with self._lock:
            return self._total.unknown_price_calls

    @property
    def calls(self) -> int:
        with self._lock:
            return self._total.calls

    def snapshot(self) -> dict[str, Any]:
        """Plain, JSON-ready data; per-agent keys are strings so a JSON round trip keeps them equal."""
        with self._lock:
            return {
                **self._total.as_dict(),
                "max_dollars": self.max_dollars,
                "per_agent": {name: tally.as_dict() for name, tally in sorted(self._per_agent.items())},
                "per_model": {name: tally.as_dict() for name, tally in sorted(self._per_model.items())},
            }

    def _agent_tally(self, agent: int | None) -> _Tally:
        return self._per_agent.setdefault("unattributed" if agent is None else str(agent), _Tally())


# ---------------------------------------------------------------------------------------------
# Prices and keys (litellm's local price map and environment check)
# ---------------------------------------------------------------------------------------------


def price_per_token(model_id: str) -> tuple[float, float] | None:
    """(input, output) dollars per token, or None when litellm's map has no price for the model."""
    found = _price_entry(model_id)
    if found is None:
        return None
    _, entry = found
    return float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"])


def price_snapshot(model_id: str) -> dict[str, Any]:
    """The price-map entry a run used, saved with the run because litellm's map changes between versions."""
    found = _price_entry(model_id)
    base = {"model": model_id, "litellm_version": version("litellm")}
    if found is None:
        return {**base, "known": False}
    key, entry = found
    return {
        **base,
        "known": True,
        "key": key,
        "input_cost_per_token": float(entry["input_cost_per_token"]),
        "output_cost_per_token": float(entry["output_cost_per_token"]),
        "entry": json.loads(json.dumps(entry, default=str)),
    }


def _price_entry(model_id: str) -> tuple[str, dict[str, Any]] | None:
    """Find the model in the price map by its exact id, or without its provider prefix.

    Looking the map up directly, rather than through litellm's provider resolution, keeps an unknown
    name from printing litellm's "Provider List" banner on stdout; resolution is the last resort and
    only tried for provider prefixes litellm knows.
    """
    if model_id == SCRIPTED:
        return None
    provider, _, rest = model_id.partition("/")
    entry = litellm.model_cost.get(model_id)
    if _has_prices(entry):
        return model_id, entry
    entry = litellm.model_cost.get(rest) if rest else None
    if _has_prices(entry) and str(entry.get("litellm_provider", "")).startswith(provider):
        return rest, entry
    if rest and provider in litellm.provider_list:
        try:
            key = litellm.get_model_info(model_id).get("key")
        except Exception:  # litellm raises several types for an unmapped model
            return None
        entry = litellm.model_cost.get(key) if key else None
        if _has_prices(entry):
            return key, entry
    return None


def _has_prices(entry: dict[str, Any] | None) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("input_cost_per_token"), int | float)
        and isinstance(entry.get("output_cost_per_token"), int | float)
    )


_PLACEHOLDER_KEY_PROVIDERS = frozenset({"openai", "text-completion-openai"})
"""Providers whose client refuses to start without a key, even for a local OpenAI-compatible server.

With an `api_base`, Engram sends these a placeholder key (see `create_chat_model`), so a key is
only required when the spec names `api_key_env`.
"""

_DEFAULT_BASE_PROVIDERS = frozenset({"ollama", "ollama_chat"})
"""Providers litellm sends to a local default address (localhost:11434) when no base is given."""

_PLACEHOLDER_API_KEY = "no-key-required"


def missing_api_keys(model_id: str, api_key_env: str | None = None, api_base: str | None = None) -> list[str]:
    """Environment variables to set before this model can be called, checked before any money is spent.

    `api_key_env` names the variable holding the key when the spec chooses one; otherwise litellm's
    own check decides. A local server given by `api_base` (ollama, vLLM through `openai/`) needs none.
    """
    if model_id == SCRIPTED:
        return []
    missing: list[str] = []
    if api_key_env and not os.environ.get(api_key_env):
        missing.append(api_key_env)
    provider = _provider_of(model_id)
    if provider is None:
        return missing
    key_supplied = bool(api_key_env) or (api_base is not None and provider in _PLACEHOLDER_KEY_PROVIDERS)
    base_supplied = api_base is not None or provider in _DEFAULT_BASE_PROVIDERS
    checked = litellm.validate_environment(
        model=model_id,
        api_key=_PLACEHOLDER_API_KEY if key_supplied else None,
        api_base=api_base or ("default" if base_supplied else None),
    )
    missing.extend(name for name in checked.get("missing_keys", []) if name not in missing)
    return missing


def any_one_suffices(model_id: str, keys: Sequence[str], api_base: str | None = None) -> bool:
    """Whether setting any single one of `keys` satisfies litellm (gemini: GEMINI_API_KEY or
    GOOGLE_API_KEY), so that a message asks for one of them, not all. Called before a run starts."""
    from unittest import mock

    for key in keys:
        with mock.patch.dict(os.environ, {key: "probe"}):
            if missing_api_keys(model_id, api_base=api_base):
                return False
    return len(keys) > 1


def unknown_model(model_id: str, api_base: str | None = None) -> str | None:
    """Why litellm cannot call this model id, or None when it can tell the provider.

    litellm refuses an id without a provider only at the first call: checked before a run starts,
    the mistake costs no run directory, no agent and no resume that can never succeed."""
    if model_id == SCRIPTED:
        return None
    try:
        litellm.get_llm_provider(model_id, api_base=api_base)
        return None
    except Exception:  # litellm raises its BadRequestError (and on odd input others): all mean "unknown"
        pass
    prefix, slash, _ = model_id.partition("/")
    providers = sorted(str(getattr(p, "value", p)) for p in litellm.provider_list)
    close = difflib.get_close_matches(prefix, providers, n=1, cutoff=0.7) if slash else []
    hint = f" (did you mean {close[0]}/...?)" if close else ""
    return (f"model.id {model_id!r}: litellm knows no provider for it{hint}; write PROVIDER/MODEL, e.g. "
            "openai/o3, anthropic/claude-sonnet-4-5, ollama/llama3, or openai/<served name> with "
            "model.api_base for an OpenAI-compatible server")


def _provider_of(model_id: str) -> str | None:
    """The litellm provider of a model id, without litellm's resolver (which prints on failure)."""
    prefix, _, rest = model_id.partition("/")
    if rest and prefix in litellm.provider_list:
        return prefix
    entry = litellm.model_cost.get(model_id)
    provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
    return str(provider) if provider else None


# ---------------------------------------------------------------------------------------------
# Usage callback and transcripts
# ---------------------------------------------------------------------------------------------

_TRANSCRIPT_LOCK = threading.Lock()
"""One lock for all transcripts: concurrent calls (parallel subagents) must not interleave lines."""


class UsageCallback(BaseCallbackHandler):
    """Records usage of every chat-model call into a ledger, and every request/response into a transcript file.

    `raise_error` is set so that `BudgetExceeded` from the ledger stops the agent loop: LangChain
    otherwise logs and swallows exceptions raised by callbacks.
    """

    raise_error = True

    def __init__(
        self,
        ledger: UsageLedger,
        *,
        model_id: str,
        price_model: str | None,
        transcript: Path | None,
        agent: int | None,
    ) -> None:
        super().__init__()
        self.ledger = ledger
        self.model_id = model_id
        self.price_model = price_model or model_id
        self.prices = price_per_token(self.price_model)
        self.transcript = transcript
        self.agent = agent
        self._last_request: list[dict[str, Any]] = []
        if transcript is not None:
            transcript.parent.mkdir(parents=True, exist_ok=True)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """Refuse to send a request once over budget, then log what is sent."""
        self.ledger.check()
        batch = messages[0] if len(messages) == 1 else [m for group in messages for m in group]
        records = [message_record(m) for m in batch]
        # An agent re-sends its whole history with every request; logging it each time would make
        # transcripts grow with the square of the turns. A request that extends the previous one
        # is logged as `base` (how many leading messages it shares) plus the new messages only.
        previous = self._last_request
        base = len(previous) if len(previous) <= len(records) and records[: len(previous)] == previous else 0
        self._last_request = records
        self._write({"type": "request", "run_id": str(run_id), "base": base, "messages": records[base:]})

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Log the reply before counting it, so the call that breaks the cap is still in the transcript."""
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = generation.message if isinstance(generation, ChatGeneration) else None
        usage = getattr(message, "usage_metadata", None) if message is not None else None
        input_tokens = int(usage.get("input_tokens", 0)) if usage else 0
        output_tokens = int(usage.get("output_tokens", 0)) if usage else 0
        dollars = self.dollars(input_tokens, output_tokens) if usage else None
        record: dict[str, Any] = {
            "type": "response",
            "run_id": str(run_id),
            "message": response_record(message) if message is not None else None,
            "finish_reason": (generation.generation_info or {}).get("finish_reason") if generation else None,
            "usage": dict(usage) if usage else None,
            "dollars": dollars,
        }
        provider_cost = (message.response_metadata or {}).get("response_cost") if message is not None else None
        if provider_cost is not None:
            record["litellm_response_cost"] = provider_cost
        self._write(record)
        self.ledger.record(
            model=self.model_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            dollars=dollars,
            agent=self.agent,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Log failed attempts too: a retried rate limit should be visible when reading a run. The type
        and status let a replay raise an error that is retried (or not) exactly as this one was."""
        record: dict[str, Any] = {"type": "error", "run_id": str(run_id), "error": repr(error),
                                  "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
                                  "status_code": getattr(error, "status_code", None)}
        billed = billed_tokens(error)
        if billed is not None:  # an empty reply the provider still counted: it costs like any other
            record["usage"] = {"input_tokens": billed[0], "output_tokens": billed[1]}
            record["dollars"] = self.dollars(*billed)
        self._write(record)
        if billed is not None:
            self.ledger.record(model=self.model_id, input_tokens=billed[0], output_tokens=billed[1],
                               dollars=record["dollars"], agent=self.agent)

    def dollars(self, input_tokens: int, output_tokens: int) -> float | None:
        """List price of the tokens; cached-input discounts are ignored, so this errs on the high side."""
        if self.prices is None:
            return None
        input_price, output_price = self.prices
        return input_tokens * input_price + output_tokens * output_price

    def _write(self, record: dict[str, Any]) -> None:
        if self.transcript is None:
            return
        line = json.dumps({"t": round(time.time(), 3), "agent": self.agent, **record}, default=str)
        with _TRANSCRIPT_LOCK, self.transcript.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()


def transcript_requests(path: Path) -> list[list[dict[str, Any]]]:
    """The full message list of every request in a transcript, undoing the `base` compression."""
    requests: list[list[dict[str, Any]]] = []
    previous: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") != "request":
            continue
        base = int(record.get("base") or 0)
        previous = previous[:base] + list(record.get("messages") or [])
        requests.append(previous)
    return requests


def message_record(message: BaseMessage) -> dict[str, Any]:
    """A message as plain JSON data for transcripts: what was said, by whom, and which tool calls."""
    record: dict[str, Any] = {"type": message.type, "content": message.content}
    if message.name:
        record["name"] = message.name
    if isinstance(message, AIMessage):
        if message.tool_calls:
            record["tool_calls"] = [_tool_call_record(call) for call in message.tool_calls]
        extra = {key: value for key, value in message.additional_kwargs.items() if key != "tool_calls"}
        if extra:
            record["additional_kwargs"] = extra
    if isinstance(message, ToolMessage):
        record["tool_call_id"] = message.tool_call_id
        if message.status != "success":
            record["status"] = message.status
    return record


def response_record(message: BaseMessage) -> dict[str, Any]:
    """The reply with its reasoning (kept by litellm in `additional_kwargs`) where the provider sent it."""
    tool_calls = getattr(message, "tool_calls", None) or []
    record = {
        "content": message.content,
        "tool_calls": [_tool_call_record(call) for call in tool_calls],
        "additional_kwargs": {key: value for key, value in message.additional_kwargs.items() if key != "tool_calls"},
    }
    invalid = getattr(message, "invalid_tool_calls", None)
    if invalid:
        record["invalid_tool_calls"] = [dict(call) for call in invalid]
    return record


def _tool_call_record(call: Any) -> dict[str, Any]:
    return {"id": call.get("id"), "name": call.get("name"), "args": call.get("args")}


# ---------------------------------------------------------------------------------------------
# Model construction and retries
# ---------------------------------------------------------------------------------------------

_ENGRAM_OWNED_PARAMS = {
    "model": "the model id is the spec's model",
    "model_name": "the model id is the spec's model",
    "api_base": "use the spec's api_base",
    "base_url": "use the spec's api_base",
    "request_timeout": "the timeout is set by Engram (timeout_s)",
    "timeout": "the timeout is set by Engram (timeout_s)",
    "max_retries": "retries are done by Engram's retry middleware",
    "num_retries": "retries are done by Engram's retry middleware",
    "callbacks": "callbacks are set by Engram",
    "client": "the client is litellm",
    "api_key": "do not put keys in spec files; name the environment variable with api_key_env",
}


def create_chat_model(
    model_id: str,
    *,
    params: dict[str, Any] | None = None,
    api_base: str | None = None,
    script: Path | None = None,
    agent: int = 1,
    price_as: str | None = None,
    timeout_s: float = 600,
    callbacks: list | None = None,
    api_key_env: str | None = None,
    api: ModelApi = "auto",
) -> BaseChatModel:
    """The chat model a spec names; litellm does the provider work, retries are left to the agent loop.

    Retries belong to `retry_middleware` alone: `max_retries=0` goes both to langchain-litellm and,
    through litellm, to the OpenAI SDK, which would otherwise retry each call twice more out of sight
    of the transcript. `api` picks Chat Completions or the Responses API (see `engram.models.api`).
    `price_as` only reaches the scripted model; for real models the caller passes it to
    `UsageCallback` as `price_model`.
    """
    if model_id == SCRIPTED:
        if script is None:
            raise ConfigError("model 'scripted' needs a script file (the spec's script: field)")
        from engram.models.playback import playback_model  # `engram replay`: a recorded run's transcripts

        replayed = playback_model(script, agent, price_as=price_as, callbacks=callbacks)
        if replayed is not None:
            return replayed
        return ScriptedChatModel(script, agent, price_as=price_as, callbacks=callbacks)
    fields, model_kwargs = _split_params(params or {})
    api_key = _api_key(model_id, api_key_env, api_base)
    if api_key is not None:
        fields["api_key"] = api_key
    responses = uses_responses_api(model_id, api)
    if responses:
        model_kwargs = responses_kwargs(model_kwargs)
    return EngramChatLiteLLM(
        model=model_id,
        api_base=api_base,
        request_timeout=timeout_s,
        max_retries=0,
        callbacks=callbacks,
        model_kwargs={**model_kwargs, "max_retries": 0},
        use_responses_api=responses or None,
        **fields,
    )


class EngramChatLiteLLM(ChatLiteLLM):
    """`ChatLiteLLM` that refuses a reply with nothing in it instead of failing on it later.

    An HTTP 200 without choices would otherwise surface as an `IndexError` deep in LangChain, which
    looks like a bug rather than a provider hiccup; `MalformedReply` is retried like a 5xx, and
    carries the usage the provider billed for it.
    """

    def _create_chat_result(self, response: Any, **params: Any) -> ChatResult:
        choices = response.get("choices") if hasattr(response, "get") else None
        if not choices:
            raise MalformedReply("the provider answered HTTP 200 without any choices", usage=response.get("usage"))
        return super()._create_chat_result(response, **params)


def _split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fields ChatLiteLLM declares go to it directly; anything else would be silently dropped, so it
    goes through `model_kwargs` to litellm (e.g. `reasoning_effort`, `seed`, `drop_params`)."""
    fields: dict[str, Any] = {}
    model_kwargs: dict[str, Any] = dict(params.get("model_kwargs") or {})
    for name, value in params.items():
        if name == "model_kwargs":
            continue
        if name in _ENGRAM_OWNED_PARAMS or name.endswith("_api_key"):
            reason = _ENGRAM_OWNED_PARAMS.get(name, _ENGRAM_OWNED_PARAMS["api_key"])
            raise ConfigError(f"model params: {name!r} cannot be set here: {reason}")
        if name in ChatLiteLLM.model_fields:
            fields[name] = value
        else:
            model_kwargs[name] = value
    return fields, model_kwargs


def _api_key(model_id: str, api_key_env: str | None, api_base: str | None) -> str | None:
    """The key to send, or None to let litellm read the provider's usual variable.

    A spec with an `api_base` for an OpenAI-compatible server gets a placeholder unless it names a
    key variable: the OpenAI client refuses to start without a key, and the user's real OpenAI key
    should not be sent to some other server.
    """
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise EngramError(f"environment variable {api_key_env} (the spec's api_key_env) is not set")
        return value
    if api_base is not None and _provider_of(model_id) in _PLACEHOLDER_KEY_PROVIDERS:
        return _PLACEHOLDER_API_KEY
    return None


def retry_middleware(
    max_retries: int = 6,
    *,
    initial_delay: float = 1.0,
    backoff_factor: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
    deadline: float | None = None,
    timeout_s: float = 600.0,
    model: str | None = None,
) -> AgentMiddleware:
    """The one retry layer around an agent's model calls (see `engram.models.calls`): transient errors
    are retried with backoff (or as long as the provider asks), never past `deadline`; errors no
    retry can cure stop the run with `ProviderError`; tool calls with unparsable arguments are
    answered with a tool error."""
    policy = RetryPolicy(max_retries=max_retries, initial_delay=initial_delay, backoff_factor=backoff_factor,
                         max_delay=max_delay, jitter=jitter, timeout_s=timeout_s)
    return ModelCallMiddleware(policy, deadline=deadline, model=model)


# ---------------------------------------------------------------------------------------------
# The scripted model
# ---------------------------------------------------------------------------------------------

ScriptedError = Literal["rate_limit", "server_error", "timeout", "connection", "bad_request", "context_window"]


class _ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class _UsageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class _TurnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[_ToolCallSpec] = Field(default_factory=list)
    usage: _UsageSpec | None = None
    error: ScriptedError | None = None
    when: str | None = None
    repeat: bool = False

    @model_validator(mode="after")
    def _error_alone(self) -> _TurnSpec:
        if self.error is not None and (self.content or self.tool_calls or self.usage or self.reasoning):
            raise ValueError("a turn with 'error' raises instead of replying, so it takes no other keys")
        return self

    @model_validator(mode="after")
    def _when_compiles(self) -> _TurnSpec:
        if self.when is not None:
            try:
                re.compile(self.when)
            except re.error as exc:
                raise ValueError(f"'when' is not a valid regular expression: {exc}") from None
        return self


class _AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: list[_TurnSpec] = Field(default_factory=list)


class _DistillSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = ""
    usage: _UsageSpec | None = None
    error: ScriptedError | None = None


class _ScriptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[_AgentSpec] = Field(default_factory=list)
    distill: list[_DistillSpec] = Field(default_factory=list)


class _Cursor:
    """Playback state, shared between a scripted model and the copies `bind_tools` makes of it.

    The agent loop binds tools before every call, so a copy with its own state would replay the
    first turn forever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.position = 0
        self._used: set[int] = set()

    def take(self, turns: tuple[_Turn, ...], request: str) -> _Turn | None:
        """The first unused turn that fits `request` (None once none does); counts every call."""
        with self._lock:
            self.position += 1
            for index, turn in enumerate(turns):
                if index in self._used or (turn.when is not None and not turn.when.search(request)):
                    continue
                if not turn.repeat:
                    self._used.add(index)
                return turn
            return None


@dataclass(frozen=True)
class _Turn:
    """One scripted reply with its tool-call ids fixed at load time, so replays give identical ids."""

    source: str
    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    usage: _UsageSpec | None = None
    error: ScriptedError | None = None
    when: re.Pattern[str] | None = None
    repeat: bool = False


class ScriptedChatModel(BaseChatModel):
    """A deterministic model that plays back a file of assistant turns.

    Named 'scripted' everywhere; used by tests, the smoke spec, and replays.

    The script is YAML::

        agents:            # one entry per agent, in order (agent 1 = first entry)
          - turns:
              - content: "I will start by reading the digest."   # assistant text (optional)
                reasoning: "..."                                 # optional, as additional_kwargs reasoning_content
                tool_calls:                                      # optional
                  - {name: read_file, args: {file_path: /digest.md}}
              - error: rate_limit    # this turn raises litellm.RateLimitError instead; also server_error,
                                     # timeout, connection (retried by retry_middleware), bad_request (stops
                                     # the run) and context_window (neither: a failed call of that agent)
              - content: "..."
                usage: {input_tokens: 1200, output_tokens: 300}  # optional; default: estimated as len(text)//4
              - when: "Current Program"   # optional: only for a request whose text matches this regex
                repeat: true              # optional: the turn is not used up, it answers every such request
                content: "..."
        distill:           # responses for digest-distillation calls (plain text), used in order
          - content: "..."

    `ScriptedChatModel(script, agent=n)` plays agent n's turns (n >= 1); `agent=0` plays the
    `distill` list. Every call, including one that raises, takes the first turn not used yet, so a
    retried error is followed by the turn after it. A turn with `when` is skipped for requests whose
    text (all messages, joined by newlines) it does not match, which lets a script answer callers
    that ask in an unpredictable order (OpenEvolve's workers, keyed on the program in the prompt); a
    turn with `repeat` is never used up. Once no turn fits the model answers with an empty message
    and no tool calls, which ends an agent naturally. Tool-call ids are `call_<agent>_<n>`,
    numbered through the script. Each instance has its own position; `bind_tools` copies share it.
    Unknown keys, bad YAML, a missing file or an agent the file does not list raise `ConfigError`.
    """

    script: Path
    agent: int = 1
    price_as: str | None = None
    """The model whose prices `UsageCallback` should charge for these turns (it is told separately)."""

    _turns: tuple[_Turn, ...] = PrivateAttr(default=())
    _cursor: _Cursor = PrivateAttr(default_factory=_Cursor)
    _tool_names: tuple[str, ...] = PrivateAttr(default=())

    def __init__(self, script: Path, agent: int = 1, price_as: str | None = None, **kwargs: Any) -> None:
        super().__init__(script=Path(script), agent=agent, price_as=price_as, **kwargs)
        self._turns = _load_turns(self.script, self.agent)

    @property
    def _llm_type(self) -> str:
        return SCRIPTED

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": SCRIPTED, "script": str(self.script), "agent": self.agent}

    @property
    def position(self) -> int:
        """How many turns (including errors) have been played."""
        return self._cursor.position

    @property
    def bound_tool_names(self) -> tuple[str, ...]:
        return self._tool_names

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        """Tools are not offered to a script, only remembered; calling an unbound tool is the agent's problem."""
        bound = self.model_copy()
        bound._tool_names = tuple(_tool_name(tool) for tool in tools)
        return bound

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = self._cursor.take(self._turns, "\n".join(_text(m) for m in messages))
        if turn is None:
            return _result(AIMessage(content="", usage_metadata=_usage(messages, "", ()), **_metadata()))
        if turn.error is not None:
            raise _scripted_error(turn)
        extra = {"reasoning_content": turn.reasoning} if turn.reasoning else {}
        message = AIMessage(
            content=turn.content,
            tool_calls=list(turn.tool_calls),
            additional_kwargs=extra,
            usage_metadata=_usage(messages, turn.content, turn.tool_calls, turn.usage),
            **_metadata(),
        )
        return _result(message)


def _load_turns(script: Path, agent: int) -> tuple[_Turn, ...]:
    spec = load_model(script, _ScriptSpec)
    if agent < 0:
        raise ConfigError(f"{script}: agent must be >= 1 (or 0 for the distill list), got {agent}")
    if agent == 0:
        return tuple(
            _Turn(source=f"{script}: distill.{i}", content=d.content, usage=d.usage, error=d.error)
            for i, d in enumerate(spec.distill)
        )
    if agent > len(spec.agents):
        raise ConfigError(f"{script}: agents: no entry for agent {agent}; the file lists {len(spec.agents)} agent(s)")
    return tuple(_number_turns(script, agent, spec.agents[agent - 1].turns))


def _number_turns(script: Path, agent: int, turns: list[_TurnSpec]) -> Iterator[_Turn]:
    numbers = iter(range(1, 1 + sum(len(turn.tool_calls) for turn in turns)))
    for index, turn in enumerate(turns):
        calls = tuple(
            {"name": call.name, "args": call.args, "id": f"call_{agent}_{next(numbers)}", "type": "tool_call"}
            for call in turn.tool_calls
        )
        yield _Turn(
            source=f"{script}: agents.{agent - 1}.turns.{index}",
            content=turn.content,
            reasoning=turn.reasoning,
            tool_calls=calls,
            usage=turn.usage,
            error=turn.error,
            when=re.compile(turn.when) if turn.when is not None else None,
            repeat=turn.repeat,
        )


_ERROR_FACTORIES: dict[str, Callable[[str], Exception]] = {
    "rate_limit": lambda msg: litellm.RateLimitError(msg, llm_provider=SCRIPTED, model=SCRIPTED),
    "server_error": lambda msg: litellm.InternalServerError(msg, llm_provider=SCRIPTED, model=SCRIPTED),
    "timeout": lambda msg: litellm.Timeout(msg, model=SCRIPTED, llm_provider=SCRIPTED),
    "connection": lambda msg: litellm.APIConnectionError(msg, llm_provider=SCRIPTED, model=SCRIPTED),
    "bad_request": lambda msg: litellm.BadRequestError(msg, model=SCRIPTED, llm_provider=SCRIPTED),
    "context_window": lambda msg: litellm.ContextWindowExceededError(msg, model=SCRIPTED, llm_provider=SCRIPTED),
}


def _scripted_error(turn: _Turn) -> Exception:
    """The litellm exception a real provider error would surface as, so retries see the same types."""
    assert turn.error is not None
    return _ERROR_FACTORIES[turn.error](f"scripted {turn.error} ({turn.source})")


def _usage(
    messages: list[BaseMessage],
    content: str,
    tool_calls: tuple[dict[str, Any], ...],
    given: _UsageSpec | None = None,
) -> dict[str, int]:
    """Scripted token counts, or the usual four-characters-a-token estimate when the script gives none."""
    if given is not None:
        input_tokens, output_tokens = given.input_tokens, given.output_tokens
    else:
        input_tokens = sum(len(_text(m)) for m in messages) // 4
        output_tokens = len(content + _calls_text(tool_calls)) // 4
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}


def _text(message: BaseMessage) -> str:
    text = message.content if isinstance(message.content, str) else json.dumps(message.content, default=str)
    return text + _calls_text(getattr(message, "tool_calls", None) or ())


def _calls_text(tool_calls: Sequence[dict[str, Any]]) -> str:
    """Tool calls as the provider would bill them: roughly their JSON."""
    if not tool_calls:
        return ""
    return json.dumps([{"name": c.get("name"), "args": c.get("args")} for c in tool_calls], default=str)


def _metadata() -> dict[str, Any]:
    return {"response_metadata": {"model_name": SCRIPTED}}


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _tool_name(tool: Any) -> str:
    if isinstance(tool, dict):
        return str(tool.get("name") or tool.get("function", {}).get("name", ""))
    return str(getattr(tool, "name", None) or getattr(tool, "__name__", ""))
