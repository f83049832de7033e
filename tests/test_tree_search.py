"""The tree-search baseline: its selection rule, the ancestors' summaries, and whole offline runs."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, mlflow_state_restored
from engram_runs import (
    INITIAL_PROGRAM_CALL,
    SUMMARY,
    finish_cli,
    kill_when,
    make_spec,
    run,
    simulate,
    start_cli,
    write_program,
)

from baselines.tree_search import Node, ancestor_summaries, round_rng, select_node
from engram.models.llm import transcript_requests
from engram.runs.archive import read_jsonl

PROBLEM = {"scenarios": ["intra_azure"], "time_limit_s": 20}
SCRIPTED_SPEC = REPO / "specs" / "cloudcast_tree_search_scripted.yaml"
SHARED_TREE = yaml.safe_load((REPO / "specs/scripts/tree_search.yaml").read_text())[
    "agents"][0]["turns"][0]["tool_calls"][0]["args"]["content"]


# -- the selection rule -----------------------------------------------------------------------------------


def _node(node_id: int, score: float | None, parent: int | None = None, summary: str = "") -> Node:
    return Node(id=node_id, parent=parent, experiment=node_id + 1, score=score, summary=summary)


def test_the_best_scoring_node_is_selected():
    nodes = [_node(0, 0.1), _node(1, 0.3, 0), _node(2, 0.2, 0)]
    assert all(select_node(nodes, random.Random(seed)).id == 1 for seed in range(20))


def test_ties_are_broken_at_random_but_reproducibly():
    nodes = [_node(0, 0.1), _node(1, 0.3, 0), _node(2, 0.3, 1), _node(3, 0.3, 1)]
    picks = Counter(select_node(nodes, round_rng(seed, 4)).id for seed in range(300))
    assert set(picks) == {1, 2, 3} and min(picks.values()) > 60  # every tied node, roughly evenly
    assert [select_node(nodes, round_rng(7, r)).id for r in range(1, 30)] == \
           [select_node(list(reversed(nodes)), round_rng(7, r)).id for r in range(1, 30)]  # order-independent


def test_unscored_nodes_rank_below_scored_ones():
    assert select_node([_node(0, None), _node(1, -5.0, 0)], random.Random(0)).id == 1
    assert select_node([_node(0, None)], random.Random(0)).id == 0
    with pytest.raises(ValueError, match="at least one node"):
        select_node([], random.Random(0))


def test_epsilon_explores_other_nodes():
    nodes = [_node(0, 0.1), _node(1, 0.3, 0), _node(2, 0.2, 0)]
    assert {select_node(nodes, random.Random(seed), epsilon=1.0).id for seed in range(50)} == {0, 1, 2}
    assert {select_node(nodes, random.Random(seed), epsilon=0.0).id for seed in range(50)} == {1}


def test_ancestors_summaries_are_the_nearest_oldest_first():
    chain = {0: _node(0, 0.1)}
    for node_id in range(1, 6):
        chain[node_id] = _node(node_id, 0.1 * node_id, node_id - 1, summary=f"summary {node_id}")
    chain[6] = _node(6, 0.9, 2, summary="a sibling branch")
    assert [n.id for n in ancestor_summaries(chain, 5, 3)] == [3, 4, 5]
    assert [n.id for n in ancestor_summaries(chain, 6, 3)] == [1, 2, 6]
    assert [n.id for n in ancestor_summaries(chain, 1, 3)] == [1]
    assert ancestor_summaries(chain, 0, 3) == [] and ancestor_summaries(chain, 5, 0) == []


# -- whole runs -------------------------------------------------------------------------------------------


def _seed(run_dir: Path) -> Path:
    return run_dir / "seed-0"


def _events(seed: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(seed / "events.jsonl") if e["type"] == kind]


def _first_request(seed: Path, agent: int) -> str:
    return json.dumps(transcript_requests(seed / f"agents/agent-{agent}/transcript.jsonl")[0])


def test_the_o3_spec_has_the_reference_settings():
    from engram.spec import load_spec

    spec = load_spec(REPO / "specs" / "cloudcast_tree_search_o3.yaml")
    assert spec.model.id == "openai/o3" and spec.method.name == "tree_search"
    assert (spec.method.rounds, spec.method.ancestor_summaries, spec.method.epsilon) == (10, 3, 0)


def test_scripted_spec_grows_a_tree(tmp_path: Path):
    """The shipped scripted twin: round 1 improves the root, round 2 scores nothing valid (its
    child repeats node 1), round 3 expands one of the two tied nodes as the seeded rule picks it."""
    outcome = run(SCRIPTED_SPEC, [f"output.dir={tmp_path / 'runs'}", "tracking.mlflow=false",
                                  "problem.scenarios=[intra_azure]"])
    seed = _seed(outcome.run_dir)
    result = json.loads((seed / "result.json").read_text())
    assert result["stop_reason"] == "all 3 rounds finished" and result["evaluations"] == 4
    tree = {n["node"]: n for n in json.loads((seed / "tree.json").read_text())["nodes"]}
    assert set(tree) == {0, 1, 2, 3}
    assert tree[0]["parent"] is None and tree[0]["experiment"] == 1
    assert (seed / tree[0]["program"]).read_text() == (REPO / "evaluators/cloudcast/initial_program.py").read_text()
    assert tree[1]["parent"] == 0 and tree[1]["score"] > tree[0]["score"]
    assert tree[2]["parent"] == 1 and tree[2]["copied"] and tree[2]["score"] == tree[1]["score"]
    assert tree[2]["program"] == tree[1]["program"]
    expected = select_node([Node(i, None, None, tree[i]["score"]) for i in (0, 1, 2)], round_rng(0, 3)).id
    assert tree[3]["parent"] == expected
    assert [(e["round"], e["node"]) for e in _events(seed, "tree_select")] == [(1, 0), (2, 1), (3, expected)]
    # Each agent starts from its node's program, with the summaries of the rounds that led to it.
    first = _first_request(seed, 1)
    assert "### Recommended Next Steps" in first and "Researcher of round" not in first
    second = _first_request(seed, 2)
    assert f"### Researcher of round 1 (score: {tree[1]['score']:.6f})" in second
    assert "Egress dominates the cost" in second
    third = _first_request(seed, 3)
    assert ("Faking edge attributes" in third) == (expected == 2)
    assert "Egress dominates the cost" in third
    assert (seed / "agents/agent-3/workspace/parent_program.py").read_text() == (seed / tree[1]["program"]).read_text()
    assert not (seed / "digest.md").exists()


def test_only_the_nearest_ancestors_summaries_are_carried(tmp_path: Path):
    """No agent scores anything, so every node ties with the root and the seeded tie-break shapes
    the tree; seed 38 happens to grow the chain 0-1-2-3 and expand node 3 in round 4."""
    marks = [f"MARK-{i}" for i in range(1, 4)]
    spec = make_spec(tmp_path, [[{"content": SUMMARY.replace("- something", f"- {mark}")}] for mark in marks]
                     + [[{"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 4, "ancestor_summaries": 2}, problem=PROBLEM)
    outcome = run(spec, ["first_seed=38"])
    seed = outcome.run_dir / "seed-38"
    tree = {n["node"]: n for n in json.loads((seed / "tree.json").read_text())["nodes"]}
    assert [tree[i]["parent"] for i in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert all(tree[i]["copied"] for i in (1, 2, 3, 4))
    fourth = _first_request(seed, 4)
    assert [mark for mark in marks if mark in fourth] == ["MARK-2", "MARK-3"]
    assert fourth.index("Researcher of round 2") < fourth.index("Researcher of round 3")  # oldest first


def test_evaluation_budget_stops_mid_round_and_keeps_the_child(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"content": SUMMARY}], [{"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 2}, problem=PROBLEM, budget={"max_evaluations": 2})
    outcome = run(spec)
    seed = _seed(outcome.run_dir)
    result = json.loads((seed / "result.json").read_text())
    assert result["stop_reason"] == "evaluation budget reached (2)" and result["evaluations"] == 2
    assert [(e["node"], e["parent"], e["experiment"]) for e in _events(seed, "tree_node")] == [(0, None, 1), (1, 0, 2)]
    assert result["agents"] == 1


def test_time_budget_stops_the_search(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]},
                                 {"content": "never reached"}], [{"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 2, "max_minutes": 0.1}, problem=PROBLEM)
    started = time.monotonic()
    outcome = run(spec)
    assert time.monotonic() - started < 45
    seed = _seed(outcome.run_dir)
    result = json.loads((seed / "result.json").read_text())
    assert result["stop_reason"] == "time budget reached (0.1 min)"
    assert [e["reason"] for e in _events(seed, "agent_end")] == ["time limit"]
    assert [e["node"] for e in _events(seed, "tree_node")] == [0, 1]  # round 1 still added its child


def test_metric_names_and_params_match_engram(tmp_path: Path):
    """Engram and tree search in one MLflow experiment: the same metric names on the parent and on
    the agent runs, and the same params outside `method.*`, so the compare view lines them up."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_state_restored():
        for method in ({"name": "engram"}, {"name": "tree_search", "rounds": 1}):
            folder = tmp_path / method["name"]
            folder.mkdir()
            spec = make_spec(folder, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]],
                             method=method, problem=PROBLEM)
            run(spec, [f"tracking.uri={store}", "tracking.mlflow=true"])
        client = mlflow.MlflowClient(tracking_uri=store)
        runs = client.search_runs([client.get_experiment_by_name("cloudcast").experiment_id])
    parents = {r.data.tags["engram.method"]: r.data for r in runs if "mlflow.parentRunId" not in r.data.tags}
    engram, tree = parents["engram"], parents["tree_search"]
    assert set(tree.metrics) == set(engram.metrics) >= {"score", "best_score", "dollars", "tokens"}
    assert tree.metrics["best_score"] == pytest.approx(engram.metrics["best_score"])  # both scored the initial one

    def shared_params(data: Any) -> set[str]:
        return {key for key in data.params if not key.startswith("method.")}

    assert shared_params(tree) == shared_params(engram)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and len({frozenset(r.data.metrics) for r in children}) == 1


