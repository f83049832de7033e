"""Benchmark: the llm_sql scorer's hit counting against a character trie, and whole evaluations.

What is measured
----------------
1. Hit counting. For each table (beer.csv and the five 300-row samples) and each ordering of it
   (as given, the starting program's, and ggr's, computed in this process), the rows are printed
   as the scorer prints them and their hits counted twice, taking turns for ``--repeat`` rounds:

   * ``trie``: the reference's rule as the reference computes it, a character trie of all earlier
     rows walked and extended one character at a time (written here with nested dicts, which is
     faster than the reference's node objects, so the ratio is if anything understated);
   * ``sorted``: the scorer's ``prefix_hits`` (one sort of the rows, see its docstring).

   Both must give the same hits for every row; the script says ``identical`` or ``DIFFER``.
2. The trusted side's whole work on one answer for beer.csv: parsing the answer file, checking
   that it is a permutation of the input, and counting hits, next to the trie alone.
3. Unless ``--sandbox none``: whole evaluations of the starting program and ggr on beer.csv with a
   long-lived ``CandidateEvaluator`` per backend (one warm-up, then ``--repeat`` timed runs):
   the wall clock around ``evaluate()`` and the runtime the scorer measured around the request
   (which the score's runtime term uses).

All times are medians in milliseconds. Nothing is asserted about timings; the script exits 0
unless something crashes.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from engram.errors import DataError, SandboxError
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

PROBLEM = "llm_sql"
TABLES = ["beer", "movies_sample", "beer_sample", "BIRD_sample", "PDMX_sample", "products_sample"]


def trie_hits(rows: list[str]) -> list[int]:
    """The baseline: per row, the depth reached walking a character trie of all earlier rows."""
    root: dict = {}
    hits = []
    for row in rows:
        node, depth = root, 0
        for char in row:
            child = node.get(char)
            if child is None:
                break
            node, depth = child, depth + 1
        hits.append(depth)
        node = root
        for char in row:
            node = node.setdefault(char, {})
    return hits


def load_module(name: str, path: Any) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return (time.perf_counter() - started) * 1000, value


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}"


def bench_counting(problem: Problem, rules: ModuleType, adapter: ModuleType, repeat: int) -> None:
    adapter.prepare(None)  # installs the `solver` module the programs import
    programs = {"initial": load_module("bench_llm_sql_initial", problem.initial_program),
                "ggr": load_module("bench_llm_sql_ggr", problem.baselines()["ggr"])}
    print("1. hit counting: trie (the reference's way) vs sorted (the scorer's)\n")
    print(f"{'table':<16} {'order':<9} {'rows':>6} {'chars':>9} {'trie ms':>9} {'sorted ms':>9} {'speed-up':>8}  hits")
    ratios = []
    for name in TABLES:
        scenario = problem.select_scenarios([name])[0]
        table = rules.read_table(str(problem.data_file((scenario.data or [""])[0])), scenario.params.get("merges", []))
        orders = {"as given": table}
        for label, module in programs.items():
            result = module.Evolved().reorder(table.copy())
            orders[label] = result[0] if isinstance(result, tuple) else result
        for label, ordered in orders.items():
            rows = ["".join(row) for row in rules.cell_strings(ordered)]
            trie_times, sorted_times, same = [], [], True
            for _ in range(repeat):
                elapsed, expected = timed(lambda rows=rows: trie_hits(rows))
                trie_times.append(elapsed)
                elapsed, got = timed(lambda rows=rows: rules.prefix_hits(rows))
                sorted_times.append(elapsed)
                same = same and got == expected
            ratio = statistics.median(trie_times) / statistics.median(sorted_times)
            ratios.append(ratio)
            print(f"{name:<16} {label:<9} {len(rows):>6} {sum(map(len, rows)):>9} {median_ms(trie_times):>9} "
                  f"{median_ms(sorted_times):>9} {ratio:>7.1f}x  {'identical' if same else 'DIFFER'}")
    geometric = statistics.geometric_mean(ratios)
    print(f"\nspeed-up of hit counting, geometric mean over {len(ratios)} tables and orders: {geometric:.1f}x\n")


def bench_trusted_work(problem: Problem, rules: ModuleType, repeat: int) -> None:
    scenario = problem.select_scenarios(["beer"])[0]
    dataset = rules.Dataset(rules.read_table(str(problem.data_file((scenario.data or [""])[0])),
                                             scenario.params["merges"]))
    _ = dataset.signatures, dataset.answer_bytes  # prepared once per session, not per answer
    answer = "".join(rules.answer_line(row) + "\n" for row in reversed(dataset.rows)).encode()
    parts: dict[str, list[float]] = {"parse": [], "check": [], "count": [], "total": [], "trie": []}
    for _ in range(repeat):
        parse_ms, output = timed(lambda: rules.parse_answer(answer, len(dataset.rows), len(dataset.table.columns)))
        check_ms, _ = timed(lambda output=output: rules.check_permutation(output, dataset))
        strings = ["".join(row) for row in output]
        count_ms, _ = timed(lambda strings=strings: rules.prefix_hits(strings))
        trie_ms, _ = timed(lambda strings=strings: trie_hits(strings))
        for key, value in (("parse", parse_ms), ("check", check_ms), ("count", count_ms),
                           ("total", parse_ms + check_ms + count_ms), ("trie", trie_ms)):
            parts[key].append(value)
    print("2. the trusted side's work on one beer.csv answer (28,479 rows)\n")
    print("  ".join(f"{key} {median_ms(values)} ms" for key, values in parts.items()))
    ratio = statistics.median(parts["trie"]) / statistics.median(parts["total"])
    print(f"parse + check + count together take 1/{ratio:.1f} of the trie's hit counting alone\n")


def bench_evaluations(problem: Problem, sandboxes: list[str], repeat: int) -> None:
    print("3. evaluations on beer.csv (runtime = what the scorer measured around the request)\n")
    print(f"{'program':<9} {'sandbox':<8} {'total ms':>9} {'runtime ms':>11} {'hit rate':>20}  score")
    programs = {"initial": problem.initial_program, "ggr": problem.baselines()["ggr"]}
    for name in sandboxes:
        try:
            sandbox = get_sandbox(name, quiet=True)
        except SandboxError as exc:
            print(f"{'-':<9} {name:<8} skipped: {exc}")
            continue
        with CandidateEvaluator(problem, sandbox, scenarios=["beer"]) as evaluator:
            for label, path in programs.items():
                try:
                    evaluator.evaluate(path)
                except DataError as exc:
                    print(f"skipped: {exc}")
                    return
                totals, runtimes, result = [], [], None
                for _ in range(repeat):
                    elapsed, result = timed(lambda path=path: evaluator.evaluate(path))
                    totals.append(elapsed)
                    runtimes.append(result.scenarios["beer"].metrics["runtime_s"] * 1000)
                print(f"{label:<9} {name:<8} {median_ms(totals):>9} {median_ms(runtimes):>11} "
                      f"{result.metrics['mean_hit_rate']!r:>20}  {result.score:.6f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds per measurement (default 3)")
    parser.add_argument("--sandbox", default="both", choices=["process", "bwrap", "both", "none"],
                        help="backends for the evaluations of part 3 (default both; none skips part 3)")
    args = parser.parse_args(argv)
    problem = load_problem(PROBLEM)
    rules = sys.modules[problem.scorer_class.__module__]
    adapter = load_module("bench_llm_sql_adapter", problem.adapter_path)
    bench_counting(problem, rules, adapter, args.repeat)
    bench_trusted_work(problem, rules, args.repeat)
    if args.sandbox != "none":
        bench_evaluations(problem, ["process", "bwrap"] if args.sandbox == "both" else [args.sandbox], args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
