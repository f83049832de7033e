"""The model layer, offline: scripted playback, retries in a real agent loop, costs, keys and construction."""

from __future__ import annotations

import json
import os
import threading
from importlib.metadata import version
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_litellm import ChatLiteLLM

from engram.errors import ConfigError, EngramError, ProviderError
from engram.models.llm import (
    BudgetExceeded,
    ScriptedChatModel,
    UsageCallback,
    UsageLedger,
    create_chat_model,
    is_retryable,
    missing_api_keys,
    price_per_token,
    price_snapshot,
    retry_middleware,
    transcript_requests,
)

SCRIPT = """
agents:
  - turns:
      - content: "I will start by reading the digest."
        reasoning: "The digest should say what was tried."
        tool_calls:
          - {name: read_file, args: {file_path: /digest.md}}
          - {name: ls, args: {path: /}}
      - content: "Now the program."
        tool_calls:
          - {name: read_file, args: {file_path: /initial_program.py}}
        usage: {input_tokens: 1200, output_tokens: 300}
      - content: "Done."
  - turns:
      - content: "Agent two speaks."
distill:
  - content: "First digest."
  - content: "Second digest."
"""


def write_script(tmp_path: Path, text: str, name: str = "script.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_script(tmp_path, SCRIPT)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- scripted playback ---------------------------------------------------------------------------


def test_scripted_model_plays_turns_in_order_then_ends(script: Path):
    model = ScriptedChatModel(script, agent=1)
    first = model.invoke([HumanMessage(content="x" * 400)])
    assert first.content == "I will start by reading the digest."
    assert [(c["name"], c["args"], c["id"]) for c in first.tool_calls] == [
        ("read_file", {"file_path": "/digest.md"}, "call_1_1"),
        ("ls", {"path": "/"}, "call_1_2"),
    ]
    assert first.additional_kwargs["reasoning_content"] == "The digest should say what was tried."
    assert first.response_metadata["model_name"] == "scripted"
    assert first.usage_metadata["input_tokens"] == 100  # 400 characters // 4

    second = model.invoke([HumanMessage(content="go on")])
    assert [c["id"] for c in second.tool_calls] == ["call_1_3"]
    assert second.usage_metadata == {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500}

    assert model.invoke([HumanMessage(content="and?")]).content == "Done."
    for _ in range(2):  # exhausted: a natural end, every time
        end = model.invoke([HumanMessage(content="more?")])
        assert end.content == "" and end.tool_calls == []
    assert model.position == 5
    assert model._llm_type == "scripted"


def test_each_agent_and_instance_has_its_own_position(script: Path):
    one, again, two = ScriptedChatModel(script, 1), ScriptedChatModel(script, 1), ScriptedChatModel(script, 2)
    assert one.invoke("hi").content == "I will start by reading the digest."
    assert again.invoke("hi").content == "I will start by reading the digest."
    assert two.invoke("hi").content == "Agent two speaks."
    assert one.invoke("hi").content == "Now the program."


def test_bind_tools_remembers_names_and_shares_the_position(script: Path):
    @tool
    def run_simulation(path: str) -> str:
        """Evaluate a program."""
        return path

    model = ScriptedChatModel(script, agent=1)
    bound = model.bind_tools([run_simulation, {"name": "read_file", "description": "", "parameters": {}}])
    assert bound.bound_tool_names == ("run_simulation", "read_file")
    assert bound.invoke("hi").content == "I will start by reading the digest."
    assert model.invoke("hi").content == "Now the program."  # the original continues where the copy left off
    assert model.bound_tool_names == ()


def test_distill_list_is_played_by_agent_zero(script: Path):
    distill = ScriptedChatModel(script, agent=0)
    assert [distill.invoke("summarise").content for _ in range(3)] == ["First digest.", "Second digest.", ""]


def test_a_script_without_distill_entries_ends_distillation_at_once(tmp_path: Path):
    path = write_script(tmp_path, "agents:\n  - turns: [{content: hi}]\n")
    assert ScriptedChatModel(path, agent=0).invoke("summarise").content == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agents: [\n", "invalid YAML"),
        ("agents:\n  - turns:\n      - contnt: hi\n", "agents.0.turns.0.contnt: unknown key"),
        ("agents:\n  - turns:\n      - error: meltdown\n", "agents.0.turns.0.error"),
        ("agents:\n  - turns:\n      - {error: rate_limit, content: hi}\n", "takes no other keys"),
        ("agents:\n  - turns:\n      - tool_calls: [{args: {}}]\n", "agents.0.turns.0.tool_calls.0.name"),
        ("agent:\n  - turns: []\n", "agent: unknown key"),
        ("agents:\n  - turns: []\n", "no entry for agent 2; the file lists 1"),
    ],
)
def test_bad_script_files_name_the_file_and_position(tmp_path: Path, text: str, expected: str):
    path = write_script(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        ScriptedChatModel(path, agent=2)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_script_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        ScriptedChatModel(tmp_path / "nope.yaml", agent=1)


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("rate_limit", litellm.RateLimitError),
        ("server_error", litellm.InternalServerError),
        ("timeout", litellm.Timeout),
        ("connection", litellm.APIConnectionError),
        ("bad_request", litellm.BadRequestError),
    ],
)
def test_error_turns_raise_litellm_errors_and_consume_the_turn(tmp_path: Path, kind: str, error_type: type):
    path = write_script(tmp_path, f"agents:\n  - turns:\n      - error: {kind}\n      - content: after\n")
    model = ScriptedChatModel(path, agent=1)
    with pytest.raises(error_type, match=r"agents\.0\.turns\.0"):
        model.invoke("hi")
    assert model.invoke("hi").content == "after"