def test_killed_mid_round_resumes_without_losing_evaluations_or_nodes(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [write_program("/tree.py", SHARED_TREE)]}, {"tool_calls": [simulate("/tree.py")]},
         {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]}, {"content": "never reached"}],
        [{"tool_calls": [simulate("/parent_program.py")]}, {"content": SUMMARY}],
    ], method={"name": "tree_search", "rounds": 2}, problem=PROBLEM)
    process = start_cli("apply", str(spec))
    pattern = "t/*/seed-0/agents/agent-1/experiments/exp-0002/evaluation.json"
    kill_when(process, lambda: any((tmp_path / "runs").glob(pattern)), settle_s=1.5)  # the shell command runs
    [run_dir] = list((tmp_path / "runs" / "t").iterdir())
    seed = _seed(run_dir)
    assert [e["node"] for e in _events(seed, "tree_node")] == [0]

    finish_cli("apply", str(spec))
    assert len(list((tmp_path / "runs" / "t").iterdir())) == 1  # the same run continued
    assert [e["experiment"] for e in _events(seed, "experiment")] == [1, 2, 3]
    assert [(e["node"], e["parent"], e["experiment"]) for e in _events(seed, "tree_node")] == [
        (0, None, 1), (1, 0, 2), (2, 1, 3)]  # round 1's better program was kept and expanded
    assert [(e["agent"], e["reason"]) for e in _events(seed, "agent_end")] == [(1, "interrupted"), (2, "completed")]
    assert "the run was interrupted" in _first_request(seed, 2)  # round 1's log-based summary was carried
    assert json.loads((seed / "result.json").read_text())["stop_reason"] == "all 2 rounds finished"
