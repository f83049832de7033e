"""One-shot, best-shot and evolution end to end on cloudcast with the scripted model: archive,
MLflow side by side with Engram, budget stops, errors never scored, and resume after SIGKILL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, kill_when, make_spec, run, start_cli

from engram.errors import ProviderError
from engram.models.llm import transcript_requests
from engram.runs.archive import SeedArchive
from engram.runs.progress import QuietProgress
from engram.runs.runner import resume

SPECS = REPO / "specs"

CHEAPEST = """import networkx as nx


def search_algorithm(src, dsts, G, num_partitions):
    paths = {}
    for dst in dsts:
        route = nx.dijkstra_path(G, src, dst, weight="cost")
        edges = [[u, v, G[u][v]] for u, v in zip(route, route[1:])]
        paths[dst] = {str(p): [list(e) for e in edges] for p in range(num_partitions)}
    return paths
"""
DIRECT = """def search_algorithm(src, dsts, G, num_partitions):
    return {dst: {str(p): [[src, dst, G[src][dst]]] for p in range(num_partitions)} for dst in dsts}
"""
BROKEN = "def search_algorithm(src, dsts, G, num_partitions):\n    return ROUTES[src]\n"
SLEEPY = "import time\n\n\ndef search_algorithm(src, dsts, G, num_partitions):\n    time.sleep(60)\n"
USAGE = {"input_tokens": 1000, "output_tokens": 100}
"""Priced as o3: $0.0028 a call."""


def answer(code: str, reasoning: str = "an idea", **turn: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": "implement_algorithm", "args": {"code": code, "reasoning": reasoning}}], **turn}


def llm_spec(tmp_path: Path, method: dict[str, Any], agents: list[list[dict[str, Any]]],
             **sections: dict[str, Any]) -> Path:
    """A spec for `method` with the scripted model playing `agents` (one list of turns per slot)."""
    (tmp_path / "turns.yaml").write_text(yaml.safe_dump({"agents": [{"turns": t} for t in agents]}, sort_keys=False))
    spec: dict[str, Any] = {
        "name": "t",
        "problem": {"name": "cloudcast", "scenarios": ["intra_aws"]},
        "method": method,
        "model": {"id": "scripted", "script": "turns.yaml", "price_as": "openai/o3", "max_retries": 2},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, values in sections.items():
        spec[key] = {**spec.get(key, {}), **values}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def seed_dir(run_dir: Path) -> Path:
    return run_dir / "seed-0"


def result_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((seed_dir(run_dir) / "result.json").read_text())


def experiments_by_agent(run_dir: Path) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for experiment in SeedArchive(seed_dir(run_dir)).experiments():
        found.setdefault(experiment.agent, []).append(experiment)
    return found


def first_prompt(run_dir: Path, agent: int) -> str:
    requests = transcript_requests(seed_dir(run_dir) / f"agents/agent-{agent}/transcript.jsonl")
    return requests[0][-1]["content"]


# -- the three scripted twins, side by side with Engram in one MLflow store ---------------------------------


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three scripted twin specs and a one-agent Engram run, all in one MLflow store."""
    base = tmp_path_factory.mktemp("twins")
    uri = f"sqlite:///{base / 'mlruns' / 'mlflow.db'}"
    common = [f"output.dir={base / 'runs'}", "problem.scenarios=[quick]", f"tracking.uri={uri}"]
    runs = {name: run(SPECS / f"cloudcast_{name}_scripted.yaml", common).run_dir
            for name in ("one_shot", "best_shot", "evolution")}
    engram_spec = make_spec(base, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]],
                            problem={"scenarios": ["quick"]})
    runs["engram"] = run(engram_spec, ["tracking.mlflow=true", f"tracking.uri={uri}"]).run_dir
    return {"runs": runs, "uri": uri}


