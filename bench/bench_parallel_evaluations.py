"""Benchmark: parallel evaluations in the LLM-call baselines, `workers` = N against `workers` = 1.

What is measured
----------------
A one-shot run of the scripted model on cloudcast whose every sample is the same program (by
default the `steiner_tree` baseline, a CPU-bound candidate of several seconds), once with one
worker and once with N (default: the number of cores). The time measured is the method's own:
from the seed's `run_start` event to its `run_end` event, i.e. model calls (instant here),
sandboxed evaluations and all bookkeeping (archive, events, best program), without the process
start-up and data loading that both runs share. Runs alternate (1, N, 1, N, ...) so that load on
the machine affects both sides about equally; the ratio of medians is the speed-up.

Each evaluation is its own sandboxed process, so N workers can use N cores; the speed-up stays
below N by what does not overlap (scoring and bookkeeping in the parent, sandbox start-up) and
by whatever else runs on the machine. Every run must produce the same scores, or the script
stops: a faster run that scores differently would mean nothing.

    python bench/bench_parallel_evaluations.py                       # steiner_tree, 4 samples, ~1-2 min
    python bench/bench_parallel_evaluations.py --program initial --samples 16 --repeat 3
    python bench/bench_parallel_evaluations.py --workers 4 --sandbox process

The script exits 0 unless something crashes; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from engram.problems.problem import load_problem
from engram.runs.archive import SeedArchive
from engram.runs.progress import QuietProgress
from engram.runs.runner import apply
from engram.spec import available_cores


def program_source(name: str) -> str:
    problem = load_problem("cloudcast")
    if name == "initial":
        return problem.initial_program.read_text(encoding="utf-8")
    baselines = problem.baselines()
    path = baselines[name] if name in baselines else Path(name)
    if not path.is_file():
        sys.exit(f"--program {name!r}: not 'initial', a baseline ({', '.join(sorted(baselines))}) or a file")
    return path.read_text(encoding="utf-8")


def write_spec(directory: Path, source: str, *, samples: int, workers: int, sandbox: str,
               scenarios: list[str] | None) -> Path:
    turn = {"tool_calls": [{"name": "implement_algorithm", "args": {"code": source, "reasoning": "bench"}}]}
    (directory / "turns.yaml").write_text(yaml.safe_dump({"agents": [{"turns": [turn]}] * samples}))
    spec = {
        "name": f"bench_w{workers}",
        "problem": {"name": "cloudcast", **({"scenarios": scenarios} if scenarios else {})},
        "method": {"name": "one_shot", "samples": samples, "workers": workers},
        "model": {"id": "scripted", "script": "turns.yaml"},
        "sandbox": {"backend": sandbox},
        "tracking": {"mlflow": False},
        "output": {"dir": str(directory / "runs")},
    }
    path = directory / f"bench_w{workers}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed_run(spec: Path) -> tuple[float, list[float | None]]:
    """The method's seconds (run_start to run_end) and the scores of its evaluations."""
    outcome = apply(spec, [], QuietProgress(), new=True)
    archive = SeedArchive(outcome.run_dir / "seed-0")
    times = {event["type"]: float(event["t"]) for event in archive.events() if event["type"] in ("run_start",
                                                                                                   "run_end")}
    scores = [event.get("score") for event in archive.events("experiment")]
    return times["run_end"] - times["run_start"], scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", default="steiner_tree", help="'initial', a baseline name, or a .py file")
    parser.add_argument("--samples", type=int, default=4, help="evaluations per run (default 4)")
    parser.add_argument("--workers", type=int, default=available_cores(), help="N (default: the number of cores)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (default 1)")
    parser.add_argument("--sandbox", default="auto", choices=["auto", "process", "bwrap", "docker"])
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names (default: all)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",") if args.scenarios else None
    source = program_source(args.program)
    seconds: dict[int, list[float]] = {1: [], args.workers: []}
    reference: list[float | None] | None = None
    with tempfile.TemporaryDirectory(prefix="engram-bench-parallel-") as tmp:
        specs = {w: write_spec(Path(tmp), source, samples=args.samples, workers=w, sandbox=args.sandbox,
                               scenarios=scenarios) for w in seconds}
        for round_number in range(1, args.repeat + 1):
            for workers, spec in specs.items():
                elapsed, scores = timed_run(spec)
                if reference is None:
                    reference = scores
                if sorted(map(str, scores)) != sorted(map(str, reference)):
                    sys.exit(f"scores differ between runs ({scores} vs {reference}); timings would mean nothing")
                seconds[workers].append(elapsed)
                print(f"round {round_number}: workers={workers}: {elapsed:.2f} s for {len(scores)} evaluations",
                      flush=True)
    print(f"\nprogram {args.program}, {args.samples} evaluations per run, {available_cores()} cores, "
          f"sandbox {args.sandbox}")
    print(f"{'workers':>8} {'median s':>9} {'evals/s':>8}")
    medians = {w: statistics.median(values) for w, values in seconds.items()}
    for workers, median in medians.items():
        print(f"{workers:>8} {median:>9.2f} {args.samples / median:>8.3f}")
    print(f"\nspeed-up workers={args.workers} vs workers=1: {medians[1] / medians[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
