"""Benchmark: a grid of 3 scripted specs x 2 seeds with `--jobs 2` against `--jobs 1` (the baseline).

Each run is one scripted agent that evaluates a candidate burning `--work` seconds of CPU per
scenario (five cloudcast scenarios) twice, so a run is real evaluation work in the sandbox rather
than process start-up. Both settings run the same grid in fresh output directories, alternating
`--repeat` times, through `engram apply GRID --jobs N` as a user would launch it.

Columns (seconds, medians):

* ``wall``: the whole command, including the driver's start and the local pool's fork server;
* ``runs``: from the first run's start to the last run's end (from the runs' `attempts.jsonl` and
  `result.json`), i.e. the part the pool parallelises.

The ratios ``jobs 1 / jobs 2`` are printed; 2.0 is the ideal on a machine with two idle cores.
Nothing is asserted; the script exits 0 unless a sweep fails.

    ENGRAM_DATA_DIR=../shared/data python bench/bench_sweep.py --repeat 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SUMMARY = ("## Mode\nBenchmark.\n## Best result\n-\n## What was tried\n- busy\n## Key insights\n- none\n"
           "## Recommended next steps\n- none\n## Dead ends\n- none\n")
BUSY = '''import time

import networkx as nx


def search_algorithm(src, dsts, G, num_partitions):
    started = time.process_time()
    while time.process_time() - started < {work}:
        pass
    paths = {{}}
    for dst in dsts:
        route = nx.dijkstra_path(G, src, dst, weight="cost")
        edges = [[u, v, G[u][v]] for u, v in zip(route, route[1:])]
        paths[dst] = {{str(p): [list(e) for e in edges] for p in range(num_partitions)}}
    return paths
'''


def write_grid(folder: Path, work: float) -> Path:
    """Three specs (a, b, c) of two seeds each; every run evaluates the busy program twice."""
    turns = [
        {"tool_calls": [{"name": "write_file", "args": {"file_path": "/busy.py", "content": BUSY.format(work=work)}}]},
        {"tool_calls": [{"name": "run_simulation", "args": {"file_path": "/busy.py"}}]},
        {"tool_calls": [{"name": "run_simulation", "args": {"file_path": "/busy.py"}}]},
        {"content": SUMMARY},
    ]
    (folder / "turns.yaml").write_text(yaml.safe_dump({"agents": [{"turns": turns}]}, sort_keys=False))
    spec = {"problem": {"name": "cloudcast"}, "model": {"id": "scripted", "script": "turns.yaml"},
            "budget": {"max_agents": 1, "minutes_per_agent": 10}, "runs": 2, "tracking": {"mlflow": False}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    grid = {"specs": [{"spec": "spec.yaml", "name": name} for name in ("a", "b", "c")]}
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return folder / "grid.yaml"


def run_once(grid: Path, jobs: int, output: Path) -> tuple[float, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", str(grid), "--jobs", str(jobs), "--quiet",
                           "--set", f"output.dir={output}"], cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"the sweep failed (jobs {jobs}):\n{done.stderr[-3000:]}")
    seeds = list(output.glob("*/*/seed-*"))
    starts = [json.loads((s / "attempts.jsonl").read_text().splitlines()[0])["started"] for s in seeds]
    ends = [(s / "result.json").stat().st_mtime for s in seeds]
    return wall, max(ends) - min(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="sweeps per setting, alternating (default 1)")
    parser.add_argument("--work", type=float, default=0.6,
                        help="CPU seconds the candidate burns per scenario (default 0.6: ~6 s per run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engram-bench-sweep-") as tmp:
        grid = write_grid(Path(tmp), args.work)
        times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for round_ in range(args.repeat):
            for jobs in (1, 2):
                wall, runs = run_once(grid, jobs, Path(tmp) / f"runs-{jobs}-{round_}")
                times[jobs].append((wall, runs))
                print(f"round {round_ + 1}, --jobs {jobs}: wall {wall:6.1f} s, runs {runs:6.1f} s", flush=True)
    print(f"\n3 specs x 2 seeds, {args.work:g} s CPU per scenario, {args.repeat} round(s), medians:")
    print(f"{'':10}{'wall':>8}{'runs':>8}")
    medians = {jobs: [statistics.median(t[i] for t in values) for i in (0, 1)] for jobs, values in times.items()}
    for jobs, (wall, runs) in medians.items():
        print(f"--jobs {jobs}  {wall:7.1f} {runs:7.1f}")
    print(f"ratio      {medians[1][0] / medians[2][0]:7.2f} {medians[1][1] / medians[2][1]:7.2f}   (jobs 1 / jobs 2)")


if __name__ == "__main__":
    main()