# --- retries in a real agent loop -----------------------------------------------------------------

RETRY_SCRIPT = """
agents:
  - turns:
      - content: "Calling the tool."
        tool_calls: [{name: echo, args: {text: hello}}]
      - error: rate_limit
      - error: server_error
      - error: timeout
      - content: "The tool said hello."
"""


@tool
def echo(text: str) -> str:
    """Return the text."""
    return f"echo: {text}"


def test_transient_errors_are_retried_inside_the_agent_loop(tmp_path: Path):
    ledger = UsageLedger()
    transcript = tmp_path / "transcript.jsonl"
    callback = UsageCallback(ledger, model_id="scripted", price_model=None, transcript=transcript, agent=1)
    model = ScriptedChatModel(write_script(tmp_path, RETRY_SCRIPT), agent=1, callbacks=[callback])
    agent = create_agent(model=model, tools=[echo], middleware=[retry_middleware(initial_delay=0.01)])

    result = agent.invoke({"messages": [HumanMessage(content="say hello")]}, {"recursion_limit": 20})

    messages = result["messages"]
    assert messages[-1].content == "The tool said hello."
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_messages] == ["echo: hello"]
    assert model.position == 5
    kinds = [line["type"] for line in read_lines(transcript)]
    assert kinds == ["request", "response"] + ["request", "error"] * 3 + ["request", "response"]
    assert ledger.calls == 2  # failed attempts cost nothing


def test_bad_requests_are_not_retried_and_stop_the_run(tmp_path: Path):
    path = write_script(tmp_path, "agents:\n  - turns:\n      - error: bad_request\n      - content: never\n")
    model = ScriptedChatModel(path, agent=1)
    agent = create_agent(model=model, tools=[echo], middleware=[retry_middleware(initial_delay=0.01)])
    with pytest.raises(ProviderError, match=r"HTTP 400.*retrying cannot help") as raised:
        agent.invoke({"messages": [HumanMessage(content="hi")]}, {"recursion_limit": 20})
    assert isinstance(raised.value.__cause__, litellm.BadRequestError)
    assert model.position == 1


def test_exhausted_retries_raise_instead_of_ending_the_agent_quietly(tmp_path: Path):
    path = write_script(tmp_path, "agents:\n  - turns:\n" + "      - error: rate_limit\n" * 3 + "      - content: x\n")
    model = ScriptedChatModel(path, agent=1)
    agent = create_agent(model=model, tools=[echo], middleware=[retry_middleware(2, initial_delay=0.01)])
    with pytest.raises(litellm.RateLimitError):
        agent.invoke({"messages": [HumanMessage(content="hi")]}, {"recursion_limit": 20})
    assert model.position == 3


