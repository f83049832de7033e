"""The Engram method: a chain of agents that hand on a Research Digest and an Archive.

For agent n = 1..max_agents: lay out a fresh workspace (task, initial program, best program so
far, digest, reference algorithms, read-only archive of earlier agents), run a deepagents agent
with file tools, a sandboxed shell and `run_simulation`, stop it on natural completion, its time
limit, its step limit or a run budget, obtain its summary, append the summary to the digest, and
archive its workspace. A run interrupted at any point resumes here: unscored experiments are
scored, the interrupted agent is closed with a summary from its experiment log, and the chain
continues with the next agent and the next experiment number.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain.agents.middleware import AgentMiddleware

from engram.archive import write_atomic
from engram.errors import EngramError
from engram.methods.context import MethodContext, MethodResult, StopRun
from engram.methods.digest import (
    append_to_digest,
    distill_if_needed,
    has_summary_sections,
    message_text,
    prompt,
    request_summary,
    summary_from_log,
)
from engram.methods.workspace_backend import closing_shells
from engram.model_calls import AgentStop

MIN_EXPERIMENTS_ADVICE = 10
ARCHIVE_ALL = ("`agent-<k>/experiments/exp-<m>/` with `program.py`, `evaluation.json` and `results/` for every "
               "experiment so far, and each finished agent's `summary.md`, `transcript.jsonl` and `workspace/`")
ARCHIVE_OWN = "your own experiments, `experiments/exp-<m>/` with `program.py`, `evaluation.json` and `results/`"
HELPER_DESCRIPTION = ("A helper with the same tools and workspace, for a self-contained job such as digesting the "
                      "archive, analysing result files or trying one variant; it reports back briefly.")
_TOOL_OUTPUT_CHARS = 2000
_TOOL_STDERR_CHARS = 1000


@dataclass
class AgentOutcome:
    reason: str
    run_stop: str | None = None


def run_chain(ctx: MethodContext) -> MethodResult:
    """Run (or continue) the agent chain of one seed."""
    started = close_interrupted_agents(ctx, digest=ctx.spec.method.digest)
    settings = ctx.spec.method
    stop_reason = f"all {ctx.spec.budget.max_agents} agents finished"
    for agent in range(max(started, default=0) + 1, ctx.spec.budget.max_agents + 1):
        reason = ctx.stop_reason()
        if reason:
            stop_reason = reason
            break
        outcome = run_agent(ctx, agent)
        if outcome.run_stop:
            stop_reason = outcome.run_stop
            break
        if settings.digest:
            distill_if_needed(ctx.archive, ctx.model_factory, max_tokens=settings.digest_max_tokens, ledger=ctx.ledger)
    return MethodResult(stop_reason=stop_reason, best_score=ctx.best_score(), evaluations=ctx.evaluations_done())


# -- one agent ----------------------------------------------------------------------------------------


def run_agent(ctx: MethodContext, agent: int) -> AgentOutcome:
    settings, budget = ctx.spec.method, ctx.spec.budget
    deadline = time.monotonic() + budget.minutes_per_agent * 60
    archive_view = prepare_workspace(ctx, agent, whole_archive=settings.archive)
    _add_handover_files(ctx)
    start_agent(ctx, agent, budget.max_agents)
    model = agent_model(ctx, agent)
    with closing_shells():
        graph = build_agent_graph(ctx, agent, model, deadline, archive_view, system=system_prompt(ctx, agent))
        outcome, last_text = drive(ctx, agent, graph, deadline, first_message(ctx),
                                   max_steps=settings.max_steps_per_agent)
        summary = collect_summary(ctx, agent, model, outcome, last_text)
    close_agent(ctx, agent, summary, outcome.reason, digest=settings.digest)
    return outcome


def start_agent(ctx: MethodContext, agent: int, of: int) -> None:
    """Record the start of `agent` (of `of` planned): event, nested MLflow run, progress line."""
    ctx.archive.log("agent_start", agent=agent, dollars=ctx.ledger.total_dollars)
    ctx.tracker.start_agent(agent)
    ctx.progress.agent_started(agent, of)


def agent_model(ctx: MethodContext, agent: int) -> Any:
    """The agent's chat model, writing every request and response to the agent's transcript."""
    transcript = ctx.archive.agent_dir(agent) / "transcript.jsonl"
    return ctx.model_factory(agent=agent, role="agent", transcript=transcript)


def prepare_workspace(ctx: MethodContext, agent: int, *, whole_archive: bool) -> Path:
    """A fresh workspace for `agent` with the problem's files; returns the directory shown to it as
    /archive/: every agent's folder when `whole_archive`, else only the agent's own."""
    archive, problem = ctx.archive, ctx.problem
    workspace = archive.workspace
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    write_atomic(workspace / "task.md", problem.task_prompt)
    shutil.copyfile(problem.initial_program, workspace / problem.workspace_name("initial_program"))
    baselines = problem.baselines()
    if baselines:
        (workspace / "baselines").mkdir()
        for name, path in baselines.items():
            shutil.copyfile(path, workspace / "baselines" / f"{name}.py")
    if problem.config.agent_files:
        (workspace / "data").mkdir()
        for relative in problem.config.agent_files:
            shutil.copyfile(problem.data_file(relative), workspace / "data" / Path(relative).name)
    # The no-archive ablation shows an agent only its own experiments.
    view = archive.agents_dir if whole_archive else archive.agent_dir(agent)
    view.mkdir(parents=True, exist_ok=True)
    if ctx.sandbox.name == "process":
        (workspace / "archive").symlink_to(view, target_is_directory=True)
    else:
        (workspace / "archive").mkdir()  # mount point for the read-only archive
    return view


def _add_handover_files(ctx: MethodContext) -> None:
    """What an Engram agent inherits from the chain: the best program so far and the digest."""
    archive, workspace = ctx.archive, ctx.archive.workspace
    best = archive.best()
    if best is not None:
        shutil.copyfile(best[1].program, workspace / ctx.problem.workspace_name("best_program"))
    if ctx.spec.method.digest and archive.digest().strip():
        write_atomic(workspace / "digest.md", archive.digest())


def build_agent_graph(ctx: MethodContext, agent: int, model: Any, deadline: float, archive_view: Path, *,
                      system: str, checkpointer: Any = None) -> Any:
    """A deepagents agent with Engram's tools and limits; a `checkpointer` keeps its conversation so
    that it can be continued with further messages."""
    from deepagents import create_deep_agent

    from engram.llm import retry_middleware
    from engram.methods.workspace_backend import build_backend

    def remaining() -> float:
        return deadline - time.monotonic()

    backend, permissions = build_backend(
        ctx.archive.workspace, archive_view, ctx.sandbox, shell_timeout_s=ctx.spec.sandbox.shell_timeout_s,
        memory_mb=ctx.spec.sandbox.shell_memory_mb, remaining_s=remaining,
    )
    def limits() -> list[Any]:
        model_settings = ctx.spec.model
        return [retry_middleware(model_settings.max_retries, deadline=deadline, timeout_s=model_settings.timeout_s,
                                 model=model_settings.id), LimitsMiddleware(ctx, deadline)]

    # The sub-agent tool's helper replaces deepagents' default one so that it obeys the same
    # deadline, budgets and retries as the agent that calls it (the default inherits none of them).
    helper = {"name": "general-purpose", "description": HELPER_DESCRIPTION, "system_prompt": prompt("helper_system"),
              "middleware": limits()}
    return create_deep_agent(
        model=model,
        tools=[make_run_simulation(ctx, agent, remaining, archive_view)],
        system_prompt=system,
        subagents=[helper],
        backend=backend,
        permissions=permissions or None,
        middleware=limits(),
        checkpointer=checkpointer,
        name=f"agent-{agent}",
    )


def system_prompt(ctx: MethodContext, agent: int) -> str:
    best = ctx.archive.best()
    handover = []
    if best is not None:
        handover.append(f"- `/{ctx.problem.workspace_name('best_program')}`: the best program so far "
                        f"(score {best[0]}, exp-{best[1].number:04d})")
    if ctx.spec.method.digest and ctx.archive.digest().strip():
        handover.append("- `/digest.md`: the Research Digest of earlier agents")
    return prompt("agent_system").format(
        agent=agent, max_agents=ctx.spec.budget.max_agents, minutes=f"{ctx.spec.budget.minutes_per_agent:g}",
        workspace_map=workspace_map(ctx, handover, archive=ARCHIVE_ALL if ctx.spec.method.archive else ARCHIVE_OWN),
        min_experiments=MIN_EXPERIMENTS_ADVICE,
    )


def workspace_map(ctx: MethodContext, extra: list[str], *, archive: str) -> str:
    """The Markdown list of workspace files an agent's system prompt shows; `extra` lines (the
    method's own files) come right after the starting program, `archive` describes /archive/."""
    lines = [
        "- `/task.md`: the task (also in your first message)",
        f"- `/{ctx.problem.workspace_name('initial_program')}`: the starting program",
        *extra,
    ]
    if ctx.problem.baselines():
        lines.append("- `/baselines/`: known reference algorithms for this problem")
    if ctx.problem.config.agent_files:
        names = ", ".join(f"`{Path(p).name}`" for p in ctx.problem.config.agent_files)
        lines.append(f"- `/data/`: data to explore with your own scripts: {names}")
    lines.append(f"- `/archive/` (read-only): {archive}")
    return "\n".join(lines)


