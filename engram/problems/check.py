"""`engram check-problem`: is a problem directory ready for agents?

Runs the checks a researcher would otherwise discover one failed run at a time: the schema of
problem.yaml, the data manifest (every file present and matching its checksum), a task prompt
with content, a loadable evaluator, and the initial program evaluating successfully in the
sandbox. Each check reports what failed and where.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engram.errors import EngramError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_problem(path: Path, *, sandbox_name: str = "auto", scenarios: list[str] | None = None) -> list[Check]:
    """Run every check in order; later checks are skipped once an earlier one makes them meaningless."""
    from engram.problems.problem import load_problem

    checks: list[Check] = []

    def run(name: str, action: Callable[[], str]) -> bool:
        try:
            checks.append(Check(name, True, action()))
            return True
        except EngramError as exc:
            checks.append(Check(name, False, str(exc)))
        except Exception as exc:  # a bug in the problem's own code: show it plainly
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
        return False

    loaded = {}

    def schema() -> str:
        loaded["problem"] = load_problem(path)
        problem = loaded["problem"]
        return f"{problem.name}: {len(problem.config.scenarios)} scenario(s), entry point {problem.config.entry_point}"

    if not run("problem.yaml", schema):
        return checks
    problem = loaded["problem"]

    def data() -> str:
        files = problem.ensure_data(problem.select_scenarios(scenarios))
        return f"{len(files)} file(s) present and verified" if files else "no data files declared"

    def task() -> str:
        text = problem.task_prompt.strip()
        if len(text) < 80:
            raise EngramError(f"{problem.file(problem.config.task)} is nearly empty; agents start from it")
        return f"{len(text.split())} words"

    def evaluator() -> str:
        return f"scorer {problem.scorer_class.__name__}"

    def initial_program() -> str:
        from engram.evaluation.evaluator import CandidateEvaluator
        from engram.sandbox import get_sandbox

        with CandidateEvaluator(problem, get_sandbox(sandbox_name, quiet=True), scenarios=scenarios) as ev:
            result = ev.evaluate(problem.initial_program)
        if not result.ok:
            raise EngramError(f"the initial program failed ({result.error_kind}): {result.error}")
        return f"score {result.score} in {result.duration_s:.2f} s ({result.sandbox} sandbox)"

    for name, action in (("data", data), ("task prompt", task), ("evaluator", evaluator)):
        run(name, action)
    if all(c.ok for c in checks):
        run("initial program", initial_program)
    return checks
