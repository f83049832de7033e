"""The Engram method: a chain of agents that hand on a Research Digest and an Archive.

By default each agent works as in the reference (mit-nms/Engram): a fresh workspace with the
initial program, the digest as a read-only file `/digest.md` and the read-only archive of earlier
agents; a system prompt with the research protocol and the summary format; the task alone as the
first message. The agent runs until it writes its summary (checked on every message), stops on its
own (then it is asked for the summary once, in the same conversation), or reaches its time limit
(then one call over its whole conversation produces the summary); failed streams rebuild it. The
summary is appended to the digest as it is, and the workspace is archived. Ablations as in the
reference: `digest: false` asks for no summary at all; `archive: false` shows each agent only its
own experiments. `handover_in_first_message` and `digest_max_tokens` are Engram's richer handover.

A run interrupted at any point resumes here: unscored experiments are scored, the interrupted agent
is closed with a summary from its experiment log, and the chain continues with the next agent and
the next experiment number.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from langchain.agents.middleware import AgentMiddleware

from engram.methods.context import MethodContext, MethodResult
from engram.methods.conversation import AgentOutcome, Conversation, converse
from engram.methods.digest import (
    append_to_digest,
    distill_if_needed,
    fallback_summary,
    prompt,
    summary_format,
    summary_from_log,
    summary_request,
)
from engram.methods.result_file_reply import result_file_reply
from engram.methods.workspace_backend import closing_shells
from engram.models.calls import AgentStop, RetryPolicy
from engram.runs.archive import write_atomic

__all__ = ["AgentOutcome", "AgentStop", "run_chain"]

MIN_EXPERIMENTS_ADVICE = 10
DIGEST_FILE = "digest.md"
ARCHIVE_ALL = ("`agent-<k>/` for every earlier agent k: `experiments/exp-<m>/` with `program.py`, "
               "`evaluation.json` and `results/` for each experiment, and its `workspace/` (its files) and "
               "`transcript.jsonl` (its conversation){summaries}")
ARCHIVE_OWN = "your own experiments, `experiments/exp-<m>/` with `program.py`, `evaluation.json` and `results/`"
HELPER_DESCRIPTION = ("A helper with the same tools and workspace, for a self-contained job such as digesting the "
                      "archive, analysing result files or trying one variant; it reports back briefly.")
PATHS = ("Paths: the file tools see the workspace as `/`. Shell commands (`execute`) run in a sandbox without "
         "network access whose current directory is the workspace; there too, a path such as "
         "`/task.md` or `/archive/...` means the workspace's file (only system paths such as `/tmp` or "
         "`/usr` keep their usual meaning).")
_TOOL_OUTPUT_CHARS = 2000
_TOOL_STDERR_CHARS = 1000


def run_chain(ctx: MethodContext) -> MethodResult:
    """Run (or continue) the agent chain of one seed."""
    settings = ctx.spec.method
    started = close_interrupted_agents(ctx, digest=settings.digest, summary=settings.digest)
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
            distill_if_needed(ctx.archive, ctx.model_factory, max_tokens=settings.digest_max_tokens, ledger=ctx.ledger,
                              policy=RetryPolicy.of(ctx.spec.model))
    return MethodResult(stop_reason=stop_reason, best_score=ctx.best_score(), evaluations=ctx.evaluations_done())


# -- one agent ----------------------------------------------------------------------------------------


def run_agent(ctx: MethodContext, agent: int) -> AgentOutcome:
    settings, budget = ctx.spec.method, ctx.spec.budget
    deadline = time.monotonic() + budget.minutes_per_agent * 60
    archive_view = prepare_workspace(ctx, agent, whole_archive=settings.archive)
    readonly = _add_handover_files(ctx)
    start_agent(ctx, agent, budget.max_agents)
    model = agent_model(ctx, agent)
    system = system_prompt(ctx, agent)

    def after_turn(state: Conversation) -> str | None:
        """A natural end without the summary: ask for it once, in the same conversation."""
        if not settings.digest or state.summary_requested:
            return None
        state.summary_requested = True
        return summary_request(agent)

    with closing_shells():
        conversation = converse(
            ctx, agent, lambda saver: build_agent_graph(ctx, agent, model, deadline, archive_view, system=system,
                                                        checkpointer=saver, readonly_files=readonly),
            deadline, first_message(ctx), max_steps=settings.max_steps_per_agent,
            max_stream_errors=settings.max_stream_errors, want_summary=settings.digest, after_turn=after_turn)
    summary = collect_summary(ctx, agent, model, conversation, system=system) if settings.digest else None
    close_agent(ctx, agent, summary, conversation.outcome.reason, digest=settings.digest)
    return conversation.outcome


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
    /archive/: every agent's folder when `whole_archive`, else only the agent's own. The problem's
    known solutions go in only when the spec asks (`method.reference_solutions`), for every method."""
    archive, problem = ctx.archive, ctx.problem
    workspace = archive.workspace
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    write_atomic(workspace / "task.md", problem.task_prompt)
    shutil.copyfile(problem.initial_program, workspace / problem.workspace_name("initial_program"))
    baselines = problem.baselines() if ctx.spec.method.reference_solutions else {}
    if baselines:
        (workspace / "baselines").mkdir()
        for name, path in baselines.items():
            shutil.copyfile(path, workspace / "baselines" / f"{name}.py")
    if problem.config.agent_files:
        (workspace / "data").mkdir()
        for relative in problem.config.agent_files:
            shutil.copyfile(problem.data_file(relative), workspace / "data" / Path(relative).name)
    # The no-archive ablation shows an agent only its own experiments.
    view = (archive.agents_dir if whole_archive else archive.agent_dir(agent)).resolve()
    view.mkdir(parents=True, exist_ok=True)
    if ctx.sandbox.name == "process":
        (workspace / "archive").symlink_to(view, target_is_directory=True)  # absolute: valid from anywhere
    else:
        (workspace / "archive").mkdir()  # mount point for the read-only archive
    return view


