"""Tree search over programs, expanded by short agents.

Nodes are programs with their scores. The root is the problem's initial program, evaluated first
(as agent 0's experiment). Each round r = 1..rounds:

1. select a node to expand (`select_node`): the highest-scoring one, ties broken uniformly at
   random by a generator seeded from the run's seed and the round number (so a resumed run picks
   the same node); with probability `epsilon` (default 0, as in the reference) a uniformly random
   node instead. Nodes without a score rank below every scored node;
2. run agent r — Engram's agent machinery, tools and sandbox, but no digest and only its own
   experiments in /archive/ — from that node's program (`/parent_program.py`), with the summaries
   of the node and its nearest ancestors (`ancestor_summaries`, default 3) in its first message,
   before the task, as in the reference (`parent_in_first_message`: the task first, then the
   summaries and the parent's code);
3. add the agent's best-scoring program as a child of the node, carrying the agent's summary. An
   agent that scored nothing valid adds a copy of its parent (same program and score), so that
   its summary — what failed — still reaches the agents that later expand that branch.

The run stops after `rounds` rounds, when `max_minutes` are up, or at a run budget (evaluations,
dollars, target score); a round cut short still adds its child.

The tree lives in the archive: `tree_select` and `tree_node` events (the source of truth for
resume) and `tree.json`, a snapshot rewritten after every node. A run killed at any point resumes
with every evaluation and node: an interrupted agent is closed with a summary from its log and its
best program becomes the round's child.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from baselines.deadline import Deadline
from engram.errors import EngramError
from engram.methods.agent_chain import (
    ARCHIVE_OWN,
    PATHS,
    agent_model,
    build_agent_graph,
    close_agent,
    close_interrupted_agent,
    collect_summary,
    prepare_workspace,
    start_agent,
    workspace_map,
)
from engram.methods.context import MethodContext, MethodResult, StopRun
from engram.methods.conversation import REFERENCE_STREAM_ERRORS, Conversation, converse
from engram.methods.digest import prompt, summary_format
from engram.methods.result_file_reply import REPLY_DESCRIPTIONS
from engram.methods.workspace_backend import closing_shells
from engram.runs.archive import Experiment, write_json

ROOT_AGENT = 0
"""The root's evaluation is recorded as an experiment of agent 0 (no agent runs under that number)."""
MIN_EXPERIMENTS_ADVICE = 10


@dataclass(frozen=True)
class Node:
    id: int
    """0 for the root, else the round that created the node."""
    parent: int | None
    experiment: int | None
    """The experiment that scored this node's program (for a copy: its parent's)."""
    score: float | None
    summary: str = ""
    """The summary of the agent that made this node ("" for the root)."""
    copied: bool = False
    """The agent scored no valid program, so the node repeats its parent's."""


# -- selection ------------------------------------------------------------------------------------------


def select_node(nodes: Sequence[Node], rng: random.Random, *, epsilon: float = 0.0) -> Node:
    """The node to expand: the best score, ties uniformly at random; with probability `epsilon` any node.

    A node without a score (the initial program failed) ranks below every scored node.
    """
    if not nodes:
        raise ValueError("select_node needs at least one node")
    ordered = sorted(nodes, key=lambda node: node.id)
    if epsilon > 0 and rng.random() < epsilon:
        return rng.choice(ordered)
    scored = [node for node in ordered if node.score is not None]
    if not scored:
        return rng.choice(ordered)
    best = max(node.score for node in scored)
    return rng.choice([node for node in scored if node.score == best])


def round_rng(seed: int, round_number: int) -> random.Random:
    """A generator per (seed, round): the same choice again after a restart, without saving any state."""
    return random.Random(f"tree_search:{seed}:{round_number}")


def lineage(nodes: dict[int, Node], node_id: int) -> list[Node]:
    """The node and its ancestors, nearest first."""
    chain = []
    current: int | None = node_id
    while current is not None:
        chain.append(nodes[current])
        current = nodes[current].parent
    return chain


def ancestor_summaries(nodes: dict[int, Node], node_id: int, count: int) -> list[Node]:
    """The `count` nearest nodes on the way to the root (the node itself included) that carry a
    summary, oldest first, as the agent reads them."""
    with_summary = [node for node in lineage(nodes, node_id) if node.summary]
    return list(reversed(with_summary[:count]))


