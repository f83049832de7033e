"""`engram replay` and `engram rescore`: a recorded scripted run replays with every score identical; a
changed evaluator makes both fail and name the experiments whose scores moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from uuid import uuid4

import litellm
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run, simulate, write_program
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from engram.cli import main
from engram.models.calls import MalformedReply, billed_tokens
from engram.models.llm import UsageCallback, UsageLedger, is_retryable
from engram.models.playback import RecordedModelError, _Player, recorded_calls, recorded_error, split_conversations
from engram.runs.progress import QuietProgress
from engram.runs.replay import replay_run
from engram.runs.rescore import SCORES_DIFFER_EXIT_CODE, recorded_scores

DIRECT = (REPO / "evaluators" / "cloudcast" / "baselines" / "direct.py").read_text()
BROKEN = "def search_algorithm(src, dsts, G, num_partitions):\n    return {'not': 'a topology'}\n"
SCORE_LINE = "return 1.0 / (1.0 + total_cost)"


def copy_problem(target: Path) -> Path:
    shutil.copytree(REPO / "evaluators" / "cloudcast", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished scripted run with a retried rate limit, a failed candidate and a digest distillation."""
    root = tmp_path_factory.mktemp("recorded")
    problem = copy_problem(root / "cloudcast_copy")
    agents = [
        [{"error": "rate_limit"},
         {"content": "Measure the start.", "tool_calls": [INITIAL_PROGRAM_CALL]},
         {"tool_calls": [write_program("/direct.py", DIRECT)]},
         {"tool_calls": [simulate("/direct.py")]},
         {"content": SUMMARY}],
        [{"tool_calls": [write_program("/broken.py", BROKEN)]},
         {"tool_calls": [simulate("/broken.py")]},
         {"tool_calls": [simulate("/best_program.py")]},
         {"content": SUMMARY}],
    ]
    spec = make_spec(root, agents, distill=["# Research Digest (distilled)\nShort."],
                     problem={"name": str(problem)},
                     method={"digest_max_tokens": 40, "handover_in_first_message": True},
                     sandbox={"backend": "process"})
    return run(spec).run_dir


def test_replay_reproduces_every_score_turn_and_dollar(recorded: Path, tmp_path: Path) -> None:
    outcome = replay_run(recorded, QuietProgress(), out=tmp_path / "replay")

    assert [p.label for p in outcome.comparison.pairs] == [f"seed-0/exp-000{n}" for n in range(1, 5)]
    assert outcome.comparison.identical
    assert [p.after.experiment for p in outcome.comparison.pairs] == [1, 2, 3, 4]
    assert outcome.transcripts_identical, outcome.transcript_notes
    recorded_dollars, replayed_dollars = outcome.dollars[0]
    assert recorded_dollars is not None and recorded_dollars > 0 and replayed_dollars == recorded_dollars
    # The rate limit was recorded with its type, and the replay raised it again (and retried).
    for run_dir in (recorded, outcome.replay_dir):
        errors = [c.error for c in recorded_calls(run_dir / "seed-0/agents/agent-1/transcript.jsonl") if c.error]
        assert [e["error_type"] for e in errors] == ["litellm.exceptions.RateLimitError"]
    distilled = recorded_calls(outcome.replay_dir / "seed-0/digests/transcript.jsonl")
    assert distilled and distilled[0].response["message"]["content"].startswith("# Research Digest (distilled)")
    record = json.loads((outcome.replay_dir / "replay.json").read_text())
    assert record["identical"] and record["source"] == str(recorded.resolve())