def _add_handover_files(ctx: MethodContext) -> list[str]:
    """What an Engram agent inherits besides the archive: the digest (a read-only file, as in the
    reference) and, with the richer handover, the best program so far. Returns the read-only names."""
    archive, workspace, settings = ctx.archive, ctx.archive.workspace, ctx.spec.method
    readonly = []
    if settings.digest:
        write_atomic(workspace / DIGEST_FILE, archive.digest() or "# Research Digest\n")
        readonly.append(DIGEST_FILE)
    best = archive.best()
    if best is not None and settings.handover_in_first_message and settings.archive:
        shutil.copyfile(best[1].program, workspace / ctx.problem.workspace_name("best_program"))
    return readonly


def build_agent_graph(ctx: MethodContext, agent: int, model: Any, deadline: float, archive_view: Path, *,
                      system: str, checkpointer: Any = None, readonly_files: list[str] = ()) -> Any:
    """A deepagents agent with Engram's tools and limits; a `checkpointer` keeps its conversation so
    that it can be continued with further messages."""
    from deepagents import create_deep_agent
    from langchain.agents.middleware import TodoListMiddleware

    from engram.methods.workspace_backend import build_backend
    from engram.models.llm import retry_middleware

    def remaining() -> float:
        return deadline - time.monotonic()

    backend, permissions = build_backend(
        ctx.archive.workspace, archive_view, ctx.sandbox, shell_timeout_s=ctx.spec.sandbox.shell_timeout_s,
        memory_mb=ctx.spec.sandbox.shell_memory_mb, remaining_s=remaining, readonly_files=readonly_files,
    )

    def limits() -> list[Any]:
        # The to-do tool the reference's agents have (deepagents no longer adds it by itself).
        model_settings = ctx.spec.model
        return [retry_middleware(model_settings.max_retries, deadline=deadline, timeout_s=model_settings.timeout_s,
                                 model=model_settings.id), LimitsMiddleware(ctx, deadline), TodoListMiddleware()]

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
    """The reference's research protocol, adapted to what the ablations leave the agent."""
    settings = ctx.spec.method
    digest, whole_archive = settings.digest, settings.archive
    names = program_names(ctx)
    extra = []
    if digest:
        extra.append(f"- `/{DIGEST_FILE}` (read-only): the Research Digest, the summaries of earlier agents")
    best = ctx.archive.best()
    if best is not None and settings.handover_in_first_message and whole_archive:
        extra.append(f"- `/{names['best_program']}`: the best program so far "
                     f"(score {best[0]}, exp-{best[1].number:04d})")
    extra.append(f"- `/{names['new_algorithm']}`: your working file (you create it)")
    summaries = ", and `summary.md` (its summary)" if digest else ""
    archive = ARCHIVE_ALL.format(summaries=summaries) if whole_archive else ARCHIVE_OWN
    review = []
    if digest:
        review.append(f"- Read `/{DIGEST_FILE}` first: the earlier agents' summaries (best score, promising "
                      "ideas, dead ends).")
    review.append(f"- If you are agent 1, read `/{names['initial_program']}` to understand the starting point.")
    if whole_archive:
        review.append("- If you are not agent 1, look through `/archive/agent-*/`: each experiment's "
                      "`program.py`, `evaluation.json` and `results/`, and each agent's files and conversation. "
                      "Use it to copy promising code, compare results and avoid dead ends.")
    constraints = []
    if digest:
        constraints.append(f"- `/{DIGEST_FILE}` is read-only: do not try to write to it.")
    constraints.append("- `/archive/` is read-only.")
    return prompt("agent_system").format(
        agent=agent, **names,
        legacy=("leave clear documentation for the next agent." if digest
                else "leave your work in the workspace for the next agent (it reads the archive)."),
        workspace_map=workspace_map(ctx, extra, archive=archive),
        paths=PATHS,
        review="\n".join(review),
        ending_title="Finishing" if digest else "Wrapping up",
        ending=(prompt("agent_ending_summary").format(summary_format=summary_format(agent)) if digest
                else prompt("agent_ending_plain")).strip(),
        dead_end_note=" (it goes under the approaches that did not work in your summary)" if digest else "",
        min_experiments=MIN_EXPERIMENTS_ADVICE,
        tracking=("Keep track of everything: you will need it for your summary." if digest
                  else "Keep track of your experiments and results: what you tried, what worked, what failed."),
        constraints="\n".join(constraints),
        reminders=("- End with `## Summary for Next Agent` and the sections above: it is the only thing of yours "
                   "the next agent reads besides your files. Be specific: scores, parameters, and why."
                   if digest else ""),
    )


