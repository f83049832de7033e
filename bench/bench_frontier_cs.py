"""Benchmark: the Frontier-CS judge's overhead per test case against a plain g++ + run + checker loop.

What is measured
----------------
A problem laid out like Frontier-CS's (default: the test suite's `sum`, with ``--cases`` generated
test cases; or any folder given with ``--problem``, with ``--program``) is judged by Engram's
`CandidateEvaluator` on each backend given, ``--repeat`` times after one warm-up (the checker is
compiled once and cached, so the warm-up pays for it): once with the cases in parallel (the default,
up to the cores this process may use) and once one case at a time. In the same run, the plain loop
does what a bare script would: `g++` the program, then for each case run it with the input on stdin
and run the checker on its output -- no sandbox, no limits, sequential.

Printed: median wall times, the plain loop's time per case (wall minus compilation, over the cases)
and the judge's overhead per case: (judge one case at a time - plain loop) / cases, so it includes
compiling in the sandbox and starting the sandbox twice per case (program, checker) -- under Docker,
two execs per case in the slot's two long-lived containers instead. The backend name
``docker-per-run`` judges under Docker the old way, with a fresh container for every run, so that both
are measured in the same run. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engram.evaluation.evaluator import CandidateEvaluator  # noqa: E402
from engram.frontier_cs import judge as judge_module  # noqa: E402
from engram.frontier_cs import scorer  # noqa: E402
from engram.frontier_cs.config import parse_config  # noqa: E402
from engram.frontier_cs.family import load_folder  # noqa: E402
from engram.frontier_cs.slots import PerRunPlaces  # noqa: E402
from engram.sandbox import get_sandbox  # noqa: E402

SUM_PROBLEM = REPO / "tests" / "frontier_cs" / "problems" / "sum"
SUM = '#include <cstdio>\nint main() { long long a, b; scanf("%lld %lld", &a, &b); printf("%lld\\n", a + b); }\n'


def generated_problem(root: Path, cases: int) -> Path:
    """The suite's `sum` problem with `cases` random test cases."""
    folder = root / "sum"
    (folder / "testdata").mkdir(parents=True)
    for name in ("chk.cc", "statement.txt"):
        shutil.copyfile(SUM_PROBLEM / name, folder / name)
    (folder / "config.yaml").write_text(f"type: default\ntime: 1s\nmemory: 256m\nchecker: chk.cc\n"
                                        f"subtasks:\n  - score: 100\n    n_cases: {cases}\n")
    generator = random.Random(0)
    for k in range(1, cases + 1):
        a, b = generator.randint(1, 10**9), generator.randint(1, 10**9)
        (folder / "testdata" / f"{k}.in").write_text(f"{a} {b}\n")
        (folder / "testdata" / f"{k}.ans").write_text(f"{a + b}\n")
    return folder


def judge(problem_dir: Path, program: str, backend: str, repeat: int, *, sequential: bool) -> list[float]:
    if sequential:
        scorer.case_workers = lambda: 1  # type: ignore[assignment]
    problem = load_folder(problem_dir)
    walls = []
    per_run = backend == "docker-per-run"
    if per_run:  # every run in a fresh container, as before the slots
        judge_module.open_places = lambda sandbox, workdir, program, checker, *_: PerRunPlaces(  # type: ignore
            sandbox, workdir, program, checker)
    with CandidateEvaluator(problem, get_sandbox("docker" if per_run else backend, quiet=True)) as evaluator:
        first = evaluator.evaluate(program)  # warm-up: compiles and caches the checker
        if not first.ok:
            raise SystemExit(f"the program failed on {backend}: {first.error}")
        for _ in range(repeat):
            started = time.perf_counter()
            evaluator.evaluate(program)
            walls.append(time.perf_counter() - started)
    scorer.case_workers = _workers
    judge_module.open_places = _open_places
    return walls


def plain_loop(problem_dir: Path, program: str, repeat: int) -> tuple[list[float], float]:
    """g++ + for each case: run, check. Returns the wall times and the (median) compile time."""
    config = parse_config((problem_dir / "config.yaml").read_text(), "config.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-frontier-") as scratch:
        work = Path(scratch)
        checker_source = work / "chk.cc"
        shutil.copyfile(problem_dir / config.checker, checker_source)
        subprocess.run(["g++", str(checker_source), "-O2", "-pipe", "-std=gnu++17", "-o", str(work / "chk")],
                       check=True)
        (work / config.source_name).write_text(program)
        walls, compiles = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(["g++", config.source_name, "-O2", "-pipe", "-std=gnu++17", "-o", "a"], cwd=work,
                           check=True)
            compiles.append(time.perf_counter() - started)
            for case in config.cases:
                with (problem_dir / case.input_name).open("rb") as stdin, (work / "out.txt").open("wb") as out:
                    subprocess.run([str(work / "a")], stdin=stdin, stdout=out, check=True)
                subprocess.run([str(work / "chk"), str(problem_dir / case.input_name), str(work / "out.txt"),
                                str(problem_dir / case.answer_name)], capture_output=True, check=False)
            walls.append(time.perf_counter() - started)
    return walls, statistics.median(compiles)


_workers = scorer.case_workers
_open_places = judge_module.open_places


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", type=Path, help="a Frontier-CS-style problem folder (default: generated sum)")
    parser.add_argument("--program", type=Path, help="the C++ program to judge (default: the sum solution)")
    parser.add_argument("--cases", type=int, default=20, help="test cases of the generated problem")
    parser.add_argument("--backends", default="process,bwrap",
                        help="comma-separated sandbox backends (docker-per-run: docker with a container per run)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("ENGRAM_CACHE_DIR", tempfile.mkdtemp(prefix="bench-frontier-cache-"))
    with tempfile.TemporaryDirectory(prefix="bench-frontier-problem-") as scratch:
        problem_dir = args.problem.resolve() if args.problem else generated_problem(Path(scratch), args.cases)
        program = args.program.read_text() if args.program else SUM
        cases = len(parse_config((problem_dir / "config.yaml").read_text(), "config.yaml").cases)
        plain, compile_s = plain_loop(problem_dir, program, args.repeat)
        plain_case = (statistics.median(plain) - compile_s) / cases
        print(f"{cases} cases, {os.cpu_count()} cores, median of {args.repeat}")
        print(f"plain g++ + run + checker loop: {statistics.median(plain):.3f} s "
              f"(compile {compile_s:.3f} s, {plain_case * 1000:.1f} ms per case)")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            parallel = statistics.median(judge(problem_dir, program, backend, args.repeat, sequential=False))
            sequential = statistics.median(judge(problem_dir, program, backend, args.repeat, sequential=True))
            overhead = (sequential - statistics.median(plain)) / cases
            print(f"{backend:14s} judge: {parallel:.3f} s in parallel, {sequential:.3f} s one case at a time; "
                  f"overhead per case vs the plain loop (one case at a time, compilation included): "
                  f"{overhead * 1000:.1f} ms")


if __name__ == "__main__":
    main()
