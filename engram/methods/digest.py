"""Agent summaries and the Research Digest built from them.

As in the reference, the summary is asked for inside the agent's own conversation: the system
prompt gives its format, every message of the agent is checked for its sections, and an agent that
ends without one is sent one summary request in the same conversation. An agent that still has
none (it timed out, or ignored the request) gets one last model call over its whole conversation
(bounded in size here; unbounded in the reference); failing that, or when a budget forbids more
calls, a summary is written from the experiment log. Summaries are appended to the digest as they
are; distilling an over-long digest by one model call is an option (`digest_max_tokens`).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

from engram.models.calls import RetryPolicy, invoke_with_retries
from engram.runs.archive import Experiment, SeedArchive, write_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.language_models import BaseChatModel

    from engram.models.llm import UsageLedger

REQUIRED_SECTIONS = ("Best Result", "What I Tried", "Key Insights")
"""The headings whose presence makes a message the agent's summary (the reference's check)."""
FALLBACK_HISTORY_CHARS = 400_000
"""The most conversation text (about 100k tokens) the last-resort summary call sends: long tool
results are cut first, then the oldest turns after the task."""
_CUT_TOOL_RESULT_CHARS = 2000


def prompt(name: str) -> str:
    return resources.files("engram.prompts").joinpath(f"{name}.md").read_text(encoding="utf-8")


def has_summary_sections(text: str) -> bool:
    headings = [m.group(1).strip().lower() for m in re.finditer(r"^#{1,6}\s*(.+?)\s*$", text, re.MULTILINE)]
    return all(any(heading.startswith(section.lower()) for heading in headings) for section in REQUIRED_SECTIONS)


def summary_request(agent: int) -> str:
    """The message that asks an agent, in its own conversation, for its summary."""
    return prompt("summary_request").format(summary_format=summary_format(agent))


def summary_format(agent: int = 0) -> str:
    """The summary's sections, as the system prompt and the summary request show them."""
    return prompt("summary_format").strip()


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
        "", "## Summary for Next Agent", "", "### Agent Mode", "Unknown.", "", "### Best Result", best, "",
        "### What I Tried", experiment_log(experiments), "",
        "### Key Insights", "None recorded by the agent; read its programs in the archive.", "",
        "### Recommended Next Steps", "Start from the best program so far and read this agent's experiments.", "",
        "### Approaches That Didn't Work (and Why)", dead,
    ])


def fallback_summary(model: BaseChatModel, *, system: str, history: list[Any], agent: int,
                     policy: RetryPolicy | None = None) -> str:
    """One model call over the agent's whole conversation (its system prompt first, the summary
    request last), as the reference does when an agent leaves no valid summary. Tool calls and
    their results are given as text, so that the call needs no tools."""
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [SystemMessage(content=system), *_plain_history(history), HumanMessage(content=summary_request(agent))]
    reply = invoke_with_retries(model, messages, policy)  # a rate limit here would lose the agent's whole summary
    return message_text(reply.content).strip()


def _plain_history(history: list[Any]) -> list[Any]:
    """The conversation as user and assistant text, cut to FALLBACK_HISTORY_CHARS."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    plain: list[Any] = []
    for message in history:
        if isinstance(message, AIMessage):
            calls = [f"[tool call {call.get('name')}: {json.dumps(call.get('args'), ensure_ascii=False)}]"
                     for call in message.tool_calls or []]
            text = "\n".join(part for part in [message_text(message.content).strip(), *calls] if part)
            if text:
                plain.append(AIMessage(content=text))
        elif isinstance(message, ToolMessage):
            plain.append(HumanMessage(content=f"[result of {message.name}]\n{message_text(message.content)}"))
        elif isinstance(message, HumanMessage):
            plain.append(HumanMessage(content=message_text(message.content)))
    return _fit(plain, FALLBACK_HISTORY_CHARS)


def _fit(messages: list[Any], limit: int) -> list[Any]:
    def size() -> int:
        return sum(len(str(m.content)) for m in messages)

    if size() > limit:
        for message in messages:
            if str(message.content).startswith("[result of ") and len(message.content) > _CUT_TOOL_RESULT_CHARS:
                half = _CUT_TOOL_RESULT_CHARS // 2
                message.content = (f"{message.content[:half]}\n[... {len(message.content) - 2 * half} characters "
                                   f"left out ...]\n{message.content[-half:]}")
    while size() > limit and len(messages) > 2:
        del messages[1]  # the task (first) stays; the oldest turns after it go
    return messages


def message_text(content: object) -> str:
    """Text of a message whose content may be a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b.get("text", "") if isinstance(b, dict) else str(b) for b in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content or "")


def append_to_digest(archive: SeedArchive, agent: int, summary: str) -> str:
    """Append the summary as it is (the reference's raw digest), under `## Agent <n>` unless it
    already starts with such a heading."""
    digest = archive.digest().rstrip() or "# Research Digest"
    text = summary.strip()
    if not text.startswith("## Agent"):
        text = f"## Agent {agent}\n\n{text}"
    updated = f"{digest}\n\n---\n\n{text}\n"
    archive.write_digest(updated)
    return updated


def distill_if_needed(archive: SeedArchive, model_factory: Callable[..., BaseChatModel], *,
                      max_tokens: int | None, ledger: UsageLedger, policy: RetryPolicy | None = None) -> bool:
    """Replace an over-long digest by a distilled one (one model call), recording input and output;
    `max_tokens` None never distils (the reference)."""
    from langchain_core.messages import HumanMessage

    digest = archive.digest()
    if max_tokens is None or estimate_tokens(digest) <= max_tokens:
        return False
    model = model_factory(role="distill")
    before = ledger.total_dollars
    request = HumanMessage(content=prompt("distill").format(target_tokens=max_tokens // 2, digest=digest))
    reply = invoke_with_retries(model, [request], policy)
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
