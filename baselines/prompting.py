"""The messages the LLM-call baselines send: one system prompt, the task, and programs to build on.

All three methods share the system prompt and the task section (the problem's task and its
starting program, which defines the interface); they differ only in what follows: a plain request
(one-shot, and the first samples of the others), earlier programs in ascending score order
(best-shot), or parents with an operator's instruction (evolution). The wording lives in
`baselines/prompts/*.md`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from baselines.population import Individual
from engram.problem import Problem

PROMPTS_DIR = Path(__file__).with_name("prompts")


@cache
def template(name: str) -> str:
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def format_score(score: float) -> str:
    """Eight significant digits: cloudcast's scores differ in the fourth (two decimals show 0.00 for all)."""
    return f"{score:.8g}"


def task_section(problem: Problem) -> str:
    return template("llm_call_task").format(
        task=problem.task_prompt.strip(), entry_point=problem.config.entry_point, language=problem.language,
        initial_program=problem.initial_program.read_text(encoding="utf-8").rstrip(),
    )


def conversation(problem: Problem, request: str) -> list[BaseMessage]:
    return [SystemMessage(content=template("llm_call_system")),
            HumanMessage(content=f"{task_section(problem)}\n\n{request}")]


def first_sample_messages(problem: Problem) -> list[BaseMessage]:
    """The request of one-shot, and of the first programs of best-shot and evolution."""
    return conversation(problem, template("llm_call_first_sample"))


def program_block(title: str, individual: Individual, *, with_reasoning: bool, language: str) -> str:
    lines = [f"## {title} (score {format_score(individual.score)})", ""]
    if with_reasoning and individual.reasoning:
        lines += [f"Idea: {individual.reasoning}", ""]
    lines += [f"```{language}", individual.code.rstrip(), "```"]
    return "\n".join(lines)


def best_shot_messages(problem: Problem, shown: Sequence[Individual]) -> list[BaseMessage]:
    """`shown` must already be in ascending score order; the prompt says so."""
    if not shown:
        return first_sample_messages(problem)
    programs = "\n\n".join(program_block(f"Program {k}", individual, with_reasoning=False,
                                         language=problem.language)
                           for k, individual in enumerate(shown, 1))
    return conversation(problem, template("best_shot_programs").format(programs=programs))


def evolution_messages(problem: Problem, parents: Sequence[Individual], instruction: str) -> list[BaseMessage]:
    heading = "The parent program" if len(parents) == 1 else "The parent programs"
    programs = "\n\n".join(program_block(f"Parent {k}", individual, with_reasoning=True,
                                         language=problem.language)
                           for k, individual in enumerate(parents, 1))
    return conversation(problem, template("evolution_parents").format(heading=heading, programs=programs,
                                                                      instruction=instruction))
