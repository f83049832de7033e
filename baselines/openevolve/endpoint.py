"""The local HTTP endpoint through which OpenEvolve's worker processes reach the Engram runner.

OpenEvolve runs every iteration in a pool of worker processes, but the usage ledger, the dollar
budget, the transcript, the scripted model and the archive live in the runner's process. So a
worker never calls a model or scores a program itself: it sends each model request, in OpenAI's
chat-completions protocol (so OpenEvolve's stock client is used unchanged), and each program to
evaluate to this endpoint on 127.0.0.1, and the runner answers. A request refused because a budget
is spent or the run is stopping is answered with HTTP 402, which OpenEvolve treats as a failed
iteration while its loop winds down.

The server half (`LocalEndpoint`) runs in the runner; the client half (`remote_evaluate`,
`log_worker_to_file`) runs in the workers, imported by the generated evaluation file, and uses the
standard library only. Requests carry a random bearer token so that no other local process can
spend the run's budget or add experiments to its archive.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

URL_ENV = "ENGRAM_OPENEVOLVE_ENDPOINT"
TOKEN_ENV = "ENGRAM_OPENEVOLVE_TOKEN"
CHAT_PATH = "/v1/chat/completions"
EVALUATE_PATH = "/engram/evaluate"
_MAX_BODY_BYTES = 64 * 1024 * 1024


class Refused(Exception):
    """A budget is spent or the run is stopping; answered with HTTP 402 (Payment Required)."""


class Unavailable(Exception):
    """The runner could not serve the request (e.g. a model error that survived its retries); HTTP 502."""


@dataclass(frozen=True)
class ChatReply:
    content: str
    prompt_tokens: int
    completion_tokens: int


class Handlers(Protocol):
    """What the runner does with the two kinds of request; both are called from server threads."""

    def chat(self, messages: list[dict[str, str]]) -> ChatReply: ...

    def evaluate(self, code: str) -> dict[str, Any]: ...


# -- server (in the runner) -----------------------------------------------------------------------


class LocalEndpoint:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering from `handlers`."""

    def __init__(self, handlers: Handlers, *, model_name: str) -> None:
        self.handlers = handlers
        self.model_name = model_name
        self.token = secrets.token_urlsafe(24)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True  # an interrupted run must not wait for them
        self._server.endpoint = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="openevolve-endpoint", daemon=True)
        self._busy = 0
        self._idle = threading.Condition()
        self._calls = 0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        """Variables the workers need (they inherit the runner's environment when the pool starts)."""
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1"]))
        return {URL_ENV: self.url, TOKEN_ENV: self.token, "NO_PROXY": no_proxy, "no_proxy": no_proxy}

    def start(self) -> None:
        self._thread.start()

    def close(self, *, drain: bool) -> None:
        """Stop listening; with `drain`, first wait until requests under way are answered, so that every
        model call they make is in the ledger and every evaluation is in the archive before the run ends."""
        self._server.shutdown()
        self._server.server_close()
        if drain:
            with self._idle:
                self._idle.wait_for(lambda: self._busy == 0)

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def next_call_id(self) -> str:
        with self._idle:
            self._calls += 1
            return f"chatcmpl-engram-{self._calls}"


class _RequestHandler(BaseHTTPRequestHandler):
    server_version = "EngramOpenEvolve/1"

    @property
    def endpoint(self) -> LocalEndpoint:
        return self.server.endpoint  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the runner's transcript and event log are the record, not an access log on stderr."""

    def do_POST(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.endpoint.token}":
            self._send(401, _error("missing or wrong bearer token", "unauthorized"))
            return
        try:
            body = self._read_json()
        except ValueError as exc:
            self._send(400, _error(str(exc), "bad_request"))
            return
        route = {CHAT_PATH: self._chat, EVALUATE_PATH: self._evaluate}.get(self.path.rstrip("/"))
        if route is None:
            self._send(404, _error(f"no such path: {self.path}", "not_found"))
            return
        with self.endpoint.busy():
            try:
                status, payload = route(body)
            except Refused as exc:
                status, payload = 402, _error(str(exc), "budget_exhausted")
            except Unavailable as exc:
                status, payload = 502, _error(str(exc), "model_error")
            except Exception as exc:  # reported to the worker; the runner keeps its own record
                status, payload = 500, _error(f"{type(exc).__name__}: {exc}", "runner_error")
        self._send(status, payload)

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return 400, _error("'messages' must be a list of objects", "bad_request")
        reply = self.endpoint.handlers.chat([{"role": str(m.get("role")), "content": _text(m.get("content"))}
                                             for m in messages])
        return 200, {
            "id": self.endpoint.next_call_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.endpoint.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        }

    def _evaluate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        code = body.get("code")
        if not isinstance(code, str):
            return 400, _error("'code' must be a string", "bad_request")
        return 200, self.endpoint.handlers.evaluate(code)

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            raise ValueError(f"request body of {length} bytes is over the {_MAX_BODY_BYTES} byte limit")
        data = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload, allow_nan=True).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:
            pass  # the worker is gone (the pool was stopped); the runner has recorded what it did


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def _text(content: Any) -> str:
    """Message content as text; OpenAI also allows a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


# -- client (in OpenEvolve's workers) -------------------------------------------------------------


def remote_evaluate(program_path: str) -> Any:
    """OpenEvolve's `evaluate(program_path)`: the runner scores the program and records it.

    A program the runner refuses to evaluate (a budget is spent) comes back marked as not evaluated;
    the runner's admission check keeps it out of OpenEvolve's database.
    """
    from openevolve.evaluation_result import EvaluationResult

    code = Path(program_path).read_text(encoding="utf-8")
    status, payload = _post(EVALUATE_PATH, {"code": code})
    if status == 402:
        reason = payload.get("error", {}).get("message", "refused")
        return {"combined_score": float("-inf"), "error": f"not evaluated: {reason}"}
    if status != 200:
        raise RuntimeError(f"the Engram runner could not evaluate the program (HTTP {status}): "
                           f"{payload.get('error', {}).get('message', payload)}")
    return EvaluationResult(metrics=payload["metrics"], artifacts=payload.get("artifacts") or {})


def _post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if not url or not token:
        raise RuntimeError(f"{URL_ENV} and {TOKEN_ENV} are not set: this evaluation file only works "
                           "inside an OpenEvolve run started by Engram")
    request = urllib.request.Request(url + path, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    try:
        with opener.open(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def log_worker_to_file(path: str, *, runner_pid: int) -> None:
    """In a worker, send OpenEvolve's log to `path` instead of the runner's terminal.

    The generated evaluation file is imported by each worker before its first model call, and by
    the runner itself, which keeps its own logging.
    """
    if os.getpid() == runner_pid:
        return
    logger = logging.getLogger("openevolve")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(process)d - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