# -- the run --------------------------------------------------------------------------------------------


def run_tree_search(ctx: MethodContext) -> MethodResult:
    """Run (or continue) the tree search of one seed."""
    settings = ctx.spec.method
    ctx.finish_interrupted_experiments()
    deadline = Deadline.for_run(settings.max_minutes, ctx.archive.events())
    nodes = load_nodes(ctx)
    stop = None
    if ROOT_AGENT not in nodes:
        stop = deadline.stop_reason() or ctx.stop_reason() or _add_root(ctx, nodes)
    for round_number in range(1, settings.rounds + 1):
        if stop is not None:
            break
        if round_number in nodes:
            continue
        stop = _run_round(ctx, nodes, round_number, deadline)
    write_tree(ctx, nodes)
    ctx.tracker.log_artifacts([ctx.archive.root / "tree.json"])
    return MethodResult(stop_reason=stop or f"all {settings.rounds} rounds finished", best_score=ctx.best_score(),
                        evaluations=ctx.evaluations_done(), details={"nodes": len(nodes)})


def _add_root(ctx: MethodContext, nodes: dict[int, Node]) -> str | None:
    """Evaluate the initial program (unless an interrupted run already did) and make it the root."""
    stored = [e for e in ctx.archive.experiments() if e.agent == ROOT_AGENT and e.evaluation() is not None]
    if stored:
        experiment = stored[0]
    else:
        try:
            experiment, _ = ctx.evaluate(ctx.problem.initial_program.read_text(encoding="utf-8"), agent=ROOT_AGENT)
        except StopRun as stop:
            return stop.reason
    add_node(ctx, nodes, Node(id=ROOT_AGENT, parent=None, experiment=experiment.number, score=_score(experiment)))
    return None


def _run_round(ctx: MethodContext, nodes: dict[int, Node], round_number: int, deadline: Deadline) -> str | None:
    """Select (or recall the selection), run (or close) the round's agent, add its child. Returns a
    reason to stop the run, or None."""
    archive = ctx.archive
    stop = None
    if round_number in archive.started_agents():  # resume: the round's agent ran, or was running
        parent_id = _selected(ctx, round_number)
        if parent_id is None:
            raise EngramError(f"{archive.events_file}: round {round_number} started but its node selection "
                              "(a tree_select event) is missing; the archive is damaged")
        if round_number not in archive.finished_agents():
            close_interrupted_agent(ctx, round_number, digest=False)
    else:
        stop = deadline.stop_reason() or ctx.stop_reason()
        if stop is not None:
            return stop
        parent_id = _selected(ctx, round_number)
        if parent_id is None:
            parent_id = select_node(list(nodes.values()), round_rng(ctx.seed, round_number),
                                    epsilon=ctx.spec.method.epsilon).id
            archive.log("tree_select", round=round_number, node=parent_id, score=nodes[parent_id].score)
        stop = run_round_agent(ctx, nodes, nodes[parent_id], round_number, deadline)
    add_node(ctx, nodes, child_node(ctx, nodes[parent_id], round_number))
    return stop or deadline.stop_reason()


def _selected(ctx: MethodContext, round_number: int) -> int | None:
    for event in ctx.archive.events("tree_select"):
        if event.get("round") == round_number:
            return int(event["node"])
    return None


def run_round_agent(ctx: MethodContext, nodes: dict[int, Node], parent: Node, agent: int,
                    run_deadline: Deadline) -> str | None:
    """One short agent from `parent`'s program; returns the run's stop reason if a budget ended it."""
    settings, budget = ctx.spec.method, ctx.spec.budget
    left = run_deadline.remaining()
    deadline = time.monotonic() + min(budget.minutes_per_agent * 60, left if left is not None else float("inf"))
    archive_view = prepare_workspace(ctx, agent, whole_archive=False)
    program = node_program(ctx, parent)
    if program is not None:
        shutil.copyfile(program, ctx.archive.workspace / ctx.problem.workspace_name("parent_program"))
    start_agent(ctx, agent, settings.rounds)
    model = agent_model(ctx, agent)
    system = system_prompt(ctx)

    def after_turn(conversation: Conversation) -> str | None:
        """The reference's loop: "continue" after every turn that ends without the summary, for at
        most `max_turns` turns, until `patience` simulations in a row bring the agent no new best."""
        if conversation.turns >= settings.max_turns or idle_simulations(ctx, agent) >= settings.patience:
            return None
        return prompt("keep_going")

    with closing_shells():  # the round's shell (a container under docker) ends with its agent
        conversation = converse(
            ctx, agent, lambda saver: build_agent_graph(ctx, agent, model, deadline, archive_view, system=system,
                                                        checkpointer=saver),
            deadline, first_message(ctx, nodes, parent), max_steps=settings.max_steps_per_agent,
            max_stream_errors=REFERENCE_STREAM_ERRORS, want_summary=True, after_turn=after_turn)
    summary = collect_summary(ctx, agent, model, conversation, system=system)
    close_agent(ctx, agent, summary, conversation.outcome.reason, digest=False)
    return conversation.outcome.run_stop


