"""The single-agent baseline ("Glia") end to end, offline, with a scripted agent on cloudcast."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import INITIAL_SCORE, REPO
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

from engram.methods.digest import prompt
from engram.models.llm import transcript_requests
from engram.runs.archive import read_jsonl
from engram.runs.runner import RunOutcome

SHARED_TREE = (REPO / "specs" / "scripts" / "single_agent.yaml").read_text()
KEEP_GOING = prompt("keep_going").strip()
PROBLEM = {"scenarios": ["intra_azure"], "time_limit_s": 20}
DIRECT = ("def search_algorithm(src, dsts, G, num_partitions):\n"
          "    return {d: {str(p): [[src, d, G[src][d]]] for p in range(num_partitions)} for d in dsts}\n")


def _shared_tree_program() -> str:
    import yaml

    turns = yaml.safe_load(SHARED_TREE)["agents"][0]["turns"]
    return next(call["args"]["content"] for turn in turns for call in turn.get("tool_calls", [])
                if call["name"] == "write_file")


def _seed(outcome: RunOutcome) -> Path:
    return outcome.run_dir / "seed-0"


def _events(seed: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(seed / "events.jsonl") if e["type"] == kind]


def _single_agent(tmp_path: Path, agents: list[list[dict[str, Any]]], **method: Any) -> Path:
    return make_spec(tmp_path, agents, method={"name": "single_agent", **method}, problem=PROBLEM)


def test_continued_until_continuations_stop_improving(tmp_path: Path, restore_mlflow: None):
    """Turn 0 measures; continuation 1 finds a better program (idle count back to 0); continuations
    2 and 3 bring nothing better, so with patience 2 the run stops after the third."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _single_agent(tmp_path, [[
        {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"content": "Measured. I stop here."},
        {"tool_calls": [write_program("/tree.py", _shared_tree_program())]},
        {"tool_calls": [simulate("/tree.py")]},
        {"content": "Better."},
        {"tool_calls": [write_program("/direct.py", DIRECT)]},
        {"tool_calls": [simulate("/direct.py")]},
        {"content": "Worse."},
        {"tool_calls": [{"name": "ls", "args": {"path": "/archive/"}}]},
    ]], patience=2)
    outcome = run(spec, [f"tracking.uri={store}", "tracking.mlflow=true"])
    seed = _seed(outcome)
    result = json.loads((seed / "result.json").read_text())
    assert result["stop_reason"] == "no new best score in 2 consecutive continuations"
    assert result["evaluations"] == 3 and result["agents"] == 1
    turns = _events(seed, "turn_end")
    assert [(t["continuation"], t["idle"], t["continuations"]) for t in turns] == [
        (False, 0, 0), (True, 0, 1), (True, 1, 2), (True, 2, 3)]
    assert turns[1]["best_score"] > INITIAL_SCORE
    # One conversation: the last request holds the first message, every continuation and every reply.
    requests = transcript_requests(seed / "agents/agent-1/transcript.jsonl")
    last = requests[-1]
    humans = [m["content"] for m in last if m["type"] == "human"]
    assert len(humans) == 4 and all(KEEP_GOING in str(h) for h in humans[1:])
    assert "Measured. I stop here." in json.dumps(last) and "Worse." in json.dumps(last)
    # Same tools as an Engram agent, no digest, and /archive/ holds only its own experiments.
    system = str(last[0]["content"])
    assert "/digest.md" not in system and "Research Digest" not in system and "run_simulation" in system
    listing = [m for m in last if m["type"] == "tool"][-1]  # the answer to `ls /archive/`
    assert "/archive/agent-1" in str(listing["content"]) and "agent-2" not in str(listing["content"])
    assert not (seed / "digest.md").exists()
    _assert_metric_names_match_engram(tmp_path, store, outcome)


def _assert_metric_names_match_engram(tmp_path: Path, store: str, outcome: RunOutcome) -> None:
    """An Engram run in the same MLflow experiment logs the same metric names and the same params
    outside `method.*`, so the compare view lines the two up."""
    import mlflow

    engram_dir = tmp_path / "engram"
    engram_dir.mkdir()
    engram_spec = make_spec(engram_dir, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]],
                            problem=PROBLEM)
    run(engram_spec, [f"tracking.uri={store}", "tracking.mlflow=true"])
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("cloudcast")
    runs = client.search_runs([experiment.experiment_id])
    by_method: dict[str, dict[str, Any]] = {}
    for found in runs:
        if "mlflow.parentRunId" in found.data.tags:
            continue
        by_method[found.data.tags["engram.method"]] = found.data
    assert set(by_method) == {"engram", "single_agent"}
    engram, single = by_method["engram"], by_method["single_agent"]
    assert set(single.metrics) == set(engram.metrics) >= {"score", "best_score", "dollars", "tokens"}

    def shared_params(data: Any) -> set[str]:
        return {key for key in data.params if not key.startswith("method.")}

    assert shared_params(single) == shared_params(engram)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len({frozenset(r.data.metrics) for r in children}) == 1  # agent runs: same names too


