"""The Engram method end to end, offline, with scripted agents on cloudcast."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import INITIAL_SCORE, REPO
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run, simulate, write_program

from engram.models.llm import transcript_requests
from engram.runs.archive import read_jsonl
from engram.runs.runner import RunOutcome

SLEEPY = "import time\n\ndef search_algorithm(src, dsts, G, num_partitions):\n    time.sleep(60)\n"


def _seed(outcome: RunOutcome) -> Path:
    return outcome.run_dir / "seed-0"


def _events(outcome: RunOutcome, kind: str) -> list[dict]:
    return [e for e in read_jsonl(_seed(outcome) / "events.jsonl") if e["type"] == kind]


def test_smoke_spec_runs_offline_with_mlflow(tmp_path: Path):
    store = tmp_path / "mlruns" / "mlflow.db"
    outcome = run(REPO / "specs" / "smoke.yaml",
                  [f"output.dir={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{store}"])
    seed = _seed(outcome)
    # Layout of the run directory.
    for relative in ("events.jsonl", "digest.md", "result.json", "best/program.py", "best/evaluation.json",
                     "agents/agent-1/summary.md", "agents/agent-1/transcript.jsonl", "agents/agent-1/workspace",
                     "agents/agent-2/summary.md", "agents/agent-1/experiments/exp-0001/program.py",
                     "agents/agent-1/experiments/exp-0001/evaluation.json"):
        assert (seed / relative).exists(), relative
    assert (outcome.run_dir / "spec.resolved.yaml").is_file()
    result = json.loads((seed / "result.json").read_text())
    assert result["agents"] == 2 and result["evaluations"] == 4
    assert result["best_score"] > INITIAL_SCORE  # agent 1 improved on the initial program
    assert result["usage"]["dollars"] > 0 and result["usage"]["unknown_price_calls"] == 0
    digest = (seed / "digest.md").read_text()
    assert "## Agent 1" in digest and "## Agent 2" in digest and "### Key Insights" in digest
    # Experiment numbers are unique and logged once each.
    numbers = [e["experiment"] for e in _events(outcome, "experiment")]
    assert numbers == [1, 2, 3, 4]
    # MLflow mirrors the run: one parent, one nested run per agent, metrics and traces.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("cloudcast")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.metrics["best_score"] == pytest.approx(result["best_score"])
    assert parents[0].data.params["budget.max_agents"] == "2"
    history = client.get_metric_history(parents[0].info.run_id, "score")
    assert [m.step for m in history] == [1, 2, 4]  # exp 3 failed and has no score
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert len(traces) > 0


def test_missing_api_key_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """"At once" means before any work: no problem loaded, no data fetched, no run directory, no agent."""
    from click.testing import CliRunner

    import engram.problems.problem
    from engram.cli import main

    for name in [k for k in os.environ if k.endswith("_API_KEY")]:
        monkeypatch.delenv(name)

    def too_late(*args: object, **kwargs: object) -> None:
        raise AssertionError("the problem was loaded before the key was checked")

    monkeypatch.setattr(engram.problems.problem, "load_problem", too_late)
    done = CliRunner().invoke(main, ["apply", str(REPO / "specs" / "cloudcast_o3.yaml"),
                                     "--set", f"output.dir={tmp_path}"])
    assert done.exit_code == 2, done.output
    assert "OPENAI_API_KEY" in done.output and "Traceback" not in done.output
    assert not any(tmp_path.iterdir())  # nothing was started


def test_bad_tool_arguments_are_answered_not_fatal(tmp_path: Path):
    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "run_simulation", "args": {}}]},
        {"tool_calls": [simulate("/does_not_exist.py")]},
        {"tool_calls": [{"name": "read_file", "args": {"file_path": "/nope.txt"}}]},
        {"tool_calls": [{"name": "write_file", "args": {"file_path": "/archive/x.py", "content": "x"}}]},
        {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"content": SUMMARY},
    ]])
    outcome = run(spec)
    assert [e["score"] for e in _events(outcome, "experiment")] == [pytest.approx(1 / (1 + 165.024 + 144.945))]
    transcript = (_seed(outcome) / "agents/agent-1/transcript.jsonl").read_text()
    assert "is not a file in your workspace" in transcript
    assert not (_seed(outcome) / "agents" / "x.py").exists()  # the archive is read-only
    assert _events(outcome, "agent_end")[0]["reason"] == "completed"


def test_time_limit_is_enforced_during_a_tool_call(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [write_program("/slow.py", SLEEPY)]}, {"tool_calls": [simulate("/slow.py")]},
         {"content": "never reached"}],
        [{"tool_calls": [{"name": "execute", "args": {"command": "sleep 60; echo done"}}]},
         {"content": "never reached"}],
    ], budget={"minutes_per_agent": 0.1})
    started = time.monotonic()
    outcome = run(spec)
    assert time.monotonic() - started < 45
    ends = _events(outcome, "agent_end")
    assert [e["reason"] for e in ends] == ["time limit", "time limit"]
    [experiment] = _events(outcome, "experiment")
    assert experiment["error_kind"] == "timeout"
    # As in the reference, a timed-out agent's summary comes from one call over its whole conversation.
    assert (_seed(outcome) / "agents/agent-1/summary.md").read_text() == "never reached\n"
    last = transcript_requests(_seed(outcome) / "agents/agent-1/transcript.jsonl")[-1]
    assert last[0]["type"] == "system" and "/slow.py" in json.dumps(last)
    assert "Summary for Next Agent" in json.dumps(last[-1])


def test_agent_without_summary_gets_one_from_its_log(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "All done."}]])
    outcome = run(spec)
    summary = (_seed(outcome) / "agents/agent-1/summary.md").read_text()
    assert "### Best Result" in summary and "exp-0001" in summary
    assert "left no summary" in summary


def test_follow_up_turn_collects_the_summary(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "All done."},
                                 {"content": SUMMARY}]])
    outcome = run(spec)
    assert (_seed(outcome) / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()


def test_rate_limit_is_retried_then_succeeds(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"error": "rate_limit"}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"content": SUMMARY}]], model={"max_retries": 2})
    outcome = run(spec)
    assert len(_events(outcome, "experiment")) == 1
    transcript = read_jsonl(_seed(outcome) / "agents/agent-1/transcript.jsonl")
    assert any(line["type"] == "error" and "RateLimit" in line["error"] for line in transcript)


def test_dollar_cap_ends_the_run_cleanly(tmp_path: Path):
    turns = [{"content": "thinking " * 50, "usage": {"input_tokens": 100_000, "output_tokens": 10_000},
              "tool_calls": [INITIAL_PROGRAM_CALL]}] * 5 + [{"content": SUMMARY}]
    spec = make_spec(tmp_path, [turns, [{"content": SUMMARY}]], budget={"max_dollars": 0.5})
    outcome = run(spec)
    result = json.loads((_seed(outcome) / "result.json").read_text())
    assert "dollar budget" in result["stop_reason"] or "max_dollars" in result["stop_reason"]
    assert result["dollars"] < 0.5 + 0.3 * 2  # at most the call that crossed the cap (o3: $0.28 per call here)
    assert result["agents"] == 1  # agent 2 never started
    assert (_seed(outcome) / "agents/agent-1/summary.md").is_file()


def test_ablation_without_digest_and_archive(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
        [{"tool_calls": [{"name": "ls", "args": {"path": "/archive/"}}]},
         {"tool_calls": [{"name": "read_file", "args": {"file_path": "/digest.md"}}]}, {"content": SUMMARY}],
    ], method={"digest": False, "archive": False})
    outcome = run(spec)
    seed = _seed(outcome)
    assert not (seed / "digest.md").exists()
    requests = transcript_requests(seed / "agents/agent-2/transcript.jsonl")
    assert "first agent" not in json.dumps(requests[0][1:])  # agent 2 is not told it is the first
    assert "Summary for Next Agent" not in json.dumps(requests)  # no summary asked for, at all
    listing = next(m for m in requests[-1] if m["type"] == "tool")  # the answer to `ls /archive/`
    assert "/archive/transcript.jsonl" in str(listing["content"])
    assert "agent-1" not in str(listing["content"])  # agent 2 sees only its own folder
    assert "digest.md" not in str(requests[0][0]["content"])  # no digest in its workspace map
    assert not (seed / "agents/agent-1/summary.md").exists()  # without the digest there are no summaries


def test_digest_is_distilled_when_too_long(tmp_path: Path):
    long_summary = SUMMARY.replace("- something", "- " + "insight " * 400)
    spec = make_spec(tmp_path, [[{"content": long_summary}], [{"content": SUMMARY}]],
                     distill=["# Distilled\n\nShort digest."], method={"digest_max_tokens": 300})
    outcome = run(spec)
    seed = _seed(outcome)
    records = sorted((seed / "digests").glob("distill-*.json"))
    assert records, "no distillation recorded"
    record = json.loads(records[0].read_text())
    assert "insight insight" in record["input"] and record["output"].startswith("# Distilled")
    assert (seed / "digest.md").read_text().startswith("# Distilled")
    assert (seed / "agents/agent-1/summary.md").read_text().count("insight") > 100  # raw summary kept


def test_no_runner_secret_reaches_the_agents_shell_or_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-show-this-123")
    probe = ("import os\nprint('CANDIDATE_ENV', sorted(os.environ.items()))\n"
             + (REPO / "evaluators/cloudcast/initial_program.py").read_text())
    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "execute", "args": {"command": "env; cat /proc/$PPID/environ | tr '\\0' ' '"}}]},
        {"tool_calls": [write_program("/probe.py", probe)]},
        {"tool_calls": [simulate("/probe.py")]},
        {"content": SUMMARY},
    ]])
    outcome = run(spec)
    transcript = (_seed(outcome) / "agents/agent-1/transcript.jsonl").read_text()
    assert "CANDIDATE_ENV" in transcript and "PYTHONHASHSEED" in transcript
    assert "sk-never-show-this-123" not in transcript.replace(
        json.dumps("sk-never-show-this-123"), "")  # only the probe source may mention it
    evaluation = (_seed(outcome) / "agents/agent-1/experiments/exp-0001/evaluation.json").read_text()
    assert "sk-never-show-this-123" not in evaluation


def test_the_helper_sub_agent_obeys_the_agents_deadline(tmp_path: Path):
    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "task", "args": {"description": "Wait a long time in the shell.",
                                                  "subagent_type": "general-purpose"}}]},
        {"tool_calls": [{"name": "execute", "args": {"command": "sleep 60"}}]},  # played by the helper
        {"content": "the helper keeps talking"},
        {"content": "never reached"},
    ]], budget={"minutes_per_agent": 0.1})
    started = time.monotonic()
    outcome = run(spec)
    assert time.monotonic() - started < 40
    assert _events(outcome, "agent_end")[0]["reason"] == "time limit"
    responses = [line for line in read_jsonl(_seed(outcome) / "agents/agent-1/transcript.jsonl")
                 if line["type"] == "response"]
    # The helper was stopped at the deadline, so its next turn went to the (bounded) summary request
    # instead; a helper without the agent's limits would have used it, and the summary the last turn.
    assert "never reached" not in json.dumps(responses)


def test_agents_get_the_problems_exploration_files(tmp_path: Path):
    spec = make_spec(tmp_path, [[
        {"tool_calls": [{"name": "ls", "args": {"path": "/data/"}}]},
        {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"content": SUMMARY},
    ]], problem={"name": "llm_sql", "scenarios": ["samples"]},
        sandbox={"backend": "auto"})
    outcome = run(spec)
    requests = transcript_requests(_seed(outcome) / "agents/agent-1/transcript.jsonl")
    assert "/data/`: data to explore" in json.dumps(requests[0])
    listing = next(m for m in requests[-1] if m["type"] == "tool")
    assert "/data/beer_sample.csv" in str(listing["content"]) and "/data/PDMX_sample.csv" in str(listing["content"])
    [experiment] = _events(outcome, "experiment")
    assert experiment["ok"]


def test_tampered_problem_files_stop_the_run_with_a_clear_error(tmp_path: Path,
                                                                interpreter_behind_closed_directory: Path):
    """A candidate that stays root (`process` behind a closed interpreter, where no unprivileged uid can
    be used) can overwrite the evaluator; the run must stop, not go on."""
    import shutil

    from engram.errors import IntegrityError

    problem_dir = tmp_path / "cloudcast"
    shutil.copytree(REPO / "evaluators" / "cloudcast", problem_dir, ignore=shutil.ignore_patterns("__pycache__"))
    vandal = (f"open({str(problem_dir / 'evaluator.py')!r}, 'a').write('# tampered\\n')\n"
              + (REPO / "evaluators/cloudcast/initial_program.py").read_text())
    spec = make_spec(tmp_path, [[
        {"tool_calls": [write_program("/vandal.py", vandal)]},
        {"tool_calls": [simulate("/vandal.py")]},
        {"tool_calls": [INITIAL_PROGRAM_CALL]},
        {"content": SUMMARY},
    ], [{"content": SUMMARY}]], problem={"name": str(problem_dir)}, sandbox={"backend": "process"})
    with pytest.raises(IntegrityError, match="changed while Engram was running"):
        run(spec)
    [run_dir] = list((tmp_path / "runs" / "t").iterdir())
    events = read_jsonl(run_dir / "seed-0" / "events.jsonl")
    assert [e["experiment"] for e in events if e["type"] == "experiment"] == [1]  # recorded before the stop
    assert not any(e["type"] == "agent_start" and e["agent"] == 2 for e in events)