def test_retryable_errors_are_the_transient_ones():
    def make(cls: type, **kw: object) -> Exception:
        return cls(message="m", llm_provider="openai", model="gpt", **kw)

    assert is_retryable(make(litellm.RateLimitError))
    assert is_retryable(make(litellm.ServiceUnavailableError))
    assert is_retryable(make(litellm.APIError, status_code=503))
    assert not is_retryable(make(litellm.APIError, status_code=400))
    assert not is_retryable(make(litellm.AuthenticationError))
    assert not is_retryable(make(litellm.ContextWindowExceededError))
    assert not is_retryable(ValueError("a bug"))


# --- the ledger -----------------------------------------------------------------------------------


def test_ledger_cap_raises_after_recording_the_call_that_crosses_it():
    ledger = UsageLedger(max_dollars=1.0)
    ledger.record(model="m", input_tokens=10, output_tokens=5, dollars=0.6, agent=1)
    ledger.check()
    with pytest.raises(BudgetExceeded) as caught:
        ledger.record(model="m", input_tokens=20, output_tokens=5, dollars=0.5, agent=2)
    assert ledger.calls == 2 and ledger.total_dollars == pytest.approx(1.1)
    message = str(caught.value)
    assert "max_dollars" in message and "$1.0000" in message and "$1.1000" in message
    assert caught.value.limit == 1.0 and caught.value.spent == pytest.approx(1.1)
    with pytest.raises(BudgetExceeded):
        ledger.check()


def test_unknown_prices_are_counted_as_unknown_not_as_zero():
    ledger = UsageLedger(max_dollars=0.5)
    ledger.record(model="local", input_tokens=1000, output_tokens=500, dollars=None, agent=1)
    ledger.record(model="openai/o3", input_tokens=10, output_tokens=10, dollars=0.25, agent=2)
    assert ledger.unknown_price_calls == 1
    assert ledger.total_dollars == 0.25
    assert ledger.total_tokens == 1520
    snapshot = ledger.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["per_agent"]["1"] == {
        "calls": 1,
        "input_tokens": 1000,
        "output_tokens": 500,
        "total_tokens": 1500,
        "dollars": 0.0,
        "unknown_price_calls": 1,
    }
    assert snapshot["per_agent"]["2"]["dollars"] == 0.25
    assert snapshot["per_model"]["local"]["unknown_price_calls"] == 1
    assert snapshot["calls"] == 2 and snapshot["max_dollars"] == 0.5


def test_ledger_counts_exactly_under_concurrent_records():
    ledger = UsageLedger()

    def spend() -> None:
        for _ in range(500):
            ledger.record(model="m", input_tokens=2, output_tokens=1, dollars=0.001, agent=1)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.calls == 4000 and ledger.total_tokens == 12000
    assert ledger.total_dollars == pytest.approx(4.0)


# --- the usage callback ---------------------------------------------------------------------------


