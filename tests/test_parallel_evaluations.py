"""MethodContext.evaluate called from several threads at once: unique experiments, an exact
evaluation budget, every evaluation logged once, and a best program that matches the archive."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engram.evaluation.evaluator import CandidateEvaluator
from engram.methods.context import MethodContext, StopRun
from engram.models.llm import UsageLedger
from engram.results.tracking import Tracker
from engram.runs.archive import SeedArchive
from engram.runs.progress import QuietProgress
from engram.sandbox import get_sandbox
from engram.spec import Spec

DIRECT = """def search_algorithm(src, dsts, G, num_partitions):
    return {dst: {str(p): [[src, dst, G[src][dst]]] for p in range(num_partitions)} for dst in dsts}
"""


def context(tmp_path: Path, evaluator: CandidateEvaluator, max_evaluations: int) -> MethodContext:
    spec = Spec.model_validate({"name": "t", "problem": {"name": "cloudcast"}, "model": {"id": "openai/o3"},
                                "method": {"name": "one_shot", "workers": 4},
                                "budget": {"max_evaluations": max_evaluations}})
    return MethodContext(spec=spec, seed=0, problem=evaluator.problem, evaluator=evaluator,
                         archive=SeedArchive(tmp_path / "seed-0"), sandbox=evaluator.sandbox, ledger=UsageLedger(),
                         tracker=Tracker(enabled=False, tracking_uri=None, experiment="cloudcast"),
                         progress=QuietProgress(), model_factory=lambda **_: None)


@pytest.fixture(scope="module")
def quick_evaluator(cloudcast):
    with CandidateEvaluator(cloudcast, get_sandbox("process", quiet=True), scenarios=["intra_aws"]) as evaluator:
        yield evaluator


def test_concurrent_evaluations_respect_the_budget_exactly(tmp_path: Path, quick_evaluator, initial_source):
    ctx = context(tmp_path, quick_evaluator, max_evaluations=4)
    start = threading.Barrier(6)
    outcomes: list[object] = []
    lock = threading.Lock()

    def evaluate(index: int) -> None:
        start.wait()
        try:
            result: object = ctx.evaluate(DIRECT if index % 2 else initial_source, agent=index + 1)
        except StopRun as stop:
            result = stop
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=evaluate, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stops = [o for o in outcomes if isinstance(o, StopRun)]
    assert len(stops) == 2 and all("evaluation budget reached (4)" in s.reason for s in stops)
    experiments = ctx.archive.experiments()
    assert sorted(e.number for e in experiments) == [1, 2, 3, 4]
    logged = [e["experiment"] for e in ctx.archive.events("experiment")]
    assert sorted(logged) == [1, 2, 3, 4]
    assert [e["best_score"] for e in ctx.archive.events("experiment")] == sorted(
        e["best_score"] for e in ctx.archive.events("experiment"))  # best-so-far never goes back
    _, best = ctx.archive.best()
    assert (ctx.archive.best_dir / "program.py").read_text() == best.program.read_text()
    assert ctx.stop_reason() == "evaluation budget reached (4)" and ctx.evaluations_done() == 4


def test_interrupted_experiments_are_finished_in_parallel_and_logged_once(tmp_path: Path, quick_evaluator,
                                                                          initial_source):
    ctx = context(tmp_path, quick_evaluator, max_evaluations=10)
    stored = [ctx.archive.new_experiment(agent, source) for agent, source in ((1, DIRECT), (2, initial_source),
                                                                             (3, DIRECT))]
    ctx.finish_interrupted_experiments(workers=3)
    assert sorted(e["experiment"] for e in ctx.archive.events("experiment")) == [e.number for e in stored]
    assert all(e.evaluation() is not None for e in stored)
    ctx.finish_interrupted_experiments(workers=3)  # nothing left to do
    assert len(ctx.archive.events("experiment")) == 3
