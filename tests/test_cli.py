"""The command line: fast start, readable output, JSON output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import INITIAL_SCORE

ENGRAM = [sys.executable, "-m", "engram.cli"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENGRAM, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_help_does_not_import_heavy_libraries():
    code = ("import sys, engram.cli; heavy = ['litellm', 'mlflow', 'pandas', 'networkx', 'numpy', 'pydantic', "
            "'langchain', 'deepagents', 'docker']; print([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert "evaluate" in _run("--help").stdout


def test_problems_lists_the_built_in_problems_sorted():
    done = _run("problems")
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    built_in = [n for n in names if not n.startswith("frontier_cs/")]
    assert built_in == sorted(built_in)
    family = [int(n.split("/")[1]) for n in names if n.startswith("frontier_cs/")]
    assert names[len(built_in):] == [f"frontier_cs/{i}" for i in family] and family == sorted(family)
    assert {"cloudcast", "llm_sql", "llm_routing", "prism", "telemetry_repair", "txn_scheduling", "eplb",
            "cant_be_late", "cant_be_late_multi"} <= set(names)


def test_evaluate_prints_a_table_and_the_score(cloudcast):
    done = _run("evaluate", "cloudcast", str(cloudcast.initial_program), "--sandbox", "process")
    assert done.returncode == 0, done.stderr
    assert "intra_aws" in done.stdout and "165.024" in done.stdout
    assert "total_cost: 1045.860405" in done.stdout
    assert f"score: {INITIAL_SCORE!r}" in done.stdout


def test_evaluate_json_and_candidate_failure_exit_code(tmp_path: Path):
    broken = tmp_path / "broken.py"
    broken.write_text("def search_algorithm(src, dsts, G, num_partitions):\n    raise KeyError('x')\n")
    done = _run("evaluate", "cloudcast", str(broken), "--json", "--scenarios", "intra_aws")
    assert done.returncode == 3
    payload = json.loads(done.stdout)
    assert payload["score"] is None and payload["ok"] is False
    assert payload["error_kind"] == "runtime" and "KeyError" in payload["error"]
    assert list(payload["scenarios"]) == ["intra_aws"]


def test_bad_input_exits_2_with_a_message(tmp_path: Path, cloudcast):
    done = _run("evaluate", "nope", str(cloudcast.initial_program))
    assert done.returncode == 2
    assert "engram: error: no problem 'nope'" in done.stderr
    done = _run("evaluate", "cloudcast", str(cloudcast.initial_program), "--scenarios", "mars")
    assert done.returncode == 2 and "scenario" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_data_file_exits_2_and_says_how_to_fix(tmp_path: Path, cloudcast):
    env_run = subprocess.run(
        [*ENGRAM, "evaluate", "cloudcast", str(cloudcast.initial_program)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "ENGRAM_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert env_run.returncode == 2
    assert "cloudcast/profiles/throughput.csv not found" in env_run.stderr
    assert "unset ENGRAM_DATA_DIR" in env_run.stderr


def test_validate_checks_specs_without_running(tmp_path: Path):
    from conftest import REPO

    done = _run("validate", str(REPO / "specs" / "smoke.yaml"), str(REPO / "specs" / "cloudcast_o3.yaml"))
    assert done.returncode == 0, done.stderr
    assert "smoke.yaml: ok (smoke: cloudcast, engram, scripted" in done.stdout
    assert "up to 30 agents of 60 min" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("problem: {name: cloudcast}\nmodel: {id: openai/o3}\nbudget: {agents: 3}\n")
    done = _run("validate", str(bad))
    assert done.returncode == 2 and "budget.agents: unknown key" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_apply_streams_json_events_and_verbose_turns(tmp_path: Path):
    from conftest import REPO

    common = ["apply", str(REPO / "specs" / "smoke.yaml"), "--set", f"output.dir={tmp_path}",
              "--set", "tracking.mlflow=false"]
    done = _run(*common, "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events].count("experiment") == 4
    assert events[-1]["event"] == "result" and events[-1]["seeds"][0]["agents"] == 2
    done = _run(*common, "--new", "--verbose")
    assert done.returncode == 0, done.stderr
    assert "agent 1 → run_simulation" in done.stderr and "exp-0002: score" in done.stderr
    assert "run directory:" in done.stdout and "engram ui" not in done.stdout  # tracking is off