def test_callback_prices_scripted_turns_as_a_real_model_and_writes_the_transcript(script: Path, tmp_path: Path):
    entry = litellm.model_cost["o3"]
    ledger = UsageLedger()
    transcript = tmp_path / "agent-1" / "transcript.jsonl"
    callback = UsageCallback(ledger, model_id="scripted", price_model="openai/o3", transcript=transcript, agent=1)
    model = ScriptedChatModel(script, agent=1, price_as="openai/o3", callbacks=[callback])

    model.invoke([HumanMessage(content="start")])
    model.invoke([HumanMessage(content="start"), AIMessage(content="ok"), HumanMessage(content="go on")])

    expected = 1200 * entry["input_cost_per_token"] + 300 * entry["output_cost_per_token"]
    lines = read_lines(transcript)
    assert [line["type"] for line in lines] == ["request", "response", "request", "response"]
    # The second request extends the first, so only its new messages are written...
    assert lines[2]["base"] == 1
    assert lines[2]["messages"] == [{"type": "ai", "content": "ok"}, {"type": "human", "content": "go on"}]
    # ...and the full history of every request can be read back.
    assert transcript_requests(transcript) == [
        [{"type": "human", "content": "start"}],
        [{"type": "human", "content": "start"}, {"type": "ai", "content": "ok"}, {"type": "human", "content": "go on"}],
    ]
    model.invoke([HumanMessage(content="a new conversation")])
    assert read_lines(transcript)[-2]["base"] == 0
    assert transcript_requests(transcript)[-1] == [{"type": "human", "content": "a new conversation"}]
    lines = lines[:4]
    first, second = lines[1], lines[3]
    read = {"id": "call_1_1", "name": "read_file", "args": {"file_path": "/digest.md"}}
    assert first["message"]["tool_calls"][0] == read
    assert first["message"]["additional_kwargs"]["reasoning_content"] == "The digest should say what was tried."
    assert second["usage"]["input_tokens"] == 1200 and second["usage"]["output_tokens"] == 300
    assert second["dollars"] == pytest.approx(expected)
    assert all(line["agent"] == 1 and "t" in line for line in lines)
    assert lines[0]["run_id"] == first["run_id"] != second["run_id"]

    first_dollars = first["dollars"]
    assert ledger.total_dollars > first_dollars + expected  # three calls priced
    assert ledger.unknown_price_calls == 0
    assert ledger.snapshot()["per_model"]["scripted"]["calls"] == 3


def test_callback_without_a_known_price_records_null_dollars(script: Path, tmp_path: Path):
    ledger = UsageLedger(max_dollars=0.0)
    transcript = tmp_path / "t.jsonl"
    callback = UsageCallback(ledger, model_id="scripted", price_model=None, transcript=transcript, agent=3)
    ScriptedChatModel(script, agent=1, callbacks=[callback]).invoke("hi")
    assert read_lines(transcript)[-1]["dollars"] is None
    assert ledger.unknown_price_calls == 1 and ledger.total_dollars == 0.0


def test_budget_exceeded_stops_the_call_and_the_next_request(script: Path, tmp_path: Path):
    ledger = UsageLedger(max_dollars=0.001)
    transcript = tmp_path / "t.jsonl"
    callback = UsageCallback(ledger, model_id="scripted", price_model="openai/o3", transcript=transcript, agent=1)
    model = ScriptedChatModel(script, agent=1, callbacks=[callback])
    model.invoke("hi")  # a few tokens: under the cap
    with pytest.raises(BudgetExceeded):
        model.invoke("hi")  # 1200 + 300 tokens of o3 cross it
    assert read_lines(transcript)[-1]["type"] == "response"  # the expensive reply is still on record
    with pytest.raises(BudgetExceeded):
        model.invoke("hi")
    assert model.position == 2  # the third request was never played


def test_budget_exceeded_ends_an_agent_loop_without_retries(script: Path, tmp_path: Path):
    ledger = UsageLedger(max_dollars=0.0)
    callback = UsageCallback(ledger, model_id="scripted", price_model="openai/o3", transcript=None, agent=1)
    model = ScriptedChatModel(script, agent=1, callbacks=[callback])
    agent = create_agent(model=model, tools=[echo], middleware=[retry_middleware(initial_delay=0.01)])
    with pytest.raises(BudgetExceeded):
        agent.invoke({"messages": [HumanMessage(content="hi")]}, {"recursion_limit": 20})
    assert model.position == 1 and ledger.calls == 1


# --- prices and keys ------------------------------------------------------------------------------


def test_prices_come_from_litellms_local_map(capsys: pytest.CaptureFixture[str]):
    o3 = litellm.model_cost["o3"]
    assert price_per_token("openai/o3") == (o3["input_cost_per_token"], o3["output_cost_per_token"])
    assert price_per_token("o3") == price_per_token("openai/o3")
    mini = litellm.model_cost["gpt-4o-mini"]
    assert price_per_token("openai/gpt-4o-mini") == (mini["input_cost_per_token"], mini["output_cost_per_token"])
    assert price_per_token("openai/my-local-vllm-model") is None
    assert price_per_token("no-such-model") is None
    assert price_per_token("scripted") is None
    assert capsys.readouterr().out == ""  # no litellm banner for unknown names

    snapshot = price_snapshot("openai/o3")
    assert snapshot["known"] is True and snapshot["key"] == "o3"
    assert snapshot["input_cost_per_token"] == o3["input_cost_per_token"]
    assert snapshot["entry"]["litellm_provider"] == "openai"
    assert snapshot["litellm_version"] == version("litellm")
    json.dumps(snapshot)
    assert price_snapshot("scripted")["known"] is False