def program_names(ctx: MethodContext) -> dict[str, str]:
    """The workspace's program files, named for the problem's language (`.py`, `.cpp`)."""
    return {stem: ctx.problem.workspace_name(stem) for stem in ("initial_program", "best_program", "new_algorithm")}


def workspace_map(ctx: MethodContext, extra: list[str], *, archive: str) -> str:
    """The Markdown list of workspace files an agent's system prompt shows; `extra` lines (the
    method's own files) come right after the starting program, `archive` describes /archive/."""
    lines = [
        "- `/task.md`: the task (also your first message)",
        f"- `/{ctx.problem.workspace_name('initial_program')}`: the starting program",
        *extra,
    ]
    if ctx.spec.method.reference_solutions and ctx.problem.baselines():
        lines.append("- `/baselines/`: known reference algorithms for this problem")
    if ctx.problem.config.agent_files:
        names = ", ".join(f"`{Path(p).name}`" for p in ctx.problem.config.agent_files)
        lines.append(f"- `/data/`: data to explore with your own scripts: {names}")
    lines.append(f"- `/archive/` (read-only): {archive}")
    return "\n".join(lines)


def first_message(ctx: MethodContext) -> str:
    """The task, as in the reference; with the richer handover also the digest and the best program."""
    settings = ctx.spec.method
    if not settings.handover_in_first_message:
        return ctx.problem.task_prompt.strip()
    digest = ctx.archive.digest().strip() if settings.digest else ""
    best = ctx.archive.best() if settings.archive else None
    if best is None:
        best_text = f"None yet: start from `/{ctx.problem.workspace_name('initial_program')}`."
    else:
        code = best[1].program.read_text(encoding="utf-8")
        best_text = (f"Score {best[0]} (exp-{best[1].number:04d}), also at "
                     f"`/{ctx.problem.workspace_name('best_program')}`:\n\n```{ctx.problem.language}\n{code}\n```")
    sections = [f"# Task\n\n{ctx.problem.task_prompt.strip()}"]
    if settings.digest:
        sections.append("# Research Digest from earlier agents\n\n"
                        + (digest or "Empty so far: no earlier agent has finished."))
    if settings.archive:
        sections.append(f"# Best program so far\n\n{best_text}")
    return "\n\n".join(sections)