def first_message(ctx: MethodContext) -> str:
    digest = ctx.archive.digest().strip() if ctx.spec.method.digest else ""
    best = ctx.archive.best()
    if best is None:
        best_text = f"None yet: start from `/{ctx.problem.workspace_name('initial_program')}`."
    else:
        code = best[1].program.read_text(encoding="utf-8")
        best_text = (f"Score {best[0]} (exp-{best[1].number:04d}), also at "
                     f"`/{ctx.problem.workspace_name('best_program')}`:\n\n```{ctx.problem.language}\n{code}\n```")
    return prompt("agent_first_message").format(
        task=ctx.problem.task_prompt.strip(), digest=digest or "None yet: you are the first agent.", best=best_text,
    )


# -- tools and middleware -------------------------------------------------------------------------------


def make_run_simulation(ctx: MethodContext, agent: int, remaining: Any, archive_view: Path) -> Any:
    from langchain_core.tools import StructuredTool

    workspace = ctx.archive.workspace

    def run_simulation(file_path: str) -> str:
        """Score the program in `file_path` (a workspace path such as /new_algorithm.py) on the problem's
        scenarios. Records it as a new experiment and returns the score, per-scenario metrics and the
        end of the program's output."""
        path = _workspace_file(workspace, file_path)
        if path is None:
            return f"Error: {file_path!r} is not a file in your workspace. Write the program first, then pass its path."
        left = remaining()
        if left <= 1:
            return "Not run: your time is up. Write your summary now."
        # A StopRun raised here (budget spent) propagates and ends the agent and the run.
        experiment, evaluation = ctx.evaluate(path.read_text(encoding="utf-8", errors="replace"), agent=agent,
                                              time_limit_s=left)
        return describe_evaluation(ctx, experiment, evaluation, archive_view)

    return StructuredTool.from_function(run_simulation, name="run_simulation")


