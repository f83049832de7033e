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
from engram.problems.problem import Problem

PROMPTS_DIR = Path(__file__).with_name("prompts")


@cache
def template(name: str) -> str:
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def format_score(score: float) -> str:
    """Eight significant digits: cloudcast's scores differ in the fourth (two decimals show 0.00 for all)."""
    return f"{score:.8g}"


def task_section(problem: Problem, *, solutions: bool = False) -> str:
    """The task and the starting program; with `solutions` (the spec's `method.reference_solutions`)
    also the problem's known solutions, which agent methods then find in their workspace."""
    text = template("llm_call_task").format(
        task=problem.task_prompt.strip(), entry_point=problem.config.entry_point, language=problem.language,
        initial_program=problem.initial_program.read_text(encoding="utf-8").rstrip(),
    )
    known = known_solutions(problem) if solutions else ""
    return f"{text}\n\n{known}" if known else text


def known_solutions(problem: Problem) -> str:
    """The problem's known reference algorithms (its `baselines/`) as a Markdown section, or ""."""
    found = problem.baselines()
    if not found:
        return ""
    blocks = [f"## {name}\n\n```{problem.language}\n{path.read_text(encoding='utf-8').rstrip()}\n```"
              for name, path in found.items()]
    return "# Known reference algorithms for this problem\n\n" + "\n\n".join(blocks)


def conversation(problem: Problem, request: str, *, solutions: bool = False) -> list[BaseMessage]:
    return [SystemMessage(content=template("llm_call_system")),
            HumanMessage(content=f"{task_section(problem, solutions=solutions)}\n\n{request}")]


def first_sample_messages(problem: Problem, *, solutions: bool = False) -> list[BaseMessage]:
    """The request of one-shot, and of the first programs of best-shot and evolution."""
    return conversation(problem, template("llm_call_first_sample"), solutions=solutions)


def program_block(title: str, individual: Individual, *, with_reasoning: bool, language: str) -> str:
    lines = [f"## {title} (score {format_score(individual.score)})", ""]
    if with_reasoning and individual.reasoning:
        lines += [f"Idea: {individual.reasoning}", ""]
    lines += [f"```{language}", individual.code.rstrip(), "```"]
    return "\n".join(lines)


def best_shot_messages(problem: Problem, shown: Sequence[Individual], *, solutions: bool = False) -> list[BaseMessage]:
    """`shown` must already be in ascending score order; the prompt says so."""
    if not shown:
        return first_sample_messages(problem, solutions=solutions)
    programs = "\n\n".join(program_block(f"Program {k}", individual, with_reasoning=False,
                                         language=problem.language)
                           for k, individual in enumerate(shown, 1))
    return conversation(problem, template("best_shot_programs").format(programs=programs), solutions=solutions)


def evolution_messages(problem: Problem, parents: Sequence[Individual], instruction: str, *,
                       solutions: bool = False) -> list[BaseMessage]:
    heading = "The parent program" if len(parents) == 1 else "The parent programs"
    programs = "\n\n".join(program_block(f"Parent {k}", individual, with_reasoning=True,
                                         language=problem.language)
                           for k, individual in enumerate(parents, 1))
    return conversation(problem, template("evolution_parents").format(heading=heading, programs=programs,
                                                                      instruction=instruction),
                        solutions=solutions)
