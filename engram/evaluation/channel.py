"""A conversation between the trusted scorer and the sandboxed candidate.

Some problems cannot be scored from one answer: a request scheduler must be asked at every
arrival while the trusted simulator runs, and a table reordering must be timed from outside the
candidate's process. For those, the scorer talks to the candidate over two FIFOs in the
evaluation's working directory, one JSON object per line. The scorer sends a message and waits
for the reply with a deadline; it measures the time itself; everything the candidate replies is
untrusted data that the scorer validates. Large inputs and outputs travel as files in the working
directory, named in the messages.

The channel is opened before the candidate starts, so the FIFOs it talks over are the ones the
runner made, whatever the candidate later does to their names; files are read and written with
`safe_read`, and every reply is checked to be bounded plain data (`plain_data`) before a scorer
sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engram.evaluation.plain_data import check_plain, parse_untrusted
from engram.evaluation.safe_read import UnsafeFile, read_untrusted, write_beneath
from engram.evaluation.scoring import InvalidAnswer

TO_CHILD = "to_candidate.fifo"
FROM_CHILD = "from_candidate.fifo"
_POLL_S = 0.05
_MAX_LINE = 256 * 1024 * 1024
_MAX_ERROR_CHARS = 20_000


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
    """The scorer's end of the conversation; see the module docstring. Make it before the
    candidate starts: its FIFOs are opened here."""

    def __init__(self, workdir: Path, *, deadline: float, alive: Callable[[], bool]) -> None:
        self.workdir = workdir
        self.deadline = deadline
        self.alive = alive
        self._to = _open_fifo(workdir / TO_CHILD)
        self._from = _open_fifo(workdir / FROM_CHILD)
        self._buffer = bytearray()
        self.candidate_seconds = 0.0
        self.broken: CandidateFailure | None = None

    @staticmethod
    def create_fifos(workdir: Path) -> dict[str, str]:
        for name in (TO_CHILD, FROM_CHILD):
            os.mkfifo(workdir / name, 0o600)
        # Made now, before the sandbox starts and hands the working directory to the candidate's uid
        # (an unprivileged one when Engram is root): the candidate writes its outputs here.
        for name in ("inputs", "outputs"):
            (workdir / name).mkdir(exist_ok=True)
        return {"to_child": str(workdir / TO_CHILD), "from_child": str(workdir / FROM_CHILD)}

    # -- files ----------------------------------------------------------------------------------

    def write_file(self, name: str, data: str | bytes) -> str:
        """Put an input file where the candidate can read it; returns the path to send it."""
        path = self.workdir / "inputs" / name
        try:
            write_beneath(path, data.encode("utf-8") if isinstance(data, str) else data, within=self.workdir)
        except UnsafeFile as exc:  # the candidate replaced inputs/ with something else
            raise self._broke("invalid_output", f"an input could not be handed over: {exc}") from None
        return str(path)

    def output_path(self, name: str) -> str:
        """A path under the working directory where the candidate may write an output file."""
        with contextlib.suppress(OSError):  # a link or file in its place is refused when the output is read
            os.mkdir(self.workdir / "outputs")
        return str(self.workdir / "outputs" / name)

    def read_file(self, path: str, *, max_bytes: int = _MAX_LINE) -> bytes:
        """Read a file the candidate wrote: a regular file inside the working directory, reached
        without links, at most `max_bytes` long (a longer one is refused, not cut)."""
        try:
            data = read_untrusted(path, within=self.workdir, max_bytes=max_bytes)
        except UnsafeFile as exc:
            raise CandidateFailure("invalid_output", f"the candidate's file cannot be accepted: {exc}") from None
        assert data is not None
        return data

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
            reply = parse_untrusted(line)
        except InvalidAnswer as exc:
            raise self._broke("invalid_output", f"the candidate's reply cannot be read: {exc}") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise self._broke("invalid_output", "the candidate's reply is not a reply object")
        if not reply["ok"]:
            raise CandidateFailure(str(reply.get("kind") or "runtime")[:100],
                                   str(reply.get("error") or "unknown error")[:_MAX_ERROR_CHARS])
        try:
            return check_plain(reply.get("reply"), what="the reply")
        except InvalidAnswer as exc:
            raise CandidateFailure("invalid_output", str(exc)) from None

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
            alive = self.alive()  # read before polling, so a reply written just before exit is not lost
            readers, writers, _ = select.select([] if writable else [fd], [fd] if writable else [], [],
                                                min(_POLL_S, remaining))
            if readers or writers:
                return
            if not alive:
                raise self._broke(None, "the candidate's process ended before it answered")


def _open_fifo(path: Path) -> int:
    """Our end of a FIFO we made: read-write, so opening never waits for the other side."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not the FIFO Engram made")
    return fd