def _workspace_file(workspace: Path, file_path: str) -> Path | None:
    relative = file_path.strip().lstrip("/")
    if not relative:
        return None
    candidate = (workspace / relative).resolve()
    if not candidate.is_relative_to(workspace.resolve()) or not candidate.is_file():
        return None
    return candidate


def describe_evaluation(ctx: MethodContext, experiment: Any, evaluation: Any, archive_view: Path) -> str:
    best = ctx.archive.best()
    where = "/archive/" + str(experiment.path.relative_to(archive_view))
    lines = [f"exp-{experiment.number:04d}: " + (f"score {evaluation.score}" if evaluation.ok
                                                 else f"FAILED ({evaluation.error_kind})")]
    if best is not None:
        lines.append(f"best so far: {best[0]} (exp-{best[1].number:04d})")
    if not evaluation.ok:
        lines.append(f"error: {evaluation.error}")
    for name, scenario in evaluation.scenarios.items():
        metrics = ", ".join(f"{k}={v}" for k, v in scenario.metrics.items())
        status = "ok" if scenario.ok else f"{scenario.error_kind}"
        lines.append(f"- {name}: {status}" + (f" ({metrics})" if metrics else ""))
    for key, value in evaluation.metrics.items():
        lines.append(f"{key}: {value}")
    lines.append(f"saved in {where}/ (program.py, evaluation.json, results/)")
    if evaluation.stdout.strip():
        lines.append("stdout (end):\n" + evaluation.stdout[-_TOOL_OUTPUT_CHARS:])
    if evaluation.stderr.strip():
        lines.append("stderr (end):\n" + evaluation.stderr[-_TOOL_STDERR_CHARS:])
    return "\n".join(lines)


class LimitsMiddleware(AgentMiddleware):
    """Before every model call: stop the agent at its deadline, and the run at its budgets."""

    def __init__(self, ctx: MethodContext, deadline: float) -> None:
        super().__init__()
        self._ctx = ctx
        self._deadline = deadline

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        if time.monotonic() >= self._deadline:
            raise AgentStop("time limit")
        self._ctx.check_budget()
        return None


# -- driving the graph ----------------------------------------------------------------------------------


