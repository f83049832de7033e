"""`engram report`: runs of two methods with several seeds, made by the real runner, give the table,
the figures (PNG), the HTML page and an MLflow run; plus the statistics it is built on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run, simulate, write_program

from engram.cli import main
from engram.problems.problem import load_problem
from engram.results.plots import spread_apart
from engram.results.report import (
    RunInfo,
    bootstrap_median_band,
    build_report,
    format_table,
    group_runs,
    log_to_mlflow,
    reached_at,
)

SMOKE_SCRIPT = yaml.safe_load((Path(__file__).resolve().parents[1] / "specs/scripts/smoke.yaml").read_text())
SHARED_TREE = next(call["args"]["content"] for agent in SMOKE_SCRIPT["agents"] for turn in agent["turns"]
                   for call in turn.get("tool_calls", []) if call["args"].get("file_path") == "/shared_tree.py")
DIRECT = (Path(__file__).resolve().parents[1] / "evaluators/cloudcast/baselines/direct.py").read_text()
BROKEN = "def search_algorithm(src, dsts, G, num_partitions):\n    raise RuntimeError('no idea')\n"
PNG = b"\x89PNG\r\n\x1a\n"


def one_agent(*calls: dict) -> list[list[dict]]:
    return [[*({"tool_calls": [call]} for call in calls), {"content": SUMMARY}]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """alpha: two runs of one seed (finds the shared tree at the 1st and at the 3rd evaluation);
    beta: one run of two seeds that never finds it."""
    root = tmp_path_factory.mktemp("report-runs")
    plans = {
        ("alpha", "a"): one_agent(write_program("/tree.py", SHARED_TREE), simulate("/tree.py"), INITIAL_PROGRAM_CALL),
        ("alpha", "b"): one_agent(INITIAL_PROGRAM_CALL, write_program("/bad.py", BROKEN), simulate("/bad.py"),
                                  write_program("/tree.py", SHARED_TREE), simulate("/tree.py")),
        ("beta", "c"): one_agent(INITIAL_PROGRAM_CALL, write_program("/direct.py", DIRECT), simulate("/direct.py")),
    }
    made: dict[str, list[Path]] = {"alpha": [], "beta": []}
    for (name, folder), agents in plans.items():
        (root / folder).mkdir()
        spec = make_spec(root / folder, agents, sandbox={"backend": "process"})
        overrides = [f"name={name}", f"output.dir={root / 'runs'}"] + (["runs=2"] if name == "beta" else [])
        made[name].append(run(spec, overrides).run_dir)
    return made


def quick_score(program: str, tmp_path: Path) -> tuple[float, float]:
    """Score and total cost of `program` on the quick scenarios, measured here, as the runs were."""
    from engram.evaluation.evaluator import CandidateEvaluator
    from engram.sandbox import get_sandbox

    path = tmp_path / "program.py"
    path.write_text(program)
    with CandidateEvaluator(load_problem("cloudcast"), get_sandbox("process", quiet=True),
                            scenarios=["quick"]) as evaluator:
        evaluation = evaluator.evaluate(path)
    return evaluation.score, evaluation.metrics["total_cost"]  # type: ignore[return-value]


def test_report_of_two_methods_over_seeds(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    tree_score, tree_cost = quick_score(SHARED_TREE, tmp_path)
    start_score, start_cost = quick_score(load_problem("cloudcast").initial_program.read_text(), tmp_path)
    out = tmp_path / "report"
    report = build_report([*runs["alpha"], *runs["beta"]], out, group_by="spec")

    [problem] = report.problems
    assert [r.name for r in problem.references] == ["direct / dijkstra", "steiner_tree", "expert_milp"]
    alpha, beta = problem.rows
    assert (alpha.label, alpha.runs, alpha.seeds, beta.label, beta.runs, beta.seeds) == ("alpha", 2, 2, "beta", 1, 2)
    assert alpha.best_score == tree_score and alpha.best_natural == pytest.approx(tree_cost)
    assert (alpha.score.median, alpha.score.q25, alpha.score.q75) == (tree_score, tree_score, tree_score)
    assert alpha.evaluations.median == 2.5 and alpha.evaluations_to_reach.median == 2  # seeds: 1st and 3rd
    assert (alpha.evaluations_to_reach.q25, alpha.evaluations_to_reach.q75) == (1.5, 2.5)
    assert alpha.dollars_to_reach.median is not None and 0 < alpha.dollars_to_reach.median < alpha.dollars.median
    assert beta.best_score == start_score and beta.best_natural == pytest.approx(start_cost)
    assert beta.evaluations.median == 2 and beta.evaluations_to_reach.median == 1
    assert alpha.natural_unit == "total cost ($)"

    table = format_table(report)
    assert table.splitlines()[0].split("  ")[0] == "problem" and "alpha" in table and "beta" in table
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["method"], r["seeds"]) for r in rows] == [("alpha", "2"), ("beta", "2")]
    assert float(rows[0]["best_score"]) == tree_score
    assert "| alpha |" in (out / "report.md").read_text()
    summary = json.loads((out / "report.json").read_text())
    assert len(summary["runs"]) == 3 and summary["rows"][1]["evaluations_to_reach_median"] == 1

    names = sorted(p.name for p in problem.figures)
    assert problem.problem_name == "cloudcast [quick]"  # not the default scenarios: not comparable with those
    assert names == sorted(f"cloudcast-quick_{unit}_vs_{axis}.png" for unit in ("natural", "score")
                           for axis in ("evaluations", "dollars"))
    for figure in problem.figures:
        assert figure.read_bytes().startswith(PNG) and figure.stat().st_size > 20_000
    page = report.html_file.read_text()
    assert page.count("data:image/png;base64,") == 4 and "<td>alpha</td>" in page and "steiner_tree" in page
    # These runs used the unisolated 'process' sandbox: the report says so for each of them.
    assert sum("without isolation (sandbox 'process')" in note for note in report.notes) == 3
    assert page.count("(not isolated)") == 3 and summary["notes"] == report.notes


def test_default_grouping_is_by_method(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    report = build_report([runs["alpha"][0].parent], tmp_path / "report")
    [row] = report.problems[0].rows
    assert (row.label, row.runs, row.seeds) == ("engram", 2, 2)


def test_cli_report_and_mlflow(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(main, ["report", *map(str, runs["alpha"] + runs["beta"]), "--out", str(out),
                                       "--group-by", "spec", "--band", "iqr", "--no-mlflow"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and f"report: {out / 'report.html'}" in result.output

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = build_report([*runs["alpha"], *runs["beta"]], tmp_path / "logged", group_by="spec")
    assert log_to_mlflow(report, uri) == []
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("cloudcast")
    [logged] = client.search_runs([experiment.experiment_id], "tags.`engram.report` = 'true'")
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "report")}
    assert {"report/cloudcast-quick_natural_vs_evaluations.png", "report/report.html"} <= artifacts
    assert logged.data.metrics["alpha.best_score"] == report.problems[0].rows[0].best_score


def test_metrics_of_a_run(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["metrics", str(runs["beta"][0].parent), "--out", str(tmp_path / "m.json"),
                                       "--plot-csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["spec"] == "beta" and metrics["seeds"] == 2 and metrics["evaluations"] == 4
    assert metrics["best_score"] == quick_score(load_problem("cloudcast").initial_program.read_text(), tmp_path)[0]
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [(r["seed"], r["evaluation"]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]


# -- statistics ---------------------------------------------------------------------------------------


def test_reaching_95_percent_of_the_final_best() -> None:
    assert reached_at(np.array([np.nan, 0.5, 0.96, 1.0]), maximize=True) == 2
    assert reached_at(np.array([10.6, 10.4, 10.0]), maximize=False) == 1  # 10.4 <= 10.0 / 0.95
    assert reached_at(np.array([-10.0, -5.0, -1.2, -1.0]), maximize=True) == 2  # 95% of the way from -10 to -1
    assert reached_at(np.array([np.nan, np.nan]), maximize=True) is None


def test_bootstrap_band_contains_the_median_and_is_repeatable() -> None:
    seeds = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0], [3.0, 2.0, 4.0], [4.0, 2.0, 9.0]])
    low, high = bootstrap_median_band(seeds)
    median = np.median(seeds, axis=0)
    assert np.all(low <= median) and np.all(median <= high) and low[1] == high[1] == 2.0
    assert np.array_equal(bootstrap_median_band(seeds)[0], low)


def test_reference_labels_are_spread_apart_and_kept_inside() -> None:
    assert spread_apart([0.1, 0.5], 0.05) == [0.1, 0.5]
    assert spread_apart([0.5, 0.51, 0.52], 0.05) == pytest.approx([0.5, 0.55, 0.6])
    assert spread_apart([0.97, 0.98], 0.05) == pytest.approx([0.95, 1.0])


def _info(spec: dict, name: str = "cloudcast_o3") -> RunInfo:
    from engram.results.report import _settings
    from engram.spec import Spec

    resolved = Spec.model_validate({"name": name, "problem": {"name": "cloudcast"}, **spec}).to_plain()
    return RunInfo(run_dir=Path(name), spec_name=name, problem_name="cloudcast", problem=None,
                   method=resolved["method"]["name"], model=resolved["model"]["id"], scenarios=None,
                   settings=_settings(resolved), experiment="cloudcast", tracking_uri=None, seeds=[])


def test_runs_with_different_settings_never_share_a_row() -> None:
    """Problem, scenarios, method, model, method settings and budget all split rows; seeds of one
    setting (and settings that only change parallelism) pool."""
    o3 = {"model": {"id": "openai/o3"}}
    runs = [
        _info({**o3, "runs": 10}),
        _info({**o3, "first_seed": 10, "method": {"name": "engram", "digest": True}}),  # the same cell
        _info({**o3, "method": {"name": "engram", "digest": False}}),
        _info({**o3, "budget": {"max_agents": 5}}),
        _info({"model": {"id": "openai/gpt-5.2"}}),
        _info({**o3, "method": {"name": "evolution", "workers": 2}}),
        _info({**o3, "method": {"name": "evolution", "workers": 8}}),
    ]
    groups = {group.label: len(group.runs) for group in group_runs(runs)}
    assert groups == {
        "engram (budget.max_agents=3, digest=true, openai/o3)": 2,
        "engram (budget.max_agents=3, digest=false, openai/o3)": 1,
        "engram (budget.max_agents=5, digest=true, openai/o3)": 1,
        "engram (budget.max_agents=3, digest=true, openai/gpt-5.2)": 1,
        "evolution": 2,
    }
    # By spec name too: one spec run with another budget is another row.
    labels = [group.label for group in group_runs(runs[:4], group_by="spec")]
    assert len(labels) == 3 and all(label.startswith("cloudcast_o3 (") for label in labels)
