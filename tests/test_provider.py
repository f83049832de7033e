"""The real provider path: litellm's HTTP client against a local OpenAI-compatible server.

Every request goes over HTTP to `tests/openai_server.py` on 127.0.0.1, through litellm and the
OpenAI SDK exactly as a run against OpenAI would, so these tests see what the provider sees
(roles, tools, reasoning settings) and what Engram makes of each answer and fault.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from openai_server import EMPTY_CHOICES, HANG, MALFORMED, FakeOpenAI, Reply, ToolCall, status

from engram.errors import ProviderError
from engram.models.api import register_capabilities, uses_responses_api
from engram.models.calls import AgentStop, ModelCallMiddleware, RetryPolicy
from engram.models.llm import UsageCallback, UsageLedger, create_chat_model, price_per_token


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as running:
        yield running


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    """Both of litellm's OpenAI paths: Chat Completions and its Responses API bridge."""
    return str(request.param)


@tool
def echo(text: str) -> str:
    """Repeat `text`."""
    return f"echo: {text}"


class Agent:
    """A LangChain agent with one tool, Engram's retry layer and a transcript, on the fake server."""

    def __init__(self, server: FakeOpenAI, tmp_path: Path, *, model: str = "openai/gpt-4o-mini", api: str = "auto",
                 deadline_s: float | None = None, max_retries: int = 3, params: dict[str, Any] | None = None,
                 timeout_s: float = 30) -> None:
        self.ledger = UsageLedger()
        self.transcript = tmp_path / "transcript.jsonl"
        callback = UsageCallback(self.ledger, model_id=model, price_model=None, transcript=self.transcript, agent=1)
        self.model = create_chat_model(model, api_base=server.api_base, params=params, timeout_s=timeout_s,
                                       callbacks=[callback], api=api)  # type: ignore[arg-type]
        self.sleeps: list[float] = []
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        policy = RetryPolicy(max_retries=max_retries, initial_delay=0.01, jitter=False, timeout_s=timeout_s)
        self.middleware = ModelCallMiddleware(policy, deadline=deadline, model=model, sleep=self.sleeps.append)
        self.graph = create_agent(model=self.model, tools=[echo], system_prompt="You are terse.",
                                  middleware=[self.middleware])

    def run(self, text: str = "hi") -> list[Any]:
        return self.graph.invoke({"messages": [HumanMessage(content=text)]}, {"recursion_limit": 30})["messages"]

    def records(self, kind: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.transcript.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line["type"] == kind]


def roles(request: Any) -> list[str]:
    body = request.body
    items = body["messages"] if "messages" in body else body["input"]
    return [item.get("role", item.get("type")) for item in items]


def tool_outputs(request: Any) -> list[str]:
    """The tool results a request carries, in either API's format."""
    if "messages" in request.body:
        return [str(m["content"]) for m in request.body["messages"] if m["role"] == "tool"]
    return [str(item["output"]) for item in request.body["input"] if item.get("type") == "function_call_output"]


# --- models as the paper ran them --------------------------------------------------------------------


def test_o3_and_o4_mini_take_the_system_prompt_as_a_system_message(server: FakeOpenAI):
    assert register_capabilities() == []  # done once at import; nothing is left to fix
    for name in ("openai/o3", "openai/o4-mini"):
        model = create_chat_model(name, api_base=server.api_base, api="chat")
        model.invoke([SystemMessage(content="rules"), HumanMessage(content="task")])
        assert roles(server.requests[-1])[:2] == ["system", "user"], name
        assert server.requests[-1].path == "/v1/chat/completions"


def test_reasoning_models_go_through_the_responses_api_with_effort_and_summaries(server: FakeOpenAI):
    assert uses_responses_api("openai/o3", "auto") and uses_responses_api("openai/gpt-5.2", "auto")
    assert not uses_responses_api("openai/gpt-4o-mini", "auto") and not uses_responses_api("openai/o3", "chat")
    model = create_chat_model("openai/gpt-5.2", api_base=server.api_base, params={"reasoning_effort": "xhigh"})
    model.bind_tools([echo]).invoke([SystemMessage(content="rules"), HumanMessage(content="task")])
    request = server.requests[-1]
    assert request.path == "/v1/responses"
    assert request.body["reasoning"] == {"effort": "xhigh", "summary": "auto"}
    assert request.body["include"] == ["reasoning.encrypted_content"] and request.body["store"] is False
    assert roles(request)[:2] == ["system", "user"]
    assert [t["name"] for t in request.body["tools"]] == ["echo"]


