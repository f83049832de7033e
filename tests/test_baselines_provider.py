"""The LLM-call baselines against a real provider path: litellm's HTTP client and the local server.

One-shot, best-shot and evolution ask for programs through the same retry layer as the agents
(`engram.models.calls`): these tests script provider faults in `tests/openai_server.py` and check
what a run makes of them -- every attempt one transcript entry, Retry-After and the agents' backoff,
billed empty replies, a stop with exit code 2 that resumes, budgets and deadlines that hold while
retrying, and a replay of the faulty run that matches it call for call.

The retry layer's waits are recorded instead of slept (`waits`), so nothing here depends on time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from click.testing import CliRunner
from conftest import require_module
from openai_server import EMPTY_CHOICES, HANG, MALFORMED, FakeOpenAI, Reply, ToolCall, status

from engram.cli import main
from engram.errors import ProviderError
from engram.models import calls
from engram.models.llm import price_per_token
from engram.runs.archive import SeedArchive
from engram.runs.progress import QuietProgress
from engram.runs.replay import replay_run
from engram.runs.runner import RunOutcome, apply, resume

MODEL = "openai/gpt-4o-mini"
PROGRAM = """def search_algorithm(src, dsts, G, num_partitions):
    return {dst: {str(p): [[src, dst, G[src][dst]]] for p in range(num_partitions)} for dst in dsts}
