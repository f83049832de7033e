"""Benchmark: how long one llm_routing evaluation takes, and how it splits between simulator and candidate.

What is measured
----------------
For every selected program (the initial program and the baselines in
``evaluators/llm_routing/baselines/``):

* ``in-process``: each scenario is simulated in this process with the program's scheduler called
  directly through the problem's adapter (messages round-tripped through JSON, as over the
  channel). The time spent inside the scheduler call -- JSON, the adapter's mirror of the cluster
  and the program's ``schedule()`` -- is the "candidate" part; the rest is the simulator.
* ``<backend>``: a long-lived ``CandidateEvaluator`` (both scenarios of the paper set) evaluates
  the program once as a warm-up and then ``--repeat`` times. Each evaluation is timed around
  ``evaluate()`` and split with the evaluation's own timings: ``start`` (sandbox and interpreter
  start-up), ``candidate`` (the channel's measured round trips: pipe I/O, JSON on both sides, the
  adapter and ``schedule()``; measured in the trusted process) and ``simulator`` (the remainder:
  the simulation, the scorer, orchestration).

Medians are printed (milliseconds), plus the number of scheduler calls. The script asserts nothing
about timings; it exits 0 unless something crashes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if not os.environ.get("ENGRAM_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["ENGRAM_DATA_DIR"] = str(SHARED_DATA)
sys.path.insert(0, str(REPO))

from engram.evaluation.evaluator import CandidateEvaluator  # noqa: E402
from engram.problems.problem import Problem, load_problem  # noqa: E402
from engram.sandbox import get_sandbox  # noqa: E402
from engram.sandbox.bwrap import BwrapSandbox  # noqa: E402


def _programs(problem: Problem, selection: str | None) -> dict[str, Path]:
    available = {"initial": problem.initial_program, **problem.baselines()}
    if not selection:
        return available
    chosen = {}
    for name in selection.split(","):
        name = name.strip()
        chosen[name] = available[name] if name in available else Path(name)
    return chosen


def in_process(problem: Problem, scorer: Any, source: str, scenarios: list[str]) -> dict[str, float]:
    """Simulate each scenario here; split the time between the scheduler calls and the rest."""
    spec = importlib.util.spec_from_file_location("bench_llm_routing_adapter", problem.adapter_path)
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    module = types.ModuleType("candidate")
    module.__dict__.update(adapter.namespace(None))
    exec(compile(source, "<candidate>", "exec"), module.__dict__)
    entry = module.CustomGlobalScheduler
    spent = {"candidate": 0.0}

    def ask(message: dict) -> Any:
        started = time.perf_counter()
        reply = json.loads(json.dumps(adapter.handle(entry, json.loads(json.dumps(message)), None)))
        spent["candidate"] += time.perf_counter() - started
        return reply

    calls = 0
    started = time.perf_counter()
    for scenario in problem.select_scenarios(scenarios):
        adapter.handle(entry, scorer.start_message(scenario), None)
        calls += scorer.simulate(scenario, ask).calls
    total = time.perf_counter() - started
    return {"total": total, "candidate": spent["candidate"], "simulator": total - spent["candidate"], "calls": calls}


def in_sandbox(evaluator: CandidateEvaluator, path: Path, repeat: int) -> tuple[dict[str, float], float | None]:
    evaluator.evaluate(path)  # warm-up
    rows = []
    score = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = evaluator.evaluate(path)
        total = time.perf_counter() - started
        if not result.ok:
            raise SystemExit(f"{path} failed: {result.error}")
        score = result.score
        start, candidate = result.timings.sandbox_start_s, result.timings.candidate_s
        rows.append({"total": total, "start": start, "candidate": candidate,
                     "simulator": total - start - candidate,
                     "calls": sum(s.metrics["scheduler_calls"] for s in result.scenarios.values())})
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}, score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed evaluations per program and backend")
    parser.add_argument("--sandbox", choices=["process", "bwrap", "both", "none"], default="both")
    parser.add_argument("--programs", default=None, help="initial, baseline names, or paths (default: all)")
    parser.add_argument("--scenarios", default="paper", help="scenario or set names (default: paper)")
    args = parser.parse_args()

    problem = load_problem("llm_routing")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    setup_started = time.perf_counter()
    scorer = problem.make_scorer()
    print(f"scorer set-up (traces, profiles): {1e3 * (time.perf_counter() - setup_started):.0f} ms")
    programs = _programs(problem, args.programs)
    backends = {"both": ["process", "bwrap"], "none": []}.get(args.sandbox, [args.sandbox])
    if "bwrap" in backends and BwrapSandbox.availability() is not None:
        print(f"note: bwrap skipped ({BwrapSandbox.availability()})")
        backends.remove("bwrap")
    evaluators = {b: CandidateEvaluator(problem, get_sandbox(b, quiet=True), scenarios=scenarios) for b in backends}
    header = f"{'program':16} {'runner':10} {'total':>8} {'start':>7} {'candidate':>10} {'simulator':>10} " \
             f"{'calls':>6} {'score':>10}"
    print(header)
    print("-" * len(header))
    try:
        for name, path in programs.items():
            source = path.read_text(encoding="utf-8")
            split = in_process(problem, scorer, source, scenarios)
            print(f"{name:16} {'in-process':10} {1e3 * split['total']:8.0f} {'-':>7} {1e3 * split['candidate']:10.0f} "
                  f"{1e3 * split['simulator']:10.0f} {split['calls']:6d} {'':>10}", flush=True)
            for backend, evaluator in evaluators.items():
                times, score = in_sandbox(evaluator, path, args.repeat)
                print(f"{name:16} {backend:10} {1e3 * times['total']:8.0f} {1e3 * times['start']:7.0f} "
                      f"{1e3 * times['candidate']:10.0f} {1e3 * times['simulator']:10.0f} {int(times['calls']):6d} "
                      f"{score:10.6f}", flush=True)
    finally:
        for evaluator in evaluators.values():
            evaluator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
