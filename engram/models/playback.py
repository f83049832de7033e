"""Playing a recorded run's model calls back: the scripted model fed from transcripts.

Every model call of a run is in a transcript (`engram.models.llm.UsageCallback`): the request's messages,
the reply with its tool calls, ids, reasoning and token usage, or the error. `engram replay` runs a
recorded run again with model id `scripted` and a *playback script*, a small YAML file::

    replay:
      source: /path/to/recorded/run      # the run whose transcripts are played back
      target: /path/to/new/run           # the run directory the replay writes

A model created for the replay finds the transcript it writes to (its `UsageCallback`), takes the
transcript at the same path in the source run, and answers each request with the recorded reply.
Nothing here knows about a particular method: any method whose calls go through
`MethodContext.model_factory` is recorded, and so replays.

Which recorded reply answers which request? Replies are handed out per *conversation*, in the
recorded order: a request continues the conversation whose last request it extends (an agent's
loop, a helper sub-agent, a summary request, a digest distillation each form one), and a request
that extends none starts a recorded conversation not yet started -- the one whose first request is
identical, else the one most like it (the earliest on a tie). That keeps a replay on track where
plain call order would not: an agent stopped by its time limit in the recording asks the replay
for one more turn (it gets an empty reply, which ends it, and its summary request then gets the
recorded summary); parallel helpers, and OpenEvolve's workers asking in another order, are told
apart by their first request. A request that finds no recorded reply gets an empty one, as when a
scripted agent's turns run out.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from engram.errors import ConfigError

SCRIPTED = "scripted"
PLAYBACK_KEY = "replay"

Messages = list[dict[str, Any]]


# -- recorded calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One finished model call of a transcript: the full request and what came back."""

    request: Messages
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def recorded_calls(path: Path) -> list[RecordedCall]:
    """The calls of a transcript in the order their requests were sent; calls that never finished
    (the run was killed while waiting) are left out, since no reply exists to play back."""
    requests: dict[str, Messages] = {}
    order: list[str] = []
    outcomes: dict[str, dict[str, dict[str, Any]]] = {}
    previous: Messages = []
    for record in _read_records(path):
        kind, run_id = record.get("type"), str(record.get("run_id"))
        if kind == "request":
            previous = previous[: int(record.get("base") or 0)] + list(record.get("messages") or [])
            requests[run_id] = previous
            order.append(run_id)
        elif kind in ("response", "error"):
            outcomes.setdefault(run_id, {}).setdefault(kind, record)
    calls = []
    for run_id in order:
        outcome = outcomes.get(run_id, {})
        # A reply followed by an error is a reply that a callback refused afterwards (the dollar
        # cap): the model did answer, and the replay's own ledger refuses it the same way.
        if "response" in outcome:
            calls.append(RecordedCall(requests[run_id], response=outcome["response"]))
        elif "error" in outcome:
            calls.append(RecordedCall(requests[run_id], error=outcome["error"]))
    return calls


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(record, dict):
            records.append(record)
    return records


class ConversationTracker:
    """Assigns each request to a conversation: the one whose last request it extends (the longest
    such, the earliest on a tie), or a new one."""

    def __init__(self) -> None:
        self._last: list[Messages] = []

    def assign(self, request: Messages) -> tuple[int, bool]:
        """(conversation index, whether it is new)."""
        best: int | None = None
        for index, last in enumerate(self._last):
            extends = len(last) <= len(request) and request[: len(last)] == last
            if extends and (best is None or len(last) > len(self._last[best])):
                best = index
        if best is None:
            self._last.append(request)
            return len(self._last) - 1, True
        self._last[best] = request
        return best, False


def split_conversations(calls: Sequence[RecordedCall]) -> list[list[RecordedCall]]:
    """The recorded calls grouped into conversations, each in order, conversations by first call."""
    tracker = ConversationTracker()
    conversations: list[list[RecordedCall]] = []
    for call in calls:
        index, new = tracker.assign(call.request)
        if new:
            conversations.append([])
        conversations[index].append(call)
    return conversations


# -- the player -----------------------------------------------------------------------------------------