def test_all_methods_sit_side_by_side_in_mlflow_with_engram_metric_names(twins):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=twins["uri"])
    [experiment] = [e for e in client.search_experiments() if e.name == "cloudcast"]
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.data.tags["engram.method"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"engram", "one_shot", "best_shot", "evolution"}
    engram_metrics = set(parents["engram"].data.metrics)
    assert engram_metrics == {"score", "best_score", "dollars", "tokens"}
    shared_params = {k for k in parents["engram"].data.params if not k.startswith("method.")}
    for method in ("one_shot", "best_shot", "evolution"):
        parent = parents[method]
        assert set(parent.data.metrics) == engram_metrics, method
        assert shared_params <= set(parent.data.params), method
        result = result_of(twins["runs"][method])
        assert parent.data.metrics["best_score"] == pytest.approx(result["best_score"])
        history = client.get_metric_history(parent.info.run_id, "best_score")
        assert [m.step for m in history] == sorted(m.step for m in history)
        assert parent.info.status == "FINISHED"


def test_one_shot_archives_every_sample_with_its_reasoning(twins):
    run_dir = twins["runs"]["one_shot"]
    result = result_of(run_dir)
    assert result["stop_reason"] == "all 3 samples done" and result["evaluations"] == 3
    by_agent = experiments_by_agent(run_dir)
    assert sorted(by_agent) == [1, 2, 3] and all(len(found) == 1 for found in by_agent.values())
    tree = by_agent[2][0]
    assert tree.proposal()["sample"] == 2 and "tree" in tree.proposal()["reasoning"]
    assert tree.proposal()["model_calls"] == 2  # its first answer did not call the tool and was sent back
    assert result["best_experiment"] == tree.number
    assert (seed_dir(run_dir) / "best/program.py").read_text() == tree.program.read_text()
    prompt = first_prompt(run_dir, 1)
    assert "# The problem" in prompt and "def search_algorithm" in prompt  # the task and the starting program


def test_best_shot_shows_ascending_programs_and_never_scores_errors(twins):
    run_dir = twins["runs"]["best_shot"]
    by_agent = experiments_by_agent(run_dir)
    scores = {e.number: e.evaluation().score for found in by_agent.values() for e in found}
    crashed = by_agent[4][0]
    assert crashed.evaluation().error_kind == "runtime" and scores[crashed.number] is None
    assert 5 not in by_agent  # the refused request produced no experiment...
    [failed] = SeedArchive(seed_dir(run_dir)).events("proposal_failed")
    assert failed["agent"] == 5 and failed["failure"] == "model_error"  # ...but an error
    for agent in (3, 4):
        proposal = by_agent[agent][0].proposal()
        shown = proposal["shown"]
        assert len(shown) == 2 and crashed.number not in shown
        assert [scores[n] for n in shown] == sorted(scores[n] for n in shown)
        prompt = first_prompt(run_dir, agent)
        found = [float(s) for s in re.findall(r"\(score ([0-9.e-]+)\)", prompt)]
        assert found == sorted(found) and len(found) == 2
    assert result_of(run_dir)["stop_reason"] == "all 5 proposals done"


def test_evolution_keeps_the_best_parents_and_records_each_individual(twins):
    run_dir = twins["runs"]["evolution"]
    archive = SeedArchive(seed_dir(run_dir))
    individuals = {e.number: (e.proposal(), e.evaluation().score) for e in archive.experiments()}
    generations = archive.events("generation")
    assert [g["generation"] for g in generations] == [0, 1, 2]
    previous: list[int] = []
    for event in generations:
        members = [n for n, (proposal, score) in individuals.items()
                   if proposal["generation"] == event["generation"] and score is not None]
        pool = sorted(set(previous + members), key=lambda n: (-individuals[n][1], n))
        assert event["parents"] == pool[:2]  # survivors: the best two of parents and children
        for number in members:
            proposal = individuals[number][0]
            assert proposal["reasoning"]  # each individual carries its description
            if event["generation"] == 0:
                assert proposal["operator"] == "fresh" and proposal["parents"] == []
            else:
                assert set(proposal["parents"]) <= set(previous)
                expected = 1 if proposal["operator"] in ("modify", "tweak", "simplify") else 2
                assert proposal["operator"] in ("modify", "tweak", "simplify", "diversify", "recombine")
                assert len(proposal["parents"]) == expected
        previous = event["parents"]
    assert [e["agent"] for e in archive.events("proposal_failed")] == [8]
    assert result_of(run_dir)["stop_reason"] == "all 2 generations done"
    child = next(n for n, (p, _) in individuals.items() if p["generation"] == 1)
    prompt = first_prompt(run_dir, archive.experiments()[child - 1].agent)
    assert "Idea: " in prompt and "# The parent program" in prompt


