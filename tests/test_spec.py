"""Experiment specs: strict validation with file and field in every error, overrides, shipped specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram.errors import ConfigError
from engram.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = "problem: {name: cloudcast}\nmodel: {id: openai/o3}\n"


def test_minimal_spec_gets_defaults_and_its_file_name(tmp_path: Path):
    spec = load_spec(_write(tmp_path, MINIMAL, "my-run.yaml"))
    assert spec.name == "my-run"
    assert spec.method.name == "engram" and spec.method.digest and spec.method.archive
    assert spec.budget.max_agents == 3 and spec.seeds == [0]


def test_unknown_key_names_file_and_field(tmp_path: Path):
    path = _write(tmp_path, MINIMAL + "budget: {max_agent: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message and "budget.max_agent" in message and "unknown key" in message


def test_wrong_value_says_what_was_expected(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"budget\.minutes_per_agent: .*greater than 0"):
        load_spec(_write(tmp_path, MINIMAL + "budget: {minutes_per_agent: -1}\n"))
    with pytest.raises(ConfigError, match=r"method\.name: unknown method 'annealing' \(choose one of: engram, "):
        load_spec(_write(tmp_path, MINIMAL + "method: {name: annealing}\n"))


def test_scripted_model_needs_a_script(tmp_path: Path):
    with pytest.raises(ConfigError, match="needs `script:`"):
        load_spec(_write(tmp_path, "problem: {name: cloudcast}\nmodel: {id: scripted}\n"))


def test_overrides_are_validated_like_the_file(tmp_path: Path):
    path = _write(tmp_path, MINIMAL)
    spec = load_spec(path, ["budget.max_agents=5", "model.id=openai/gpt-5.2", "model.params.temperature=0.2"])
    assert spec.budget.max_agents == 5 and spec.model.id == "openai/gpt-5.2"
    assert spec.model.params == {"temperature": 0.2}
    with pytest.raises(ConfigError, match=r"(?s)with --set budget\.max_agents=many.*budget\.max_agents: .*integer"):
        load_spec(path, ["budget.max_agents=many"])
    with pytest.raises(ConfigError, match=r"must look like section\.field=value"):
        load_spec(path, ["budget.max_agents"])


def test_relative_paths_are_relative_to_the_spec(tmp_path: Path):
    (tmp_path / "turns.yaml").write_text("agents: []\n")
    spec = load_spec(_write(tmp_path, "problem: {name: ./myproblem}\nmodel: {id: scripted, script: turns.yaml}\n"))
    assert spec.model.script == tmp_path / "turns.yaml"
    assert spec.problem.name == str(tmp_path / "myproblem")


@pytest.mark.parametrize("path", sorted((REPO / "specs").glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_specs_are_valid(path: Path):
    """Every shipped spec validates, names a built-in problem, and a scripted one has its script."""
    from engram.problems.problem import list_problems

    spec = load_spec(path)
    assert Path(spec.problem.name).name in {problem.name for problem in list_problems()}
    if spec.model.id == "scripted":
        assert spec.model.script is not None and spec.model.script.is_file()


def test_paper_setting():
    spec = load_spec(REPO / "specs" / "cloudcast_o3.yaml")
    assert spec.model.id == "openai/o3"
    assert spec.budget.max_agents == 30 and spec.budget.minutes_per_agent == 60


def test_every_spec_method_has_a_runner() -> None:
    """A method accepted by the spec schema must be runnable: the registry names a real function."""
    import typing
    from importlib import import_module

    from engram.methods.registry import METHOD_RUNNERS
    from engram.spec import MethodSettings

    union = typing.get_args(MethodSettings)[0]
    classes = typing.get_args(union) or (union,)
    names = {cls.model_fields["name"].default for cls in classes}
    assert names == set(METHOD_RUNNERS)
    for target in METHOD_RUNNERS.values():
        module_name, _, function_name = target.partition(":")
        assert callable(getattr(import_module(module_name), function_name))
