"""Running proposals (a model call and an evaluation each) up to `workers` at a time.

Jobs are drawn lazily from an iterator on the calling thread, so a method can build each prompt
from the state its finished jobs left (best-shot samples its database when a job starts), and
`on_done` runs on the calling thread too, so that state needs no lock. Each evaluation still runs
in its own sandboxed process; the threads only wait for it.

Workers are daemon threads rather than a `ThreadPoolExecutor`: after Ctrl-C the run must end at
once, and an executor would make the interpreter wait for model calls still in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from engram.methods.context import StopRun

T = TypeVar("T")


def run_parallel(
    jobs: Iterator[Callable[[], T]],
    *,
    workers: int,
    stop_reason: Callable[[], str | None],
    on_done: Callable[[T], None] = lambda _: None,
) -> str | None:
    """Run `jobs` until they run out (returns None) or the run must stop (returns why).

    No job starts once `stop_reason()` gives a reason or a job raised an exception; jobs in flight
    are waited for, so everything they evaluated is recorded before the method returns. Then the
    first exception other than `StopRun` (a provider refusing the key, a broken scorer) is raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    finished: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue()
    in_flight = 0
    stopped: str | None = None
    failure: BaseException | None = None
    exhausted = False

    def work(job: Callable[[], T]) -> None:
        try:
            finished.put((job(), None))
        except BaseException as exc:
            finished.put((None, exc))

    while True:
        while stopped is None and not exhausted and in_flight < workers:
            stopped = stop_reason()
            if stopped is not None:
                break
            job = next(jobs, None)
            if job is None:
                exhausted = True
                break
            threading.Thread(target=work, args=(job,), name="engram-proposal", daemon=True).start()
            in_flight += 1
        if in_flight == 0:
            if failure is not None:
                raise failure
            return stopped
        result, error = _next_finished(finished)
        in_flight -= 1
        if isinstance(error, StopRun):
            stopped = stopped or error.reason
        elif error is not None:
            failure = failure or error
            stopped = stopped or f"{type(error).__name__}: {error}"
        else:
            on_done(result)  # type: ignore[arg-type]


def _next_finished(finished: queue.Queue[tuple[T | None, BaseException | None]]) -> tuple[T | None,
                                                                                          BaseException | None]:
    """Wait for a job in short slices, so Ctrl-C reaches the calling thread promptly."""
    while True:
        try:
            return finished.get(timeout=0.5)
        except queue.Empty:
            continue
