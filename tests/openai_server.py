"""A local OpenAI-compatible HTTP server for tests of the real provider path.

litellm, the OpenAI SDK and httpx are exercised for real: a test points a model's `api_base` at
this server (bound to 127.0.0.1 only, on a free port) and scripts what it answers. It serves both
`/v1/chat/completions` and `/v1/responses`, records every request body, and plays a queue of
actions: replies with tool calls, reasoning and usage, or faults (an HTTP status with headers, a
hang, a malformed body, a 200 with no choices). Once the queue is empty it answers with a plain
final message, which ends an agent.

Tests wait on `wait_for_requests`, which blocks on a condition variable until the server has seen
enough requests (bounded by a generous timeout), never on a sleep.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT_S = 60.0
"""Upper bound for waiting on the server: a loaded CI machine is slow, a broken test must still end."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str
    """The raw JSON text of the arguments, so a test can send invalid JSON."""

    @staticmethod
    def of(name: str, **args: Any) -> ToolCall:
        return ToolCall(name, json.dumps(args))


@dataclass(frozen=True)
class Reply:
    """A successful answer in whichever API format was asked for."""

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    """A reasoning summary (Responses API: a `reasoning` output item with encrypted content)."""
    input_tokens: int = 100
    output_tokens: int = 20


@dataclass(frozen=True)
class Fault:
    """An answer that is not a usable reply."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    """The raw body; None gives an OpenAI-style error object for statuses >= 400."""
    hang: bool = False
    """Hold the request open until the test releases the server (or it stops)."""


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}


def status(code: int, message: str = "scripted error", **headers: str) -> Fault:
    """An error answer with OpenAI's error object (its `type` as OpenAI gives it for the status)."""
    kind = _ERROR_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
    return Fault(status=code, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=body)


HANG = Fault(hang=True)
MALFORMED = Fault(body='{"id": "chatcmpl-x", "choices": [')
EMPTY_CHOICES = Fault(body=None)  # filled per endpoint: a well-formed reply with nothing in it


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class FakeOpenAI:
    """The server; use as a context manager or through the `openai_server` pytest fixture."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._actions: list[Reply | Fault] = []
        self.requests: list[Request] = []
        self.served: list[Reply] = []
        self.holding = 0
        """Requests held open (`HANG`) and not yet released: a client that returned gave up on them."""
        """Every reply sent, in order: what the provider billed is the sum of their usage."""
        self._release = threading.Event()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def api_base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(WAIT_S)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------------

    def script(self, *actions: Reply | Fault) -> None:
        with self._lock:
            self._actions.extend(actions)

    def release(self) -> None:
        """Let every hanging request go (it answers with an error nobody reads any more)."""
        self._release.set()

    def wait_for_requests(self, count: int, timeout: float = WAIT_S) -> list[Request]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"the server saw {len(self.requests)} request(s), expected {count}")
            return list(self.requests)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._actions)

    # -- serving ---------------------------------------------------------------------------------

    def _next(self, request: Request) -> Reply | Fault:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            return self._actions.pop(0) if self._actions else self.default

    default: Reply | Fault = Reply(content="All done.")
    """The answer once the script is used up."""

    def billed(self, model: str) -> float:
        """Dollars of every reply served, at litellm's list prices for `model`."""
        from engram.models.llm import price_per_token

        prices = price_per_token(model)
        assert prices is not None
        with self._lock:
            return sum(r.input_tokens * prices[0] + r.output_tokens * prices[1] for r in self.served)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                request = Request(self.path, body, {k.lower(): v for k, v in self.headers.items()})
                action = server._next(request)
                if isinstance(action, Fault) and action.hang:
                    with server._lock:
                        server.holding += 1
                    server._release.wait(WAIT_S)
                    with server._lock:
                        server.holding -= 1
                    self._send(503, json.dumps({"error": {"message": "released"}}), {})
                    return
                if isinstance(action, Fault):
                    body_text = action.body if action.body is not None else json.dumps(
                        server._empty(request))
                    self._send(action.status, body_text, action.headers)
                    return
                with server._lock:
                    server.served.append(action)
                self._send(200, json.dumps(server._reply(request, action)), {})

            def _send(self, code: int, text: str, headers: dict[str, str]) -> None:
                data = text.encode("utf-8")
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout): nothing to answer
                    pass

        return Handler

    def _reply(self, request: Request, reply: Reply) -> dict[str, Any]:
        if request.path.rstrip("/").endswith("/responses"):
            return self._responses_reply(request, reply)
        return self._chat_reply(request, reply)

    def _empty(self, request: Request) -> dict[str, Any]:
        """A 200 with nothing usable: no choices (Chat Completions) or no output (Responses)."""
        full = self._reply(request, Reply())
        if "choices" in full:
            full["choices"] = []
        else:
            full["output"] = []
        return full

    def _chat_reply(self, request: Request, reply: Reply) -> dict[str, Any]:
        n = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{n}_{i}", "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for i, call in enumerate(reply.tool_calls)
            ]
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": request.body.get("model", "unknown"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens},
        }

    def _responses_reply(self, request: Request, reply: Reply) -> dict[str, Any]:
        n = next(self._ids)
        output: list[dict[str, Any]] = []
        if reply.reasoning is not None:
            output.append({"type": "reasoning", "id": f"rs_{n}", "encrypted_content": f"encrypted-{n}",
                           "summary": [{"type": "summary_text", "text": reply.reasoning}]})
        if reply.content:
            output.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": reply.content, "annotations": []}]})
        for i, call in enumerate(reply.tool_calls):
            output.append({"type": "function_call", "id": f"fc_{n}_{i}", "call_id": f"call_{n}_{i}",
                           "name": call.name, "arguments": call.arguments, "status": "completed"})
        return {
            "id": f"resp_{n}", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": request.body.get("model", "unknown"), "output": output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }


@contextmanager
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