# -- budgets --------------------------------------------------------------------------------------------------


def test_evaluation_budget_is_exact_with_parallel_workers(tmp_path: Path):
    spec = llm_spec(tmp_path, {"name": "one_shot", "samples": 5, "workers": 2},
                    [[answer(DIRECT)]] * 5, budget={"max_evaluations": 2})
    outcome = run(spec)
    result = outcome.seeds[0].result
    assert result["stop_reason"] == "evaluation budget reached (2)"
    assert len(SeedArchive(seed_dir(outcome.run_dir)).experiments()) == 2 == result["evaluations"]


def test_dollar_budget_stops_before_another_call(tmp_path: Path):
    spec = llm_spec(tmp_path, {"name": "one_shot", "samples": 5, "workers": 1},
                    [[answer(DIRECT, usage=USAGE)]] * 5, budget={"max_dollars": 0.005})
    outcome = run(spec)
    result = outcome.seeds[0].result
    assert "budget" in result["stop_reason"] and "0.005" in result["stop_reason"]
    assert result["usage"]["calls"] == 2  # the call that broke the cap, and none after it
    assert result["dollars"] == pytest.approx(2 * 0.0028)
    assert len(SeedArchive(seed_dir(outcome.run_dir)).experiments()) == 1  # its program was not scored


def test_time_budget_cuts_the_running_evaluation_and_stops(tmp_path: Path):
    spec = llm_spec(tmp_path, {"name": "one_shot", "samples": 3, "workers": 1, "max_minutes": 0.1},
                    [[answer(SLEEPY)], [answer(DIRECT)], [answer(DIRECT)]])
    outcome = run(spec)
    result = outcome.seeds[0].result
    assert result["stop_reason"] == "time budget reached (0.1 min)"
    [experiment] = SeedArchive(seed_dir(outcome.run_dir)).experiments()
    evaluation = experiment.evaluation()
    assert evaluation.error_kind == "timeout" and evaluation.duration_s < 30


def test_target_score_stops_the_run(tmp_path: Path):
    spec = llm_spec(tmp_path, {"name": "best_shot", "initial_samples": 2, "iterations": 3, "workers": 1},
                    [[answer(BROKEN)], [answer(CHEAPEST)], [answer(DIRECT)]], budget={"target_score": 0.005})
    result = run(spec).seeds[0].result
    assert result["stop_reason"].startswith("target score reached") and result["evaluations"] == 2


# -- errors are errors ----------------------------------------------------------------------------------------


def test_malformed_answers_and_model_errors_are_errors_never_scores(tmp_path: Path):
    stubborn = [{"content": "I would rather explain."}] * 3
    spec = llm_spec(tmp_path, {"name": "one_shot", "samples": 4, "workers": 2, "answer_retries": 2}, [
        stubborn,
        [{"error": "server_error"}] * 3,  # retried twice (max_retries: 2), then the proposal fails
        [{"error": "rate_limit"}, answer(CHEAPEST, "cheapest paths")],
        [answer(BROKEN)],
    ])
    outcome = run(spec)
    archive = SeedArchive(seed_dir(outcome.run_dir))
    failed = {e["agent"]: e for e in archive.events("proposal_failed")}
    assert failed[1]["failure"] == "malformed" and failed[1]["attempts"] == 3
    assert "did not call implement_algorithm" in failed[1]["error"]
    assert failed[2]["failure"] == "model_error" and "InternalServerError" in failed[2]["error"]
    by_agent = experiments_by_agent(outcome.run_dir)
    assert sorted(by_agent) == [3, 4]  # no experiment, hence no score, for the failed proposals
    assert by_agent[3][0].proposal()["model_calls"] == 2  # the rate limit was retried
    assert by_agent[4][0].evaluation().score is None
    [scored] = [e for e in archive.events("experiment") if e["score"] is not None]
    result = outcome.seeds[0].result
    assert scored["agent"] == 3 and result["best_experiment"] == by_agent[3][0].number
    assert result["details"] == {"model_errors": 1, "malformed_answers": 1}


