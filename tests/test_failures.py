"""Every way a candidate can fail becomes a structured Evaluation, within the limits, on every backend.

After each failure the same evaluator must still score the initial program exactly: a misbehaving
candidate must not break the caller.
"""

from __future__ import annotations

import pytest
from conftest import INITIAL_SCORE, SHORT_WALL_S, TIGHT

from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem

ENTRY = "def search_algorithm(src, dsts, G, num_partitions):\n"

FAILING = {
    "syntax": ("def search_algorithm(src, dsts, G, num_partitions)\n    return None\n", ErrorKind.SYNTAX),
    "import": ("import a_module_that_does_not_exist\n" + ENTRY + "    return None\n", ErrorKind.IMPORT),
    "missing_entry": ("def some_other_name(src, dsts, G, num_partitions):\n    return None\n",
                      ErrorKind.MISSING_ENTRY_POINT),
    "runtime": (ENTRY + "    return {}['no such key']\n", ErrorKind.RUNTIME),
    "infinite_loop": (ENTRY + "    while True:\n        pass\n", ErrorKind.TIMEOUT),
    "sleep_forever": ("import time\n" + ENTRY + "    time.sleep(10_000)\n", ErrorKind.TIMEOUT),
    # Each block is written, so it is resident (a zeroed bytearray may stay untouched pages).
    "memory_bomb": (ENTRY + "    hog = []\n    while True:\n        hog.append(b'\\x01' * (50 * 2**20))\n",
                    ErrorKind.MEMORY),
    "fork_bomb": ("import os\n" + ENTRY + "    while True:\n        os.fork()\n", ErrorKind.KILLED),
    "segfault": ("import ctypes\n" + ENTRY + "    ctypes.string_at(0)\n", ErrorKind.KILLED),
    "os_exit": ("import os\n" + ENTRY + "    os._exit(7)\n", ErrorKind.RUNTIME),
    "os_exit_zero": ("import os\n" + ENTRY + "    os._exit(0)\n", ErrorKind.RUNTIME),
    "sys_exit": ("import sys\n" + ENTRY + "    sys.exit(0)\n", ErrorKind.RUNTIME),
    "returns_number": (ENTRY + "    return 42\n", ErrorKind.INVALID_OUTPUT),
    "returns_empty_paths": (ENTRY + "    return {}\n", ErrorKind.INVALID_OUTPUT),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_failure_is_classified_and_caller_survives(case: str, tight_evaluator: CandidateEvaluator,
                                                   cloudcast: Problem):
    source, expected = FAILING[case]
    # Only candidates meant to time out get a short wall limit; the others have TIGHT's roomy one, so
    # the classification never depends on how fast the machine is. A candidate that outlived its
    # limit (sleep_forever asks for hours) would hang here and fail by pytest's timeout.
    short = SHORT_WALL_S if expected is ErrorKind.TIMEOUT else None
    result = tight_evaluator.evaluate(source, time_limit_s=short)
    assert not result.ok
    assert result.score is None
    assert result.error_kind == expected, result.error
    assert result.error
    again = tight_evaluator.evaluate(cloudcast.initial_program)
    assert again.score == INITIAL_SCORE


def test_runtime_error_carries_the_candidates_traceback(tight_evaluator: CandidateEvaluator):
    source = ENTRY + "    helper()\n\ndef helper():\n    raise ValueError('bad idea number 7')\n"
    result = tight_evaluator.evaluate(source)
    assert result.error_kind == ErrorKind.RUNTIME
    assert "ValueError: bad idea number 7" in result.error
    assert "in helper" in result.error
    assert "child.py" not in result.error  # the harness's own frames are not shown


def test_syntax_error_names_the_line(tight_evaluator: CandidateEvaluator):
    result = tight_evaluator.evaluate("x = 1\ny = (\n")
    assert result.error_kind == ErrorKind.SYNTAX
    assert "line 2" in result.error


def test_invalid_topology_names_the_rule(tight_evaluator: CandidateEvaluator):
    source = ENTRY + "    return {d: {str(p): [[src, src]] for p in range(num_partitions)} for d in dsts}\n"
    result = tight_evaluator.evaluate(source)
    assert result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "not in the graph" in result.error or "self-loops" in result.error


def test_huge_output_is_capped_and_scoring_proceeds(tight_evaluator: CandidateEvaluator, initial_source: str):
    flood = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)\n"
    result = tight_evaluator.evaluate(flood + initial_source)
    assert result.ok, result.error
    assert result.score == INITIAL_SCORE
    assert len(result.stdout) < 2 * TIGHT.output_bytes
    assert "bytes not kept" in result.stdout


def test_a_failing_scenario_fails_the_evaluation_but_others_are_reported(tight_evaluator: CandidateEvaluator,
                                                                          initial_source: str):
    source = initial_source + (
        "\n_honest = search_algorithm\n"
        "def search_algorithm(src, dsts, G, num_partitions):\n"
        "    if src.startswith('azure'):\n        raise RuntimeError('no azure today')\n"
        "    return _honest(src, dsts, G, num_partitions)\n"
    )
    result = tight_evaluator.evaluate(source)
    assert not result.ok and result.error_kind == ErrorKind.RUNTIME
    assert not result.scenarios["intra_azure"].ok
    assert result.scenarios["intra_aws"].ok
    assert result.scenarios["intra_aws"].metrics["cost"] == 165.024
    assert "intra_azure" in result.error