def test_reasoning_is_carried_across_turns_and_its_summary_is_in_the_transcript(server: FakeOpenAI,
                                                                                  tmp_path: Path):
    server.script(Reply(content="Let me try.", reasoning="First I should echo.",
                        tool_calls=(ToolCall.of("echo", text="x"),)),
                  Reply(content="Done.", reasoning="The echo worked."))
    agent = Agent(server, tmp_path, model="openai/o3")
    agent.run()
    first, second = server.wait_for_requests(2)
    assert first.path == second.path == "/v1/responses"
    carried = [item for item in second.body["input"] if item.get("type") == "reasoning"]
    assert len(carried) == 1 and carried[0]["encrypted_content"].startswith("encrypted-")
    assert "effort" not in first.body["reasoning"] and first.body["reasoning"]["summary"] == "auto"
    summaries = [r["message"]["additional_kwargs"].get("reasoning_content") for r in agent.records("response")]
    assert summaries == ["First I should echo.", "The echo worked."]


def test_costs_come_from_usage_and_litellms_price_map(server: FakeOpenAI, tmp_path: Path):
    server.script(Reply(content="a", tool_calls=(ToolCall.of("echo", text="x"),), input_tokens=1000,
                        output_tokens=500),
                  Reply(content="b", input_tokens=2000, output_tokens=100))
    agent = Agent(server, tmp_path, model="openai/o3")
    agent.run()
    input_price, output_price = price_per_token("openai/o3")  # type: ignore[misc]
    expected = 3000 * input_price + 600 * output_price
    assert agent.ledger.total_dollars == pytest.approx(expected)
    assert agent.ledger.snapshot()["input_tokens"] == 3000 and agent.ledger.calls == 2
    assert [r["dollars"] for r in agent.records("response")] == pytest.approx(
        [1000 * input_price + 500 * output_price, 2000 * input_price + 100 * output_price])


# --- faults --------------------------------------------------------------------------------------------


def test_a_server_error_is_retried_once_per_attempt_and_each_attempt_is_in_the_transcript(server: FakeOpenAI,
                                                                                          tmp_path: Path, api: str):
    server.script(status(500), status(503), Reply(content="ok"))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    assert agent.run()[-1].content == "ok"
    assert len(server.requests) == 3  # the SDK's own retries are off: one HTTP request per attempt
    assert [r["status_code"] for r in agent.records("error")] == [500, 503]
    assert len(agent.records("request")) == 3 and len(agent.records("response")) == 1


def test_rate_limits_wait_as_long_as_the_provider_asks(server: FakeOpenAI, tmp_path: Path, api: str):
    server.script(status(429, "slow down", Retry_After="7"), Reply(content="ok"))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    assert agent.run()[-1].content == "ok"
    assert agent.sleeps == [7.0]


@pytest.mark.parametrize("code", [429, 500, 503])
def test_transient_statuses_are_retried_whatever_class_litellm_gives_them(code: int):
    import litellm

    from engram.models.calls import is_retryable, provider_error

    # litellm's Responses API bridge raised BadRequestError for a 429 and a 500 whose error object
    # said invalid_request_error: the status decides.
    error = litellm.BadRequestError("OpenAIException - scripted", model="o3", llm_provider="openai")
    error.status_code = code
    assert is_retryable(error) and provider_error(error) is None


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("fault", [MALFORMED, EMPTY_CHOICES], ids=["malformed-json", "empty-choices"])
def test_unusable_replies_are_retried(server: FakeOpenAI, tmp_path: Path, fault: Any, api: str):
    server.script(fault, Reply(content="ok"))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    assert agent.run()[-1].content == "ok"
    assert len(server.requests) == 2 and len(agent.records("error")) == 1


def test_an_empty_reply_is_still_billed(server: FakeOpenAI, tmp_path: Path, api: str):
    # On the Responses API litellm's bridge fails on the empty output; its usage is kept all the same.
    server.script(EMPTY_CHOICES, Reply(content="ok", input_tokens=10, output_tokens=1))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    agent.run()
    assert agent.ledger.snapshot()["input_tokens"] == 100 + 10  # the empty reply's usage, then the answer's
    assert agent.records("error")[0]["usage"] == {"input_tokens": 100, "output_tokens": 20}


