"""The wall-clock budget of an LLM-call baseline (`method.max_minutes`), kept across resumes.

A run that was killed and resumed has already spent time; the budget covers the whole seed. The
time spent by earlier sessions is read from the event log: each session starts with a `run_start`
or `resume` event and lasted at least until its last event. (Time after a session's last event --
a model call cut short by the kill -- is not counted.)
"""

from __future__ import annotations

import time
from typing import Any

SESSION_STARTS = ("run_start", "resume")


def time_spent_before(events: list[dict[str, Any]]) -> float:
    """Seconds spent by the sessions before the current (last) one."""
    sessions: list[tuple[float, float]] = []
    for event in events:
        t = event.get("t")
        if not isinstance(t, int | float):
            continue
        if event.get("type") in SESSION_STARTS or not sessions:
            sessions.append((t, t))
        else:
            start, _ = sessions[-1]
            sessions[-1] = (start, t)
    return sum(end - start for start, end in sessions[:-1])


def current_session_start(events: list[dict[str, Any]]) -> float | None:
    starts = [e["t"] for e in events if e.get("type") in SESSION_STARTS and isinstance(e.get("t"), int | float)]
    return starts[-1] if starts else None


class Deadline:
    """When the run must stop, as a monotonic instant; `None` minutes means no time budget."""

    def __init__(self, minutes: float | None, *, already_spent_s: float = 0.0) -> None:
        self.minutes = minutes
        self._end = None if minutes is None else time.monotonic() + minutes * 60 - already_spent_s

    @classmethod
    def for_run(cls, minutes: float | None, events: list[dict[str, Any]]) -> Deadline:
        """The deadline of a seed whose event log is `events` (the current session already started)."""
        start = current_session_start(events)
        in_this_session = max(0.0, time.time() - start) if start is not None else 0.0
        return cls(minutes, already_spent_s=time_spent_before(events) + in_this_session)

    @property
    def instant(self) -> float | None:
        """The end as a `time.monotonic()` value, as the model-call retry layer takes deadlines."""
        return self._end

    @property
    def reason(self) -> str:
        return f"time budget reached ({self.minutes:g} min)"

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def stop_reason(self) -> str | None:
        left = self.remaining()
        return self.reason if left is not None and left <= 0 else None
