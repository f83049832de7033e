"""A day of ordinary use: failed starts leave nothing behind, output reads right on and off a terminal,
and `engram status` tells a run that cannot continue from one that can."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import free_port, port_answers

from engram.cli import _report_run, main
from engram.runs.progress import RichProgress
from engram.runs.runner import RESOLVED_SPEC
from engram.runs.status import planned_agents, seed_status

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke_copy(tmp_path: Path) -> Path:
    """The smoke spec and its script in a scratch folder, so runs land there."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "smoke.yaml").write_text((REPO / "specs" / "scripts" / "smoke.yaml").read_text())
    spec = tmp_path / "smoke.yaml"
    spec.write_text((REPO / "specs" / "smoke.yaml").read_text())
    return spec


@pytest.mark.parametrize("override, message", [
    ("problem.scenarios=[nope]", "has no scenario or scenario set 'nope'"),
    ("model.script=scripts/missing.yaml", "missing.yaml: file not found"),
    ("sandbox.backend=bwrap", None),  # control: the same spec starts (checked only up to the run directory)
])
def test_a_failed_start_leaves_no_run_directory(smoke_copy: Path, override: str, message: str | None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(smoke_copy.parent)
    if message is None:
        # The control run is stopped right after its run directory exists: it must stay.
        import engram.runs.runner as runner

        def stop(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(runner, "_run_seeds", stop)
    result = CliRunner().invoke(main, ["apply", str(smoke_copy), "--set", override, "-q"])
    runs = smoke_copy.parent / "runs"
    if message is None:
        assert result.exit_code == 130
        assert len(list((runs / "smoke").iterdir())) == 1
        return
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("\n") == 1, "one line"
    assert not runs.exists() or not any(runs.rglob("*")), sorted(runs.rglob("*"))


def test_a_run_stopped_by_a_configuration_error_is_failed_not_resumable(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "smoke" / "20261207-120000"
    seed_dir = run_dir / "seed-0"
    seed_dir.mkdir(parents=True)
    (run_dir / RESOLVED_SPEC).write_text(yaml.safe_dump({"spec": {"runs": 1, "budget": {"max_agents": 2}}}))
    events = [{"type": "run_start", "seed": 0}, {"type": "agent_start", "agent": 1},
              {"type": "run_error", "error": "scripts/x.yaml: file not found", "error_type": "ConfigError",
               "exit_code": 2}]
    (seed_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    status = seed_status(seed_dir, max_agents=2)
    assert status.state == "failed"
    assert "file not found" in status.detail and "engram resume" in status.detail
    with (seed_dir / "events.jsonl").open("a") as log:  # a resume after the fix: resumable again
        log.write(json.dumps({"type": "resume", "seed": 0}) + "\n")
    assert seed_status(seed_dir, max_agents=2).state == "stopped"


def test_status_line_is_a_whole_line_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = RichProgress()
    progress.close()
    assert capsys.readouterr().err == "", "nothing before a run starts: an early error stands alone"
    progress = RichProgress()
    progress.seed_started(0, resumed=False)
    progress.agent_started(1, 2)
    progress.close()
    err = capsys.readouterr().err
    assert err.endswith("$0.0000\n"), repr(err)
    assert err.splitlines()[-1].startswith("seed 0  agent 1/2")


def test_summary_names_each_seeds_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed in (0, 1):
        (tmp_path / f"seed-{seed}" / "best").mkdir(parents=True)
        (tmp_path / f"seed-{seed}" / "best" / "program.py").write_text("")
    (tmp_path / "seed-1" / "digest.md").write_text("")
    seeds = [SimpleNamespace(seed=s, result={"best_score": 1.0, "evaluations": 2, "dollars": 0.0,
                                             "stop_reason": "done"}) for s in (0, 1)]
    _report_run(SimpleNamespace(run_dir=tmp_path, seeds=seeds, tracking_uri=None), as_json=False)
    out = capsys.readouterr().out
    assert "<k>" not in out
    assert f"best program: {tmp_path / 'seed-0' / 'best' / 'program.py'}" in out
    assert f"best program: {tmp_path / 'seed-1' / 'best' / 'program.py'}" in out
    assert out.count("digest:") == 1 and str(tmp_path / "seed-1" / "digest.md") in out


@pytest.mark.parametrize("spec, expected", [
    ({"budget": {"max_agents": 4}}, 4),
    ({"method": {"name": "engram"}, "budget": {"max_agents": 4}}, 4),
    ({"method": {"name": "tree_search", "rounds": 3}, "budget": {"max_agents": 2}}, 3),
    ({"method": {"name": "one_shot"}, "budget": {"max_agents": 2}}, None),
    ({"method": {"name": "single_agent"}, "budget": {"max_agents": 2}}, None),
])
def test_agent_count_follows_the_method(spec: dict[str, object], expected: int | None) -> None:
    assert planned_agents(spec) == expected


def test_rich_progress_off_a_terminal_does_not_redraw() -> None:
    progress = RichProgress()
    progress.console.file = io.StringIO()
    progress.seed_started(0, resumed=False)
    for _ in range(3):
        progress.agent_started(1, 2)
    progress.close()
    text = progress.console.file.getvalue()
    assert text.count("seed 0  agent") == 1 and "\r" not in text and "\x1b[" not in text


def _group_alive(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ui_prints_the_runs_view_and_sigterm_stops_every_mlflow_process(tmp_path: Path) -> None:
    """MLflow serves with uvicorn workers and a huey consumer; after SIGTERM none of them may remain."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("cloudcast")
    client.create_run(experiment)
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "engram", "ui", "--uri", store, "--port", str(port)],
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert ui.stdout is not None
        lines = [ui.stdout.readline() for _ in range(2)]
        assert f"runs of cloudcast: http://127.0.0.1:{port}/#/experiments/{experiment}/runs" in lines[1]
        while not port_answers(port):  # the event waited for: the server listens (pytest-timeout bounds it)
            assert ui.poll() is None, "engram ui exited before the server listened"
            time.sleep(0.2)
        server_groups = {int(line.split()[1]) for line in subprocess.run(
            ["ps", "-eo", "pid,pgid,ppid"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
            if int(line.split()[2]) == ui.pid}
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=120) == 0
        assert not port_answers(port)
        for pgid in server_groups:
            assert not _group_alive(pgid), "a process of MLflow's group survived"
    finally:
        if ui.poll() is None:
            ui.kill()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_validate_checks_every_spec_names_each_file_and_suggests(tmp_path: Path) -> None:
    good = REPO / "specs" / "smoke.yaml"
    typo = _write(tmp_path, "typo.yaml", "problem: {name: cloudcast}\nmodel: {id: openai/o3}\nbudgte: {}\n"
                                          "method: {name: engrma}\n")
    nested = _write(tmp_path, "nested.yaml", "problem: {name: cloudcast}\nmodel: {id: openai/o3}\n"
                                             "method: {digset: false}\n")
    scenario = _write(tmp_path, "scenario.yaml", "problem: {name: cloudcast, scenarios: [nope]}\n"
                                                 "model: {id: openai/o3}\n")
    unknown = _write(tmp_path, "unknown.yaml", "problem: {name: nosuch}\nmodel: {id: openai/o3}\n")
    empty = _write(tmp_path, "empty.yaml", "problem:\nmodel: {id: openai/o3}\n")
    scripted = _write(tmp_path, "scripted.yaml", "problem: {name: cloudcast}\nmodel: {id: scripted}\n")
    result = CliRunner().invoke(main, ["validate", str(typo), str(good), str(nested), str(scenario), str(unknown),
                                       str(empty), str(scripted)])
    assert result.exit_code == 2
    out = result.output
    assert f"{good}: ok" in out, "a good spec after a bad one is still checked"
    assert "budgte: unknown key (did you mean 'budget'?)" in out
    assert "method.name: unknown method 'engrma' (did you mean 'engram'?)" in out
    assert "method.digset: unknown key (did you mean 'digest'?)" in out
    assert f"{scenario}: problem.scenarios: problem cloudcast has no scenario or scenario set 'nope'" in out
    assert f"{unknown}: problem.name: no problem 'nosuch'" in out
    assert "problem: is empty" in out and "valid dictionary" not in out and "Input tag" not in out
    assert "the scripted model needs `script:`" in out
    assert "6 of 7 spec(s) have errors" in out


@pytest.mark.parametrize("override, message", [
    ("runs=1000000000000", "runs: must be less than or equal to 10000"),
    ("name=..", "name: must match"),
    ("budget.target_score=.nan", "budget.target_score: must be a finite number"),
    ("problem.time_limit_s=.inf", "problem.time_limit_s: must be a finite number"),
    ("budget.minutes_per_agent=.inf", "budget.minutes_per_agent: must be a finite number"),
    ("sandbox.shell_memory_mb=100000000000000000000", "sandbox.shell_memory_mb: must be less than"),
])
def test_bad_values_are_one_clear_error(override: str, message: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO / "specs" / "smoke.yaml"), "--set", override])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for index, name in enumerate("bcdef"):
        previous = "abcdef"[index]
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    bomb = _write(tmp_path, "bomb.yaml", "\n".join(levels) + "\n")
    result = CliRunner().invoke(main, ["validate", str(bomb)])
    assert result.exit_code == 2 and "expands to more than 100,000 values" in result.output


def test_unwritable_output_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["apply", str(REPO / "specs" / "smoke.yaml"), "--set",
                                       "output.dir=/proc/self/x", "-q"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("engram: error: output.dir /proc/self/x: cannot create")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "0"])
def test_evaluate_timeout_must_be_a_positive_finite_number(value: str) -> None:
    result = CliRunner().invoke(main, ["evaluate", "cloudcast", str(REPO / "evaluators/cloudcast/initial_program.py"),
                                       "--timeout", value])
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.output


def test_problem_limits_are_bounded(tmp_path: Path) -> None:
    from engram.errors import ConfigError
    from engram.problems.problem import load_problem

    problem = tmp_path / "p"
    CliRunner().invoke(main, ["new-problem", str(problem)])
    config = problem / "problem.yaml"
    config.write_text(config.read_text() + "limits: {memory_mb: 100000000000000000000}\n")
    with pytest.raises(ConfigError, match=r"limits.memory_mb: must be less than or equal to"):
        load_problem(str(problem))


def test_wrong_manifest_checksum_is_not_blamed_on_the_file_alone(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from engram.errors import DataError
    from engram.problems.data import DataFile, resolve

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f.csv").write_text("a,b\n")
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path))
    entry = DataFile(path="p/f.csv", url="https://example.org/f.csv", sha256="0" * 64)
    with pytest.raises(DataError) as raised:
        resolve(entry)
    message = str(raised.value)
    assert "the manifest says sha256 " + "0" * 64 in message and "the file has sha256 " in message
    assert "problem.yaml" in message and "delete it" not in message  # a mirror is not re-downloaded


def test_a_run_that_stops_on_an_error_records_it_for_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error is in the event log, so `engram status` shows it instead of "interrupted; resumable"."""
    import engram.methods.registry as registry
    from engram.errors import IntegrityError
    from engram.runs.status import collect, find_seed_dirs

    def broken(ctx: Any) -> None:
        (ctx.archive.root / "agents" / "agent-1" / "experiments" / "exp-0001").mkdir(parents=True)  # work done
        raise IntegrityError("the trusted files changed")

    monkeypatch.setattr(registry, "run_method", broken)
    spec = REPO / "specs" / "smoke.yaml"
    result = CliRunner().invoke(main, ["apply", str(spec), "--set", f"output.dir={tmp_path}", "-q",
                                       "--set", "tracking.mlflow=false"])
    assert result.exit_code == 2 and "the trusted files changed" in result.output
    [row] = collect(find_seed_dirs([tmp_path]))
    assert row.state == "failed" and "the trusted files changed" in row.detail


def test_resume_repairs_what_it_can_of_a_damaged_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A torn last event line, a deleted evaluation.json, a deleted program.py: the next event is kept,
    the evaluation is scored again, the missing program is named."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run

    from engram.runs.archive import read_jsonl
    from engram.runs.progress import QuietProgress
    from engram.runs.runner import resume

    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"content": SUMMARY}], [{"content": SUMMARY}]])
    outcome = run(spec)
    seed = outcome.run_dir / "seed-0"
    # As if killed during agent 2: its events and the result are not there yet.
    events = (seed / "events.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(events) if '"agent_end"' in line) + 1
    (seed / "events.jsonl").write_text("".join(events[:cut]) + '{"type": "experi')  # torn mid-write
    (seed / "result.json").unlink()
    experiments = seed / "agents" / "agent-1" / "experiments"
    recorded = json.loads((experiments / "exp-0001" / "evaluation.json").read_text())["score"]
    (experiments / "exp-0001" / "evaluation.json").unlink()
    (experiments / "exp-0002" / "program.py").unlink()
    capsys.readouterr()
    resume(outcome.run_dir, QuietProgress())
    err = capsys.readouterr().err
    assert json.loads((experiments / "exp-0001" / "evaluation.json").read_text())["score"] == recorded
    assert "seed-0/exp-0001: evaluation.json was missing; scored again" in err
    assert "seed-0/exp-0002: program.py is missing" in err
    kinds = [e["type"] for e in read_jsonl(seed / "events.jsonl")]
    assert kinds[cut:cut + 2] == ["resume", "agent_start"], "the event after the torn line is intact"
    assert (seed / "result.json").is_file()


def test_written_results_follow_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    from engram.runs.archive import write_atomic

    previous = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    write_atomic(tmp_path / "b.json", "{}")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o666 & ~previous


def test_a_planned_sweep_is_on_disk_before_any_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolved spec is written at planning: `engram status` lists pending runs, and planning again
    (a driver killed before its runs started, then re-launched) reuses the same run directories."""
    from engram.runs.status import collect, find_seed_dirs
    from engram.runs.sweep import load_specs, plan, read_entries

    monkeypatch.chdir(tmp_path)
    spec = _write(tmp_path, "s.yaml", (REPO / "specs" / "smoke.yaml").read_text().replace(
        "script: scripts/smoke.yaml", f"script: {REPO / 'specs' / 'scripts' / 'smoke.yaml'}") + "runs: 2\n")
    spec.write_text(spec.read_text().replace("runs: 1\n", ""))

    def planned() -> list[Any]:
        entries, _ = read_entries([spec], ["tracking.mlflow=false"])
        return plan(entries, load_specs(entries), new=False, reuse_finished=True, max_dollars=None)

    first = planned()
    [run_dir] = {Path(run.unit.run_dir) for run in first}
    stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text())
    assert stored["meta"]["sandbox"] in ("bwrap", "process", "docker")
    assert all(run.unit.sandbox == stored["meta"]["sandbox"] for run in first)
    rows = collect(find_seed_dirs([tmp_path / "runs"]))
    assert [row.state for row in rows] == ["pending", "pending"]
    assert {Path(run.unit.run_dir) for run in planned()} == {run_dir}
    assert len(list((tmp_path / "runs" / "smoke").iterdir())) == 1


def test_docker_runs_on_ray_need_a_node_with_the_docker_resource() -> None:
    from engram.executors.base import ExecutorError, RunUnit
    from engram.executors.ray import RayExecutor

    class Cluster:
        @staticmethod
        def cluster_resources() -> dict[str, float]:
            return {"CPU": 4.0}

    auto_on_docker = RunUnit(spec={"name": "s", "sandbox": {"backend": "auto"}}, spec_file=None, overrides=(),
                             run_dir="/tmp/r", seed=0, sandbox="docker")
    assert auto_on_docker.uses_docker()
    with pytest.raises(ExecutorError, match="no node of the Ray cluster offers the resource 'engram_docker'"):
        RayExecutor()._check_docker_resource(Cluster, [auto_on_docker])
    RayExecutor()._check_docker_resource(Cluster, [RunUnit(spec={"name": "s"}, spec_file=None, overrides=(),
                                                           run_dir="/tmp/r", seed=0, sandbox="bwrap")])


def test_a_syntax_error_names_the_users_file(tmp_path: Path) -> None:
    program = _write(tmp_path, "mine.py", "def search_algorithm(src, dsts, G, num_partitions)\n    return 1\n")
    result = CliRunner().invoke(main, ["evaluate", "cloudcast", str(program), "--scenarios", "intra_aws"])
    assert result.exit_code == 3
    assert f'File "{program}", line 1' in result.output and "engram-eval-" not in result.output


def test_verbose_shows_the_replies_of_methods_without_an_agent_loop() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    from engram.runs.runner import _reply_echo

    seen: list[tuple[int, str, list[dict[str, Any]]]] = []
    progress = SimpleNamespace(agent_turn=lambda agent, text, calls: seen.append((agent, text, calls)))
    call = {"name": "implement_algorithm", "args": {"code": "x"}, "id": "c1", "type": "tool_call"}
    reply = LLMResult(generations=[[ChatGeneration(message=AIMessage(content="why", tool_calls=[call]))]])
    _reply_echo(progress, 3).on_llm_end(reply)  # type: ignore[arg-type]
    assert seen == [(3, "why", [call])]


def test_the_last_status_line_shows_the_runs_final_dollars(capsys: pytest.CaptureFixture[str]) -> None:
    progress = RichProgress()
    progress.seed_started(0, resumed=False)
    progress.seed_finished(0, {"dollars": 0.1232, "best_score": 0.5})
    progress.close()
    assert capsys.readouterr().err.splitlines()[-1].endswith("best 0.5  $0.1232")


def test_the_status_line_is_per_seed_counts_a_resumed_seeds_earlier_evaluations_and_shows_agents_only_if_any(
        capsys: pytest.CaptureFixture[str]) -> None:
    progress = RichProgress()
    scored = SimpleNamespace(ok=True, score=0.5, error_kind=None)
    progress.seed_started(0, resumed=False)
    progress.experiment(1, scored, 0.5, 0.01)  # type: ignore[arg-type]
    progress.seed_finished(0, {"dollars": 0.01, "best_score": 0.5, "evaluations": 1})
    progress.seed_started(1, resumed=True)  # 2 evaluations before the resume, 1 after
    progress.experiment(3, scored, 0.5, 0.03)  # type: ignore[arg-type]
    progress.seed_finished(1, {"dollars": 0.03, "best_score": 0.5, "evaluations": 3})
    progress.close()
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("seed 1  0:") and "agent" not in last, last  # one-shot and the like have no agents
    assert "evaluations 3 " in last, last


@pytest.mark.parametrize("model_id, hint", [("opneai/o3", "did you mean openai/...?"), ("mymodel", "PROVIDER/MODEL")])
def test_a_model_id_litellm_cannot_place_is_refused_before_a_run(smoke_copy: Path, model_id: str, hint: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm itself refuses such an id only at the first call, after a run directory and an agent exist."""
    monkeypatch.chdir(smoke_copy.parent)
    overrides = ["--set", f"model.id={model_id}", "--set", "model.script=null"]
    checked = CliRunner().invoke(main, ["validate", str(smoke_copy), *overrides])
    assert checked.exit_code == 2 and hint in checked.output and "smoke.yaml: model.id" in checked.output
    started = CliRunner().invoke(main, ["apply", str(smoke_copy), *overrides, "-q"])
    assert started.exit_code == 2, started.output
    assert hint in started.output and started.output.count("\n") == 1, started.output
    assert not (smoke_copy.parent / "runs").exists()


def test_validate_takes_a_folder_of_specs_and_a_grid_as_apply_would_run_it(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()  # a subfolder of scripts is not a folder of specs
    (tmp_path / "scripts" / "smoke.yaml").write_text((REPO / "specs" / "scripts" / "smoke.yaml").read_text())
    _write(tmp_path, "smoke.yaml", (REPO / "specs" / "smoke.yaml").read_text())
    _write(tmp_path, "typo.yaml", "problem: {name: cloudcast}\nmodel: {id: openai/o3}\nbudgte: {}\n")
    (tmp_path / "grids").mkdir()
    grid = _write(tmp_path / "grids", "grid.yml", "specs:\n  - ../smoke.yaml\n"
                                                   "  - {spec: ../smoke.yaml, set: {method.digset: false}}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path), str(grid)])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'smoke.yaml'}: ok" in result.output
    assert "budgte: unknown key" in result.output
    assert f"{grid}: ../smoke.yaml: ok" in result.output, "a grid's entries are checked, with their overrides"
    assert f"engram: error: {grid}: " in result.output and "method.digset: unknown key" in result.output
    assert "2 of 4 spec(s) have errors" in result.output
    assert "agents: unknown key" not in result.output, "the scripts subfolder is not read as specs"


@pytest.mark.parametrize("typed, meant", [("specs/smok.yaml", "specs/smoke.yaml"), ("smoke", "specs/smoke.yaml"),
                                          ("specs/cloudcast_o3_quik.yaml", "specs/cloudcast_o3_quick.yaml")])
def test_a_mistyped_spec_path_names_the_spec_it_meant(typed: str, meant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for command in ("apply", "validate"):
        result = CliRunner().invoke(main, [command, typed])
        assert result.exit_code == 2
        assert f"does not exist; did you mean {meant}?" in result.output, result.output


@pytest.mark.parametrize("args", [["--help"], ["sandbox", "--help"]])
def test_the_command_list_gives_each_commands_whole_first_sentence(args: list[str]) -> None:
    """Cut to fit 80 columns, the listing read 'Run the experiment SPEC (or continue its unfinished...'."""
    listing = CliRunner().invoke(main, args).output
    assert not re.search(r"\w\.\.\.", listing), listing  # "[ARGS]..." of the usage line aside
    group = main if args == ["--help"] else main.commands["sandbox"]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        first = " ".join((command.help or "").split("\n\n")[0].split()).split(". ")[0].rstrip(".")
        assert first in " ".join(listing.split()), f"{name}: {first!r} not listed whole"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name, command in group.commands.items():
        found += _commands(command, (*path, name)) if hasattr(command, "commands") else [((*path, name), command)]
    return found


@pytest.mark.parametrize("name", [" ".join(path) for path, _ in _commands(main)])
def test_every_command_and_option_says_what_it_is_for(name: str) -> None:
    import click

    command = dict((" ".join(path), command) for path, command in _commands(main))[name]
    assert command.help, f"engram {name} has no help"
    silent = [option.opts[0] for option in command.params if isinstance(option, click.Option) and not option.help]
    assert not silent, f"engram {name}: options without help: {silent}"


def _fake_run(runs: Path, spec_name: str, stamp: str, *, finished: bool, overrides: tuple[str, ...] = ()) -> Path:
    from engram.spec import load_spec

    run_dir = runs / spec_name / stamp
    (run_dir / "seed-0").mkdir(parents=True)
    spec = load_spec(REPO / "specs" / "smoke.yaml", [f"name={spec_name}", *overrides]).to_plain()
    (run_dir / RESOLVED_SPEC).write_text(yaml.safe_dump({"spec": spec}))
    if finished:
        (run_dir / "seed-0" / "result.json").write_text("{}")
    return run_dir


def test_resume_of_a_folder_continues_its_newest_unfinished_run(tmp_path: Path) -> None:
    from engram.errors import ConfigError
    from engram.runs.runner import run_to_resume

    runs = tmp_path / "runs"
    older = _fake_run(runs, "smoke", "20261207-100000", finished=False)
    newer = _fake_run(runs, "smoke", "20261207-110000", finished=False)
    _fake_run(runs, "smoke", "20261207-120000", finished=True)
    assert run_to_resume(runs / "smoke") == newer
    assert run_to_resume(older / "seed-0") == older and run_to_resume(older) == older
    assert run_to_resume(runs) == newer, "one spec with unfinished runs: no ambiguity"
    other = _fake_run(runs, "other", "20261207-130000", finished=False)
    with pytest.raises(ConfigError, match="unfinished runs of 2 specs; name one: ") as refused:
        run_to_resume(runs)
    assert str(other) in str(refused.value) and str(newer) in str(refused.value)
    (other / "seed-0" / "result.json").write_text("{}")
    (newer / "seed-0" / "result.json").write_text("{}")
    (older / "seed-0" / "result.json").write_text("{}")
    with pytest.raises(ConfigError, match="every run in it is finished"):
        run_to_resume(runs)


def test_status_and_report_read_the_runs_folder_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("status", "report"):
        missing = CliRunner().invoke(main, [command])
        assert missing.exit_code == 2 and "no ./runs folder here" in missing.output, missing.output
        assert missing.output.count("\n") == 1
    _fake_run(tmp_path / "runs", "smoke", "20261207-100000", finished=False)
    shown = CliRunner().invoke(main, ["status"])
    assert shown.exit_code == 0, shown.output
    assert "smoke/20261207-100000/seed-0" in shown.output


def test_spec_errors_speak_of_sections_and_choices_not_pydantic_types(tmp_path: Path) -> None:
    bare = _write(tmp_path, "bare.yaml", "problem: cloudcast\nmodel: openai/o3\nsandbox: {backend: dockr}\n")
    result = CliRunner().invoke(main, ["validate", str(bare)])
    assert result.exit_code == 2
    assert "problem: must be a section of fields, e.g. {name: cloudcast} (got: 'cloudcast')" in result.output
    assert "model: must be a section of fields, e.g. {id: openai/o3}" in result.output
    assert "sandbox.backend: must be one of auto, docker, bwrap, process (did you mean 'docker'?)" in result.output
    assert "Input should" not in result.output and "instance of" not in result.output, result.output


def test_what_commands_write_by_default_in_a_checkout_is_ignored_by_git() -> None:
    """`engram report runs/` in the checkout left report/ as an untracked folder."""
    import shutil
    import subprocess

    from engram.results.tracking import DEFAULT_TRACKING_DIR
    from engram.spec import OutputSettings

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("needs git and a checkout (CI runs from one)")
    report_out = next(p for p in main.commands["report"].params if p.name == "out").default  # type: ignore[attr-defined]
    for folder in (OutputSettings().dir, Path(DEFAULT_TRACKING_DIR), Path(report_out)):
        probe = f"{folder}/anything"
        checked = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", probe], check=False)
        assert checked.returncode == 0, f"{folder}/ is written by default but not in .gitignore"


@pytest.mark.parametrize("statement, title", [
    ("Time limit: 1 second   Memory limit:1024 megabytes\n\nBobo has a tree.\n", "Bobo has a tree."),
    ("```markdown\n# Problem\n\n## Limited Shuffle Restoring\n", "Limited Shuffle Restoring"),
    ("Problem Statement\n--------\nSort the array.", "Sort the array."),
    ("Problem: Tree distance\n", "Tree distance"),
    ("Problem F: Treasure Packing\n", "Problem F: Treasure Packing"),
    ("Story\n" + "word " * 40, ("word " * 40)[:89].rstrip() + "…"),
])
def test_a_frontier_cs_listing_shows_the_line_that_names_the_problem(statement: str, title: str) -> None:
    from engram.frontier_cs.family import statement_title

    assert statement_title(statement) == title


def test_engram_problems_lists_no_heading_or_limit_as_a_title() -> None:
    """The first line of a statement was shown: 'Time limit:1 second', 'Story', '```markdown' for dozens."""
    listed = CliRunner().invoke(main, ["problems"])
    assert listed.exit_code == 0
    titles = [line.split("] ", 1)[1] for line in listed.output.splitlines() if line.startswith("frontier_cs/")]
    assert titles, "the family is listed"
    bad = [t for t in titles if re.match(r"(?i)(time limit|story$|problem statement$|problem$|```|-+$)", t)]
    assert not bad, bad
    assert all(len(t.split(" [")[0]) <= 90 for t in titles)


def test_a_misspelt_scenario_gets_a_did_you_mean() -> None:
    result = CliRunner().invoke(main, ["evaluate", "cloudcast", str(REPO / "evaluators" / "cloudcast" /
                                                                     "initial_program.py"), "--scenarios", "intra_awz"])
    assert result.exit_code == 2
    assert "no scenario or scenario set 'intra_awz' (did you mean 'intra_aws'?)" in result.output, result.output


def test_resume_of_a_finished_run_says_so_and_needs_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run_dir = _fake_run(tmp_path / "runs", "o3", "20261207-100000", finished=True,
                        overrides=("model.id=openai/o3", "model.script=null"))
    result = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"{run_dir} was already finished; nothing was run" in result.output
    assert "OPENAI_API_KEY" not in result.output


def test_ui_on_a_taken_port_is_one_line_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import engram.results.ui as ui

    started: list[object] = []
    monkeypatch.setattr(ui.subprocess, "Popen", lambda *a, **k: started.append(a))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["ui", "--port", str(port), "--uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is taken" in result.output and f"engram ui --port {port + 1}" in result.output
    assert result.output.count("\n") == 1 and not started


def test_replay_and_rescore_of_a_spec_folder_take_its_newest_run(tmp_path: Path) -> None:
    from engram.runs.runner import chosen_run

    runs = tmp_path / "runs"
    _fake_run(runs, "smoke", "20261207-100000", finished=True)
    newest = _fake_run(runs, "smoke", "20261207-110000", finished=True)
    assert chosen_run(runs / "smoke") == newest, "finished runs count: a replay checks a finished run"
    _fake_run(runs, "other", "20261207-120000", finished=True)
    for command in ("replay", "rescore"):
        refused = CliRunner().invoke(main, [command, str(runs)])
        assert refused.exit_code == 2, refused.output
        assert "holds runs of 2 specs; name one: " in refused.output and str(newest) in refused.output
        assert "no seed-<k> directories" not in refused.output and "not a run directory" not in refused.output


@pytest.mark.parametrize("model_id, wanted", [
    ("gemini/gemini-2.5-pro", "needs one of GOOGLE_API_KEY or GEMINI_API_KEY"),  # either key works
    ("bedrock/anthropic.claude-3-sonnet-20240229-v1:0", "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])
def test_a_missing_key_message_asks_for_one_key_or_all_as_the_provider_needs(
        model_id: str, wanted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engram.errors import EngramError
    from engram.runs.runner import check_credentials
    from engram.spec import load_spec

    for key in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    spec = load_spec(REPO / "specs" / "smoke.yaml", [f"model.id={model_id}", "model.script=null"])
    with pytest.raises(EngramError, match=wanted):
        check_credentials(spec)


def test_validate_counts_one_agent_in_the_singular() -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO / "specs" / "smoke.yaml"), "--set", "budget.max_agents=1"])
    assert result.exit_code == 0 and "up to 1 agent of 5 min" in result.output, result.output