"""
ANSWER = Reply(tool_calls=(ToolCall.of("implement_algorithm", code=PROGRAM, reasoning="direct links"),),
               input_tokens=1000, output_tokens=200)
METHODS: dict[str, dict[str, Any]] = {
    # Proposals run one at a time (workers: 1), so the server's faults meet them in a known order.
    "one_shot": {"name": "one_shot", "samples": 2},
    "best_shot": {"name": "best_shot", "initial_samples": 1, "iterations": 1, "shown_programs": 1},
    "evolution": {"name": "evolution", "population_size": 2, "elitism": 1, "generations": 1,
                  "tournament_size": 1},
}
PROPOSALS = {"one_shot": 2, "best_shot": 2, "evolution": 3}
EMPTY_USAGE = (100, 20)
"""Tokens the server reports for an empty reply (the `Reply()` defaults): billed like any other."""


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as running:
        running.default = ANSWER
        yield running
        running.release()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait of the retry layer, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(calls, "pause", waited.append)
    return waited


def spec_file(tmp_path: Path, server: FakeOpenAI, method: str, *, model: str = MODEL, api: str = "chat",
              **method_settings: Any) -> Path:
    spec = {
        "name": "provider",
        "problem": {"name": "cloudcast", "scenarios": ["quick"]},
        "method": {**METHODS[method], "workers": 1, **method_settings},
        "model": {"id": model, "api_base": server.api_base, "api": api},
        "sandbox": {"backend": "process"},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_dir_of(tmp_path: Path) -> Path:
    [found] = (tmp_path / "runs").glob("*/*")
    return found


def transcript(run_dir: Path, agent: int) -> list[dict[str, Any]]:
    path = run_dir / "seed-0" / "agents" / f"agent-{agent}" / "transcript.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def kinds(records: list[dict[str, Any]]) -> list[str]:
    return [record["type"] for record in records]


def dollars(model: str, input_tokens: int, output_tokens: int) -> float:
    prices = price_per_token(model)
    assert prices is not None
    return input_tokens * prices[0] + output_tokens * prices[1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_faults_are_retried_like_an_agents_and_the_run_replays_call_for_call(server: FakeOpenAI, tmp_path: Path,
                                                                            waits: list[float], method: str):
    server.script(status(429, "slow down", Retry_After="7"), status(500), status(502), status(503), EMPTY_CHOICES,
                  MALFORMED)
    outcome = apply(spec_file(tmp_path, server, method), [], QuietProgress())
    result = outcome.seeds[0].result
    assert result["evaluations"] == PROPOSALS[method] and result["details"]["model_errors"] == 0

    # The first proposal met all six faults: six retries (the spec's default), the first as long as asked,
    # the others with the agents' backoff (1 s doubling, jitter of +-25%).
    assert waits[0] == 7.0 and len(waits) == 6
    for attempt, wait in enumerate(waits[1:], 1):
        assert 0.75 * 2**attempt <= wait <= 1.25 * 2**attempt
    records = transcript(outcome.run_dir, 1)
    assert kinds(records) == ["request", "error"] * 6 + ["request", "response"]
    assert [r["status_code"] for r in records if r["type"] == "error"][:4] == [429, 500, 502, 503]
    assert len(server.requests) == 6 + PROPOSALS[method]  # one HTTP request per attempt, none out of sight
    first = SeedArchive(outcome.run_dir / "seed-0").experiments()[0]
    assert first.agent == 1 and first.proposal()["model_calls"] == 7
    assert result["dollars"] == pytest.approx(server.billed(MODEL) + dollars(MODEL, *EMPTY_USAGE))

    replay = replay_run(outcome.run_dir, QuietProgress(), out=tmp_path / "replay")
    assert replay.comparison.identical, replay.comparison.notes
    assert replay.transcripts_identical, replay.transcript_notes  # what `engram replay --strict` requires
    assert replay.dollars[0][1] == pytest.approx(result["dollars"])


def test_an_empty_responses_api_reply_is_retried_and_billed(server: FakeOpenAI, tmp_path: Path, waits: list[float]):
    server.script(EMPTY_CHOICES)
    outcome = apply(spec_file(tmp_path, server, "one_shot", model="openai/o3", api="responses", samples=1), [],
                    QuietProgress())
    assert [r.path for r in server.requests] == ["/v1/responses"] * 2
    error = [r for r in transcript(outcome.run_dir, 1) if r["type"] == "error"]
    assert len(error) == 1 and error[0]["usage"] == {"input_tokens": 100, "output_tokens": 20}
    result = outcome.seeds[0].result
    assert result["dollars"] == pytest.approx(server.billed("openai/o3") + dollars("openai/o3", *EMPTY_USAGE))
    assert result["usage"]["calls"] == 2 and len(waits) == 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_refused_key_stops_the_run_and_resume_finishes_it(server: FakeOpenAI, tmp_path: Path,
                                                            waits: list[float], method: str):
    server.script(ANSWER, status(401, "Incorrect API key provided"))
    server.default = status(401, "Incorrect API key provided")
    with pytest.raises(ProviderError, match=r"HTTP 401.*API key") as raised:
        apply(spec_file(tmp_path, server, method), [], QuietProgress())
    assert raised.value.exit_code == 2 and waits == [] and len(server.requests) == 2  # never retried
    run_dir = run_dir_of(tmp_path)
    archive = SeedArchive(run_dir / "seed-0")
    assert [e.agent for e in archive.experiments()] == [1]  # the first proposal is kept
    assert archive.events("proposal_failed") == []  # the refused one is not a failed proposal...
    assert archive.events("provider_error")[0]["status_code"] == 401
    assert kinds(transcript(run_dir, 2)) == ["request", "error"]  # ...but its attempt is recorded

    server.default = ANSWER
    resume(run_dir, QuietProgress())
    result = json.loads((run_dir / "seed-0" / "result.json").read_text())
    assert result["evaluations"] == PROPOSALS[method] and result["details"]["model_errors"] == 0
    assert [e.agent for e in archive.experiments()] == list(range(1, PROPOSALS[method] + 1))
    assert kinds(transcript(run_dir, 1)) == ["request", "response"]  # not asked again
    assert kinds(transcript(run_dir, 2)) == ["request", "error", "request", "response"]

    # The replay stops at the recorded refusal too, and resumes as the recording did.
    replay = replay_run(run_dir, QuietProgress(), out=tmp_path / "replay")
    assert replay.comparison.identical and replay.transcripts_identical, replay.transcript_notes
    assert len(SeedArchive(tmp_path / "replay" / "seed-0").events("resume")) == 1


def test_the_command_line_exits_2_with_the_cause_in_one_line(server: FakeOpenAI, tmp_path: Path):
    server.default = status(401, "Incorrect API key provided")
    result = CliRunner().invoke(main, ["apply", str(spec_file(tmp_path, server, "one_shot")), "--quiet"])
    assert result.exit_code == 2, result.output
    [first] = [line for line in result.output.splitlines() if line.startswith("engram: error:")]
    assert first.startswith("engram: error: model call failed") and "HTTP 401" in first and "API key" in first
    assert "engram resume" in result.output


def test_a_wait_past_the_time_budget_stops_the_run_instead(server: FakeOpenAI, tmp_path: Path, waits: list[float]):
    server.script(status(429, "slow down", Retry_After="120"))
    outcome = apply(spec_file(tmp_path, server, "one_shot", max_minutes=0.5), [], QuietProgress())
    result = outcome.seeds[0].result
    assert result["stop_reason"] == "time budget reached (0.5 min)"
    assert waits == [] and len(server.requests) == 1 and result["evaluations"] == 0


def test_a_hanging_provider_cannot_hold_a_run_past_its_time_budget(server: FakeOpenAI, tmp_path: Path):
    server.default = HANG
    outcome = apply(spec_file(tmp_path, server, "one_shot", max_minutes=0.1), [], QuietProgress())
    assert server.holding >= 1  # the run ended while the provider still held its request open
    assert outcome.seeds[0].result["stop_reason"] == "time budget reached (0.1 min)"


def test_a_billed_empty_reply_counts_against_the_dollar_cap_before_any_retry(server: FakeOpenAI, tmp_path: Path,
                                                                             waits: list[float]):
    server.script(EMPTY_CHOICES)
    outcome: RunOutcome = apply(spec_file(tmp_path, server, "one_shot", max_dollars=0.00001), [], QuietProgress())
    result = outcome.seeds[0].result
    assert "budget" in result["stop_reason"] and len(server.requests) == 1
    assert result["dollars"] == pytest.approx(dollars(MODEL, *EMPTY_USAGE))


OPENEVOLVE_DIFF = Reply(content="Keep the same routes.\n\n<<<<<<< SEARCH\n    graph = G.copy()\n=======\n"
                                "    graph = G.copy()  # the same graph\n>>>>>>> REPLACE\n")


def test_openevolves_model_requests_go_through_the_same_retry_layer(server: FakeOpenAI, tmp_path: Path,
                                                                    waits: list[float]):
    require_module("openevolve", "the dev extra installs it: pip install -e '.[dev]'")
    server.default = OPENEVOLVE_DIFF
    server.script(status(429, "slow down", Retry_After="7"), status(500), EMPTY_CHOICES, MALFORMED)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "provider",
        "problem": {"name": "cloudcast", "scenarios": ["quick"]},
        "method": {"name": "openevolve", "iterations": 1, "islands": 1, "workers": 1},
        "model": {"id": MODEL, "api_base": server.api_base, "api": "chat"},
        "sandbox": {"backend": "process"},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }, sort_keys=False))
    outcome = apply(spec, [], QuietProgress())
    result = outcome.seeds[0].result
    assert result["evaluations"] == 2 and result["details"]["model_errors"] == 0  # the seed program, the child
    assert waits[0] == 7.0 and len(waits) == 4
    assert kinds(transcript(outcome.run_dir, 1)) == ["request", "error"] * 4 + ["request", "response"]
    assert result["dollars"] == pytest.approx(server.billed(MODEL) + dollars(MODEL, *EMPTY_USAGE))

    replay = replay_run(outcome.run_dir, QuietProgress(), out=tmp_path / "replay")
    assert replay.comparison.identical and replay.transcripts_identical, replay.transcript_notes
