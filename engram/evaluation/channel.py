"""A conversation between the trusted scorer and the sandboxed candidate.

Some problems cannot be scored from one answer: a request scheduler must be asked at every
arrival while the trusted simulator runs, and a table reordering must be timed from outside the
candidate's process. For those, the scorer talks to the candidate over two FIFOs in the
evaluation's working directory, one JSON object per line. The scorer sends a message and waits
for the reply with a deadline; it measures the time itself; everything the candidate replies is
untrusted data that the scorer validates. Large inputs and outputs travel as files in the working
directory, named in the messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TO_CHILD = "to_candidate.fifo"
FROM_CHILD = "from_candidate.fifo"
_POLL_S = 0.05
_MAX_LINE = 256 * 1024 * 1024


class CandidateFailure(Exception):
    """The candidate could not answer: it raised, crashed, timed out, or broke the protocol.

    `kind` is an `ErrorKind` value when the candidate said why (an exception in its code), or None
    when the process died or went silent -- the evaluator then works out why from how it ended.
    """

    def __init__(self, kind: str | None, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error


class CandidateChannel:
    """The scorer's end of the conversation; see the module docstring."""

    def __init__(self, workdir: Path, *, deadline: float, alive: Callable[[], bool]) -> None:
        self.workdir = workdir
        self.deadline = deadline
        self._alive = alive
        self._to = os.open(workdir / TO_CHILD, os.O_RDWR | os.O_NONBLOCK)
        self._from = os.open(workdir / FROM_CHILD, os.O_RDWR | os.O_NONBLOCK)
        self._buffer = bytearray()
        self.candidate_seconds = 0.0
        self.broken: CandidateFailure | None = None

    @staticmethod
    def create_fifos(workdir: Path) -> dict[str, str]:
        for name in (TO_CHILD, FROM_CHILD):
            os.mkfifo(workdir / name, 0o600)
        return {"to_child": str(workdir / TO_CHILD), "from_child": str(workdir / FROM_CHILD)}

    # -- files ----------------------------------------------------------------------------------

    def write_file(self, name: str, data: str | bytes) -> str:
        """Put an input file where the candidate can read it; returns the path to send it."""
        path = self.workdir / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return str(path)

    def output_path(self, name: str) -> str:
        """A path under the working directory where the candidate may write an output file."""
        (self.workdir / "outputs").mkdir(exist_ok=True)
        return str(self.workdir / "outputs" / name)

    def read_file(self, path: str, *, max_bytes: int = _MAX_LINE) -> bytes:
        """Read a file the candidate wrote; only files inside the working directory are accepted."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.workdir.resolve()) or not resolved.is_file():
            raise CandidateFailure("invalid_output", f"the reply names {path!r}, which is not a file it wrote")
        with resolved.open("rb") as handle:
            return handle.read(max_bytes)

    # -- messages -------------------------------------------------------------------------------

    def request(self, message: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        """Send `message`, wait for the reply, and return the candidate's reply payload.

        The time from sending to the complete reply is added to `candidate_seconds`: it is
        measured here, outside the candidate's process, so the candidate cannot misreport it.
        """
        if self.broken is not None:
            raise self.broken
        deadline = self.deadline if timeout_s is None else min(self.deadline, time.monotonic() + timeout_s)
        started = time.monotonic()
        try:
            self._send((json.dumps(message, allow_nan=True) + "\n").encode("utf-8"), deadline)
            line = self._receive_line(deadline)
        except CandidateFailure as failure:
            self.broken = failure
            raise
        finally:
            self.candidate_seconds += time.monotonic() - started
        try:
            reply = json.loads(line)
        except ValueError:
            raise self._broke("invalid_output", "the candidate wrote something that is not a JSON reply") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise self._broke("invalid_output", "the candidate's reply is not a reply object")
        if not reply["ok"]:
            raise CandidateFailure(str(reply.get("kind") or "runtime"), str(reply.get("error") or "unknown error"))
        return reply.get("reply")

    def close(self) -> None:
        """Tell the candidate the conversation is over, then release our ends of the FIFOs."""
        with contextlib.suppress(OSError, CandidateFailure):
            if self.broken is None:
                self._send(b'{"type": "end"}\n', time.monotonic() + 1.0)
        for fd in (self._to, self._from):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _broke(self, kind: str | None, error: str) -> CandidateFailure:
        self.broken = CandidateFailure(kind, error)
        return self.broken

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._to, writable=True, deadline=deadline)
            try:
                written = os.write(self._to, view)
            except BlockingIOError:
                continue
            view = view[written:]

    def _receive_line(self, deadline: float) -> bytes:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise self._broke("invalid_output", "the candidate's reply is too large")
            self._wait(self._from, writable=False, deadline=deadline)
            try:
                chunk = os.read(self._from, 1 << 20)
            except BlockingIOError:
                continue
            self._buffer += chunk

    def _wait(self, fd: int, *, writable: bool, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._broke("timeout", "the candidate did not answer within its time limit")
            alive = self._alive()  # read before polling, so a reply written just before exit is not lost
            readers, writers, _ = select.select([] if writable else [fd], [fd] if writable else [], [],
                                                min(_POLL_S, remaining))
            if readers or writers:
                return
            if not alive:
                raise self._broke(None, "the candidate's process ended before it answered")
