"""Problem directories: validation with precise errors, scenario selection, user problems on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from engram.errors import ConfigError, ProblemNotFoundError
from engram.evaluation.evaluator import CandidateEvaluator
from engram.problems.problem import Problem, list_problems, load_problem, load_problem_module
from engram.sandbox import get_sandbox


def test_builtin_problems_are_listed(cloudcast: Problem):
    names = [p.name for p in list_problems()]
    assert "cloudcast" in names
    assert cloudcast.config.entry_point == "search_algorithm"
    assert "search_algorithm" in cloudcast.task_prompt


def test_unknown_problem_names_the_builtins():
    with pytest.raises(ProblemNotFoundError, match=r"built-in: .*cloudcast"):
        load_problem("no-such-problem")


def _copy(cloudcast: Problem, tmp_path: Path) -> Path:
    target = tmp_path / "myproblem"
    shutil.copytree(cloudcast.root, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _edit_yaml(path: Path, change: callable) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_unknown_key_is_named_with_file_and_field(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    _edit_yaml(root / "problem.yaml", lambda d: d["limits"].update(memory_gb=4))
    with pytest.raises(ConfigError) as caught:
        load_problem(root)
    message = str(caught.value)
    assert str(root / "problem.yaml") in message
    assert "limits.memory_gb" in message and "unknown key" in message


def test_wrong_type_is_explained(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    _edit_yaml(root / "problem.yaml", lambda d: d.update(time_limit_s="soon"))
    with pytest.raises(ConfigError, match=r"time_limit_s: .*number.*\(got: 'soon'\)"):
        load_problem(root)


def test_data_entry_needs_a_checksum(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    _edit_yaml(root / "problem.yaml", lambda d: d["data"][0].pop("sha256"))
    with pytest.raises(ConfigError, match=r"data\.0: .*sha256"):
        load_problem(root)


def test_invalid_yaml_gives_the_line(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    (root / "problem.yaml").write_text("name: x\nscenarios: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+.*invalid YAML"):
        load_problem(root)


def test_missing_file_named_by_problem_yaml(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    (root / "task.md").unlink()
    with pytest.raises(ConfigError, match=r"task.md, which does not exist"):
        load_problem(root)


def test_scenario_selection(cloudcast: Problem):
    assert [s.name for s in cloudcast.select_scenarios(["inter"])] == ["inter_agz", "inter_gaz2"]
    assert [s.name for s in cloudcast.select_scenarios(["inter_gaz2", "intra_aws"])] == ["intra_aws", "inter_gaz2"]
    assert len(cloudcast.select_scenarios(None)) == 5
    with pytest.raises(ConfigError, match=r"no scenario or scenario set 'mars'.*choose from"):
        cloudcast.select_scenarios(["mars"])


def test_a_users_own_problem_directory_works_like_a_builtin(tmp_path: Path):
    """A tiny problem written from scratch: maximise the sum of chosen numbers under a budget."""
    root = tmp_path / "knapsack"
    root.mkdir()
    (root / "problem.yaml").write_text(
        "name: tiny-knapsack\n"
        "description: Pick items under a weight budget.\n"
        "score: {direction: maximize, unit: total value}\n"
        "entry_point: choose\n"
        "time_limit_s: 20\n"
        "scenarios:\n"
        "  - {name: small, params: {values: [5, 4, 3], weights: [4, 3, 2], budget: 5}}\n"
        "  - {name: large, params: {values: [10, 7, 1, 3], weights: [5, 4, 1, 2], budget: 7}}\n"
    )
    (root / "task.md").write_text("Write choose(values, weights, budget) returning item indices.\n")
    (root / "initial_program.py").write_text("def choose(values, weights, budget):\n    return []\n")
    (root / "adapter.py").write_text(
        "def run(choose, scenario, context):\n"
        "    return choose(scenario['values'], scenario['weights'], scenario['budget'])\n"
        "def serialize(raw, scenario):\n"
        "    return [int(i) for i in raw]\n"
    )
    (root / "evaluator.py").write_text(
        "from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer\n"
        "class KnapsackScorer(Scorer):\n"
        "    def scenario_input(self, scenario):\n"
        "        return dict(scenario.params)\n"
        "    def score_scenario(self, scenario, answer):\n"
        "        p = scenario.params\n"
        "        if len(set(answer)) != len(answer) or not all(0 <= i < len(p['values']) for i in answer):\n"
        "            raise InvalidAnswer('indices must be distinct and in range')\n"
        "        if sum(p['weights'][i] for i in answer) > p['budget']:\n"
        "            raise InvalidAnswer('over budget')\n"
        "        return ScenarioScore(metrics={'value': sum(p['values'][i] for i in answer)})\n"
        "    def combine(self, results):\n"
        "        total = sum(r.metrics['value'] for r in results.values())\n"
        "        return float(total), {'total_value': total}\n"
    )
    problem = load_problem(root / "problem.yaml")
    greedy = (
        "def choose(values, weights, budget):\n"
        "    order = sorted(range(len(values)), key=lambda i: -values[i] / weights[i])\n"
        "    picked, used = [], 0\n"
        "    for i in order:\n"
        "        if used + weights[i] <= budget:\n"
        "            picked.append(i); used += weights[i]\n"
        "    return picked\n"
    )
    with CandidateEvaluator(problem, get_sandbox("auto", quiet=True)) as ev:
        assert ev.evaluate(problem.initial_program).score == 0.0
        result = ev.evaluate(greedy)
        assert result.ok, result.error
        assert result.scenarios["small"].metrics["value"] == 7  # items 2 and 1
        assert result.score == 7 + 13
        cheat = ev.evaluate("def choose(values, weights, budget):\n    return list(range(len(values)))\n")
        assert cheat.error_kind == "invalid_output" and "over budget" in cheat.error


FILLED_EVALUATOR = '''
from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer

class SortedScorer(Scorer):
    def scenario_input(self, scenario):
        return {"size": scenario.params["size"]}

    def score_scenario(self, scenario, answer):
        if sorted(answer) != list(range(scenario.params["size"])):
            raise InvalidAnswer("the answer must be a permutation of range(size)")
        return ScenarioScore(metrics={"in_place": sum(a == i for i, a in enumerate(answer))})

    def combine(self, results):
        total = sum(r.metrics["in_place"] for r in results.values())
        return float(total), {"in_place": total}
'''


def test_new_problem_skeleton_is_checked_until_written(tmp_path: Path):
    import subprocess
    import sys

    def engram(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engram.cli", *args], capture_output=True, text=True,
                              timeout=120, check=False)

    root = tmp_path / "my-queue"
    done = engram("new-problem", str(root))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in root.iterdir()} >= {"problem.yaml", "task.md", "initial_program.py", "evaluator.py",
                                                "adapter.py", "baselines"}
    done = engram("check-problem", str(root))
    assert done.returncode == 2
    assert "ok   problem.yaml: my-queue" in done.stdout
    assert "FAIL initial program" in done.stdout and "not written yet: fill in scenario_input" in done.stdout
    (root / "evaluator.py").write_text(FILLED_EVALUATOR)
    done = engram("check-problem", str(root), "--sandbox", "process")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   initial program: score 1010.0" in done.stdout and "ready" in done.stdout
    assert engram("new-problem", str(root)).returncode == 2  # never overwrites


def test_check_problem_reports_a_missing_data_file(tmp_path: Path, cloudcast: Problem,
                                                   monkeypatch: pytest.MonkeyPatch):
    from engram.problems.check import check_problem

    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path))
    checks = check_problem(cloudcast.root)
    by_name = {c.name: c for c in checks}
    assert by_name["problem.yaml"].ok and not by_name["data"].ok
    assert "throughput.csv not found" in by_name["data"].detail
    assert "initial program" not in by_name  # not attempted without data


def test_scenarios_name_the_data_they_read(cloudcast: Problem, tmp_path: Path):
    root = _copy(cloudcast, tmp_path)
    _edit_yaml(root / "problem.yaml", lambda d: d["scenarios"][0].update(data=["cloudcast/nowhere.csv"]))
    with pytest.raises(ConfigError, match=r"scenario 'intra_aws' reads \['cloudcast/nowhere.csv'\]"):
        load_problem(root)
    _edit_yaml(root / "problem.yaml", lambda d: d["scenarios"][0].update(
        data=["cloudcast/profiles/cost.csv", "cloudcast/examples/config/intra_aws.json"]))
    problem = load_problem(root)
    only = problem.ensure_data(problem.select_scenarios(["intra_aws"]))
    assert [p.name for p in only] == ["cost.csv", "intra_aws.json"]
    assert len(problem.ensure_data(problem.select_scenarios(["intra_aws", "intra_gcp"]))) == 7  # one reads all


def test_problem_modules_of_two_directories_do_not_collide(tmp_path: Path):
    anchors = []
    for directory in ("first-problem", "second"):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "helper.py").write_text(f"WHERE = {directory!r}\n")
        anchors.append(tmp_path / directory / "evaluator.py")
    first, second = (load_problem_module(anchor, "helper") for anchor in anchors)
    assert (first.WHERE, second.WHERE) == ("first-problem", "second")
    assert first.__name__ == "engram_problem_first_problem_helper"
    with pytest.raises(ConfigError, match=r"missing\.py: no such module next to evaluator\.py"):
        load_problem_module(anchors[0], "missing")
