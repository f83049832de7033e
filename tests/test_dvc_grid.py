"""The DVC pipeline's foreach stages as a sweep: the same experiments and knobs as `dvc repro`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec

from engram.errors import ConfigError
from engram.runs.sweep import load_grid

REPO = Path(__file__).resolve().parents[1]


def test_the_repositorys_pipeline_reads_as_the_grid_dvc_would_run(tmp_path: Path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["offline"]["max_evaluations"] = 7
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "grid.yaml").write_text("dvc: dvc.yaml\nstages: [offline]\nset: {tracking.experiment: grid}\n")
    entries = load_grid(tmp_path / "grid.yaml").entries
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["offline"]
    assert [e.path.name for e in entries] == [f"{key}.yaml" for key in stage["foreach"]]
    smoke = entries[0]
    assert smoke.path == tmp_path / "specs" / "smoke.yaml"  # relative to the pipeline, as DVC runs it
    assert "budget.max_evaluations=7" in smoke.overrides and "name=smoke" in smoke.overrides
    # Beside DVC's tracked outs (runs/dvc/<key>), never inside them: the stages stay up to date.
    assert f"output.dir={tmp_path / 'runs' / 'dvc-sweep'}" in smoke.overrides
    assert smoke.overrides[0] == "tracking.experiment=grid"
    everything = load_grid(tmp_path / "dvc.yaml").entries  # the pipeline itself: every foreach stage
    assert len(everything) == len(entries) + len(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["paper"]
                                                   ["foreach"])


@pytest.mark.parametrize(("grid", "message"), [
    ("dvc: dvc.yaml\nstages: [nightly]\n", r"no foreach stage named nightly; its foreach stages are offline"),
    ("dvc: dvc.yaml\nstages: offline\n", r"stages must be a list of stage names"),
])
def test_grid_mistakes_are_named(tmp_path: Path, grid: str, message: str):
    _pipeline(tmp_path, ["a"])
    (tmp_path / "grid.yaml").write_text(grid)
    with pytest.raises(ConfigError, match=message):
        load_grid(tmp_path / "grid.yaml")


def test_an_undefined_parameter_is_named(tmp_path: Path):
    _pipeline(tmp_path, ["a"], cmd="engram apply specs/${key}.yaml --set runs=${offline.seeds}")
    with pytest.raises(ConfigError, match=r"stage offline@a: \$\{offline.seeds\} is not defined"):
        load_grid(tmp_path / "dvc.yaml")


def test_a_pipeline_stage_runs_as_a_sweep(tmp_path: Path):
    _pipeline(tmp_path, ["first", "second"])
    done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", str(tmp_path / "dvc.yaml"), "--jobs", "2",
                           "--json"], capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("first", "second"):
        [run_dir] = (tmp_path / "runs" / "dvc" / name).iterdir()
        result = json.loads((run_dir / "seed-0" / "result.json").read_text())
        assert result["evaluations"] == 1 and result["best_score"] is not None
        resolved = yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())
        assert resolved["spec"]["budget"]["max_evaluations"] == 1  # from params.yaml


def _pipeline(root: Path, names: list[str], cmd: str | None = None) -> None:
    """A one-stage pipeline over scripted specs, with one knob in params.yaml."""
    (root / "specs").mkdir(parents=True, exist_ok=True)
    for name in names:
        scratch = root / "scratch" / name
        scratch.mkdir(parents=True)
        spec = yaml.safe_load(make_spec(scratch, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]])
                              .read_text())
        spec["model"]["script"] = str(scratch / "turns.yaml")
        (root / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (root / "params.yaml").write_text("offline:\n  max_evaluations: 1\n")
    command = cmd or ("python -m engram apply specs/${key}.yaml --new -q --set name=${key} --set output.dir=runs/dvc "
                      "--set budget.max_evaluations=${offline.max_evaluations}")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"offline": {
        "foreach": {name: "cloudcast" for name in names}, "do": {"cmd": command, "deps": ["specs/${key}.yaml"]}}}}))
