"""What a person (or a script) sees while a run goes on.

`RichProgress` keeps one live status line -- seed, agent, elapsed time, evaluations, best score,
dollars -- and, with `verbose`, prints each agent turn (text and tool calls) as it happens.
`JsonProgress` prints one JSON object per event for scripts; `QuietProgress` prints nothing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engram.evaluation.result import Evaluation


class Progress(Protocol):
    def seed_started(self, seed: int, *, resumed: bool) -> None: ...
    def agent_started(self, agent: int, max_agents: int) -> None: ...
    def experiment(self, number: int, evaluation: Evaluation, best: float | None, dollars: float) -> None: ...
    def agent_turn(self, agent: int, text: str, tool_calls: list[dict[str, Any]]) -> None: ...
    def agent_finished(self, agent: int, reason: str) -> None: ...
    def note(self, message: str) -> None: ...
    def seed_finished(self, seed: int, result: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class QuietProgress:
    def seed_started(self, seed: int, *, resumed: bool) -> None:
        pass

    def agent_started(self, agent: int, max_agents: int) -> None:
        pass

    def experiment(self, number: int, evaluation: Evaluation, best: float | None, dollars: float) -> None:
        pass

    def agent_turn(self, agent: int, text: str, tool_calls: list[dict[str, Any]]) -> None:
        pass

    def agent_finished(self, agent: int, reason: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def seed_finished(self, seed: int, result: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonProgress(QuietProgress):
    """One JSON object per line on stdout, for scripts that follow a run."""

    def _emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, "t": time.time(), **fields}, default=str), flush=True)

    def seed_started(self, seed: int, *, resumed: bool) -> None:
        self._emit("seed_started", seed=seed, resumed=resumed)

    def agent_started(self, agent: int, max_agents: int) -> None:
        self._emit("agent_started", agent=agent, max_agents=max_agents)

    def experiment(self, number: int, evaluation: Evaluation, best: float | None, dollars: float) -> None:
        self._emit("experiment", experiment=number, score=evaluation.score, error_kind=evaluation.error_kind,
                   best_score=best, dollars=dollars)

    def agent_finished(self, agent: int, reason: str) -> None:
        self._emit("agent_finished", agent=agent, reason=reason)

    def note(self, message: str) -> None:
        self._emit("note", message=message)

    def seed_finished(self, seed: int, result: dict[str, Any]) -> None:
        self._emit("seed_finished", seed=seed, best_score=result.get("best_score"), dollars=result.get("dollars"))


class RichProgress(QuietProgress):
    """A live status line on stderr, plus the agents' turns when verbose."""

    def __init__(self, *, verbose: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.verbose = verbose
        self.started = time.monotonic()
        self.state: dict[str, Any] = {"seed": "-", "agent": "-", "evaluations": 0, "best": None, "dollars": 0.0}
        # Off a terminal a live line cannot be redrawn: it is printed once, as a whole line, at the end.
        self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False,
                         auto_refresh=self.console.is_terminal)
        self.shown = False  # the line appears with the first seed, so an error before the run stands alone

    def _render(self) -> Any:
        from rich.text import Text

        elapsed = int(time.monotonic() - self.started)
        best = "-" if self.state["best"] is None else f"{self.state['best']:.6g}"
        agent = "" if self.state["agent"] == "-" else f"agent {self.state['agent']}  "  # methods without agents
        return Text(
            f"seed {self.state['seed']}  {agent}{elapsed // 60:d}:{elapsed % 60:02d}  "
            f"evaluations {self.state['evaluations']}  best {best}  ${self.state['dollars']:.4f}",
            style="bold",
        )

    def _refresh(self) -> None:
        if not self.shown:
            self.shown = True
            if self.console.is_terminal:
                self.live.start()
        if self.console.is_terminal:
            self.live.update(self._render())

    def seed_started(self, seed: int, *, resumed: bool) -> None:
        self.state.update(seed=seed, agent="-", evaluations=0, best=None, dollars=0.0)  # the line is per seed
        self.console.print(f"[bold]seed {seed}[/]" + (" (resumed)" if resumed else ""))
        self._refresh()

    def agent_started(self, agent: int, max_agents: int) -> None:
        self.state["agent"] = f"{agent}/{max_agents}"
        self.console.print(f"agent {agent}/{max_agents} started")
        self._refresh()

    def experiment(self, number: int, evaluation: Evaluation, best: float | None, dollars: float) -> None:
        self.state.update(evaluations=self.state["evaluations"] + 1, best=best, dollars=dollars)
        outcome = f"score {evaluation.score:.6g}" if evaluation.ok else f"failed ({evaluation.error_kind})"
        self.console.print(f"  exp-{number:04d}: {outcome}")
        self._refresh()

    def agent_turn(self, agent: int, text: str, tool_calls: list[dict[str, Any]]) -> None:
        if not self.verbose:
            return
        if text.strip():
            self.console.print(f"[dim]agent {agent}:[/] {text.strip()[:2000]}", markup=True, highlight=False)
        for call in tool_calls:
            args = json.dumps(call.get("args", {}), default=str)
            self.console.print(f"[dim]agent {agent} → {call.get('name')}[/] {args[:300]}", highlight=False)

    def agent_finished(self, agent: int, reason: str) -> None:
        self.console.print(f"agent {agent} finished: {reason}")
        self._refresh()

    def note(self, message: str) -> None:
        self.console.print(message)

    def seed_finished(self, seed: int, result: dict[str, Any]) -> None:
        """The last line shows what the summary will: calls after the last evaluation (summaries, a
        distillation) cost dollars too, and a resumed seed's evaluations include those before the resume."""
        self.state.update(dollars=float(result.get("dollars") or 0.0),
                          best=result.get("best_score", self.state["best"]),
                          evaluations=result.get("evaluations", self.state["evaluations"]))
        self._refresh()

    def close(self) -> None:
        if not self.shown:
            return
        if self.console.is_terminal:
            self._refresh()
            self.live.stop()
        else:
            self.console.print(self._render())


def make_progress(*, verbose: bool = False, quiet: bool = False, as_json: bool = False) -> Progress:
    if as_json:
        return JsonProgress()
    if quiet or not sys.stderr:
        return QuietProgress()
    return RichProgress(verbose=verbose)
