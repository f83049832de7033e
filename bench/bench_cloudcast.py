"""Benchmark: how long one cloudcast evaluation takes end to end, and where the time goes.

What is measured
----------------
For every selected program (the problem's initial program and any baselines in
``evaluators/cloudcast/baselines/``) and every selected sandbox backend, one long-lived
``CandidateEvaluator`` evaluates the program once as a warm-up and then ``--repeat`` more times.
Each of those evaluations is timed with a wall clock around ``evaluate()`` ("total": everything
a caller waits for, including the integrity check and the working directory's creation and
removal) and split using the evaluation's own ``timings``:

* start    -- from spawning the sandbox until the child Python process reports it is running
              (sandbox set-up plus interpreter start-up);
* candidate -- the candidate program's own time: importing it and its ``search_algorithm`` calls,
              as reported by the child;
* scoring  -- scoring the answers in the trusted process (graph checks and cost simulation);
* rest     -- everything else ("orchestration"): writing the request, loading the adapter in the
              child, serialising answers, process exit, reading events, cleaning up.

Medians are reported per column, so the parts need not add up exactly to the median total.

Why there is a baseline in the same run
---------------------------------------
Absolute times depend on the machine and its load, so the script always measures a baseline in
the same run and reports the ratio baseline / ours:

* with ``--reference DIR`` (a checkout of mit-nms/Engram ``SystemBench/ADRS/cloudcast``) the
  baseline is that reference evaluator: ``evaluate(program)`` is called in a fresh Python
  subprocess per evaluation (cwd and ``sys.path`` set to ``DIR``). The call itself is timed
  (the reference's module imports, about a second, are excluded, so the comparison favours the
  reference); the subprocess's whole wall time is shown too. Its ``combined_score`` is compared
  with ours for exact equality. The subprocess gets ``PYTHONHASHSEED=0``, as Engram's sandbox
  does, because programs that iterate over sets (e.g. networkx's steiner_tree) score differently
  per seed. The reference is only *invoked* from the user-supplied path; nothing of it is copied.
  The ``simulator_output/<hash>`` directories it writes into ``DIR`` during this run are removed.
* without ``--reference`` the baseline is a "cold" evaluation in this process: a new problem
  object and a new ``CandidateEvaluator`` per evaluation (scorer import, data loading and session
  set-up included; only Python module imports stay cached), i.e. what reusing one evaluator saves.

The script exits 0 unless something crashes; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engram.errors import IntegrityError, SandboxError
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import Sandbox, get_sandbox

PROBLEM = "cloudcast"
DEFAULT_EXCLUDE = "expert_milp"
TARGET_SPEEDUP = 3.0

# Run in a fresh interpreter for each reference evaluation: argv = [reference_dir, program, result_json].
_REFERENCE_RUNNER = """
import json, os, sys, time
reference, program, result_path = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(reference)
sys.path.insert(0, reference)
t0 = time.perf_counter()
import evaluator
t1 = time.perf_counter()
result = evaluator.evaluate(program)
t2 = time.perf_counter()
score = result.get("combined_score") if isinstance(result, dict) else None
with open(result_path, "w", encoding="utf-8") as handle:
    json.dump({"import_s": t1 - t0, "evaluate_s": t2 - t1,
               "score": float(score) if isinstance(score, (int, float)) else None,
               "error": result.get("error") if isinstance(result, dict) else repr(result)}, handle)