def idle_simulations(ctx: MethodContext, agent: int) -> int:
    """Simulations of `agent` since its own best score last improved (the reference's patience count:
    each simulation that is not a new best of the agent adds one, a new best resets it)."""
    best: float | None = None
    idle = 0
    for experiment in (e for e in ctx.archive.experiments() if e.agent == agent):
        score = _score(experiment)
        if score is not None and (best is None or score > best):
            best, idle = score, 0
        else:
            idle += 1
    return idle


def child_node(ctx: MethodContext, parent: Node, agent: int) -> Node:
    """The round's child: the agent's best-scoring experiment (ties: the earliest), or a copy of the parent."""
    summary_file = ctx.archive.agent_dir(agent) / "summary.md"
    summary = summary_file.read_text(encoding="utf-8").strip() if summary_file.is_file() else ""
    best: Experiment | None = None
    for experiment in (e for e in ctx.archive.experiments() if e.agent == agent):
        score = _score(experiment)
        if score is not None and (best is None or score > _score(best)):
            best = experiment
    if best is None:
        return Node(id=agent, parent=parent.id, experiment=parent.experiment, score=parent.score, summary=summary,
                    copied=True)
    return Node(id=agent, parent=parent.id, experiment=best.number, score=_score(best), summary=summary)


def _score(experiment: Experiment) -> float | None:
    evaluation = experiment.evaluation()
    return evaluation.score if evaluation is not None and evaluation.ok else None


# -- persistence ----------------------------------------------------------------------------------------


def load_nodes(ctx: MethodContext) -> dict[int, Node]:
    """The tree as recorded by `tree_node` events (a node whose event was never written is redone)."""
    nodes = {}
    for event in ctx.archive.events("tree_node"):
        node = Node(id=int(event["node"]), parent=event.get("parent"), experiment=event.get("experiment"),
                    score=event.get("score"), copied=bool(event.get("copied")))
        summary_file = ctx.archive.agent_dir(node.id) / "summary.md"
        if node.id != ROOT_AGENT and summary_file.is_file():
            node = replace(node, summary=summary_file.read_text(encoding="utf-8").strip())
        nodes[node.id] = node
    return nodes


def add_node(ctx: MethodContext, nodes: dict[int, Node], node: Node) -> None:
    ctx.archive.log("tree_node", node=node.id, parent=node.parent, experiment=node.experiment, score=node.score,
                    copied=node.copied)
    nodes[node.id] = node
    write_tree(ctx, nodes)


def write_tree(ctx: MethodContext, nodes: dict[int, Node]) -> None:
    """`tree.json`: every node with its parent, children, score, program and summary files (a snapshot
    for people and reports; the events are what resume reads)."""
    children: dict[int, list[int]] = {node_id: [] for node_id in nodes}
    for node in nodes.values():
        if node.parent is not None and node.parent in children:
            children[node.parent].append(node.id)
    root = ctx.archive.root
    records = []
    for node in sorted(nodes.values(), key=lambda n: n.id):
        program = node_program(ctx, node)
        summary = ctx.archive.agent_dir(node.id) / "summary.md"
        records.append({
            "node": node.id, "parent": node.parent, "children": children[node.id], "score": node.score,
            "experiment": node.experiment, "copied": node.copied,
            "program": str(program.relative_to(root)) if program else None,
            "summary": str(summary.relative_to(root)) if node.id != ROOT_AGENT and summary.is_file() else None,
        })
    write_json(root / "tree.json", {"nodes": records})


def node_program(ctx: MethodContext, node: Node) -> Path | None:
    for experiment in ctx.archive.experiments():
        if experiment.number == node.experiment:
            return experiment.program
    return None


