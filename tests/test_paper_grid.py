"""The paper grid: every problem x method x model has a spec with the paper's settings, pinned to the
locked sandbox image, and `dvc.yaml`'s paper stage runs each of them (and reruns when the lock changes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc import copy_of_project

from engram.spec import Spec, load_spec

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = {"cloudcast": ["intra", "inter"], "llm_sql": ["full"], "llm_routing": ["paper"]}
MODELS = {"o3": "openai/o3", "gpt5.2": "openai/gpt-5.2"}
# File-name infix -> (method name, digest, archive); None: not the Engram method.
METHODS = {
    "": ("engram", True, True),
    "no_digest": ("engram", False, True),
    "no_archive": ("engram", True, False),
    "one_shot": ("one_shot", None, None),
    "best_shot": ("best_shot", None, None),
    "evolution": ("evolution", None, None),
    "openevolve": ("openevolve", None, None),
    "single_agent": ("single_agent", None, None),
    "tree_search": ("tree_search", None, None),
}
GRID = [(problem, infix, model) for problem in PROBLEMS for infix in METHODS for model in MODELS]
EXTRA = {"cant_be_late_o3": "cant_be_late"}


def stem(problem: str, infix: str, model: str) -> str:
    return "_".join(part for part in (problem, infix, model) if part)


def paper_stage() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["paper"]


@pytest.mark.parametrize(("problem", "infix", "model"), GRID, ids=[stem(*cell) for cell in GRID])
def test_each_cell_has_a_spec_with_the_papers_settings(problem: str, infix: str, model: str):
    spec = load_spec(REPO / "specs" / f"{stem(problem, infix, model)}.yaml")
    method, digest, archive = METHODS[infix]
    assert spec.name == stem(problem, infix, model)
    assert spec.problem.name == problem and spec.problem.scenarios == PROBLEMS[problem]
    assert spec.model.id == MODELS[model] and spec.runs == 10
    assert spec.method.name == method
    if method == "engram":
        assert (spec.method.digest, spec.method.archive) == (digest, archive)
        assert (spec.budget.max_agents, spec.budget.minutes_per_agent) == (30, 60)
    _assert_pinned(spec)


def _assert_pinned(spec: Spec) -> None:
    assert spec.sandbox.backend == "docker" and spec.sandbox.image == "locked"


def test_method_settings_follow_the_reference():
    one_shot = load_spec(REPO / "specs" / "llm_sql_one_shot_o3.yaml").method
    assert one_shot.samples == 100
    best = load_spec(REPO / "specs" / "llm_routing_best_shot_gpt5.2.yaml").method
    assert (best.initial_samples, best.iterations, best.database_size, best.shown_programs) == (3, 100, 20, 3)
    evolution = load_spec(REPO / "specs" / "cloudcast_evolution_gpt5.2.yaml")
    assert (evolution.method.population_size, evolution.method.generations, evolution.method.elitism,
            evolution.method.tournament_size, evolution.method.mutation_rate) == (20, 100, 2, 3, 0.1)
    assert evolution.budget.max_dollars == 30
    # OpenEvolve takes each problem's own configuration from the reference.
    openevolve = {problem: load_spec(REPO / "specs" / f"{problem}_openevolve_o3.yaml").method for problem in PROBLEMS}
    assert [(m.iterations, m.islands, m.diff_based, m.population_size, m.archive_size)
            for m in openevolve.values()] == [(100, 3, True, 50, 20), (200, 3, True, 50, 20), (120, 6, False, 500, 100)]
    assert openevolve["llm_sql"].max_code_length == 60000
    assert (openevolve["llm_routing"].exploration_ratio, openevolve["llm_routing"].exploitation_ratio) == (0.6, 0.4)
    single = load_spec(REPO / "specs" / "llm_sql_single_agent_o3.yaml").method
    assert (single.max_minutes, single.patience) == (60, 10)
    tree = load_spec(REPO / "specs" / "llm_routing_tree_search_o3.yaml")
    assert (tree.method.rounds, tree.method.ancestor_summaries, tree.budget.minutes_per_agent) == (10, 3, 60)


def test_cant_be_late_runs_on_the_papers_full_scenario_grid():
    spec = load_spec(REPO / "specs" / "cant_be_late_o3.yaml")
    assert spec.problem.scenarios == ["full"] and spec.model.id == "openai/o3"
    _assert_pinned(spec)


def test_the_paper_stage_lists_exactly_the_grid_and_depends_on_the_lock():
    stage = paper_stage()
    expected = {stem(*cell): cell[0] for cell in GRID} | EXTRA
    assert stage["foreach"] == expected
    assert "engram/sandbox/image/requirements.lock" in stage["do"]["deps"]
    assert {f"paper.{name}" for name in ("agents", "minutes_per_agent", "runs", "max_evaluations", "mlflow")} \
        <= set(stage["do"]["params"])
    params = yaml.safe_load((REPO / "params.yaml").read_text())["paper"]
    assert (params["agents"], params["minutes_per_agent"], params["runs"]) == (30, 60, 10)
    # No paper spec is left out of the grid.
    papers = {path.stem for path in (REPO / "specs").glob("*.yaml") if load_spec(path).sandbox.image == "locked"}
    assert papers == set(expected)


def test_dvc_repro_paper_dry_lists_every_stage(tmp_path: Path):
    """`dvc repro paper --dry` in a fresh clone names every cell of the grid and runs nothing."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("dvc", path=path) is None:
        pytest.fail("dvc is not installed: pip install -e '.[dev]'")
    repo = copy_of_project(tmp_path / "clone", ["dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore",
                                                  ".dvcignore", "specs", "engram/sandbox/image", "evaluators",
                                                  "baselines"])
    (repo / "engram" / "__init__.py").write_text("")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    done = subprocess.run(["dvc", "repro", "paper", "--dry"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    listed = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    assert listed == {f"paper@{key}" for key in paper_stage()["foreach"]}
    assert not (repo / "runs").exists()


def twin_stem(problem: str, infix: str) -> str:
    """The offline twin of a cell (any model): cloudcast's Engram twin is the smoke test."""
    return "smoke" if (problem, infix) == ("cloudcast", "") else stem(problem, infix, "scripted")


CELLS = [(problem, infix) for problem in PROBLEMS for infix in METHODS]


@pytest.mark.parametrize(("problem", "infix"), CELLS, ids=[twin_stem(*cell) for cell in CELLS])
def test_each_cell_has_an_offline_twin_of_the_same_method(problem: str, infix: str):
    twin = load_spec(REPO / "specs" / f"{twin_stem(problem, infix)}.yaml")
    paper = load_spec(REPO / "specs" / f"{stem(problem, infix, 'o3')}.yaml")
    assert twin.problem.name == problem and twin.model.id == "scripted" and twin.model.script.is_file()
    assert twin.method.name == paper.method.name
    if paper.method.name == "engram":
        assert (twin.method.digest, twin.method.archive) == (paper.method.digest, paper.method.archive)
    if paper.method.name == "openevolve":
        assert twin.method.diff_based == paper.method.diff_based
    offline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["offline"]["foreach"]
    assert offline[twin_stem(problem, infix)] == problem


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["llm_sql_evolution_scripted", "llm_routing_evolution_scripted"])
def test_a_twin_of_each_new_problem_runs_offline(twin: str, tmp_path: Path):
    """The twins' scripts are playable: a whole evolution (one failed request included) runs offline."""
    env = {key: value for key, value in os.environ.items() if not key.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", str(REPO / "specs" / f"{twin}.yaml"), "-q",
                           "--set", f"output.dir={tmp_path}"], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "7 evaluations" in done.stdout and "all 2 generations done" in done.stdout, done.stdout


def test_engram_validate_accepts_every_shipped_spec():
    """The CLI's check (schema, problem, scenario names, model) over the whole grid and its twins."""
    specs = sorted(str(path) for path in (REPO / "specs").glob("*.yaml"))
    done = subprocess.run([sys.executable, "-m", "engram.cli", "validate", *specs], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok (") == len(specs) >= len(GRID) + len(CELLS)