def test_changed_evaluator_fails_rescore_and_replay_naming_the_experiments(recorded: Path, tmp_path: Path) -> None:
    changed = copy_problem(tmp_path / "cloudcast_changed")
    evaluator = changed / "evaluator.py"
    assert SCORE_LINE in evaluator.read_text()
    evaluator.write_text(evaluator.read_text().replace(SCORE_LINE, "return 1.0 / (2.0 + total_cost)"))
    scored = {f"seed-0/exp-{r.experiment:04d}" for r in recorded_scores(recorded) if r.ok}
    failed = {f"seed-0/exp-{r.experiment:04d}" for r in recorded_scores(recorded) if not r.ok}
    assert len(scored) == 3 and len(failed) == 1
    originals = {p: p.read_bytes() for p in recorded.glob("seed-0/agents/*/experiments/*/evaluation.json")}

    cli = CliRunner()
    refused = cli.invoke(main, ["rescore", str(recorded), "--problem", str(changed)])
    assert refused.exit_code == 2 and "--accept-changed-problem" in refused.output, refused.output
    assert not list(recorded.glob("seed-0/agents/*/experiments/*/rescores"))
    rescored = cli.invoke(main, ["rescore", str(recorded), "--problem", str(changed), "--accept-changed-problem"])
    assert rescored.exit_code == SCORES_DIFFER_EXIT_CODE, rescored.output
    meta = yaml.safe_load((recorded / "spec.resolved.yaml").read_text())["meta"]
    assert [a["command"] for a in meta["accepted_problem_changes"]] == ["rescore"]
    assert meta["problem_fingerprint"] == meta["accepted_problem_changes"][0]["recorded_fingerprint"]
    events = [json.loads(line) for line in (recorded / "seed-0" / "events.jsonl").read_text().splitlines()]
    assert [e["command"] for e in events if e["type"] == "problem_change_accepted"] == ["rescore"]
    assert moved_experiments(rescored.output) == scored
    assert "note: the problem's trusted files changed since the run" in rescored.output
    assert {p: p.read_bytes() for p in originals} == originals  # the record is never overwritten
    fresh = sorted(recorded.glob("seed-0/agents/*/experiments/*/rescores/*/evaluation.json"))
    assert len(fresh) == 4
    new_scores = [json.loads(p.read_text())["score"] for p in fresh]
    old_scores = [json.loads(p.parent.parent.parent.joinpath("evaluation.json").read_text())["score"] for p in fresh]
    for new, old in zip(new_scores, old_scores, strict=True):
        assert (new is None and old is None) or new == pytest.approx(1 / (1 / old + 1))

    unchanged = cli.invoke(main, ["rescore", str(recorded), "--changes-only"])
    assert unchanged.exit_code == 0, unchanged.output
    assert "4 experiment(s): all scores identical" in unchanged.output

    refused = cli.invoke(main, ["replay", str(recorded), "-q", "--problem", str(changed),
                                "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "--accept-changed-problem" in refused.output, refused.output
    replayed = cli.invoke(main, ["replay", str(recorded), "-q", "--problem", str(changed),
                                 "--out", str(tmp_path / "replay"), "--accept-changed-problem"])
    assert replayed.exit_code == SCORES_DIFFER_EXIT_CODE, replayed.output
    replay_meta = yaml.safe_load((tmp_path / "replay" / "spec.resolved.yaml").read_text())["meta"]
    assert [a["command"] for a in replay_meta["accepted_problem_changes"]] == ["replay"]
    assert json.loads((tmp_path / "replay" / "replay.json").read_text())["accepted_problem_change"]
    assert moved_experiments(replayed.output) == scored


def moved_experiments(output: str) -> set[str]:
    summary = next(line for line in output.splitlines() if " moved: " in line)
    return set(summary.split(" moved: ", 1)[1].split(", "))


# -- playback, unit by unit ---------------------------------------------------------------------------


def record_calls(path: Path, calls: list[tuple[list, AIMessage | Exception]]) -> None:
    """Write a transcript with the real recorder, as a run would."""
    callback = UsageCallback(UsageLedger(), model_id="scripted", price_model=None, transcript=path, agent=1)
    for messages, outcome in calls:
        run_id = uuid4()
        callback.on_chat_model_start({}, [messages], run_id=run_id)
        if isinstance(outcome, Exception):
            callback.on_llm_error(outcome, run_id=run_id)
        else:
            callback.on_llm_end(LLMResult(generations=[[ChatGeneration(message=outcome)]]), run_id=run_id)


def reply(text: str, call_id: str | None = None) -> AIMessage:
    calls = [{"name": "read_file", "args": {"file_path": "/x"}, "id": call_id, "type": "tool_call"}] if call_id else []
    return AIMessage(content=text, tool_calls=calls,
                     usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12})


def records(messages: list) -> list[dict]:
    from engram.models.llm import message_record

    return [message_record(m) for m in messages]


def test_player_follows_conversations_not_call_order(tmp_path: Path) -> None:
    """Recorded: an agent's loop (stopped by its time limit after two turns), then its summary
    request; two helpers. The replay asks the loop for a third turn, and starts the helpers the
    other way round: each request still gets its own recorded reply."""
    system, task = SystemMessage("You are agent 1."), HumanMessage("Improve the program.")
    first, second = reply("reading", "call_a"), reply("still reading", "call_b")
    loop_1 = [system, task]
    loop_2 = [*loop_1, first, ToolMessage("file text", tool_call_id="call_a")]
    loop_3 = [*loop_2, second, ToolMessage("file text", tool_call_id="call_b")]
    summary_request = [HumanMessage("Write your summary.")]
    helper_x = [SystemMessage("helper"), HumanMessage("job X")]
    helper_y = [SystemMessage("helper"), HumanMessage("job Y")]
    transcript = tmp_path / "transcript.jsonl"
    record_calls(transcript, [(loop_1, first), (loop_2, second), (summary_request, reply("## Summary")),
                              (helper_x, reply("X done")), (helper_y, reply("Y done"))])
    calls = recorded_calls(transcript)
    assert [len(c) for c in split_conversations(calls)] == [2, 1, 1, 1]

    player = _Player(split_conversations(calls))
    assert player.next_call(records(loop_1)).response["message"]["content"] == "reading"
    assert player.next_call(records(loop_2)).response["message"]["tool_calls"][0]["id"] == "call_b"
    assert player.next_call(records(loop_3)) is None  # the recording's agent stopped here
    assert player.next_call(records(summary_request)).response["message"]["content"] == "## Summary"
    assert player.next_call(records(helper_y)).response["message"]["content"] == "Y done"
    assert player.next_call(records(helper_x)).response["message"]["content"] == "X done"
    assert player.next_call(records([HumanMessage("anything else")])) is None


def test_recorded_errors_come_back_as_the_same_kind() -> None:
    rate_limit = recorded_error({"error_type": "litellm.exceptions.RateLimitError",
                                 "error": "litellm.RateLimitError: slow down"})
    assert isinstance(rate_limit, litellm.RateLimitError) and is_retryable(rate_limit)
    assert str(rate_limit).endswith("slow down")
    bad = recorded_error({"error_type": "litellm.exceptions.BadRequestError", "error": "litellm.BadRequestError: no"})
    assert isinstance(bad, litellm.BadRequestError) and not is_retryable(bad)
    server = recorded_error({"error_type": "litellm.exceptions.APIError", "error": "boom", "status_code": 503})
    assert is_retryable(server)
    other = recorded_error({"error_type": "builtins.ValueError", "error": "ValueError('x')"})
    assert isinstance(other, RecordedModelError) and not is_retryable(other)
    # litellm's Responses API bridge called a rate limit a bad request; its status made it a retry.
    bridged = recorded_error({"error_type": "litellm.exceptions.BadRequestError", "error": "slow down",
                              "status_code": 429})
    assert isinstance(bridged, litellm.BadRequestError) and is_retryable(bridged)
    empty = recorded_error({"error_type": "engram.models.calls.MalformedReply", "error": "no choices",
                            "usage": {"input_tokens": 100, "output_tokens": 20}})
    assert isinstance(empty, MalformedReply) and is_retryable(empty) and billed_tokens(empty) == (100, 20)
    recorded = repr(MalformedReply("the provider answered HTTP 200 without any choices"))
    assert repr(recorded_error({"error_type": "engram.models.calls.MalformedReply", "error": recorded})) == recorded
    # An empty Responses API reply: litellm's bridge fails on it, but the provider billed it.
    bridged_empty = recorded_error({"error_type": "litellm.exceptions.APIConnectionError", "status_code": 500,
                                    "error": "Unknown items in responses API response: []",
                                    "usage": {"input_tokens": 100, "output_tokens": 20}})
    assert isinstance(bridged_empty, litellm.APIConnectionError) and is_retryable(bridged_empty)
    assert billed_tokens(bridged_empty) == (100, 20)


def test_player_starts_the_most_similar_recorded_conversation(tmp_path: Path) -> None:
    """A caller that asks in another order, with prompts that differ in a detail (a score), still gets
    the reply recorded for its own prompt."""
    system = SystemMessage("Improve the program you are shown.")
    transcript = tmp_path / "transcript.jsonl"
    record_calls(transcript, [
        ([system, HumanMessage("Program: def route(): return 'cheapest path'  # score 0.10")], reply("tree variant")),
        ([system, HumanMessage("Program: def route(): return 'direct edges'  # score 0.08")], reply("relay variant")),
    ])
    player = _Player(split_conversations(recorded_calls(transcript)))
    asked = records([system, HumanMessage("Program: def route(): return 'direct edges'  # score 0.09")])
    assert player.next_call(asked).response["message"]["content"] == "relay variant"
    asked = records([system, HumanMessage("Program: def route(): return 'cheapest path'  # score 0.11")])
    assert player.next_call(asked).response["message"]["content"] == "tree variant"