@dataclass
class _Player:
    """Playback state of one transcript, shared by every model that writes to it (the digest gets a
    new model for each distillation; `bind_tools` copies a model)."""

    conversations: list[list[RecordedCall]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    tracker: ConversationTracker = field(default_factory=ConversationTracker)
    mapping: dict[int, int] = field(default_factory=dict)  # replay conversation -> recorded conversation
    played: dict[int, int] = field(default_factory=dict)  # recorded conversation -> calls played
    started: set[int] = field(default_factory=set)
    words: dict[int, Counter[str]] = field(default_factory=dict)  # first request of a recorded conversation

    def next_call(self, request: Messages) -> RecordedCall | None:
        with self.lock:
            index, new = self.tracker.assign(request)
            if new:
                recorded = self._start(request)
                if recorded is None:
                    return None
                self.mapping[index] = recorded
            recorded = self.mapping.get(index)
            if recorded is None:
                return None
            position = self.played.get(recorded, 0)
            calls = self.conversations[recorded]
            if position >= len(calls):
                return None
            self.played[recorded] = position + 1
            return calls[position]

    def _start(self, request: Messages) -> int | None:
        """The recorded conversation a new one replays: the first not yet started whose first request
        is identical, else the one most like it (a caller that asks in another order than the
        recording did, such as OpenEvolve's workers, still gets the reply to its own prompt)."""
        waiting = [i for i in range(len(self.conversations)) if i not in self.started]
        if not waiting:
            return None
        chosen = next((i for i in waiting if self.conversations[i][0].request == request), None)
        if chosen is None:
            words = _words(request)
            chosen = max(waiting, key=lambda i: (_overlap(words, self._first_words(i)), -i))
        self.started.add(chosen)
        return chosen

    def _first_words(self, conversation: int) -> Counter[str]:
        if conversation not in self.words:
            self.words[conversation] = _words(self.conversations[conversation][0].request)
        return self.words[conversation]


def _words(messages: Messages) -> Counter[str]:
    return Counter(re.findall(r"\w+", json.dumps(messages, default=str)))


def _overlap(a: Counter[str], b: Counter[str]) -> float:
    """Shared words over the longer text's words: 1 for the same text, near 0 for unrelated ones."""
    return sum((a & b).values()) / max(sum(a.values()), sum(b.values()), 1)


_PLAYERS: dict[tuple[str, str], _Player] = {}
_PLAYERS_LOCK = threading.Lock()


def _player(source: Path, relative: str) -> _Player:
    key = (str(source), relative)
    with _PLAYERS_LOCK:
        if key not in _PLAYERS:
            _PLAYERS[key] = _Player(split_conversations(recorded_calls(source / relative)))
        return _PLAYERS[key]


def forget_players(source: Path) -> None:
    """Drop the playback state of a source run (after its replay), so a later replay starts afresh."""
    with _PLAYERS_LOCK:
        for key in [k for k in _PLAYERS if k[0] == str(source)]:
            del _PLAYERS[key]


# -- playback scripts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaybackScript:
    source: Path
    target: Path


def write_playback_script(path: Path, *, source: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {PLAYBACK_KEY: {"source": str(source.resolve()), "target": str(target.resolve())}}
    path.write_text("# Played back by the scripted model: see engram/models/playback.py\n"
                    + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")


def read_playback_script(path: Path) -> PlaybackScript | None:
    """The playback script in `path`, or None when it is an ordinary script of turns."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # the scripted model reports an unreadable script itself
    if not isinstance(data, dict) or PLAYBACK_KEY not in data:
        return None
    body = data[PLAYBACK_KEY]
    if not isinstance(body, dict) or not {"source", "target"} <= set(body):
        raise ConfigError(f"{path}: `{PLAYBACK_KEY}` needs `source` and `target` (run directories)")
    return PlaybackScript(Path(body["source"]), Path(body["target"]))


# -- the model ------------------------------------------------------------------------------------------


class PlaybackChatModel(BaseChatModel):
    """The scripted model answering from a recorded run's transcripts (see the module docstring).

    The transcript to play is found through the model's own transcript callback rather than from
    `agent`, because an agent number names a transcript only within one seed and one method.
    """

    script: Path
    source: Path
    target: Path
    agent: int = 1
    price_as: str | None = None

    _tool_names: tuple[str, ...] = PrivateAttr(default=())

    @property
    def _llm_type(self) -> str:
        return SCRIPTED

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": SCRIPTED, "script": str(self.script), "agent": self.agent}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> PlaybackChatModel:
        """The recorded replies already name their tools; binding only remembers the names."""
        bound = self.model_copy()
        bound._tool_names = tuple(str(getattr(t, "name", None) or getattr(t, "__name__", "")) for t in tools)
        return bound

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        from engram.models.llm import message_record

        player = _player(self.source.resolve(), self._transcript_path())
        call = player.next_call([message_record(m) for m in messages])
        if call is None:
            return _reply(AIMessage(content="", usage_metadata=_zero_usage(), response_metadata=_metadata()), None)
        if call.response is None:
            raise recorded_error(call.error or {})
        record = call.response.get("message") or {}
        message = AIMessage(
            content=record.get("content") or "",
            tool_calls=[{"name": c.get("name"), "args": c.get("args") or {}, "id": c.get("id"), "type": "tool_call"}
                        for c in record.get("tool_calls") or []],
            invalid_tool_calls=list(record.get("invalid_tool_calls") or []),
            additional_kwargs=dict(record.get("additional_kwargs") or {}),
            usage_metadata=_usage(call.response.get("usage")),
            response_metadata=_metadata(),
        )
        return _reply(message, call.response.get("finish_reason"))

    def _transcript_path(self) -> str:
        """Where this model's calls are recorded, relative to the run directory."""
        for callback in self.callbacks if isinstance(self.callbacks, list) else []:
            transcript = getattr(callback, "transcript", None)
            if isinstance(transcript, Path) and transcript.resolve().is_relative_to(self.target.resolve()):
                return str(transcript.resolve().relative_to(self.target.resolve()))
        raise ConfigError(f"{self.script}: a replayed model must record a transcript under {self.target} "
                          "(methods get their models from MethodContext.model_factory)")


def _reply(message: AIMessage, finish_reason: str | None) -> ChatResult:
    info = {"finish_reason": finish_reason} if finish_reason is not None else None
    return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])


def _metadata() -> dict[str, Any]:
    return {"model_name": SCRIPTED}


def _zero_usage() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _usage(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The recorded token counts, so the replay's dollars are the recording's to the cent."""
    if not recorded:
        return _zero_usage()
    usage = dict(recorded)
    usage["input_tokens"] = int(usage.get("input_tokens") or 0)
    usage["output_tokens"] = int(usage.get("output_tokens") or 0)
    usage["total_tokens"] = int(usage.get("total_tokens") or usage["input_tokens"] + usage["output_tokens"])
    return usage


class RecordedModelError(Exception):
    """A provider error the recording holds and that retries do not cure (it ends the agent)."""


def recorded_error(record: dict[str, Any]) -> Exception:
    """The error a recorded call ended with, rebuilt as the same litellm exception with the same message.

    The type decides what happens next -- `engram.models.llm.is_retryable` retries transient errors, a
    method may treat a bad request as a failed proposal -- so the replay takes the same path as the
    recording. An error of another kind becomes `RecordedModelError`, which nothing retries.
    """
    import litellm

    from engram.models.calls import BILLED_USAGE, MalformedReply

    name = str(record.get("error_type") or "").rsplit(".", 1)[-1]
    text = str(record.get("error") or "")
    message = text.removeprefix(f"litellm.{name}: ")
    status = record.get("status_code")
    usage = record.get("usage") or None  # an empty reply the provider billed: billed as the recording was
    if name == MalformedReply.__name__:  # recorded as its repr: the replay's must read the same
        return MalformedReply(_repr_argument(text, name), usage=usage)
    kind = getattr(litellm.exceptions, name, None) if name else None
    if isinstance(kind, type) and issubclass(kind, Exception):
        arguments: dict[str, Any] = {"message": message, "model": SCRIPTED, "llm_provider": SCRIPTED}
        if name == "APIError":
            arguments["status_code"] = status if isinstance(status, int) else 500
        try:
            error = kind(**arguments)
        except (TypeError, ValueError, AttributeError):  # a type that needs a live HTTP response
            pass
        else:
            if isinstance(status, int):  # retries go by status too (a 429 litellm called a bad request)
                error.status_code = status
            if usage:
                setattr(error, BILLED_USAGE, usage)
            return error
    return RecordedModelError(f"recorded error: {text}")


def _repr_argument(text: str, name: str) -> str:
    """The message inside `Name('message')`, the recorded repr of an exception outside litellm."""
    if text.startswith(f"{name}(") and text.endswith(")"):
        try:
            return str(ast.literal_eval(text[len(name) + 1:-1]))
        except (ValueError, SyntaxError):
            pass
    return text


def playback_model(script: Path, agent: int, *, price_as: str | None, callbacks: list | None) -> BaseChatModel | None:
    """The playback model when `script` is a playback script, else None (an ordinary script of turns)."""
    found = read_playback_script(script)
    if found is None:
        return None
    return PlaybackChatModel(script=Path(script), source=found.source, target=found.target, agent=agent,
                             price_as=price_as, callbacks=callbacks)