@pytest.mark.parametrize(("code", "cause"), [(400, "model.params"), (401, "API key"), (404, "model.id")])
def test_errors_no_retry_can_cure_stop_with_their_cause(server: FakeOpenAI, tmp_path: Path, code: int, cause: str,
                                                        api: str):
    server.script(status(code, "Unsupported parameter: 'temperature'"))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    with pytest.raises(ProviderError, match=f"HTTP {code}") as raised:
        agent.run()
    assert cause in str(raised.value) and raised.value.status_code == code
    assert len(server.requests) == 1


def test_a_hanging_provider_cannot_hold_an_agent_past_its_deadline(server: FakeOpenAI, tmp_path: Path, api: str):
    server.script(HANG, HANG, HANG)
    agent = Agent(server, tmp_path, model="openai/o3", api=api, deadline_s=1.0, timeout_s=600)
    started = time.monotonic()
    with pytest.raises(AgentStop, match="time limit"):
        agent.run()
    # The server holds each request for a minute; without the deadline the agent would wait that long.
    assert time.monotonic() - started < 30
    server.release()


def test_invalid_tool_arguments_get_a_tool_error_the_agent_can_act_on(server: FakeOpenAI, tmp_path: Path, api: str):
    server.script(Reply(tool_calls=(ToolCall("echo", '{"text": "unterminated'),)),
                  Reply(content="retrying", tool_calls=(ToolCall.of("echo", text="fixed"),)),
                  Reply(content="Done."))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    messages = agent.run()
    assert messages[-1].content == "Done."
    [error] = tool_outputs(server.wait_for_requests(2)[1])
    assert "not valid JSON" in error and "unterminated" in error
    assert any("echo: fixed" in output for output in tool_outputs(server.requests[2]))


def test_an_unknown_tool_gets_a_tool_error_naming_the_real_ones(server: FakeOpenAI, tmp_path: Path, api: str):
    server.script(Reply(tool_calls=(ToolCall.of("todo_write", items=[]),)), Reply(content="Done."))
    agent = Agent(server, tmp_path, model="openai/o3", api=api)
    assert agent.run()[-1].content == "Done."
    [error] = tool_outputs(server.wait_for_requests(2)[1])
    assert "todo_write" in error and "echo" in error


# --- the paper's specs ---------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CALLS = {
    # method: (o3, gpt-5.2) as the reference called them: the API, then the reasoning it asked for.
    "engram": (("responses", {"summary": "auto"}), ("responses", {"effort": "xhigh", "summary": "auto"})),
    "single_agent": (("responses", {"summary": "auto"}), ("responses", {"effort": "xhigh", "summary": "auto"})),
    "tree_search": (("responses", {"summary": "auto"}), ("chat", None)),
    "one_shot": (("chat", None), ("chat", None)),
    "best_shot": (("chat", None), ("chat", None)),
    "evolution": (("chat", None), ("chat", None)),
    "openevolve": (("chat", None), ("chat", None)),
}


def paper_specs() -> list[Path]:
    import yaml

    return [path for path in sorted((REPO / "specs").glob("*.yaml"))
            if yaml.safe_load(path.read_text()).get("sandbox", {}).get("image") == "locked"]


@pytest.mark.parametrize("path", paper_specs(), ids=lambda path: path.stem)
def test_paper_specs_call_their_model_as_the_reference_did(path: Path, server: FakeOpenAI):
    from engram.spec import load_spec

    spec = load_spec(path)
    o3, gpt = REFERENCE_CALLS[spec.method.name]
    api, reasoning = {"openai/o3": o3, "openai/gpt-5.2": gpt}[spec.model.id]
    model = create_chat_model(spec.model.id, params=dict(spec.model.params), api_base=server.api_base,
                              api=spec.model.api)
    model.invoke([SystemMessage(content="rules"), HumanMessage(content="task")])
    request = server.requests[-1]
    assert request.path == {"responses": "/v1/responses", "chat": "/v1/chat/completions"}[api]
    assert request.body.get("reasoning") == reasoning and "reasoning_effort" not in request.body
    assert roles(request)[:2] == ["system", "user"]


# --- an Engram run against the server ------------------------------------------------------------------


