"""Agent summaries and the Research Digest built from them.

An agent's summary must have fixed sections so that the next agent can rely on them. If the
agent's last message lacks them, one bounded follow-up call asks for them (it sends the experiment
log and the end of the last message, never the whole history); failing that, a summary is written
from the experiment log alone. Summaries are appended to the digest under `## Agent <n>`; when the
digest outgrows its token budget it is distilled by one model call, and the call is recorded.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

from engram.archive import Experiment, SeedArchive, write_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.language_models import BaseChatModel

    from engram.llm import UsageLedger

REQUIRED_SECTIONS = ("Best result", "What was tried", "Key insights", "Recommended next steps", "Dead ends")
_LAST_MESSAGE_CHARS = 4000
_TASK_HEAD_CHARS = 1500


def prompt(name: str) -> str:
    return resources.files("engram.prompts").joinpath(f"{name}.md").read_text(encoding="utf-8")


def has_summary_sections(text: str) -> bool:
    headings = {m.group(1).strip().lower() for m in re.finditer(r"^#{1,4}\s*(.+?)\s*$", text, re.MULTILINE)}
    return all(section.lower() in headings for section in REQUIRED_SECTIONS)


def estimate_tokens(text: str) -> int:
    return len(text) // 4


def experiment_log(experiments: list[Experiment]) -> str:
    """A compact Markdown table of experiments, the material every fallback summary is made from."""
    if not experiments:
        return "(no experiments)"
    lines = ["| experiment | score | outcome |", "| --- | --- | --- |"]
    for experiment in experiments:
        evaluation = experiment.evaluation()
        if evaluation is None:
            outcome, score = "not evaluated", "-"
        elif evaluation.ok:
            outcome, score = "ok", f"{evaluation.score}"
        else:
            first_line = evaluation.error.splitlines()[0][:120] if evaluation.error else ""
            outcome = f"{evaluation.error_kind}: {first_line}"
            score = "-"
        lines.append(f"| exp-{experiment.number:04d} | {score} | {outcome} |")
    return "\n".join(lines)


def summary_from_log(agent: int, experiments: list[Experiment], reason: str) -> str:
    """The summary of last resort: facts from the experiment log, clearly marked as such."""
    scored = [(e, e.evaluation()) for e in experiments]
    good = [(e, ev) for e, ev in scored if ev is not None and ev.ok and ev.score is not None]
    failed = [(e, ev) for e, ev in scored if ev is not None and not ev.ok]
    if good:
        best_exp, best_eval = max(good, key=lambda pair: pair[1].score)
        best = (f"Score {best_eval.score} from exp-{best_exp.number:04d} "
                f"(`/archive/agent-{agent}/experiments/exp-{best_exp.number:04d}/program.py`).")
    else:
        best = "No experiment of this agent produced a valid score."
    dead = "\n".join(f"- exp-{e.number:04d} failed with {ev.error_kind}" for e, ev in failed) or "- none recorded"
    return "\n".join([
        f"_Written by Engram from agent {agent}'s experiment log: the agent left no summary ({reason})._",
        "", "## Mode", "Unknown.", "", "## Best result", best, "",
        "## What was tried", experiment_log(experiments), "",
        "## Key insights", "None recorded by the agent; read its programs in the archive.", "",
        "## Recommended next steps", "Start from the best program so far and read this agent's experiments.", "",
        "## Dead ends", dead,
    ])


def request_summary(model: BaseChatModel, *, agent: int, task: str, experiments: list[Experiment],
                    last_message: str) -> str:
    """One model call, with bounded input, asking for the summary sections."""
    from langchain_core.messages import HumanMessage

    text = prompt("summary_request").format(
        agent=agent, task_head=task[:_TASK_HEAD_CHARS], experiment_log=experiment_log(experiments),
        last_message=last_message[-_LAST_MESSAGE_CHARS:] or "(none)",
    )
    reply = model.invoke([HumanMessage(content=text)])
    return message_text(reply.content)


def message_text(content: object) -> str:
    """Text of a message whose content may be a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b.get("text", "") if isinstance(b, dict) else str(b) for b in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content or "")


def append_to_digest(archive: SeedArchive, agent: int, summary: str) -> str:
    digest = archive.digest().rstrip()
    # The agent's own headings go one level below its `## Agent <n>` heading.
    nested = re.sub(r"^(#{1,5})(\s)", r"#\1\2", summary.strip(), flags=re.MULTILINE)
    section = f"## Agent {agent}\n\n{nested}\n"
    updated = f"{digest}\n\n{section}" if digest else f"# Research Digest\n\n{section}"
    archive.write_digest(updated)
    return updated


def distill_if_needed(archive: SeedArchive, model_factory: Callable[..., BaseChatModel], *, max_tokens: int,
                      ledger: UsageLedger) -> bool:
    """Replace an over-long digest by a distilled one (one model call), recording input and output."""
    from langchain_core.messages import HumanMessage

    digest = archive.digest()
    if estimate_tokens(digest) <= max_tokens:
        return False
    model = model_factory(role="distill")
    before = ledger.total_dollars
    reply = model.invoke([HumanMessage(content=prompt("distill").format(target_tokens=max_tokens // 2,
                                                                      digest=digest))])
    distilled = message_text(reply.content).strip()
    if not distilled:
        return False
    number = len(list((archive.root / "digests").glob("distill-*.json"))) + 1
    write_json(archive.root / "digests" / f"distill-{number}.json", {
        "input": digest, "output": distilled, "dollars": ledger.total_dollars - before,
        "input_tokens_estimate": estimate_tokens(digest), "output_tokens_estimate": estimate_tokens(distilled),
    })
    archive.write_digest(distilled + "\n")
    archive.log("distill", number=number, before_tokens=estimate_tokens(digest),
                after_tokens=estimate_tokens(distilled))
    return True
