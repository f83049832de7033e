"""Ctrl-C for the whole process: stop the sandboxes at once, and never record what the stop broke.

On Ctrl-C (or the SIGINT a sweep worker gets when its driver dies) the runner kills every running
candidate and shell command, so that tool threads need not wait them out. A candidate killed this
way has no result: recording it as a failed evaluation would put a score in the archive that the
candidate never earned. So the stop is announced here first, and the method context checks it
before recording anything; the experiment stays stored but unscored, and resume scores it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

_stopping = threading.Event()


def request_stop() -> None:
    """Announce the stop and kill the running sandboxes (safe from a signal handler)."""
    from engram.sandbox import docker as docker_sandbox
    from engram.sandbox.process import kill_active_runs

    _stopping.set()
    kill_active_runs()
    docker_sandbox.kill_active_runs()


def stop_requested() -> bool:
    return _stopping.is_set()


def reset() -> None:
    """A new run in this process starts with no stop pending."""
    _stopping.clear()


@contextlib.contextmanager
def signal_as_keyboard_interrupt(signum: int, before: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While inside, `signum` runs `before` (e.g. `request_stop`) and stops the main thread the way
    Ctrl-C does, so one clean-up path serves Ctrl-C, SIGTERM and a sweep's cancel. Main thread only."""

    def interrupt(signum: int, frame: object) -> None:
        before()
        raise KeyboardInterrupt

    previous = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        signal.signal(signum, previous)