def engram_spec(tmp_path: Path, server: FakeOpenAI, **budget: Any) -> Path:
    import yaml

    spec = {
        "name": "provider",
        "problem": {"name": "cloudcast", "scenarios": ["quick"]},
        "method": {"name": "engram"},
        "model": {"id": "openai/o3", "api_base": server.api_base, "max_retries": 2},
        "budget": {"max_agents": 1, "minutes_per_agent": 2, **budget},
        "sandbox": {"backend": "process"},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_engram(spec: Path) -> Any:
    from engram.runs.progress import QuietProgress
    from engram.runs.runner import apply

    return apply(spec, [], QuietProgress())


def seed_archive(tmp_path: Path) -> Any:
    from engram.runs.archive import SeedArchive

    [seed] = (tmp_path / "runs").glob("*/*/seed-0")
    return SeedArchive(seed)


def test_an_engram_agent_runs_end_to_end_through_the_responses_api(server: FakeOpenAI, tmp_path: Path):
    server.script(
        Reply(content="I will score the starting program.", reasoning="Score first, then think.",
              tool_calls=(ToolCall.of("run_simulation", file_path="/initial_program.py"),),
              input_tokens=3000, output_tokens=700),
        Reply(content="## Summary for Next Agent\nScored the initial program.", reasoning="That is enough.",
              input_tokens=4000, output_tokens=300),
    )
    outcome = run_engram(engram_spec(tmp_path, server))
    result = outcome.seeds[0].result
    assert result["evaluations"] == 1 and result["best_score"] is not None
    first = server.requests[0]
    assert first.path == "/v1/responses" and first.body["reasoning"] == {"summary": "auto"}
    assert roles(first)[0] == "system"  # the agent's instructions, not a user message
    tools = {tool["name"] for tool in first.body["tools"]}
    assert {"run_simulation", "execute", "read_file", "write_file"} <= tools
    second = server.requests[1].body["input"]
    assert any(item.get("type") == "reasoning" and item.get("encrypted_content") for item in second)
    assert any(item.get("type") == "function_call_output" and "exp-" in str(item.get("output")) for item in second)
    assert result["dollars"] == pytest.approx(server.billed("openai/o3"))
    transcript = next((tmp_path / "runs").glob("*/*/seed-0/agents/agent-1/transcript.jsonl"))
    assert "Score first, then think." in transcript.read_text(encoding="utf-8")


def test_an_error_no_retry_can_cure_stops_the_run_without_using_up_agents(server: FakeOpenAI, tmp_path: Path):
    server.default = status(401, "Incorrect API key provided")
    with pytest.raises(ProviderError, match=r"HTTP 401.*API key") as raised:
        run_engram(engram_spec(tmp_path, server, max_agents=3))
    assert raised.value.exit_code != 0  # the command line exits with it, printing the message
    assert len(server.requests) == 1  # no retries, no second agent
    archive = seed_archive(tmp_path)
    assert archive.started_agents() == [] and archive.events("provider_error")[0]["status_code"] == 401

    # With the key fixed, the run resumes with the same agent: the failed start cost nothing.
    from engram.runs.progress import QuietProgress
    from engram.runs.runner import resume

    server.default = Reply(content="## Summary for Next Agent\nNothing to report.")
    resume(archive.root.parent, QuietProgress())
    assert archive.finished_agents() == [1, 2, 3]
    assert [e["agent"] for e in archive.events("agent_start")] == [1, 1, 2, 3]

    # Its replay stops at the recorded refusal as well, and resumes as the recording did.
    from engram.runs.replay import replay_run

    replay = replay_run(archive.root.parent, QuietProgress(), out=tmp_path / "replay")
    assert replay.comparison.identical and replay.transcripts_identical, replay.transcript_notes


def test_an_agent_stops_at_its_time_limit_on_a_hanging_provider(server: FakeOpenAI, tmp_path: Path):
    server.default = HANG
    started = time.monotonic()
    outcome = run_engram(engram_spec(tmp_path, server, minutes_per_agent=0.1))
    elapsed = time.monotonic() - started
    server.release()
    [end] = seed_archive(tmp_path).events("agent_end")
    assert end["reason"].startswith("time limit")
    assert outcome.seeds[0].result["evaluations"] == 0
    # Each held request would take a minute, and retries several: the limit cut the model call short.
    assert elapsed < 55, elapsed


class _Answer:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class _Limited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("rate limited")
        self.response = _Answer(headers)


def test_retry_after_in_seconds_milliseconds_or_as_a_date():
    from email.utils import formatdate

    from engram.models.calls import retry_after

    assert retry_after(_Limited({"retry-after": "7"})) == 7.0
    assert retry_after(_Limited({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    in_a_minute = retry_after(_Limited({"retry-after": formatdate(time.time() + 60, usegmt=True)}))
    assert in_a_minute is not None and 50 < in_a_minute <= 60
    assert retry_after(_Limited({"retry-after": "soon"})) is None and retry_after(_Limited({})) is None


def test_a_wait_past_the_deadline_ends_the_agent_instead(server: FakeOpenAI, tmp_path: Path):
    server.script(status(429, "slow down", Retry_After="30"), Reply(content="never reached"))
    agent = Agent(server, tmp_path, deadline_s=20)
    with pytest.raises(AgentStop, match="time limit"):
        agent.run()
    assert agent.sleeps == [] and len(server.requests) == 1


def test_a_run_recorded_against_the_provider_replays_with_the_same_dollars(server: FakeOpenAI, tmp_path: Path):
    from engram.runs.progress import QuietProgress
    from engram.runs.replay import replay_run

    server.script(
        status(429, "slow down", Retry_After="0"),
        Reply(content="Scoring.", reasoning="Score it.", input_tokens=3000, output_tokens=700,
              tool_calls=(ToolCall.of("run_simulation", file_path="/initial_program.py"),)),
        status(500),
        Reply(content="## Summary for Next Agent\nScored it.", input_tokens=4000, output_tokens=300),
    )
    outcome = run_engram(engram_spec(tmp_path, server))
    replay = replay_run(outcome.run_dir, QuietProgress(), out=tmp_path / "replay")
    assert replay.comparison.identical and replay.transcripts_identical, replay.transcript_notes
    recorded_dollars, replayed_dollars = replay.dollars[0]
    assert recorded_dollars == pytest.approx(server.billed("openai/o3")) and replayed_dollars == recorded_dollars


def test_mlflows_parent_run_ends_with_the_runs_final_dollars(server: FakeOpenAI, tmp_path: Path, restore_mlflow: None):
    import yaml
    from mlflow import MlflowClient

    from engram.results.tracking import RUN_ID_FILE

    server.script(
        Reply(content="Scoring.", tool_calls=(ToolCall.of("run_simulation", file_path="/initial_program.py"),)),
        # The summary comes after the last evaluation, and costs the most: the figure that used to be missed.
        Reply(content="## Summary for Next Agent\nScored it.", input_tokens=50_000, output_tokens=5_000),
    )
    spec = engram_spec(tmp_path, server)
    data = yaml.safe_load(spec.read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data["tracking"] = {"mlflow": True, "uri": uri, "experiment": "provider"}
    spec.write_text(yaml.safe_dump(data))
    result = run_engram(spec).seeds[0].result
    archive = seed_archive(tmp_path)
    client = MlflowClient(uri)
    parent = client.get_run((archive.root / RUN_ID_FILE).read_text().strip())
    assert parent.data.metrics["dollars"] == pytest.approx(result["dollars"])
    assert result["dollars"] == pytest.approx(server.billed("openai/o3"))
    agents = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [run.info.status for run in agents] == ["FINISHED"]


def test_one_off_calls_outside_an_agent_loop_are_retried_too(server: FakeOpenAI, tmp_path: Path, api: str):
    from engram.models.calls import invoke_with_retries

    server.script(status(503), MALFORMED, Reply(content="the summary"))
    model = create_chat_model("openai/o3", api_base=server.api_base, api=api)  # type: ignore[arg-type]
    policy = RetryPolicy(max_retries=3, initial_delay=0.01, jitter=False)
    assert invoke_with_retries(model, [HumanMessage(content="summarise")], policy).content == "the summary"
    assert len(server.requests) == 3
    server.script(status(401))
    with pytest.raises(ProviderError, match="HTTP 401"):
        invoke_with_retries(model, [HumanMessage(content="summarise")], policy)
    server.script(HANG, HANG)
    with pytest.raises(TimeoutError, match="within 1 s"):  # all attempts together, not each
        invoke_with_retries(model, [HumanMessage(content="summarise")], policy, within=1)
    server.release()