def test_an_error_no_retry_can_cure_stops_the_run_instead_of_failing_every_proposal(tmp_path: Path):
    spec = llm_spec(tmp_path, {"name": "one_shot", "samples": 3, "workers": 1},
                    [[{"error": "bad_request"}], [answer(CHEAPEST)], [answer(CHEAPEST)]])
    with pytest.raises(ProviderError, match="HTTP 400"):
        run(spec)
    archive = SeedArchive(seed_dir(next((tmp_path / "runs").glob("*/*"))))
    assert archive.events("proposal_failed") == [] and archive.experiments() == []


# -- resume after SIGKILL -------------------------------------------------------------------------------------


def test_evolution_resumes_after_sigkill_during_parallel_evaluations(tmp_path: Path):
    method = {"name": "evolution", "population_size": 3, "elitism": 1, "generations": 2, "workers": 2}
    spec = llm_spec(tmp_path, method, [
        [answer(CHEAPEST, "cheapest")], [answer(DIRECT, "direct")], [answer(BROKEN, "table")],  # generation 0
        [answer(SLEEPY, "wait")], [answer(SLEEPY, "wait longer")],                                # generation 1
        [answer(DIRECT, "direct again")], [answer(CHEAPEST, "cheapest again")],                   # generation 2
    ], problem={"time_limit_s": 2})
    process = start_cli("apply", str(spec))
    runs = tmp_path / "runs" / "t"
    kill_when(process, lambda: len(list(runs.glob("*/seed-0/agents/agent-[45]/experiments/*/program.py"))) == 2,
              settle_s=0.5)  # the sandboxed evaluations are then under way
    [run_dir] = list(runs.iterdir())
    archive = SeedArchive(seed_dir(run_dir))
    # Generation 0 ran on two workers: experiments 1 and 2 may be logged in either order.
    assert sorted(e["experiment"] for e in archive.events("experiment")) == [1, 2, 3]
    assert not archive.result_file.exists()

    run(spec)  # the same spec continues its unfinished run (in this process: no second start-up)
    assert [p.name for p in runs.iterdir()] == [run_dir.name]
    logged = [e["experiment"] for e in archive.events("experiment")]
    assert sorted(logged) == [1, 2, 3, 4, 5, 6, 7] and len(logged) == 7  # every evaluation exactly once
    by_agent = experiments_by_agent(run_dir)
    assert all(len(found) == 1 for found in by_agent.values()) and sorted(by_agent) == list(range(1, 8))
    assert {by_agent[a][0].evaluation().error_kind for a in (4, 5)} == {"timeout"}
    for agent in (4, 5):  # the killed children were scored, not asked for again
        assert len(transcript_requests(seed_dir(run_dir) / f"agents/agent-{agent}/transcript.jsonl")) == 1
    assert [g["generation"] for g in archive.events("generation")] == [0, 1, 2]
    assert len(archive.events("resume")) == 1
    result = result_of(run_dir)
    assert result["evaluations"] == 7 and result["stop_reason"] == "all 2 generations done"


def test_best_shot_resumes_after_sigkill_with_the_next_step(tmp_path: Path):
    method = {"name": "best_shot", "initial_samples": 1, "iterations": 2, "workers": 1}
    spec = llm_spec(tmp_path, method, [[answer(CHEAPEST)], [answer(SLEEPY)], [answer(DIRECT)]],
                    problem={"time_limit_s": 2})
    process = start_cli("apply", str(spec))
    runs = tmp_path / "runs" / "t"
    kill_when(process, lambda: any(runs.glob("*/seed-0/agents/agent-2/experiments/*/program.py")), settle_s=0.5)
    [run_dir] = list(runs.iterdir())
    resume(run_dir, QuietProgress())
    archive = SeedArchive(seed_dir(run_dir))
    assert [e["experiment"] for e in archive.events("experiment")] == [1, 2, 3]
    by_agent = experiments_by_agent(run_dir)
    assert by_agent[2][0].evaluation().error_kind == "timeout"
    assert by_agent[3][0].proposal()["shown"] == [1]  # the failed program never entered the database
    assert result_of(run_dir)["stop_reason"] == "all 3 proposals done"