"""


@dataclass
class Sample:
    """One timed evaluation."""

    total_s: float
    start_s: float | None = None
    candidate_s: float | None = None
    scoring_s: float | None = None
    process_s: float | None = None  # reference only: the whole subprocess, imports included
    score: float | None = None
    error: str | None = None

    @property
    def rest_s(self) -> float | None:
        if self.start_s is None or self.candidate_s is None or self.scoring_s is None:
            return None
        return self.total_s - self.start_s - self.candidate_s - self.scoring_s


@dataclass
class Row:
    """The repeated measurements of one program under one runner."""

    program: str
    runner: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    @property
    def scores(self) -> set[float | None]:
        return {s.score for s in self.samples}

    @property
    def score(self) -> float | None:
        return self.samples[-1].score if self.samples else None

    @property
    def error(self) -> str | None:
        return next((s.error for s in self.samples if s.error), None)


# -- measuring ------------------------------------------------------------------------------------


Runner = Callable[[Path], Sample]


def measure(program: Path, runners: dict[str, Runner], repeat: int) -> dict[str, list[Sample]]:
    """One untimed warm-up per runner, then `repeat` rounds of one timed sample per runner.

    Interleaving the runners round by round keeps slow drifts in machine load from favouring one.
    """
    for run in runners.values():
        run(program)
    samples: dict[str, list[Sample]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, run in runners.items():
            samples[name].append(run(program))
    return samples


def engram_sample(evaluator: CandidateEvaluator, program: Path) -> Sample:
    started = time.perf_counter()
    evaluation = evaluator.evaluate(program)
    total = time.perf_counter() - started
    t = evaluation.timings
    return Sample(total_s=total, start_s=t.sandbox_start_s, candidate_s=t.candidate_s, scoring_s=t.scoring_s,
                  score=evaluation.score if evaluation.ok else None,
                  error=None if evaluation.ok else f"{evaluation.error_kind}: {evaluation.error}")


def cold_sample(sandbox: Sandbox, program: Path) -> Sample:
    started = time.perf_counter()
    problem = load_problem(PROBLEM)
    with CandidateEvaluator(problem, sandbox) as evaluator:
        evaluation = evaluator.evaluate(program)
    total = time.perf_counter() - started
    return Sample(total_s=total, score=evaluation.score if evaluation.ok else None,
                  error=None if evaluation.ok else f"{evaluation.error_kind}: {evaluation.error}")


def reference_sample(reference: Path, python: str, hash_seed: str, program: Path) -> Sample:
    output_root = reference / "simulator_output"
    before = set(os.listdir(output_root)) if output_root.is_dir() else set()
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as scratch:
        result_path = Path(scratch) / "result.json"
        started = time.perf_counter()
        completed = subprocess.run(
            [python, "-c", _REFERENCE_RUNNER, str(reference), str(program.resolve()), str(result_path)],
            cwd=reference, capture_output=True, text=True, check=False, env=reference_environment(hash_seed),
        )
        process_s = time.perf_counter() - started
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
    if output_root.is_dir():  # remove only what this evaluation wrote
        for name in set(os.listdir(output_root)) - before:
            shutil.rmtree(output_root / name, ignore_errors=True)
    if result is None:
        tail = (completed.stderr or completed.stdout)[-1500:]
        raise RuntimeError(f"the reference evaluator crashed (exit {completed.returncode}):\n{tail}")
    error = result.get("error")
    # A failed reference evaluation scores 0.0 with an "error"; ours scores None: compare failures as None.
    return Sample(total_s=float(result["evaluate_s"]), process_s=process_s,
                  score=None if error else result.get("score"), error=str(error) if error else None)


def reference_environment(hash_seed: str) -> dict[str, str]:
    """This environment, with the hash seed our sandbox uses (unless told "random").

    Programs whose choices depend on set iteration order (e.g. networkx's steiner_tree) score
    differently under different seeds; Engram's sandbox fixes PYTHONHASHSEED=0, so the reference
    is run with the same seed to compare like with like.
    """
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    if hash_seed != "random":
        env["PYTHONHASHSEED"] = hash_seed
    return env


# -- reporting ------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}" if value >= 0.0995 else f"{value * 1000:.1f}"


def score_text(row: Row) -> str:
    if len(row.scores) > 1:
        return f"varies! ({len(row.scores)} different)"
    return "failed" if row.score is None else repr(row.score)


def our_scores(rows: list[Row], program: str) -> set[float | None]:
    ours = [r for r in rows if r.program == program and r.runner.startswith("engram/")]
    return {score for r in ours for score in r.scores}


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def print_table(rows: list[Row], baseline_of: dict[tuple[str, str], Row], compare_scores: bool) -> None:
    header = ["program", "runner", "total ms", "start", "candidate", "scoring", "rest", "process",
              "score", "speed-up"]
    lines = [header]
    for row in rows:
        baseline = baseline_of.get((row.program, row.runner))
        ratio = ""
        if baseline is not None and row.median("total_s") and baseline.median("total_s"):
            ratio = f"{baseline.median('total_s') / row.median('total_s'):.1f}x"
        score = score_text(row)
        if compare_scores and row.runner == "reference":
            ours = our_scores(rows, row.program)
            score += " (identical)" if ours == row.scores else f" (DIFFERS: ours {sorted(map(str, ours))})"
        lines.append([row.program, row.runner, ms(row.median("total_s")), ms(row.median("start_s")),
                      ms(row.median("candidate_s")), ms(row.median("scoring_s")), ms(row.median("rest_s")),
                      ms(row.median("process_s")), score, ratio])
    left = {"program", "runner", "score"}
    keep = [i for i, name in enumerate(header) if any(line[i] not in ("", "-") for line in lines[1:])]
    lines = [[line[i] for i in keep] for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(keep))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if lines[0][j] in left else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for row in rows:
        if row.error:
            print(f"note: {row.program} under {row.runner} failed: {' '.join(row.error.split())[:300]}")


def print_summary(rows: list[Row], baseline_of: dict[tuple[str, str], Row], label: str, target: bool) -> None:
    for runner in dict.fromkeys(r.runner for r in rows if r.runner.startswith("engram/")):
        ratios = {}
        for row in rows:
            baseline = baseline_of.get((row.program, row.runner))
            ours, theirs = row.median("total_s"), baseline.median("total_s") if baseline else None
            if row.runner == runner and ours and theirs:
                ratios[row.program] = theirs / ours
        if not ratios:
            continue
        if "initial" in ratios:
            value, where = ratios["initial"], "initial program"
        else:
            value = geometric_mean(list(ratios.values()))
            where = f"geometric mean over {len(ratios)} programs"
        suffix = f" (target >= {TARGET_SPEEDUP:g}x)" if target else ""
        print(f"speed-up vs {label}: {value:.1f}x{suffix}  [{runner.removeprefix('engram/')}, {where}]")


# -- main -----------------------------------------------------------------------------------------


def select_programs(problem: Problem, wanted: str | None, exclude: str | None) -> dict[str, Path]:
    """Programs by name: 'initial' plus the baselines that exist now, minus the excluded ones.

    The default exclusion (the slow MILP baseline) applies only when no --programs were named.
    """
    available = {"initial": problem.initial_program, **problem.baselines()}
    if exclude is None:
        exclude = "" if wanted else DEFAULT_EXCLUDE
    excluded = {name.strip() for name in exclude.split(",") if name.strip()}
    if wanted:
        names = [name.strip() for name in wanted.split(",") if name.strip()]
        for name in list(names):
            if name.endswith(".py") and Path(name).is_file():  # any program file, named by its stem
                available.setdefault(Path(name).stem, Path(name).resolve())
                names[names.index(name)] = Path(name).stem
            elif name not in available:
                print(f"note: no program named {name!r}; available: {', '.join(available)}")
    else:
        names = list(available)
    skipped = [n for n in names if n in available and n in excluded]
    if skipped:
        print(f"note: excluded {', '.join(skipped)} (use --exclude '' or --programs to include)")
    return {n: available[n] for n in names if n in available and n not in excluded}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed evaluations per program and runner (default 5)")
    parser.add_argument("--sandbox", choices=["process", "bwrap", "both"], default="both")
    parser.add_argument("--programs", default=None,
                        help="comma-separated: 'initial', baseline names and/or paths to .py program files "
                             "(default: the initial program and all baselines that exist)")
    parser.add_argument("--exclude", default=None,
                        help=f"comma-separated programs to skip (default {DEFAULT_EXCLUDE!r}, which takes tens "
                             "of seconds, unless --programs is given; pass '' to run everything)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of mit-nms/Engram SystemBench/ADRS/cloudcast to compare against")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="interpreter with the reference's dependencies (default: this one)")
    parser.add_argument("--reference-hash-seed", default="0",
                        help="PYTHONHASHSEED for the reference (default 0, as in Engram's sandbox; 'random' "
                             "leaves it unset, which makes set-order-dependent programs' scores vary)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.reference is not None:
        args.reference = args.reference.resolve()
        if not (args.reference / "evaluator.py").is_file():
            parser.error(f"--reference {args.reference}: no evaluator.py there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = load_problem(PROBLEM)
    problem.ensure_data()
    programs = select_programs(problem, args.programs, args.exclude)
    if not programs:
        print("no programs selected")
        return 0
    sandboxes: dict[str, Sandbox] = {}
    for name in ["process", "bwrap"] if args.sandbox == "both" else [args.sandbox]:
        try:
            sandboxes[name] = get_sandbox(name, quiet=True)
        except SandboxError as exc:
            print(f"note: skipping sandbox {name}: {exc}")
    print(f"{PROBLEM}: {len(programs)} program(s) [{', '.join(programs)}], "
          f"{len(problem.select_scenarios())} scenarios, {args.repeat} timed evaluation(s) after 1 warm-up, "
          f"medians; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    rows: list[Row] = []
    baseline_of: dict[tuple[str, str], Row] = {}
    with contextlib.ExitStack() as stack:
        runners: dict[str, Runner] = {}
        for sandbox_name, sandbox in sandboxes.items():
            setup_started = time.perf_counter()
            evaluator = stack.enter_context(CandidateEvaluator(problem, sandbox))
            print(f"evaluator set-up ({sandbox_name}): {ms(time.perf_counter() - setup_started)} ms, once")
            runners[f"engram/{sandbox_name}"] = functools.partial(engram_sample, evaluator)
            if args.reference is None:
                runners[f"cold/{sandbox_name}"] = functools.partial(cold_sample, sandbox)
        if args.reference is not None:
            runners["reference"] = functools.partial(reference_sample, args.reference, args.reference_python,
                                                     args.reference_hash_seed)
        for program, path in programs.items():
            by_runner = {name: Row(program, name, samples)
                         for name, samples in measure(path, runners, args.repeat).items()}
            rows.extend(by_runner.values())
            for sandbox_name in sandboxes:
                baseline = by_runner["reference" if args.reference is not None else f"cold/{sandbox_name}"]
                baseline_of[(program, f"engram/{sandbox_name}")] = baseline

    print()
    print_table(rows, baseline_of, compare_scores=args.reference is not None)
    print()
    if args.reference is not None:
        print_summary(rows, baseline_of, "reference", target=True)
        pairs = [(r.scores, our_scores(rows, r.program)) for r in rows if r.runner == "reference"]
        same = all(ref == ours for ref, ours in pairs)
        print(f"scores identical to the reference: {'yes' if same else 'NO'} ({len(pairs)} program(s))")
    else:
        print_summary(rows, baseline_of, "cold evaluator", target=False)
        print("(no --reference given: the ratio is cold / warm; pass --reference DIR to compare with the "
              "reference evaluator)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except IntegrityError as exc:  # someone edited the problem's files mid-run: the numbers mean nothing
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