# -- prompts --------------------------------------------------------------------------------------------


def system_prompt(ctx: MethodContext) -> str:
    return prompt("tree_agent_system").format(
        minutes=f"{ctx.spec.budget.minutes_per_agent:g}", min_experiments=MIN_EXPERIMENTS_ADVICE, paths=PATHS,
        parent_program=ctx.problem.workspace_name("parent_program"),
        new_algorithm=ctx.problem.workspace_name("new_algorithm"),
        workspace_map=workspace_map(ctx, [f"- `/{ctx.problem.workspace_name('parent_program')}`: your starting "
                                          "program, the node you expand"],
                                    archive=ARCHIVE_OWN),
        summary_format=summary_format(0),
        simulation_reply=REPLY_DESCRIPTIONS[ctx.spec.method.simulation_reply],
    )


def first_message(ctx: MethodContext, nodes: dict[int, Node], parent: Node) -> str:
    """The round agent's first message. By default the reference's: the carried summaries (after the
    tree's best score), the task, then how to use the summaries; the parent's code is only a file
    (`/parent_program.py`). `parent_in_first_message` puts the task first and the code in the message."""
    carried = ancestor_summaries(nodes, parent.id, ctx.spec.method.ancestor_summaries)
    if ctx.spec.method.parent_in_first_message:
        return _message_with_parent(ctx, carried, parent)
    if carried:
        ancestors = "\n\n---\n\n".join(f"### Researcher of round {node.id} (score: {_six_decimals(node.score)})\n\n"
                                        + node.summary for node in carried)
    else:  # the root: the reference's fallback advice, read off the expanded node's score
        ancestors = "### Recommended Next Steps\n\n" + "\n".join(f"- {hint}" for hint in root_hints(parent.score))
    scores = [node.score for node in nodes.values() if node.score is not None]
    return prompt("tree_first_message").format(best=_six_decimals(max(scores) if scores else None),
                                               ancestors=ancestors, task=ctx.problem.task_prompt.strip())


def root_hints(score: float | None) -> list[str]:
    """The reference's advice when no summary exists yet, chosen by fixed score thresholds (0.001 and
    0.002, on the scale of cloudcast's scores; other problems get the same thresholds, as there)."""
    if score is None or score < 0.001:
        return ["The score is still low: try a fundamentally different approach."]
    if score < 0.002:
        return ["The score is improving: keep refining the current approach.",
                "Try a smaller problem size so that the optimisation runs faster."]
    return ["The score is close to the target: fine-tune.",
            "Find the configurations that score worst and work on them."]


def _six_decimals(score: float | None) -> str:
    return "none (it failed)" if score is None else f"{score:.6f}"


def _message_with_parent(ctx: MethodContext, carried: list[Node], parent: Node) -> str:
    """Engram's variant: the task, the summaries under headings of their own, the parent's code."""
    if carried:
        ancestors = "\n\n".join(f"## Round {node.id} ({_outcome(node)})\n\n" + _nested(node.summary)
                                  for node in carried)
    else:
        ancestors = "Nothing yet: your program is the initial program."
    program = node_program(ctx, parent)
    code = program.read_text(encoding="utf-8") if program is not None else ""
    if parent.id == ROOT_AGENT:
        where = "the initial program"
    elif parent.copied:
        where = f"round {parent.id} scored no valid program, so this is node {parent.parent}'s program again"
    else:
        where = f"the best program of round {parent.id}"
    parent_text = (f"Node {parent.id} ({where}), score {_score_text(parent.score)}, also at "
                   f"`/{ctx.problem.workspace_name('parent_program')}`:\n\n```{ctx.problem.language}\n{code}\n```")
    return prompt("tree_first_message_with_parent").format(task=ctx.problem.task_prompt.strip(),
                                                           ancestors=ancestors, parent=parent_text)


def _outcome(node: Node) -> str:
    if node.copied:
        return "it scored no valid program"
    return f"its best program scored {_score_text(node.score)}"


def _score_text(score: float | None) -> str:
    return "nothing (it failed)" if score is None else f"{score}"


def _nested(summary: str) -> str:
    """Push the summary's headings two levels down, under its `## Round` heading."""
    return "\n".join("##" + line if line.startswith("#") else line for line in summary.splitlines())
