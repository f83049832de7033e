"""The Frontier-CS family: the judge on the suite's own problems (tests/frontier_cs/problems, laid out like
upstream's, with our own checker and interactor), and loading, listing and test-case handling of the
real problems in the data copy."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.errors import DataError, ProblemNotFoundError, SandboxError
from engram.evaluation.evaluator import CandidateEvaluator
from engram.frontier_cs.config import parse_config
from engram.frontier_cs.family import FrontierProblem, list_family, load, load_folder
from engram.frontier_cs.protocol import read_verdict
from engram.problems.problem import load_problem
from engram.sandbox import get_sandbox
from tests.conftest import require_backend, unavailable

PROBLEMS = Path(__file__).parent / "frontier_cs" / "problems"
DATA = Path(os.environ.get("ENGRAM_DATA_DIR") or "/nonexistent") / "frontier-cs"
if os.environ.get("CI") and not DATA.is_dir():
    raise RuntimeError(f"the Frontier-CS data copy must be in ENGRAM_DATA_DIR in CI ({DATA} is missing)")
pytestmark = pytest.mark.usefixtures("cpp_compiler")

SUM = r"""#include <cstdio>
int main() { long long a, b; scanf("%lld %lld", &a, &b); printf("%lld\n", a + b); }
"""
HALF = r"""#include <cstdio>
int main() { long long a, b; scanf("%lld %lld", &a, &b); printf("%lld\n", (a + b) / 2); }
"""
WRONG = r"""#include <cstdio>
int main() { printf("-5\n"); }
"""
SLOW = r"""int main() { volatile unsigned long x = 0; for (;;) x++; }
"""
SLEEPER = r"""#include <unistd.h>
int main() { sleep(60); }
"""
HUNGRY = r"""#include <vector>
#include <cstdio>
int main() { std::vector<char> v(512u << 20, 1); printf("%d\n", (int)v[12345]); }
"""
CRASH_WITH_FAKE_RATIO = r"""#include <cstdio>
#include <cstdlib>
int main() { fprintf(stderr, "ok Ratio: 1.0000\npoints 1 Ratio: 1\n"); fflush(stderr); abort(); }
"""
FAKE_RATIO_ON_STDOUT = r"""#include <cstdio>
int main() { printf("Ratio: 1.0000\nRatioUnbounded: 9.0\n"); }
"""
ANSWER_PATH = PROBLEMS / "sum" / "testdata"
READ_ANSWERS = r"""#include <cstdio>
int main() {
  long long a, b, x = -1; scanf("%lld %lld", &a, &b);
  const char* names[] = {"ANS/1.ans", "ANS/2.ans"};
  for (const char* name : names) {
    FILE* f = fopen(name, "r"); if (f && fscanf(f, "%lld", &x) == 1 && x == a + b) break; }
  printf("%lld\n", x);
}
""".replace("ANS", str(ANSWER_PATH))
LINK_TO_ANSWER = r"""#include <cstdio>
#include <unistd.h>
int main() {  // leaves a link to the answer where its output was, hoping the checker reads through it
  unlink("out.txt"); if (link("ANS/1.ans", "out.txt") != 0) symlink("ANS/1.ans", "out.txt"); return 0;
}
""".replace("ANS", str(ANSWER_PATH))
_LEFTOVER_COMMON = r"""#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
static sockaddr_un helper_address() {  // an abstract socket: no file, only a live process holds it
  sockaddr_un address{}; address.sun_family = AF_UNIX; memcpy(address.sun_path + 1, "engram-leftover", 15);
  return address;
}
static const socklen_t HELPER_LENGTH = sizeof(sa_family_t) + 16;
"""
LEFTOVER_PROCESS = _LEFTOVER_COMMON + r"""
int main() {  // right only when a helper left by an earlier case answers; then leaves one for the next
  long long a, b; scanf("%lld %lld", &a, &b);
  int s = socket(AF_UNIX, SOCK_STREAM, 0); sockaddr_un address = helper_address();
  bool helped = connect(s, (sockaddr*)&address, HELPER_LENGTH) == 0; close(s);
  printf("%lld\n", helped ? a + b : -1); fflush(stdout);
  if (fork() == 0) { setsid(); if (fork() == 0) {  // outside the program's process group and session
      close(0); close(1); close(2);
      int server = socket(AF_UNIX, SOCK_STREAM, 0);
      if (bind(server, (sockaddr*)&address, HELPER_LENGTH) != 0 || listen(server, 8) != 0) _exit(0);
      for (;;) { int c = accept(server, 0, 0); if (c >= 0) close(c); } }
    _exit(0); }
  usleep(200000);  // the helper is listening before this case ends
  return 0;
}
"""
LEFTOVER_AND_KILL_THE_LAUNCHER = LEFTOVER_PROCESS.replace(
    "  return 0;\n}", "  if (!helped) kill(getppid(), SIGKILL);  // no launcher left to sweep up after it\n"
                     "  return 0;\n}").replace(
    "#include <cstdio>", "#include <cstdio>\n#include <signal.h>")
LEFTOVER_FILES = r"""#include <cstdio>
#include <unistd.h>
int main() {  // right only when an earlier case left a file it can find; leaves them for the next
  long long a, b; scanf("%lld %lld", &a, &b);
  const char* places[] = {"/tmp/engram-leftover", "../engram-leftover", "/dev/shm/engram-leftover",
                          "/dev/mqueue/engram-leftover"};
  bool helped = false;
  for (const char* place : places) helped = helped || access(place, F_OK) == 0;
  printf("%lld\n", helped ? a + b : -1);
  for (const char* place : places) { FILE* f = fopen(place, "w"); if (f) fclose(f); }
  return 0;
}
"""
NO_COMPILE = "int main( {"
BINARY_SEARCH = r"""#include <cstdio>
int main() {
  int n; scanf("%d", &n); int lo = 1, hi = n;
  while (lo < hi) { int m = (lo + hi) / 2; printf("? %d\n", m); fflush(stdout); int r; scanf("%d", &r);
    if (r == 0) { lo = hi = m; break; } if (r < 0) lo = m + 1; else hi = m - 1; }
  printf("! %d\n", lo); fflush(stdout);
}
"""
LINEAR_SEARCH = r"""#include <cstdio>
int main() {
  int n; scanf("%d", &n);
  for (int i = 1; i <= n; i++) { printf("? %d\n", i); fflush(stdout); int r; scanf("%d", &r);
    if (r == 0) { printf("! %d\n", i); fflush(stdout); return 0; } }
}
"""
INTERACTIVE_CRASH = r"""#include <cstdio>
int main() { int n; scanf("%d", &n); fprintf(stderr, "points 1 Ratio: 1.0000\n"); return 3; }
"""


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "frontier-cache"))


@pytest.fixture(scope="module", params=["process", "bwrap", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    if request.param == "docker":
        from engram.frontier_cs.toolchain import compiler_identity

        try:
            compiler_identity(get_sandbox("docker", quiet=True))
        except SandboxError as exc:
            unavailable(f"this engine's sandbox image predates g++ (`engram sandbox build` adds it): {exc}")
    return request.param


@pytest.fixture(scope="module")
def sum_evaluator(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CandidateEvaluator]:
    problem = load_problem(PROBLEMS / "sum")
    with CandidateEvaluator(problem, get_sandbox(backend, quiet=True), time_limit_s=120) as evaluator:
        yield evaluator


@pytest.fixture(scope="module")
def guess_evaluator(backend: str) -> Iterator[CandidateEvaluator]:
    problem = load_problem(PROBLEMS / "guess")
    with CandidateEvaluator(problem, get_sandbox(backend, quiet=True), time_limit_s=120) as evaluator:
        yield evaluator


def _verdicts(evaluation: object) -> list[str]:
    return [s.metrics["verdict"] for s in evaluation.scenarios.values()]  # type: ignore[attr-defined]


# -- the judge on our own problems ------------------------------------------------------------------------


def test_correct_program_scores_100_with_per_case_results(sum_evaluator: CandidateEvaluator,
                                                          tmp_path: Path) -> None:
    result = sum_evaluator.evaluate(SUM, artifacts_dir=tmp_path)
    assert result.ok and result.score == 100.0
    assert _verdicts(result) == ["AC", "AC"]
    case = result.scenarios["1"]
    assert case.metrics["ratio"] == 1.0 and "Ratio: 1.0000" in str(case.metrics["message"])
    assert isinstance(case.metrics["time_s"], float)
    assert 0 < case.metrics["memory_mb"] < 8  # the program's own peak, not the launcher's or an interpreter's
    cases = json.loads((tmp_path / "cases.json").read_text())
    assert [c["verdict"] for c in cases] == ["AC", "AC"] and "message" in cases[0]


def test_partial_credit_is_the_mean_of_the_checkers_ratios(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(HALF)
    assert result.ok
    assert _verdicts(result) == ["PC", "PC"]
    ratios = [s.metrics["ratio"] for s in result.scenarios.values()]
    assert ratios == [pytest.approx(3 / 7, abs=1e-4), pytest.approx(0.5)]
    assert result.score == pytest.approx(100 * sum(ratios) / 2)
    assert result.metrics["score_unbounded"] == pytest.approx(100 * sum(2 * r for r in ratios) / 2, abs=1e-2)


def test_wrong_answer_scores_zero(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(WRONG)
    assert result.ok and result.score == 0.0
    assert _verdicts(result) == ["WA", "WA"]
    assert result.scenarios["1"].error_kind == "invalid_output"


def test_too_slow_program_gets_time_limit_exceeded(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(SLOW)
    assert result.ok and result.score == 0.0
    assert _verdicts(result) == ["TLE", "TLE"]


def test_a_program_stopped_at_the_wall_clock_with_cpu_to_spare_is_tried_once_more(
        sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(SLEEPER)
    assert result.score == 0.0
    assert _verdicts(result) == ["TLE", "TLE"]
    assert "second try" in str(result.scenarios["1"].error)


def test_too_hungry_program_gets_memory_limit_exceeded(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(HUNGRY)
    assert result.score == 0.0
    assert _verdicts(result) == ["MLE", "MLE"]


def test_a_crash_scores_zero_whatever_it_printed_to_stderr(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(CRASH_WITH_FAKE_RATIO)
    assert result.score == 0.0
    assert _verdicts(result) == ["RE", "RE"]
    assert "SIGABRT" in str(result.scenarios["1"].error)
    assert "Ratio: 1" in result.stderr  # shown to the agent, never read as a verdict


def test_fake_ratio_on_stdout_is_just_a_wrong_answer(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(FAKE_RATIO_ON_STDOUT)
    assert result.score == 0.0 and result.metrics["score_unbounded"] == 0.0
    assert _verdicts(result) == ["WA", "WA"]


def test_only_the_process_backend_lets_a_program_read_the_answer_files(sum_evaluator: CandidateEvaluator,
                                                                        backend: str) -> None:
    result = sum_evaluator.evaluate(READ_ANSWERS)
    if backend == "process":  # as docs/problems/frontier-cs.md says: process hides no files
        assert _verdicts(result) == ["AC", "AC"]
        return
    assert result.score == 0.0
    assert _verdicts(result) == ["WA", "WA"]


def test_a_link_left_in_place_of_the_output_is_not_followed(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(LINK_TO_ANSWER)
    assert result.score == 0.0
    assert _verdicts(result) == ["WA", "WA"]
    assert "not a regular file" in str(result.scenarios["1"].error)


@pytest.fixture
def one_case_at_a_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Cases judged one after another (so a case can find what the one before left), and the docker
    backend's long-lived containers, to count how often each was started."""
    from engram.frontier_cs import scorer
    from engram.sandbox.docker import ExecContainer

    monkeypatch.setattr(scorer, "case_workers", lambda: 1)
    containers: list[object] = []
    original = ExecContainer.__init__

    def remember(self: ExecContainer, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        containers.append(self)

    monkeypatch.setattr(ExecContainer, "__init__", remember)
    yield containers


@pytest.mark.parametrize(("source", "program_containers", "checker_containers"), [
    (LEFTOVER_PROCESS, 1, 1),  # the launcher kills the helper: the container is clean for case 2
    (LEFTOVER_FILES, 2, 1),  # a file in /tmp: the container is replaced
    (LEFTOVER_AND_KILL_THE_LAUNCHER, 2, 0),  # no launcher's word that it is clean: replaced (and no checking)
], ids=["process", "files", "kills-launcher"])
@pytest.mark.parametrize("backend", ["bwrap", "docker"], indirect=True)  # process isolates nothing (see the docs)
def test_nothing_a_case_leaves_behind_reaches_the_next_case(sum_evaluator: CandidateEvaluator, backend: str,
                                                            source: str, program_containers: int,
                                                            checker_containers: int,
                                                            one_case_at_a_time: list[object]) -> None:
    result = sum_evaluator.evaluate(source)
    first, second = _verdicts(result)
    assert first == second != "AC", result.scenarios  # a helped case 2 would be AC
    if source is not LEFTOVER_AND_KILL_THE_LAUNCHER:
        assert first == "WA"
    if backend == "docker":  # one container for the program's runs, one for the checker's
        assert source is not LEFTOVER_AND_KILL_THE_LAUNCHER or first == "RE"
        program_container, checker_container = one_case_at_a_time
        assert program_container.starts == program_containers  # type: ignore[attr-defined]
        assert checker_container.starts == checker_containers  # type: ignore[attr-defined]


def test_docker_judges_every_case_in_the_same_two_containers(sum_evaluator: CandidateEvaluator, backend: str,
                                                             one_case_at_a_time: list[object]) -> None:
    result = sum_evaluator.evaluate(SUM)
    assert _verdicts(result) == ["AC", "AC"]
    # The host backends start a sandbox per run, which costs them little; only Docker keeps containers.
    expected = [1, 1] if backend == "docker" else []
    assert [c.starts for c in one_case_at_a_time] == expected  # type: ignore[attr-defined]


def test_compile_error_fails_the_evaluation(sum_evaluator: CandidateEvaluator) -> None:
    result = sum_evaluator.evaluate(NO_COMPILE)
    assert not result.ok and result.score is None
    assert result.error_kind == "syntax" and "compilation failed" in str(result.error)
    assert "main.cpp" in result.stderr


def test_interactive_problem_scores_through_the_interactor(guess_evaluator: CandidateEvaluator) -> None:
    result = guess_evaluator.evaluate(BINARY_SEARCH)
    assert result.ok and result.score == 100.0, result.scenarios
    linear = guess_evaluator.evaluate(LINEAR_SEARCH)
    assert _verdicts(linear) == ["PC", "PC"]
    assert linear.score == pytest.approx(100 * (7 / 37 + 7 / 90) / 2, abs=0.02)


def test_interactive_crash_scores_zero_despite_a_fake_ratio(guess_evaluator: CandidateEvaluator) -> None:
    result = guess_evaluator.evaluate(INTERACTIVE_CRASH)
    assert result.score == 0.0
    assert _verdicts(result) == ["RE", "RE"]


def test_interactive_silent_program_is_rejected_by_the_interactor(guess_evaluator: CandidateEvaluator) -> None:
    result = guess_evaluator.evaluate("int main() { return 0; }")
    assert result.score == 0.0
    assert _verdicts(result) == ["WA", "WA"]
    # Whichever comes first: the interactor reads the end of the program's output, or its next write
    # finds the program gone (SIGPIPE); both are the program's wrong answer, not the judge's failure.
    assert any(reason in str(result.scenarios["1"].error) for reason in ("unexpected eof", "stopped reading"))


# -- the checker protocol and config ------------------------------------------------------------------------


@pytest.mark.parametrize(("ok", "message", "ratio", "unbounded"), [
    (True, "ok Ratio: 1.0000", 1.0, 1.0),
    (False, "points 0.5 Value: 3. Ratio: 0.5000, RatioUnbounded: 1.2500", 0.5, 1.25),
    (True, "ok accepted", 1.0, 1.0),
    (False, "wrong answer", 0.0, 0.0),
    (False, "points 0 Ratio: -0.5000", 0.0, 0.0),  # signs are not matched: the exit code decides
    (False, "RatioUnbounded=0.7", 0.0, 0.0),  # problem 64's form: no `Ratio: ` at all
    (False, "Ratio: 0.25.7 more", 0.25, 0.25),  # parseFloat stops at the second dot
])
def test_ratios_are_read_as_upstream_reads_them(ok: bool, message: str, ratio: float, unbounded: float) -> None:
    verdict = read_verdict(ok, message)
    assert (verdict.ratio, verdict.unbounded) == (ratio, unbounded)


def test_config_units_and_byte_order_mark() -> None:
    config = parse_config("\ufefftype: interactive\ntime: 250ms\nmemory: 1024m\nsubtasks:\n- {score: 100, n_cases: 2}\n"
                          "- {score: 0, n_cases: 1, time: 2s}\n", "config.yaml")
    assert config.interactive and config.checker == "interactor.cc"
    assert [(c.number, c.time_s, c.memory_bytes) for c in config.cases] == [
        (1, 0.25, 1 << 30), (2, 0.25, 1 << 30), (3, 2.0, 1 << 30)]
    assert parse_config("subtasks: [{n_cases: 1}]\nfilename: std.cc\n", "c").source_name == "std.cc"


# -- the real problems -------------------------------------------------------------------------------------

@pytest.fixture
def frontier_data() -> Path:
    if not DATA.is_dir():
        unavailable(f"the Frontier-CS data copy is not in ENGRAM_DATA_DIR ({DATA} is missing)")
    return DATA


real_data = pytest.mark.usefixtures("frontier_data")


@real_data
def test_listing_names_all_156_problems_with_type_and_title() -> None:
    listed = list_family()
    assert len(listed) == 156
    by_name = {item.name: item for item in listed}
    assert by_name["frontier_cs/1"].kind == "default" and by_name["frontier_cs/1"].title.startswith("Problem F")
    assert by_name["frontier_cs/2"].kind == "interactive" and by_name["frontier_cs/2"].title == "Permutation"
    assert sum(1 for item in listed if item.kind == "interactive") == 68
    assert "1 of 3 cases judgeable" in by_name["frontier_cs/45"].note


@real_data
def test_real_problem_loads_with_cases_as_scenarios() -> None:
    problem = load_problem("frontier_cs/0")
    assert isinstance(problem, FrontierProblem) and problem.name == "frontier_cs/0"
    assert len(problem.select_scenarios()) == 70
    assert problem.judge_config.time_s == 2.0 and problem.judge_config.memory_bytes == 256 << 20
    assert problem.task_prompt.startswith(first_statement_line(0))
    assert "100 times the mean ratio" in problem.task_prompt
    assert problem.initial_program.suffix == ".cpp"
    filename = load("frontier_cs/6")
    assert filename.judge_config.source_name == "std.cc"
    assert load("frontier_cs/6/unbounded").fingerprint() != filename.fingerprint()


def first_statement_line(problem_id: int) -> str:
    text = (DATA / "algorithmic" / "problems" / str(problem_id) / "statement.txt").read_text(encoding="utf-8")
    return next(line.strip() for line in text.splitlines() if line.strip())


@real_data
def test_missing_inputs_say_which_cases_cannot_be_judged() -> None:
    partial = load("frontier_cs/45")
    assert partial.missing_cases() == [1, 2]
    assert [s.name for s in partial.select_scenarios()] == ["3"]
    with pytest.raises(DataError, match=r"case\(s\) 1, 2 cannot be judged"):
        partial.select_scenarios(["1"])
    with pytest.raises(DataError, match="nothing to judge"):
        load("frontier_cs/4").select_scenarios()


@real_data
def test_missing_checker_is_one_line_saying_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = DATA / "algorithmic" / "problems" / "1" / "chk.cc"
    if checker.is_file():
        unavailable(f"this data directory holds the upstream checkers ({checker}): none is missing to report")
    with pytest.raises(DataError) as caught:
        load("frontier_cs/1").judge_files()
    message = str(caught.value)
    assert "\n" not in message and "chk.cc is missing" in message and "engram data frontier_cs/1" in message
    assert "raw.githubusercontent.com/FrontierCS/Frontier-CS/4d508c19" in message


def test_unknown_problem_ids_are_refused() -> None:
    with pytest.raises(ProblemNotFoundError, match="no problem 999"):
        load("frontier_cs/999")


def test_folder_problem_fingerprint_covers_its_checker(tmp_path: Path) -> None:
    copy = tmp_path / "sum"
    shutil.copytree(PROBLEMS / "sum", copy)
    before = load_folder(copy).fingerprint()
    (copy / "chk.cc").write_text((copy / "chk.cc").read_text() + "\n// changed\n")
    assert load_folder(copy).fingerprint() != before


def test_unbounded_variant_scores_the_unbounded_ratios() -> None:
    problem = load_folder(PROBLEMS / "sum", unbounded=True)
    assert problem.name.endswith("/unbounded")
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), time_limit_s=120) as evaluator:
        result = evaluator.evaluate(HALF)
    assert result.score == pytest.approx(result.metrics["score_unbounded"])
    assert result.score > 100 * 0.9 > result.metrics["score_bounded"]  # the checker's RatioUnbounded is 2 x ratio