# -- tools and middleware -------------------------------------------------------------------------------


def make_run_simulation(ctx: MethodContext, agent: int, remaining: Any, archive_view: Path) -> Any:
    from langchain_core.tools import StructuredTool

    workspace = ctx.archive.workspace

    def run_simulation(file_path: str) -> str:
        """Score the program in `file_path` (a workspace path such as /new_algorithm.py) on the problem's
        scenarios. Records it as a new experiment and returns its results or its error."""
        if not file_path.strip().startswith("/"):  # refused, as in the reference, before anything is recorded
            return f"Error: file_path must be an absolute path such as /new_algorithm.py, not {file_path!r}."
        found = _workspace_file(workspace, file_path, archive_view)
        if found is None:
            return f"Error: {file_path!r} is not a file in your workspace. Write the program first, then pass its path."
        path, name = found
        code = path.read_text(encoding="utf-8", errors="replace")
        if not code.strip():
            return f"Error: {file_path} is empty; nothing was run."
        left = remaining()
        if left <= 1:
            return "Not run: your time is up. Write your summary now."
        # A StopRun raised here (budget spent) propagates and ends the agent and the run.
        experiment, evaluation = ctx.evaluate(code, agent=agent, time_limit_s=left, program_name=name)
        if ctx.spec.method.simulation_reply == "result_file":
            return result_file_reply(workspace, experiment.number, evaluation)
        return describe_evaluation(ctx, experiment, evaluation, archive_view)

    return StructuredTool.from_function(run_simulation, name="run_simulation")


def _workspace_file(workspace: Path, file_path: str, archive_view: Path) -> tuple[Path, str] | None:
    """The file named by a file-tool path (`/x.py`, `/archive/...`) or by its real path (what the
    shell sees), if it is in the workspace or the agent's view of the archive; with its file-tool
    path, the name the agent knows it by (never the host's path to the workspace)."""
    real = f"{workspace.resolve()}/"
    name = file_path.strip()
    relative = (name[len(real):] if name.startswith(real) else name).lstrip("/")
    if not relative:
        return None
    shown = "/" + relative
    root = workspace.resolve()
    if relative == "archive" or relative.startswith("archive/"):  # a mount point or link to the archive
        root, relative = archive_view.resolve(), relative.removeprefix("archive").lstrip("/")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate, shown


def describe_evaluation(ctx: MethodContext, experiment: Any, evaluation: Any, archive_view: Path) -> str:
    """run_simulation's reply, laid out as the reference's: the experiment and its score (six
    decimals) or its error, where it is stored, the program's output, and for Engram's agents a
    reminder to keep the result for the summary. `simulation_details` adds the error's kind, the
    best score so far, each scenario's status and metrics, and the totals (all also in
    evaluation.json), with the score at full precision."""
    settings = ctx.spec.method
    details = settings.simulation_details
    where = "/archive/" + str(experiment.path.resolve().relative_to(archive_view.resolve())) + "/"
    name = f"exp-{experiment.number:04d}"
    if evaluation.ok:
        lines = [f"Experiment {name} finished.", f"Score: {evaluation.score if details else f'{evaluation.score:.6f}'}"]
    else:
        kind = f" ({evaluation.error_kind})" if details else ""
        lines = [f"Experiment {name} failed{kind}.", f"Error: {evaluation.error}"]
    if details:
        best = ctx.archive.best()
        if best is not None:
            lines.append(f"Best so far: {best[0]} (exp-{best[1].number:04d})")
        lines += scenario_lines(evaluation)
    lines.append(f"Stored in {where}")
    if evaluation.ok:
        lines += ["  - program.py (the code you ran)", "  - evaluation.json (score, errors, per-scenario metrics)",
                  "  - results/ (the scenarios' result files)"]
    tail = settings.simulation_output == "tail"
    for title, text, limit in (("program output (stdout)", evaluation.stdout, _TOOL_OUTPUT_CHARS),
                               ("program log (stderr)", evaluation.stderr, _TOOL_STDERR_CHARS)):
        if text.strip():
            shown = clip_tail(text, limit) if tail else clip_head(text, limit)
            lines += ["", f"--- {title}{', end' if tail else ''} ---", shown]
    if evaluation.ok and settings.name == "engram":
        lines += ["", "Remember this result for your final summary."]
    return "\n".join(lines)


