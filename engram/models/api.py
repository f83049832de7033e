"""Which API a model is called through, and the capability data litellm needs to call it right.

The paper ran OpenAI's reasoning models (o3, gpt-5.2) through the Responses API, asking for
reasoning summaries and keeping each turn's reasoning for the next; other models went through
Chat Completions. Engram does the same by default (`api: auto`), with litellm's own bridge
(`use_responses_api` in langchain-litellm): a reply's reasoning item, with its encrypted content,
goes back to the model on the next turn, and its summary is kept in the reply (and so in the
transcript) as `reasoning_content`.

litellm's model map also lacks `supports_system_messages` for o3, o4-mini and their relatives, and
litellm then sends the system prompt as a *user* message. These models take system (developer)
messages, so the entries are completed through `litellm.register_model`, litellm's extension
point for model data, once when this module is imported.

A Responses API reply with an empty output makes litellm's bridge fail (an `APIConnectionError`),
and the usage the provider billed for it would be lost with the reply. `BilledEmptyReplies`, a
litellm failure callback, puts that usage on the error, where the transcript and the ledger find it
(`engram.models.calls.billed_tokens`); the error is retried like any unusable reply.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import re
from typing import Any, Literal

import litellm
from litellm.integrations.custom_logger import CustomLogger

from engram.models.calls import BILLED_USAGE

ModelApi = Literal["auto", "chat", "responses"]

DEFAULT_REASONING_SUMMARY = "auto"
"""What the reference asked for: OpenAI chooses the summary's detail."""

_SYSTEM_CAPABLE_REASONING = re.compile(r"^(openai/)?o[34](-mini|-pro|-deep-research)?(-\d{4}-\d{2}-\d{2})?$")
"""OpenAI reasoning models that take system/developer messages although litellm's map does not say
so (o1-mini and o1-preview, which do not, are outside the pattern)."""


def register_capabilities() -> list[str]:
    """Complete litellm's model map where it is wrong for models Engram runs; returns the keys fixed."""
    fixes = {
        key: {"supports_system_messages": True}
        for key, entry in litellm.model_cost.items()
        if isinstance(entry, dict)
        and entry.get("litellm_provider") == "openai"
        and _SYSTEM_CAPABLE_REASONING.match(key)
        and entry.get("supports_system_messages") is None
    }
    if fixes:
        litellm.register_model(fixes)
    return sorted(fixes)


def _openai_name(model_id: str) -> str | None:
    """The OpenAI model name of `model_id` (`openai/o3` or a bare `o3` that litellm maps to OpenAI)."""
    provider, _, rest = model_id.partition("/")
    if rest:
        return rest if provider == "openai" else None
    entry = litellm.model_cost.get(model_id)
    return model_id if isinstance(entry, dict) and entry.get("litellm_provider") == "openai" else None


def is_openai_reasoning_model(model_id: str) -> bool:
    name = _openai_name(model_id)
    if name is None:
        return False
    entry = litellm.model_cost.get(name)
    return isinstance(entry, dict) and bool(entry.get("supports_reasoning"))


def uses_responses_api(model_id: str, api: ModelApi) -> bool:
    """`auto` sends OpenAI reasoning models to the Responses API, as the paper's runs did."""
    if api == "auto":
        return is_openai_reasoning_model(model_id)
    return api == "responses"


def responses_kwargs(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """litellm arguments for a Responses API call: reasoning with a summary, and reasoning kept
    across turns without server-side state (its encrypted content comes back with each reply and is
    sent again with the next request, as `store: false` requires).

    `reasoning_effort` may be a level (`xhigh`) or a full reasoning object (`{effort, summary}`);
    a level gets the reference's summary setting added.
    """
    kwargs = dict(model_kwargs)
    effort = kwargs.pop("reasoning_effort", None)
    reasoning: dict[str, Any] = dict(effort) if isinstance(effort, dict) else {}
    if isinstance(effort, str):
        reasoning["effort"] = effort
    reasoning.setdefault("summary", DEFAULT_REASONING_SUMMARY)
    kwargs["reasoning_effort"] = reasoning
    extra_body = dict(kwargs.get("extra_body") or {})
    include = list(extra_body.get("include") or [])
    if "reasoning.encrypted_content" not in include:
        include.append("reasoning.encrypted_content")
    extra_body["include"] = include
    kwargs["extra_body"] = extra_body
    kwargs.setdefault("store", False)
    return kwargs


class BilledEmptyReplies(CustomLogger):
    """Keeps the usage of a Responses API reply that litellm could not turn into a message.

    litellm calls a failure callback synchronously, in the calling thread, before it raises; the
    raw body it received is then in `original_response`."""

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        error = kwargs.get("exception")
        usage = _responses_usage(kwargs.get("original_response"))
        if isinstance(error, Exception) and usage:
            setattr(error, BILLED_USAGE, usage)


def _responses_usage(body: Any) -> dict[str, Any] | None:
    """The usage of a complete Responses API object (not an error body, not a stream)."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if not isinstance(body, dict) or body.get("object") != "response":
        return None
    usage = body.get("usage")
    return usage if isinstance(usage, dict) else None


def register_failure_callback() -> None:
    """Add `BilledEmptyReplies` to litellm's failure callbacks, once."""
    if not any(isinstance(callback, BilledEmptyReplies) for callback in litellm.failure_callback):
        litellm.logging_callback_manager.add_litellm_failure_callback(BilledEmptyReplies())


register_capabilities()
register_failure_callback()
