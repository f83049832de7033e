"""Interactive problems: the trusted scorer talks to the sandboxed candidate over a channel."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BACKENDS, evaluator_on

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import load_problem
from engram.sandbox import Limits

EVALUATOR = '''
import time
from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer

class SumScorer(Scorer):
    """Asks the candidate for the sum of each batch; scores correct answers and times them itself."""
    interactive = True

    def scenario_input(self, scenario):
        return {}

    def run_scenario(self, scenario, channel):
        correct = 0
        started = time.monotonic()
        for batch in scenario.params["batches"]:
            reply = channel.request({"type": "sum", "numbers": batch})
            if not isinstance(reply, (int, float)):
                raise InvalidAnswer(f"expected a number, got {reply!r}")
            correct += reply == sum(batch)
        return ScenarioScore(metrics={"correct": correct, "seconds": time.monotonic() - started})

    def combine(self, results):
        total = sum(r.metrics["correct"] for r in results.values())
        return float(total), {"correct": total}
'''

ADAPTER = '''
calls = []

def handle(add_up, message, context):
    calls.append(message)
    return add_up(message["numbers"])
'''


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("sums")
    (root / "problem.yaml").write_text(
        "name: sums\ndescription: Add numbers when asked.\nscore: {unit: correct sums}\nentry_point: add_up\n"
        "scenarios:\n"
        "  - {name: small, params: {batches: [[1, 2], [3, 4, 5]]}}\n"
        "  - {name: large, params: {batches: [[10, 20, 30], [1], [2, 2]]}}\n"
    )
    (root / "task.md").write_text("Write add_up(numbers).\n")
    (root / "initial_program.py").write_text("def add_up(numbers):\n    return sum(numbers)\n")
    (root / "evaluator.py").write_text(EVALUATOR)
    (root / "adapter.py").write_text(ADAPTER)
    return load_problem(root)


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request: pytest.FixtureRequest, problem):
    yield from evaluator_on(request, problem, limits=Limits(wall_seconds=6))


def test_a_conversation_is_scored(evaluator: CandidateEvaluator, problem):
    result = evaluator.evaluate(problem.initial_program)
    assert result.ok, result.error
    assert result.score == 5.0
    assert result.scenarios["large"].metrics["correct"] == 3


def test_time_is_measured_outside_the_candidate(evaluator: CandidateEvaluator):
    result = evaluator.evaluate("import time\ndef add_up(numbers):\n    time.sleep(0.3)\n    return sum(numbers)\n")
    assert result.ok, result.error
    assert result.scenarios["small"].candidate_seconds >= 0.6
    assert result.timings.candidate_s >= 1.5


def test_wrong_answers_score_nothing_and_bad_ones_are_invalid(evaluator: CandidateEvaluator):
    assert evaluator.evaluate("def add_up(numbers):\n    return 0\n").score == 0.0
    result = evaluator.evaluate("def add_up(numbers):\n    return 'many'\n")
    assert result.error_kind == ErrorKind.INVALID_OUTPUT and "expected a number" in result.error


def test_an_exception_fails_that_scenario_only(evaluator: CandidateEvaluator):
    source = ("def add_up(numbers):\n    if 10 in numbers:\n        raise ValueError('too big')\n"
              "    return sum(numbers)\n")
    result = evaluator.evaluate(source)
    assert result.error_kind == ErrorKind.RUNTIME and "too big" in result.error
    assert result.scenarios["small"].ok and not result.scenarios["large"].ok


@pytest.mark.parametrize("body, kind", [
    ("    import time\n    time.sleep(60)\n", ErrorKind.TIMEOUT),
    ("    import os\n    os._exit(3)\n", ErrorKind.RUNTIME),
    ("    import ctypes\n    ctypes.string_at(0)\n", ErrorKind.KILLED),
    ("    return float('nan') if False else set()\n", ErrorKind.INVALID_OUTPUT),
])
def test_a_candidate_that_cannot_answer(evaluator: CandidateEvaluator, problem, body: str, kind: ErrorKind):
    result = evaluator.evaluate("def add_up(numbers):\n" + body)
    assert not result.ok and result.error_kind == kind, result.error
    assert evaluator.evaluate(problem.initial_program).score == 5.0  # the evaluator still works


def test_load_failures_are_reported_as_for_one_shot_problems(evaluator: CandidateEvaluator):
    assert evaluator.evaluate("def add_up(numbers)\n").error_kind == ErrorKind.SYNTAX
    assert evaluator.evaluate("x = 1\n").error_kind == ErrorKind.MISSING_ENTRY_POINT
