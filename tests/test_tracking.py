"""MLflow mirroring against a real local SQLite store: runs, resume, failures, plots and agent traces."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import mlflow_state_restored, require_module

from engram.results.tracking import (
    RUN_ID_FILE,
    TAG_RUN_DIR,
    Tracker,
    _remove_from_fluent_stack,
    default_tracking_uri,
    flatten_params,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite store for the module: creating it runs MLflow's migrations, which takes seconds.

    Trackers point MLflow's process-wide tracking URI and experiment at the store; put them back
    afterwards so other test modules (and their subprocesses) do not inherit them.
    """
    with mlflow_state_restored():
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(store: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(store)


def _run_dir(tmp_path: Path, name: str = "run") -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    return run_dir


def _artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    """Every artefact file path of a run, recursively."""
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _runs_for(client: Any, experiment: str, run_dir: Path) -> list[Any]:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{TAG_RUN_DIR}` = '{run_dir}'")


def test_flatten_params():
    spec = {"name": "x", "agents": [{"model": "m", "tools": []}, {"model": "n"}], "budget": {"dollars": 1.5}, "e": {}}
    assert flatten_params(spec) == {
        "name": "x",
        "agents.0.model": "m",
        "agents.0.tools": "[]",
        "agents.1.model": "n",
        "budget.dollars": "1.5",
        "e": "{}",
    }
    assert flatten_params({"a": {"b": None}}, prefix="spec") == {"spec.a.b": "None"}


def test_default_tracking_uri_is_sqlite_under_the_project(tmp_path: Path):
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns").is_dir()


def test_parent_and_agent_runs_with_params_metrics_and_artifacts(store: str, client: Any, tmp_path: Path):
    run_dir = _run_dir(tmp_path)
    (run_dir / "summary.json").write_text("{}")
    (run_dir / "candidates").mkdir()
    (run_dir / "candidates" / "0001.py").write_text("pass\n")
    params = {**flatten_params({"problem": "cloudcast", "agents": [{"model": "fake"}]}), "long": "x" * 7000}
    params["bad key!"] = "v"

    tracker = Tracker(enabled=True, tracking_uri=store, experiment="basic")
    tracker.start(run_name="spec-seed0", run_dir=run_dir, tags={"engram.seed": "0"}, params=params)
    assert tracker.active
    parent_id = tracker.run_id
    assert (run_dir / RUN_ID_FILE).read_text().strip() == parent_id

    tracker.start_agent(0, tags={"engram.model": "fake"})
    tracker.log_evaluation(step=1, score=0.5, best_score=0.5, dollars=0.01, tokens=100, agent=0)
    tracker.log_evaluation(step=2, score=None, best_score=0.5, dollars=0.02, tokens=250, agent=0)
    tracker.log_evaluation(step=3, score=0.7, best_score=0.7, dollars=0.03, tokens=400, agent=None)
    agent_log = tmp_path / "agent-0.log"
    agent_log.write_text("log\n")
    tracker.end_agent(0, metrics={"best_score": 0.5, "evaluations": 2}, artifacts=[agent_log])
    tracker.log_artifacts([run_dir / "summary.json", run_dir / "candidates", tmp_path / "missing"], "archive")
    tracker.finish()
    assert not tracker.active

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "spec-seed0"
    assert parent.data.tags[TAG_RUN_DIR] == str(run_dir) and parent.data.tags["engram.seed"] == "0"
    assert parent.data.params["problem"] == "cloudcast" and parent.data.params["agents.0.model"] == "fake"
    assert len(parent.data.params["long"]) == 6000
    assert parent.data.params["bad key_"] == "v"
    assert _history(client, parent_id, "score") == [(1, 0.5), (3, 0.7)]
    assert _history(client, parent_id, "tokens") == [(1, 100), (2, 250), (3, 400)]
    assert _artifacts(client, parent_id) == {"archive/summary.json", "archive/candidates/0001.py"}

    (agent,) = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert agent.info.run_name == "agent-0" and agent.info.status == "FINISHED"
    assert agent.data.tags["engram.model"] == "fake"
    assert _history(client, agent.info.run_id, "best_score") == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert _history(client, agent.info.run_id, "dollars") == [(1, 0.01), (2, 0.02)]
    assert agent.data.metrics["evaluations"] == 2
    assert _artifacts(client, agent.info.run_id) == {"agent-0.log"}


def test_resume_reuses_the_parent_and_agent_runs(store: str, client: Any, tmp_path: Path):
    run_dir = _run_dir(tmp_path)
    first = Tracker(enabled=True, tracking_uri=store, experiment="resume")
    first.start(run_name="r", run_dir=run_dir, tags={}, params={"a": "1", "b": "2"})
    first.start_agent(0)
    first.log_evaluation(step=1, score=1.0, best_score=1.0, dollars=0.1, tokens=10, agent=0)
    parent_id, agent_id = first.run_id, first.agent_run_id(0)
    first.finish("KILLED")
    assert client.get_run(parent_id).info.status == "KILLED"
    assert client.get_run(agent_id).info.status == "KILLED"

    second = Tracker(enabled=True, tracking_uri=store, experiment="resume")
    second.start(run_name="r", run_dir=run_dir, tags={"resumed": "yes"}, params={"a": "1", "b": "changed", "c": "3"})
    assert second.run_id == parent_id
    assert client.get_run(parent_id).info.status == "RUNNING"
    second.start_agent(0)
    assert second.agent_run_id(0) == agent_id
    assert client.get_run(agent_id).info.status == "RUNNING"
    second.log_evaluation(step=2, score=2.0, best_score=2.0, dollars=0.2, tokens=20, agent=0)
    second.end_agent(0, metrics={})
    second.finish()

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"a": "1", "b": "2", "c": "3"}  # params are immutable in MLflow
    assert parent.data.tags["resumed"] == "yes"
    assert _history(client, agent_id, "score") == [(1, 1.0), (2, 2.0)]
    assert len(_runs_for(client, "resume", run_dir)) == 1
    assert len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")) == 1

    # Without the id file, the run_dir tag still finds the same run.
    (run_dir / RUN_ID_FILE).unlink()
    third = Tracker(enabled=True, tracking_uri=store, experiment="resume")
    third.start(run_name="r", run_dir=run_dir, tags={}, params={})
    assert third.run_id == parent_id
    third.finish()
    assert (run_dir / RUN_ID_FILE).read_text().strip() == parent_id


def test_a_killed_agents_run_is_closed_on_resume_and_the_parents_dollars_are_final(store: str, client: Any,
                                                                                   tmp_path: Path):
    run_dir = _run_dir(tmp_path)
    killed = Tracker(enabled=True, tracking_uri=store, experiment="killed")
    killed.start(run_name="r", run_dir=run_dir, tags={}, params={})
    killed.start_agent(1)
    killed.log_evaluation(step=1, score=1.0, best_score=1.0, dollars=0.5, tokens=10, agent=1)
    agent_id = killed.agent_run_id(1)
    # SIGKILL: no finish(); the nested run stays RUNNING until the resumed run closes the agent.
    killed._open_agents.clear()
    _remove_from_fluent_stack(agent_id, None)  # what a dead process leaves: the store untouched
    assert client.get_run(agent_id).info.status == "RUNNING"

    resumed = Tracker(enabled=True, tracking_uri=store, experiment="killed")
    resumed.start(run_name="r", run_dir=run_dir, tags={}, params={})
    resumed.end_agent(1, metrics={"experiments": 1.0}, status="KILLED")  # closed without start_agent
    resumed.finish(metrics={"dollars": 0.75, "tokens": 30})
    assert client.get_run(agent_id).info.status == "KILLED"
    parent = client.get_run(resumed.run_id or killed.run_id or "")
    assert parent.data.metrics["dollars"] == 0.75 and parent.data.metrics["tokens"] == 30


@pytest.mark.parametrize("uri", ["sqlite:////proc/engram-no-such-dir/mlflow.db", "bogus-scheme://nowhere"])
def test_broken_tracking_uri_warns_once_and_disables(uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import mlflow

    global_uri = mlflow.get_tracking_uri()
    run_dir = _run_dir(tmp_path)
    tracker = Tracker(enabled=True, tracking_uri=uri, experiment="broken")
    tracker.start(run_name="r", run_dir=run_dir, tags={}, params={"a": 1})
    tracker.enable_langchain_autolog()
    tracker.start_agent(0)
    tracker.log_evaluation(step=1, score=1.0, best_score=1.0, dollars=0.0, tokens=0, agent=0)
    tracker.log_artifacts([run_dir])
    tracker.log_score_plot([(1, 1.0, 1.0)])
    tracker.end_agent(0, metrics={"x": 1.0})
    tracker.finish("FAILED")

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("engram: warning:")]
    assert len(warnings) == 1, warnings
    assert "Tracker.start" in warnings[0] and "unaffected" in warnings[0]
    assert not tracker.active
    assert not (run_dir / RUN_ID_FILE).exists()
    assert mlflow.get_tracking_uri() == global_uri  # a broken store never becomes the process-wide one


def test_failure_mid_run_disables_and_releases_the_agent_run(
    store: str, client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import mlflow

    tracker = Tracker(enabled=True, tracking_uri=store, experiment="midrun")
    tracker.start(run_name="r", run_dir=_run_dir(tmp_path), tags={}, params={})
    tracker.start_agent(0)
    assert mlflow.active_run().info.run_id == tracker.agent_run_id(0)
    tracker.end_agent(0, metrics={}, status="EXPLODED")  # an invalid status is an error like any other
    tracker.log_evaluation(step=1, score=1.0, best_score=1.0, dollars=0.0, tokens=0, agent=0)
    tracker.finish()

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("engram: warning:")]
    assert len(warnings) == 1 and "Tracker.end_agent" in warnings[0]
    assert not tracker.active
    assert mlflow.active_run() is None
    assert not client.get_metric_history(tracker.run_id, "score")


def test_disabled_tracker_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run_dir = _run_dir(tmp_path)
    tracker = Tracker(enabled=False, tracking_uri=None, experiment="off")
    tracker.start(run_name="r", run_dir=run_dir, tags={}, params={})
    tracker.enable_langchain_autolog()
    tracker.start_agent(0)
    tracker.log_evaluation(step=1, score=1.0, best_score=1.0, dollars=0.0, tokens=0, agent=0)
    tracker.end_agent(0, metrics={})
    tracker.finish()
    assert not tracker.active
    assert list(run_dir.iterdir()) == []
    assert not (tmp_path / "mlruns").exists()
    assert capsys.readouterr().err == ""


def test_score_plot_is_logged_as_png(store: str, client: Any, tmp_path: Path):
    require_module("matplotlib", "a dependency of engram: pip install -e .")
    tracker = Tracker(enabled=True, tracking_uri=store, experiment="plot")
    tracker.start(run_name="r", run_dir=_run_dir(tmp_path), tags={}, params={})
    tracker.log_score_plot([(1, 0.2, 0.2), (2, None, 0.2), (3, 0.5, 0.5), (4, 0.1, 0.5)])
    run_id = tracker.run_id
    tracker.finish()
    assert _artifacts(client, run_id) == {"plots/score.png"}
    local = client.download_artifacts(run_id, "plots/score.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_langchain_traces_link_to_the_agent_run(store: str, client: Any, tmp_path: Path):
    import mlflow
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.prompts import ChatPromptTemplate

    def invoke(answer: str) -> None:
        model = GenericFakeChatModel(messages=iter([AIMessage(content=answer)]))
        chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | model
        assert chain.invoke({"question": "design an algorithm"}).content == answer

    tracker = Tracker(enabled=True, tracking_uri=store, experiment="traces")
    tracker.start(run_name="r", run_dir=_run_dir(tmp_path), tags={}, params={})
    tracker.enable_langchain_autolog()
    tracker.start_agent(0)
    invoke("first")
    tracker.end_agent(0, metrics={})
    tracker.start_agent(1)
    invoke("second")
    worker = threading.Thread(target=invoke, args=("third",))  # LangGraph runs nodes in worker threads
    worker.start()
    worker.join()
    tracker.end_agent(1, metrics={})
    invoke("between agents")  # no agent running: in the experiment, linked to no run
    parent_id, agent_ids = tracker.run_id, [tracker.agent_run_id(0), tracker.agent_run_id(1)]
    experiment_id = client.get_run(parent_id).info.experiment_id
    tracker.finish()
    mlflow.flush_trace_async_logging()

    def traces(run_id: str) -> list[Any]:
        return mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list")

    assert [len(traces(run_id)) for run_id in agent_ids] == [1, 2]
    assert traces(parent_id) == []
    assert len(mlflow.search_traces(locations=[experiment_id], return_type="list")) == 4
    assert "first" in traces(agent_ids[0])[0].info.response_preview
