"""Benchmark: cant_be_late evaluation time for the quick and full sets, against the reference evaluator.

What is measured
----------------
For one program (default: the problem's initial program), a fresh `CandidateEvaluator` per
scenario set (`quick`, 270 simulations; `full`, 1080) evaluates it ``--repeat`` times; the median
wall time of `evaluate()` is printed together with the evaluation's own split (sandbox start,
candidate, trusted replay and scoring) and the score.

With ``--reference DIR`` (the reference's `SystemBench/ADRS/cant-be-late`, with
`simulator/data/real` unpacked from `simulator/real_traces.tar.gz`), the reference evaluator's
`evaluate_stage2` is run once on the same program in a subprocess, its score is compared with ours
on the full set, and the ratio of wall times is printed. The reference needs `numpy`, `pandas`,
`configargparse` and stand-ins for `wandb` and `openevolve.evaluation_result` on the path given
with ``--reference-path``; it uses ``EVALUATOR_MAX_WORKERS`` processes (2 here).

Nothing is asserted about timings; the script exits 1 only if the two scores differ (by more than 1e-9:
the reference averages its costs in completion order).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if not os.environ.get("ENGRAM_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["ENGRAM_DATA_DIR"] = str(SHARED_DATA)
sys.path.insert(0, str(REPO))

from engram.evaluation.evaluator import CandidateEvaluator  # noqa: E402
from engram.problems.problem import load_problem  # noqa: E402
from engram.sandbox import get_sandbox  # noqa: E402

REFERENCE_RUNNER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import evaluator
started = time.time()
result = evaluator.evaluate_stage2(sys.argv[2])
metrics = result.metrics if hasattr(result, "metrics") else result
print(json.dumps({"score": metrics.get("combined_score"), "seconds": time.time() - started}))
"""


def measure(program: Path, scenario_set: str, sandbox: str, repeat: int) -> dict[str, float]:
    problem = load_problem("cant_be_late")
    walls, splits = [], []
    with CandidateEvaluator(problem, get_sandbox(sandbox, quiet=True), scenarios=[scenario_set]) as evaluator:
        for _ in range(repeat):
            started = time.perf_counter()
            result = evaluator.evaluate(program)
            walls.append(time.perf_counter() - started)
            if not result.ok:
                raise SystemExit(f"{program} failed: {result.error}")
            splits.append(result.timings)
    return {"wall_s": statistics.median(walls), "start_s": statistics.median(t.sandbox_start_s for t in splits),
            "candidate_s": statistics.median(t.candidate_s for t in splits),
            "scoring_s": statistics.median(t.scoring_s for t in splits), "score": result.score,
            "simulations": result.metrics["simulations"]}


def reference(directory: Path, program: Path, extra_path: str) -> dict[str, float]:
    env = {**os.environ, "EVALUATOR_MAX_WORKERS": os.environ.get("EVALUATOR_MAX_WORKERS", "2"),
           "PYTHONPATH": os.pathsep.join(p for p in (extra_path, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", REFERENCE_RUNNER, str(directory), str(program.resolve())],
                          capture_output=True, text=True, cwd=directory, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", type=Path, default=REPO / "evaluators/cant_be_late/initial_program.py")
    parser.add_argument("--sandbox", default="process", help="process or bwrap (default process)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", type=Path, help="the reference's SystemBench/ADRS/cant-be-late directory")
    parser.add_argument("--reference-path", default="", help="extra PYTHONPATH for the reference (stand-ins)")
    args = parser.parse_args()
    results = {name: measure(args.program, name, args.sandbox, args.repeat) for name in ("quick", "full")}
    for name, r in results.items():
        print(f"{name:5}  {r['simulations']:4d} simulations  {r['wall_s']:6.2f} s  (start {r['start_s']:.2f}, "
              f"candidate {r['candidate_s']:.2f}, replay+scoring {r['scoring_s']:.2f})  score {r['score']!r}")
    if args.reference is None:
        return 0
    ref = reference(args.reference, args.program, args.reference_path)
    same = abs(ref["score"] - results["full"]["score"]) <= 1e-9  # the reference's mean is over an unordered list
    print(f"reference  1080 simulations  {ref['seconds']:6.2f} s  score {ref['score']!r}  "
          f"({ref['seconds'] / results['full']['wall_s']:.0f}x our full set; scores "
          f"{'equal' if same else 'DIFFER'})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
