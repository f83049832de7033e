"""Methods on Frontier-CS problems: an Engram agent on a problem laid out like Frontier-CS's (its starting
program, example input, g++ in its shell, per-case results in the tool's reply), rescoring that run, and
sweeps that name a set of the family's problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from engram_runs import SUMMARY, make_spec, run, simulate, write_program

from engram.errors import ConfigError
from engram.frontier_cs.selection import family_summary, member_names
from engram.runs.archive import SeedArchive
from engram.runs.rescore import rescore_run
from engram.runs.sweep import is_sweep, read_entries

PROBLEMS = Path(__file__).parent / "frontier_cs" / "problems"
pytestmark = pytest.mark.usefixtures("cpp_compiler")

SUM = '#include <cstdio>\nint main() { long long a, b; scanf("%lld %lld", &a, &b); printf("%lld\\n", a + b); }\n'


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "frontier-cache"))


def test_engram_agent_compiles_and_scores_a_cpp_program(tmp_path: Path) -> None:
    shell = {"name": "execute", "args": {"command": "ls / && g++ --version | head -n 1 && "
                                                    "g++ -O2 -o /tmp/a /initial_program.cpp && echo compiled"}}
    turns = [
        {"tool_calls": [shell]},
        {"tool_calls": [write_program("/main.cpp", SUM)]},
        {"tool_calls": [simulate("/main.cpp")]},
        {"content": SUMMARY},
    ]
    spec = make_spec(tmp_path, [turns], problem={"name": str(PROBLEMS / "sum"), "scenarios": None},
                     sandbox={"backend": "bwrap"}, method={"simulation_details": True})
    outcome = run(spec)
    seed = outcome.run_dir / "seed-0"
    result = json.loads((seed / "result.json").read_text())
    assert result["best_score"] == 100.0
    transcript = (seed / "agents" / "agent-1" / "transcript.jsonl").read_text()
    assert "initial_program.cpp" in transcript and "compiled" in transcript and "g++ (" in transcript
    assert "verdict=AC" in transcript and "ratio=1.0" in transcript  # per-case results (simulation_details)
    [experiment] = SeedArchive(seed).experiments()
    assert "cases.json" in experiment.evaluation().artifacts

    rescored = rescore_run(outcome.run_dir, sandbox_name="process")
    assert rescored.comparison.identical


def test_a_spec_names_family_members_and_each_becomes_a_run(tmp_path: Path) -> None:
    spec = tmp_path / "family.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fcs", "problem": {"name": "frontier_cs", "members": [0, "frontier_cs/2", 45]},
        "method": {"name": "one_shot", "samples": 1}, "model": {"id": "scripted", "script": "turns.yaml"},
    }))
    (tmp_path / "turns.yaml").write_text("agents: []\n")
    assert is_sweep([spec], [], {})
    entries, _ = read_entries([spec], [])
    assert [e.overrides[-3:] for e in entries] == [
        ("problem.name=frontier_cs/0", "problem.members=null", "name=fcs-0"),
        ("problem.name=frontier_cs/2", "problem.members=null", "name=fcs-2"),
        ("problem.name=frontier_cs/45", "problem.members=null", "name=fcs-45"),
    ]


def test_family_tags_select_by_type_and_skip_problems_without_inputs() -> None:
    interactive = member_names("frontier_cs", "interactive")
    assert len(interactive) == 65 and "frontier_cs/2" in interactive and "frontier_cs/4" not in interactive
    everything = member_names("frontier_cs/unbounded", "all")
    assert len(everything) == 151 and everything[0] == "frontier_cs/0/unbounded"
    with pytest.raises(ConfigError, match="not a Frontier-CS problem id"):
        member_names("frontier_cs", [999])
    with pytest.raises(ConfigError, match="problem family"):
        member_names("cloudcast", "all")


def test_family_summary_gives_each_problems_score_and_the_mean() -> None:
    seeds = {Path("a/seed-0"): "frontier_cs/2", Path("a/seed-1"): "frontier_cs/2", Path("b/seed-0"): "frontier_cs/10"}
    text = family_summary(seeds, {Path("a/seed-0"): 80.0, Path("a/seed-1"): 60.0, Path("b/seed-0"): None})
    lines = text.splitlines()
    assert lines[1].split() == ["frontier_cs/2", "70.00"] and lines[2].split() == ["frontier_cs/10", "0.00"]
    assert lines[3].startswith("mean") and "35.00" in lines[3]
