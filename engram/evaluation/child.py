"""Runs inside the sandbox: load the candidate, call it on each scenario, write its answers.

This file is copied next to the shared inputs and run by a bare interpreter (`python -P child.py
REQUEST`), so it imports nothing from Engram. Everything it writes is untrusted -- the candidate
runs in this same process and could have written it -- which is why it produces answers only:
validation and scoring happen in the trusted process that reads `answers.jsonl`.

Each line of `answers.jsonl` is one event: `started`, `loaded`, `scenario` (with the plain-data
answer), `failure` (with an error kind and the candidate's traceback) and `done`.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import json
import linecache
import os
import sys
import time
import traceback
from types import ModuleType
from typing import Any

THIS_FILE = os.path.abspath(__file__)


class _Failure(Exception):
    def __init__(self, kind: str, error: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


def _describe(error: BaseException) -> str:
    """The exception with the candidate's frames only (the harness's own frames are noise)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) != THIS_FILE]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


def _kind_of(error: BaseException, default: str) -> str:
    if isinstance(error, MemoryError):
        return "memory"
    if isinstance(error, RecursionError):
        return "runtime"
    return default


def _load_module(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_candidate(path: str, namespace: dict[str, Any], name: str | None = None) -> ModuleType:
    """The candidate as a module. `name` is the file its author knows (the agent's workspace path,
    the user's file): syntax errors and tracebacks name it instead of this scratch copy."""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    name = name or path
    if name != path:  # traceback lines are looked up by file name: give them the source under its name
        linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)
    try:
        code = compile(source, name, "exec")
    except (SyntaxError, ValueError) as error:
        raise _Failure("syntax", _describe(error)) from None
    module = type(sys)("candidate")
    module.__file__ = path
    module.__dict__.update(namespace)
    sys.modules["candidate"] = module
    try:
        exec(code, module.__dict__)
    except ImportError as error:
        raise _Failure("import", _describe(error)) from None
    except SystemExit as error:
        raise _Failure("runtime", f"the program called sys.exit({error.code!r}) while being loaded") from None
    except BaseException as error:
        raise _Failure(_kind_of(error, "runtime"), _describe(error)) from None
    return module


def _call(stage_kind: str, function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except _Failure:
        raise
    except SystemExit as error:
        raise _Failure("runtime", f"the program called sys.exit({error.code!r})") from None
    except BaseException as error:
        raise _Failure(_kind_of(error, stage_kind), _describe(error)) from None


def _converse(channel: dict[str, str], adapter: ModuleType, entry: Any, context: Any) -> None:
    """Answer the scorer's messages one by one with `adapter.handle` until it says "end".

    Each reply is `{"ok": true, "reply": ...}` or `{"ok": false, "kind": ..., "error": ...}`; a
    failure in one message does not end the conversation, the scorer decides what follows.
    """
    incoming = open(channel["to_child"], encoding="utf-8")  # noqa: SIM115 - open for the whole conversation
    outgoing = open(channel["from_child"], "w", encoding="utf-8")  # noqa: SIM115
    for line in incoming:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("type") == "end":
            break
        try:
            reply = _call("runtime", adapter.handle, entry, message, context)
            text = json.dumps({"ok": True, "reply": reply}, allow_nan=True)
        except _Failure as failure:
            text = json.dumps({"ok": False, "kind": failure.kind, "error": failure.error})
        except (TypeError, ValueError) as error:
            text = json.dumps({"ok": False, "kind": "invalid_output",
                               "error": f"the reply cannot be turned into plain data: {error}"})
        outgoing.write(text + "\n")
        outgoing.flush()


def main(request_path: str) -> int:
    faulthandler.enable()
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    out = open(request["answers"], "a", encoding="utf-8")  # noqa: SIM115 - kept open for every event

    def emit(event: str, **fields: Any) -> None:
        out.write(json.dumps({"event": event, **fields}, allow_nan=True) + "\n")
        out.flush()

    emit("started", t=time.time())
    shared = None
    if request.get("shared_input"):
        with open(request["shared_input"], encoding="utf-8") as handle:
            shared = json.load(handle)
    adapter = _load_module("engram_problem_adapter", request["adapter"])
    context = adapter.prepare(shared) if hasattr(adapter, "prepare") else shared
    namespace = adapter.namespace(context) if hasattr(adapter, "namespace") else {}
    loaded_at = time.perf_counter()
    try:
        candidate = _load_candidate(request["program"], namespace, request.get("program_name"))
        entry = getattr(candidate, request["entry_point"], None)
        if not callable(entry):
            raise _Failure("missing_entry_point",
                           f"the program defines no function named {request['entry_point']!r}")
    except _Failure as failure:
        emit("failure", kind=failure.kind, error=failure.error, scenario=None)
        return 0
    emit("loaded", seconds=time.perf_counter() - loaded_at)
    if request.get("channel"):
        _converse(request["channel"], adapter, entry, context)
        emit("done")
        return 0
    run = getattr(adapter, "run", lambda fn, scenario_input, ctx: fn(**scenario_input))
    serialize = getattr(adapter, "serialize", lambda raw, scenario_input: raw)
    for scenario in request["scenarios"]:
        started = time.perf_counter()
        try:
            raw = _call("runtime", run, entry, scenario["input"], context)
            seconds = time.perf_counter() - started
            answer = _call("invalid_output", serialize, raw, scenario["input"])
            line = json.dumps({"event": "scenario", "name": scenario["name"], "answer": answer,
                               "seconds": seconds}, allow_nan=True)
        except _Failure as failure:
            emit("failure", kind=failure.kind, error=failure.error, scenario=scenario["name"])
            continue
        except (TypeError, ValueError) as error:
            emit("failure", kind="invalid_output", scenario=scenario["name"],
                 error=f"the answer cannot be turned into plain data: {error}")
            continue
        out.write(line + "\n")
        out.flush()
    emit("done")
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: a candidate's stray threads or atexit hooks must not hold the sandbox open.
    os._exit(code)