def test_missing_api_keys(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)
    monkeypatch.delenv("ENGRAM_TEST_KEY", raising=False)
    assert missing_api_keys("openai/o3") == ["OPENAI_API_KEY"]
    assert missing_api_keys("anthropic/claude-sonnet-4-5") == ["ANTHROPIC_API_KEY"]
    assert missing_api_keys("ollama/llama3", api_base="http://localhost:11434") == []
    assert missing_api_keys("ollama/llama3") == []  # litellm defaults to localhost:11434
    assert missing_api_keys("openai/my-vllm-model", api_base="http://localhost:8000/v1") == []
    assert missing_api_keys("scripted") == []
    assert missing_api_keys("openai/o3", api_key_env="ENGRAM_TEST_KEY") == ["ENGRAM_TEST_KEY"]
    monkeypatch.setenv("ENGRAM_TEST_KEY", "k")
    assert missing_api_keys("openai/o3", api_key_env="ENGRAM_TEST_KEY") == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert missing_api_keys("openai/o3") == []
    assert capsys.readouterr().out == ""


# --- construction ---------------------------------------------------------------------------------


def test_create_chat_model_builds_chatlitellm_with_the_params(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = create_chat_model(
        "openai/gpt-4o-mini",
        params={"temperature": 0.2, "max_tokens": 4096, "reasoning_effort": "high", "seed": 7},
        timeout_s=90,
    )
    assert isinstance(model, ChatLiteLLM)
    assert model.model == "openai/gpt-4o-mini"
    assert model.temperature == 0.2 and model.max_tokens == 4096
    # max_retries=0 twice: for langchain-litellm's own retry loop, and through litellm for the OpenAI SDK
    assert model.model_kwargs == {"reasoning_effort": "high", "seed": 7, "max_retries": 0}
    assert model.request_timeout == 90 and model.max_retries == 0
    assert not model.use_responses_api  # not a reasoning model: Chat Completions
    assert model.api_base is None and model.api_key is None
    sent = model._default_params
    assert sent["reasoning_effort"] == "high" and sent["temperature"] == 0.2 and sent["timeout"] == 90


def test_create_chat_model_keys_and_local_servers(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    local = create_chat_model("openai/my-vllm-model", api_base="http://localhost:8000/v1")
    assert local.api_base == "http://localhost:8000/v1"
    assert local.api_key not in (None, "sk-real-openai-key")  # a placeholder, not the user's OpenAI key
    monkeypatch.setenv("ENGRAM_TEST_KEY", "sk-chosen")
    chosen = create_chat_model("openai/my-vllm-model", api_base="http://x/v1", api_key_env="ENGRAM_TEST_KEY")
    assert chosen.api_key == "sk-chosen"
    monkeypatch.delenv("ENGRAM_TEST_KEY")
    with pytest.raises(EngramError, match="ENGRAM_TEST_KEY"):
        create_chat_model("openai/o3", api_key_env="ENGRAM_TEST_KEY")
    assert create_chat_model("ollama/llama3", api_base="http://localhost:11434").api_key is None


@pytest.mark.parametrize("name", ["max_retries", "api_key", "openai_api_key", "model", "request_timeout"])
def test_params_engram_controls_are_refused(name: str):
    with pytest.raises(ConfigError, match=name):
        create_chat_model("openai/gpt-4o-mini", params={name: 1})


def test_create_chat_model_scripted(script: Path):
    model = create_chat_model("scripted", script=script, agent=2, price_as="openai/o3")
    assert isinstance(model, ScriptedChatModel)
    assert model.price_as == "openai/o3"
    assert model.invoke("hi").content == "Agent two speaks."
    with pytest.raises(ConfigError, match="script"):
        create_chat_model("scripted")