def test_shipped_specs(tmp_path: Path):
    """The o3 spec has the reference settings; its scripted twin runs offline."""
    from engram.spec import load_spec

    spec = load_spec(REPO / "specs" / "cloudcast_single_agent_o3.yaml")
    assert spec.model.id == "openai/o3" and spec.method.name == "single_agent"
    assert (spec.method.max_minutes, spec.method.patience) == (60, 10)
    outcome = run(REPO / "specs" / "cloudcast_single_agent_scripted.yaml",
                  [f"output.dir={tmp_path}", "tracking.mlflow=false", "problem.scenarios=[intra_azure]",
                   "method.patience=1"])
    result = json.loads((_seed(outcome) / "result.json").read_text())
    assert result["stop_reason"] == "no new best score in 1 consecutive continuation"
    assert result["evaluations"] == 3 and result["best_experiment"] == 2


def test_evaluation_budget_stops_the_run(tmp_path: Path):
    spec = _single_agent(tmp_path, [[
        {"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "never reached"},
    ]])
    outcome = run(spec, ["budget.max_evaluations=2"])
    seed = _seed(outcome)
    result = json.loads((seed / "result.json").read_text())
    assert result["stop_reason"] == "evaluation budget reached (2)" and result["evaluations"] == 2
    assert [e["reason"] for e in _events(seed, "agent_end")] == ["evaluation budget reached (2)"]


def test_time_budget_stops_the_run_even_during_a_tool_call(tmp_path: Path):
    spec = _single_agent(tmp_path, [[
        {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]},
        {"content": "never reached"},
    ]], max_minutes=0.1)
    started = time.monotonic()
    outcome = run(spec)
    assert time.monotonic() - started < 45  # the 60 s command was cut at the session's deadline
    result = json.loads((_seed(outcome) / "result.json").read_text())
    assert result["stop_reason"] == "time budget reached (0.1 min)"
    assert result["evaluations"] == 1


def test_continuation_limit(tmp_path: Path):
    spec = _single_agent(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "Done."}]],
                         max_continuations=1, patience=5)
    outcome = run(spec)
    seed = _seed(outcome)
    assert json.loads((seed / "result.json").read_text())["stop_reason"] == "continuation limit reached (1)"
    assert [t["continuation"] for t in _events(seed, "turn_end")] == [False, True]


def test_a_turn_cut_at_its_step_limit_is_rebuilt_and_continued(tmp_path: Path):
    """As in the reference: a stream cut at its step limit rebuilds the agent, which continues its
    conversation after a notice (no continuation message, no patience used); five in a row end it."""
    spec = _single_agent(tmp_path, [[
        {"tool_calls": [INITIAL_PROGRAM_CALL]}, *[{"tool_calls": [{"name": "ls", "args": {"path": "/"}}]}] * 3,
        {"content": "after the cut"},
    ]], max_steps_per_turn=5, patience=2)
    outcome = run(spec)
    seed = _seed(outcome)
    rebuilds = _events(seed, "agent_rebuild")
    assert rebuilds and all(r["error"] == "step limit (5)" for r in rebuilds)
    last = transcript_requests(seed / "agents/agent-1/transcript.jsonl")[-1]
    assert sum("was restarted with its conversation" in str(m["content"]) for m in last if m["type"] == "human") \
        == len(rebuilds)


def _turn_ends(tmp_path: Path) -> list[dict[str, Any]]:
    logs = list((tmp_path / "runs").glob("t/*/seed-0/events.jsonl"))
    return [e for e in read_jsonl(logs[0]) if e["type"] == "turn_end"] if logs else []


def test_killed_mid_session_resumes_with_a_fresh_session(tmp_path: Path):
    """SIGKILL during the agent's shell command: on resume every experiment is there once, the
    killed session is closed, and a new session continues from the experiment log and best program,
    keeping the continuation and no-improvement counts of the killed one."""
    spec = _single_agent(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "First turn done."}, {"content": "Nothing new."},
         {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]}, {"content": "never reached"}],
        [{"tool_calls": [simulate("/best_program.py")]}, {"content": "Re-measured."}],
    ], patience=2)
    process = start_cli("apply", str(spec))
    kill_when(process, lambda: len(_turn_ends(tmp_path)) >= 2, settle_s=1.5)  # the continuation's command runs
    [run_dir] = list((tmp_path / "runs" / "t").iterdir())
    seed = run_dir / "seed-0"
    assert not (seed / "result.json").exists()

    finish_cli("resume", str(run_dir))
    assert [e["experiment"] for e in _events(seed, "experiment")] == [1, 2]
    assert [(e["agent"], e["reason"]) for e in _events(seed, "agent_end")] == [
        (1, "interrupted"), (2, "no new best score in 2 consecutive continuations")]
    assert [(t["agent"], t["continuations"], t["idle"]) for t in _events(seed, "turn_end")] == [
        (1, 0, 0), (1, 1, 1), (2, 1, 1), (2, 2, 2)]
    first = json.dumps(transcript_requests(seed / "agents/agent-2/transcript.jsonl")[0])
    assert "Your session was interrupted" in first and "exp-0001" in first
    second = json.loads((seed / "agents/agent-2/experiments/exp-0002/evaluation.json").read_text())
    assert second["score"] == pytest.approx(_events(seed, "experiment")[0]["score"])  # it re-scored the best