def scenario_lines(evaluation: Any) -> list[str]:
    """Each scenario's status and metrics, then the totals."""
    lines = []
    for name, scenario in evaluation.scenarios.items():
        metrics = ", ".join(f"{k}={v}" for k, v in scenario.metrics.items())
        status = "ok" if scenario.ok else f"{scenario.error_kind}"
        lines.append(f"- {name}: {status}" + (f" ({metrics})" if metrics else ""))
    return lines + [f"{key}: {value}" for key, value in evaluation.metrics.items()]


def clip_head(text: str, limit: int) -> str:
    """The first `limit` characters, with "..." after them if more were cut (the reference's cut)."""
    return text[:limit] + ("..." if len(text) > limit else "")


def clip_tail(text: str, limit: int) -> str:
    """The last `limit` characters, with "..." before them if more were cut."""
    return ("..." if len(text) > limit else "") + text[-limit:]


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


def collect_summary(ctx: MethodContext, agent: int, model: Any, conversation: Conversation, *, system: str) -> str:
    """The agent's summary: the message that had the sections; else (time-out, no answer to the
    request) one call over the whole conversation, as in the reference; else, or when a budget
    forbids more calls, one written from the experiment log."""
    if conversation.summary is not None:
        return conversation.summary
    experiments = [e for e in ctx.archive.experiments() if e.agent == agent]
    if conversation.outcome.run_stop is None and ctx.stop_reason() is None:
        try:
            text = fallback_summary(model, system=system, history=conversation.history, agent=agent,
                                    policy=RetryPolicy.of(ctx.spec.model))
            if text:
                return text
        except Exception as exc:
            ctx.progress.note(f"agent {agent}: the summary call failed ({type(exc).__name__}: {exc})")
    return summary_from_log(agent, experiments, conversation.outcome.reason)


def close_agent(ctx: MethodContext, agent: int, summary: str | None, reason: str, *, digest: bool) -> None:
    """Store the summary, if there is one (and append it to the digest when `digest`), archive the
    workspace, log the end."""
    archive = ctx.archive
    if summary is not None:
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
    summary_file = archive.agent_dir(agent) / "summary.md"
    ctx.tracker.end_agent(agent, metrics=metrics, artifacts=[summary_file] if summary_file.is_file() else [])
    ctx.progress.agent_finished(agent, reason)


def close_interrupted_agents(ctx: MethodContext, *, digest: bool, summary: bool = True) -> list[int]:
    """Resume: finish the evaluations and close the agents a killed run left open, so the run goes on
    from a consistent archive. Returns the agents started so far."""
    ctx.finish_interrupted_experiments()
    started = ctx.archive.started_agents()
    finished = set(ctx.archive.finished_agents())
    for agent in started:
        if agent not in finished:
            close_interrupted_agent(ctx, agent, digest=digest, summary=summary)
    return started


def close_interrupted_agent(ctx: MethodContext, agent: int, *, digest: bool, summary: bool = True) -> None:
    """Resume: an agent whose run was killed is closed with a summary from its experiment log (none
    when `summary` is false: the no-digest ablation has no summaries)."""
    experiments = [e for e in ctx.archive.experiments() if e.agent == agent]
    text = summary_from_log(agent, experiments, "the run was interrupted") if summary else None
    close_agent(ctx, agent, text, "interrupted", digest=digest)