def drive(ctx: MethodContext, agent: int, graph: Any, deadline: float, message: str, *, max_steps: int,
          thread: str | None = None) -> tuple[AgentOutcome, str]:
    """Send `message` and stream the agent until it ends; return why it ended and the text of its last
    message. With a `thread` (and a graph built with a checkpointer) the message continues that
    conversation."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.errors import GraphRecursionError

    last_text = ""
    config: dict[str, Any] = {"recursion_limit": max_steps}
    if thread is not None:
        config["configurable"] = {"thread_id": thread}
    try:
        for update in graph.stream({"messages": [HumanMessage(content=message)]}, config,
                                   stream_mode="updates"):
            for message in _messages_in(update):
                if isinstance(message, AIMessage):
                    text = message_text(message.content)
                    if text.strip():
                        last_text = text
                    ctx.progress.agent_turn(agent, text, list(message.tool_calls or []))
            if time.monotonic() >= deadline:
                return AgentOutcome("time limit"), last_text
        return AgentOutcome("completed"), last_text
    except AgentStop as stop:
        return AgentOutcome(str(stop)), last_text
    except StopRun as stop:
        return AgentOutcome(f"stopped: {stop.reason}", run_stop=stop.reason), last_text
    except GraphRecursionError:
        return AgentOutcome(f"step limit ({max_steps})"), last_text
    except EngramError:
        raise  # the run itself is broken (tampered problem files, missing data): stop it, say why
    except Exception as exc:  # a model or provider error that retries did not cure
        if _is_budget_error(exc):
            return AgentOutcome(f"stopped: {exc}", run_stop=str(exc)), last_text
        return AgentOutcome(f"model error: {type(exc).__name__}: {exc}"[:500]), last_text


def _messages_in(update: Any) -> list[Any]:
    messages: list[Any] = []
    if isinstance(update, dict):
        for value in update.values():
            if isinstance(value, dict) and isinstance(value.get("messages"), list):
                messages.extend(value["messages"])
    return messages


def _is_budget_error(exc: BaseException) -> bool:
    from engram.llm import BudgetExceeded

    return isinstance(exc, BudgetExceeded)


def collect_summary(ctx: MethodContext, agent: int, model: Any, outcome: AgentOutcome, last_text: str) -> str:
    """The agent's summary: its last message if it has the sections, else one bounded follow-up
    call, else one written from its experiment log."""
    if has_summary_sections(last_text):
        return last_text.strip()
    experiments = [e for e in ctx.archive.experiments() if e.agent == agent]
    if outcome.run_stop is None and ctx.stop_reason() is None:
        try:
            requested = request_summary(model, agent=agent, task=ctx.problem.task_prompt, experiments=experiments,
                                        last_message=last_text)
            if has_summary_sections(requested):
                return requested.strip()
        except Exception as exc:  # the follow-up is a courtesy; the log-based summary always works
            ctx.progress.note(f"agent {agent}: summary request failed ({type(exc).__name__}: {exc})")
    return summary_from_log(agent, experiments, outcome.reason)


def close_agent(ctx: MethodContext, agent: int, summary: str, reason: str, *, digest: bool) -> None:
    """Store the summary (and append it to the digest when `digest`), archive the workspace, log the end."""
    archive = ctx.archive
    write_atomic(archive.agent_dir(agent) / "summary.md", summary + "\n")
    if digest:
        append_to_digest(archive, agent, summary)
    archive.archive_workspace(agent)
    experiments = [e for e in archive.experiments() if e.agent == agent]
    best = ctx.best_score()
    archive.log("agent_end", agent=agent, reason=reason, experiments=len(experiments), best_score=best,
                dollars=ctx.ledger.total_dollars, usage=ctx.ledger.snapshot())
    metrics = {"experiments": float(len(experiments)), "dollars": ctx.ledger.total_dollars}
    if best is not None:
        metrics["best_score"] = best
    ctx.tracker.end_agent(agent, metrics=metrics, artifacts=[archive.agent_dir(agent) / "summary.md"])
    ctx.progress.agent_finished(agent, reason)


def close_interrupted_agents(ctx: MethodContext, *, digest: bool) -> list[int]:
    """Resume: finish the evaluations and close the agents a killed run left open, so the run goes on
    from a consistent archive. Returns the agents started so far."""
    ctx.finish_interrupted_experiments()
    started = ctx.archive.started_agents()
    finished = set(ctx.archive.finished_agents())
    for agent in started:
        if agent not in finished:
            close_interrupted_agent(ctx, agent, digest=digest)
    return started


def close_interrupted_agent(ctx: MethodContext, agent: int, *, digest: bool) -> None:
    """Resume: an agent whose run was killed is closed with a summary from its experiment log."""
    experiments = [e for e in ctx.archive.experiments() if e.agent == agent]
    summary = summary_from_log(agent, experiments, "the run was interrupted")
    close_agent(ctx, agent, summary, "interrupted", digest=digest)

