"""Benchmark: the CPU-heavy 6-run sweep of bench_sweep.py one run at a time (the baseline), on the
local pool, and on a one-node Ray cluster with and without the fork server.

The grid is bench_sweep.py's: 3 scripted specs x 2 seeds, each run one scripted agent that
evaluates a candidate burning `--work` CPU seconds per cloudcast scenario (five scenarios) twice.
Every mode launches it through `engram apply` as a user would, in a fresh output directory; the
modes take turns, `--repeat` rounds:

* ``sequential``: ``--jobs 1`` (the baseline);
* ``local``: ``--jobs CPUS``, runs forked from the pool's fork server;
* ``ray``: ``--executor ray`` on a cluster of one node with CPUS CPUs that this script starts
  (and stops) itself, runs forked from each Ray worker's fork server (Ray starts its workers at
  niceness 15, and a run inherits it: ``--ray-niceness 0`` starts the node with
  ``RAY_worker_niceness=0``);
* ``ray-fresh``: the same with ``executor.fork_server: false``, a fresh Python per run;
* ``local-fresh`` (only when asked for with ``--modes``): the local pool without its fork server.

Columns (seconds; per mode the median over rounds):

* ``wall``: the whole command (driver start, connecting to Ray, the runs, the summary);
* ``first``: from the command's start to the first run's lease (driver start-up, scheduling,
  starting the first worker and its fork server);
* ``gap``: median over runs after the first CPUS of the time from a run slot freeing (a run's
  lease ending) to the next run's lease beginning: the cost of handing a slot to the next run;
* ``boot``: median over runs from the lease to the run's `run_start` event (inside the run's
  process: the imports a fresh Python pays, reading the spec, opening the archive);
* ``run``: median over runs from `run_start` to the lease ending (the run's own work);
* ``tail``: from the last lease ending to the command's exit.

The last column is the mode's wall time as a ratio of the sequential one. Nothing is asserted; the
script exits 1 if a sweep fails. The Ray cluster's start is timed once and printed apart.

    ENGRAM_DATA_DIR=../shared/data python bench/bench_ray_sweep.py --repeat 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_sweep import REPO, write_grid

MODES = ("sequential", "local", "ray", "ray-fresh", "local-fresh")
DEFAULT_MODES = "sequential,local,ray,ray-fresh"
COLUMNS = ("wall", "first", "gap", "boot", "run", "tail")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def ray_cluster(temp: Path, cpus: int, niceness: int | None) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster in a session of its own (so that stopping it touches no other cluster)."""
    ray = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ADDRESS": ""}
    if niceness is not None:
        env["RAY_worker_niceness"] = str(niceness)
    port = _free_port()
    started = time.monotonic()
    process = subprocess.Popen([str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                f"--num-cpus={cpus}", f"--temp-dir={temp}", "--include-dashboard=false",
                                "--disable-usage-stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    output, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        sys.exit(f"ray start failed:\n{output.decode(errors='replace')[-3000:]}")
    nice = f"worker niceness {niceness}" if niceness is not None else "Ray's default worker niceness (15)"
    print(f"ray cluster (1 node, {cpus} CPUs, {nice}) started in {time.monotonic() - started:.1f} s", flush=True)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def command(mode: str, grid: Path, output: Path, cpus: int, address: str | None, mlflow: bool) -> list[str]:
    args = [sys.executable, "-m", "engram.cli", "apply", str(grid), "--quiet", "--set", f"output.dir={output}"]
    if mlflow:
        args += ["--set", "tracking.mlflow=true", "--set", f"tracking.uri=sqlite:///{output.parent / 'mlflow.db'}"]
    if mode == "sequential":
        return [*args, "--jobs", "1"]
    if mode.startswith("local"):
        args += ["--jobs", str(cpus)]
    else:
        assert address is not None
        args += ["--executor", "ray", "--address", address]
    return [*args, "--set", "executor.fork_server=false"] if mode.endswith("-fresh") else args


def run_once(args: list[str], env: dict[str, str], output: Path, slots: int) -> dict[str, float]:
    started = time.time()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if done.returncode != 0:
        sys.exit(f"the sweep failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    spans = []
    for seed_dir in output.glob("*/*/seed-*"):
        lease = json.loads((seed_dir / "worker.json").read_text())
        [attempt] = [json.loads(line) for line in (seed_dir / "attempts.jsonl").read_text().splitlines()]
        events = [json.loads(line) for line in (seed_dir / "events.jsonl").read_text().splitlines()]
        run_start = next(e["t"] for e in events if e["type"] == "run_start")
        spans.append((attempt["started"], run_start, lease["ended"]))
    starts = sorted(s[0] for s in spans)
    frees = sorted(s[2] for s in spans)
    gaps = [start - free for start, free in zip(starts[slots:], frees[:len(starts) - slots], strict=True)]
    return {"wall": ended - started, "first": starts[0] - started,
            "gap": statistics.median(gaps) if gaps else 0.0,
            "boot": statistics.median(s[1] - s[0] for s in spans),
            "run": statistics.median(s[2] - s[1] for s in spans), "tail": ended - frees[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the modes take turns in each (default 1)")
    parser.add_argument("--work", type=float, default=0.6,
                        help="CPU seconds the candidate burns per scenario (default 0.6: ~6 s per run)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="runs at once on the pool and CPUs of the Ray node (default: the number of cores)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated, of {', '.join(MODES)} "
                        f"(default {DEFAULT_MODES}); the first is the baseline of the ratios")
    parser.add_argument("--ray-niceness", type=int, default=None,
                        help="start the Ray node with RAY_worker_niceness=N (default: Ray's own, 15)")
    parser.add_argument("--mlflow", action="store_true", help="track the runs in MLflow (a SQLite store per sweep)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := sorted(set(modes) - set(MODES)):
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)",
          flush=True)
    times: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="engram-bench-ray-") as tmp, contextlib.ExitStack() as stack:
        grid = write_grid(Path(tmp), args.work)
        address, env = None, dict(os.environ)
        if any(mode.startswith("ray") for mode in modes):
            address, env = stack.enter_context(ray_cluster(Path(tmp) / "ray", args.cpus, args.ray_niceness))
        for round_ in range(args.repeat):
            for mode in modes:
                output = Path(tmp) / f"{mode}-{round_}" / "runs"
                slots = 1 if mode == "sequential" else args.cpus
                measured = run_once(command(mode, grid, output, args.cpus, address, args.mlflow), env, output, slots)
                times[mode].append(measured)
                print(f"round {round_ + 1}, {mode:<11}" + "".join(f" {c} {measured[c]:6.1f}" for c in COLUMNS),
                      flush=True)
    load = os.getloadavg()
    print(f"\n3 specs x 2 seeds, {args.work:g} s CPU per scenario, {args.cpus} at once, {args.repeat} round(s), "
          f"medians (load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}):")
    print(f"{'':12}" + "".join(f"{c:>8}" for c in COLUMNS) + f"{'ratio':>8}")
    base = statistics.median(t["wall"] for t in times[modes[0]])
    for mode, values in times.items():
        medians = [statistics.median(t[c] for t in values) for c in COLUMNS]
        print(f"{mode:<12}" + "".join(f"{m:8.1f}" for m in medians) + f"{base / medians[0]:7.2f}x")
    print(f"(ratio: {modes[0]} wall / the mode's wall; higher is faster)")


if __name__ == "__main__":
    main()
