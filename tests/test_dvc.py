"""The DVC pipeline: in a fresh git repository holding the project's files, `dvc repro` of an offline
stage runs with no API key and writes metrics and plots; a changed param shows in `dvc params diff`,
re-runs only the stages that use it, and its effect shows in `dvc metrics diff`. `dvc metrics` and
`dvc plots` list the stages that have run, without errors for the many that have not."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

STAGE = "offline@smoke"
COPIED = ["engram", "baselines", "specs", "evaluators/__init__.py", "evaluators/cloudcast", "params.yaml", "dvc.yaml",
          ".dvcignore", ".dvc/config", ".dvc/.gitignore", "results/metrics/.gitkeep", "results/plots/.gitkeep"]


def outputs(repo: Path, *args: str) -> tuple[str, str]:
    """stdout and stderr of a command that must succeed."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout, done.stderr


def command(repo: Path, *args: str) -> str:
    return outputs(repo, *args)[0]


def clean(repo: Path, *args: str) -> list[str]:
    """The table lines a `dvc metrics`/`dvc plots` command prints, which must come with no complaint."""
    stdout, stderr = outputs(repo, *args)
    assert stderr == "", f"{' '.join(args)} complained: {stderr}"
    return [line for line in stdout.splitlines() if line.strip()]


def copy_of_project(repo: Path, relatives: list[str]) -> Path:
    """The project's files that DVC reads, copied into `repo`, so a test's `dvc repro` touches no real output."""
    for relative in relatives:
        source, target = REPO / relative, repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return repo


def set_param(repo: Path, section: str, key: str, value: object) -> None:
    path = repo / "params.yaml"
    text = path.read_text()
    params = yaml.safe_load(text)
    old = params[section][key]
    # Edit the line in place so the file's comments stay, as a person editing it would.
    lines = text.splitlines(keepends=True)
    start = lines.index(f"{section}:\n")
    for index in range(start + 1, len(lines)):
        if lines[index].startswith(f"  {key}: {old}"):
            lines[index] = lines[index].replace(f"{key}: {old}", f"{key}: {value}", 1)
            break
    path.write_text("".join(lines))
    assert yaml.safe_load(path.read_text())[section][key] == value


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        pytest.fail("dvc is not installed: pip install -e '.[dev]'")
    repo = copy_of_project(tmp_path / "clone", COPIED)
    command(repo, "git", "init", "-q")
    command(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    command(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project")
    return repo


def commit_all(repo: Path, message: str) -> None:
    command(repo, "git", "add", "-A")
    command(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


def test_repro_offline_stage_then_change_a_param(repo: Path) -> None:
    # A fresh clone has run nothing: nothing to show or compare, and no error about the stages' files.
    assert clean(repo, "dvc", "metrics", "show") == clean(repo, "dvc", "metrics", "diff") == []
    assert clean(repo, "dvc", "plots", "show", "--json") == ['{}']

    set_param(repo, "offline", "max_evaluations", 1)
    commit_all(repo, "one evaluation")
    command(repo, "dvc", "repro", STAGE)
    header, *rows = clean(repo, "dvc", "metrics", "show")
    assert header.split()[:3] == ["Path", "best_natural", "best_score"]
    assert [row.split()[0] for row in rows] == ["results/metrics/smoke.json"]  # the one stage that ran, alone
    diffed = clean(repo, "dvc", "metrics", "diff")  # nothing committed yet: every value is new
    assert {line.split()[0] for line in diffed[1:]} == {"results/metrics/smoke.json"}
    assert list(json.loads(clean(repo, "dvc", "plots", "show", "--json")[0])["data"]) == ["results/plots/smoke.csv"]

    metrics = json.loads((repo / "results/metrics/smoke.json").read_text())
    assert metrics["spec"] == "smoke" and metrics["method"] == "engram" and metrics["problem"] == "cloudcast"
    assert metrics["evaluations"] == 1 and metrics["best_score"] == pytest.approx(0.0009552371980292827)
    assert metrics["best_natural"] == pytest.approx(1045.860405) and metrics["dollars"] > 0
    assert metrics["wall_s"] > 0
    rows = list(csv.DictReader((repo / "results/plots/smoke.csv").open()))
    assert [(r["seed"], r["evaluation"]) for r in rows] == [("0", "1")]
    runs = list((repo / "runs/dvc/smoke").iterdir())
    assert len(runs) == 1 and (runs[0] / "seed-0" / "result.json").is_file()
    resolved = yaml.safe_load((runs[0] / "spec.resolved.yaml").read_text())
    assert resolved["spec"]["budget"]["max_evaluations"] == 1  # the param reached the run, and is on record
    commit_all(repo, "results")

    # A param of other stages leaves this one as it is.
    set_param(repo, "paper", "runs", 3)
    assert "Data and pipelines are up to date" in command(repo, "dvc", "status", STAGE)

    set_param(repo, "offline", "max_evaluations", 2)
    changed = json.loads(command(repo, "dvc", "params", "diff", "--json"))["params.yaml"]
    assert changed["offline.max_evaluations"] == {"old": 1, "new": 2, "diff": 1}
    assert changed["paper.runs"]["new"] == 3
    assert "offline.max_evaluations" in command(repo, "dvc", "status", STAGE)

    command(repo, "dvc", "repro", STAGE)
    assert "results/metrics/smoke.json" in clean(repo, "dvc", "metrics", "diff")[1]
    moved = json.loads(command(repo, "dvc", "metrics", "diff", "--json"))["results/metrics/smoke.json"]
    assert moved["evaluations"] == {"old": 1, "new": 2, "diff": 1}
    assert moved["dollars"]["new"] > moved["dollars"]["old"]
    assert len(list(csv.DictReader((repo / "results/plots/smoke.csv").open()))) == 2
    assert len(list((repo / "runs/dvc/smoke").iterdir())) == 1  # DVC replaced the stage's run directory
