"""Benchmark: what one evaluation costs through the docker sandbox beyond the candidate's own time.

For each backend (`process` as the baseline, `docker`, and `bwrap` when available) a long-lived
`CandidateEvaluator` of cloudcast evaluates the initial program; the backends take turns round by
round (one warm-up each, then ``--repeat`` rounds) so machine load affects all about equally.

Columns (medians, milliseconds):

* ``total``: wall clock around ``evaluate()``;
* ``candidate``: the candidate's own time as the child measured it (loading + scenarios);
* ``overhead``: ``total - candidate``: sandbox start and stop, Python start-up, scoring, I/O;
* ``start``: from spawning the sandboxed command to the child's first line (``Timings.sandbox_start_s``);
* ``empty run``: a bare ``sandbox.run([python, "-c", "pass"])``, the backend's floor.

The docker row's ``overhead`` minus the process row's is what Docker adds per evaluation (target
< 300 ms). With ``--hardening both`` (the default) the host backends also run as they were before
the hardening of issue 13 (rows ``process-plain`` and ``bwrap-plain``: no uid switch, capability
drop, system-call filter, memory/CPU cgroup or capped working directory), in the same rounds, and
the script prints what the hardening adds per evaluation and per empty run (target <= 50 ms).

A second table times an agent's shell command (`true`) through each backend's ``open_shell``: for
docker one long-lived container per agent (`exec`), against a fresh container per command
(``docker run``), which is what the shell would cost without the long-lived container.

Nothing is asserted; the script exits 0 unless something crashes.

    DOCKER_HOST=... ENGRAM_DATA_DIR=../shared/data python bench/bench_docker.py --repeat 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from engram.errors import SandboxError
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import load_problem
from engram.sandbox import Limits, Sandbox, clean_environment, get_sandbox
from engram.sandbox.bwrap import BwrapSandbox
from engram.sandbox.process import ProcessSandbox

_PLAIN = {"process": ProcessSandbox, "bwrap": BwrapSandbox}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds after one warm-up (default 7)")
    parser.add_argument("--backends", default="process,docker,bwrap", help="comma-separated (default: all)")
    parser.add_argument("--hardening", choices=["both", "on"], default="both",
                        help="both: also time process and bwrap as before the hardening (default); on: hardened only")
    args = parser.parse_args()

    problem = load_problem("cloudcast")
    program = problem.initial_program.read_text()
    sandboxes: dict[str, Sandbox] = {}
    for name in args.backends.split(","):
        try:
            sandboxes[name] = get_sandbox(name, quiet=True)
        except SandboxError as exc:
            print(f"skipping {name}: {exc}")
            continue
        if args.hardening == "both" and name in _PLAIN:
            sandboxes[f"{name}-plain"] = _PLAIN[name](hardened=False)
    evaluators = {name: CandidateEvaluator(problem, sb) for name, sb in sandboxes.items()}
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in ("total", "candidate", "overhead", "start",
                                                                         "empty")} for n in sandboxes}
    scores: dict[str, set[float | None]] = {n: set() for n in sandboxes}
    try:
        for round_ in range(args.repeat + 1):
            for name, evaluator in evaluators.items():
                started = time.monotonic()
                result = evaluator.evaluate(program)
                total = time.monotonic() - started
                empty = _empty_run(sandboxes[name])
                scores[name].add(result.score)
                if round_ == 0:
                    continue  # warm-up
                s = samples[name]
                s["total"].append(total)
                s["candidate"].append(result.timings.candidate_s)
                s["overhead"].append(total - result.timings.candidate_s)
                s["start"].append(result.timings.sandbox_start_s)
                s["empty"].append(empty)
    finally:
        for evaluator in evaluators.values():
            evaluator.close()

    print(f"cloudcast initial program, {args.repeat} rounds, medians in ms")
    print(f"{'backend':<13} {'total':>8} {'candidate':>10} {'overhead':>9} {'start':>7} {'empty run':>10}  score")
    for name, s in samples.items():
        med = {k: 1000 * statistics.median(v) for k, v in s.items()}
        print(f"{name:<13} {med['total']:8.0f} {med['candidate']:10.0f} {med['overhead']:9.0f} {med['start']:7.0f} "
              f"{med['empty']:10.0f}  {sorted(scores[name], key=str)}")
    _hardening_cost(samples)
    if "docker" in samples and "process" in samples:
        extra = 1000 * (statistics.median(samples["docker"]["overhead"])
                        - statistics.median(samples["process"]["overhead"]))
        print(f"docker adds {extra:.0f} ms per evaluation over the process backend (target < 300 ms)")
    _shell_table(sandboxes, args.repeat)


def _hardening_cost(samples: dict[str, dict[str, list[float]]]) -> None:
    """What the hardening adds, from the hardened and plain rows of the same rounds."""
    for name in _PLAIN:
        if name in samples and f"{name}-plain" in samples:
            hard, plain = samples[name], samples[f"{name}-plain"]
            for column in ("overhead", "empty"):
                h, p = statistics.median(hard[column]), statistics.median(plain[column])
                print(f"hardening adds {1000 * (h - p):.0f} ms to {name}'s {column} "
                      f"({1000 * p:.0f} -> {1000 * h:.0f} ms, x{h / p:.2f}; target <= 50 ms)")


def _shell_table(sandboxes: dict[str, Sandbox], repeat: int) -> None:
    print(f"\nagent shell command `true`, {repeat * 3} commands, medians in ms")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as directory:
        workdir = Path(directory)
        for name, sandbox in sandboxes.items():
            shell = sandbox.open_shell(workdir=workdir, env=clean_environment(workdir), memory_bytes=None,
                                       max_processes=64, lifetime_s=600)
            try:
                shell.run("true", wall_seconds=30, output_bytes=1024)  # warm-up (starts the container)
                rows[f"{name} shell"] = _timed(partial(shell.run, "true", wall_seconds=30, output_bytes=1024),
                                               repeat * 3)
            finally:
                shell.close()
            if name == "docker":
                rows["docker run"] = _timed(partial(sandbox.run, ["true"], workdir=workdir,
                                                    limits=Limits(wall_seconds=30), env=clean_environment(workdir)),
                                            repeat * 3)
    for label, median in rows.items():
        print(f"{label:<20} {1000 * median:8.0f}")
    if "docker shell" in rows and "docker run" in rows:
        print(f"one container per agent: {rows['docker run'] / rows['docker shell']:.1f}x faster per command "
              f"than a container per command")


def _timed(action: Callable[[], object], times: int) -> float:
    durations = []
    for _ in range(times):
        started = time.monotonic()
        action()
        durations.append(time.monotonic() - started)
    return statistics.median(durations)


def _empty_run(sandbox: Sandbox) -> float:
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as directory:
        workdir = Path(directory)
        started = time.monotonic()
        sandbox.run([sandbox.python, "-c", "pass"], workdir=workdir, limits=Limits(wall_seconds=30),
                    env=clean_environment(workdir))
        return time.monotonic() - started


if __name__ == "__main__":
    main()
