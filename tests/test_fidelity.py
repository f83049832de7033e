"""Fidelity to the reference (mit-nms/Engram at 17bff7a): each default behaves as the reference does,
each improvement is a named setting, and the agent's world (archive, shell, paths) works on every
sandbox backend with the default output directory. See docs/fidelity.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import BACKENDS, REPO, require_backend, require_module
from engram_runs import INITIAL_PROGRAM_CALL, SUMMARY, make_spec, run, simulate, write_program

from engram.methods.digest import has_summary_sections
from engram.methods.workspace_backend import SandboxedWorkspace, workspace_paths
from engram.models.llm import transcript_requests
from engram.sandbox import get_sandbox
from engram.spec import (
    BestShotMethod,
    EngramMethod,
    EvolutionMethod,
    OneShotMethod,
    OpenEvolveMethod,
    TreeSearchMethod,
    load_spec,
    parse_spec,
)

TASK = (REPO / "evaluators/cloudcast/task.md").read_text()
NOTES = {"name": "write_file", "args": {"file_path": "/digest.md", "content": "my own digest"}}


def _seed(run_dir: Path) -> Path:
    return run_dir / "seed-0"


def _requests(seed: Path, agent: int) -> list[list[dict]]:
    return transcript_requests(seed / f"agents/agent-{agent}/transcript.jsonl")


def _tool_results(messages: list[dict]) -> list[str]:
    return [str(m["content"]) for m in messages if m.get("type") == "tool"]


# -- settings: the reference's numbers ----------------------------------------------------------------


def test_defaults_are_the_references_numbers():
    engram = EngramMethod()
    assert engram.max_steps_per_agent == 1000 and engram.max_stream_errors == 5
    assert engram.digest_max_tokens is None and not engram.handover_in_first_message
    assert not engram.reference_solutions
    tree = TreeSearchMethod()
    assert (tree.max_turns, tree.patience, tree.rounds, tree.ancestor_summaries) == (40, 10, 10, 3)
    assert OneShotMethod().max_dollars == BestShotMethod().max_dollars == EvolutionMethod().max_dollars == 30
    openevolve = OpenEvolveMethod()
    assert (openevolve.workers, openevolve.evaluation_timeout_s, openevolve.iterations, openevolve.islands) == \
           (4, 60, 100, 3)


def test_method_dollar_cap_and_budget_cap_take_the_lower():
    def spec(method: dict, budget: dict) -> float | None:
        data = {"name": "t", "problem": {"name": "cloudcast"}, "model": {"id": "openai/o3"}, "method": method,
                "budget": budget}
        return parse_spec(data, source="t", base=REPO).max_dollars

    assert spec({"name": "one_shot"}, {}) == 30
    assert spec({"name": "best_shot"}, {"max_dollars": 5}) == 5
    assert spec({"name": "best_shot", "max_dollars": None}, {}) is None
    assert spec({"name": "engram"}, {}) is None  # the reference's agentic methods have no cap
    assert spec({"name": "engram"}, {"max_dollars": 7}) == 7


def test_openevolve_config_evaluates_with_the_reference_timeout_and_parallelism(tmp_path: Path):
    require_module("openevolve", "the dev extra installs it: pip install -e '.[dev]'")
    from baselines.openevolve.config import Connection, SessionPaths, build_config

    config = build_config(OpenEvolveMethod(), paths=SessionPaths(tmp_path),
                          connection=Connection("http://127.0.0.1:1/v1", "k", "m", 60),
                          system_message="s", seed=0, evaluation_limit_s=60)
    assert config.evaluator.parallel_evaluations == 4
    assert config.evaluator.timeout >= 60  # a backstop above the sandbox's 60 s limit


def test_output_dir_is_absolute_once_the_spec_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"problem": {"name": "cloudcast"}, "model": {"id": "openai/o3"}}))
    monkeypatch.chdir(tmp_path)
    assert load_spec(path).output.dir == tmp_path / "runs"
    assert load_spec(path, ["output.dir=elsewhere"]).output.dir == tmp_path / "elsewhere"


def test_summary_sections_are_the_references():
    assert has_summary_sections(SUMMARY)
    assert has_summary_sections("## Summary for Next Agent\n### Best Result\nx\n### What I Tried\ny\n"
                                "### Key Insights\nz\n")
    assert not has_summary_sections("### Best Result\nx\n### Key Insights\nz\n")
    assert not has_summary_sections("I tried things; best result 0.3; key insights: none.")


# -- workspace and handover -------------------------------------------------------------------------------


def test_workspace_has_no_known_solutions_unless_the_spec_asks(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = _seed(run(make_spec(tmp_path / "a", [[{"content": SUMMARY}]])).run_dir)
    assert not (plain / "agents/agent-1/workspace/baselines").exists()
    assert "/baselines/" not in json.dumps(_requests(plain, 1)[0])
    shown = _seed(run(make_spec(tmp_path / "b", [[{"content": SUMMARY}]],
                                method={"reference_solutions": True})).run_dir)
    assert (shown / "agents/agent-1/workspace/baselines/expert_milp.py").is_file()
    assert "/baselines/" in str(_requests(shown, 1)[0][0]["content"])


def test_tree_search_gets_known_solutions_on_the_same_terms(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"content": SUMMARY}]], method={"name": "tree_search", "rounds": 1},
                     problem={"scenarios": ["intra_azure"]})
    seed = _seed(run(spec).run_dir)
    assert not (seed / "agents/agent-1/workspace/baselines").exists()


def test_first_message_is_the_task_and_the_digest_is_a_read_only_file(tmp_path: Path):
    spec = make_spec(tmp_path, [
        [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
        [{"tool_calls": [{"name": "read_file", "args": {"file_path": "/digest.md"}}]},
         {"tool_calls": [NOTES]},
         {"tool_calls": [{"name": "execute", "args": {"command": "ls /best_program.py; echo x >> /digest.md"}}]},
         {"content": SUMMARY}],
    ], sandbox={"backend": "bwrap"})
    require_backend("bwrap")
    seed = _seed(run(spec).run_dir)
    for agent in (1, 2):
        first = _requests(seed, agent)[0]
        assert [m["type"] for m in first] == ["system", "human"]
        assert first[1]["content"] == TASK.strip()  # the task alone: no digest, no best program
    final = _requests(seed, 2)[-1]
    results = _tool_results(final)
    assert "## Agent 1" in results[0]  # the digest, opened by the agent itself
    assert "read-only" in results[1]  # the file tool refuses visibly
    assert "No such file" in results[2] and "Read-only file system" in results[2]  # so does the shell
    assert "exit code 0" not in results[2]
    assert "my own digest" not in (seed / "digest.md").read_text()
    assert not (seed / "agents/agent-2/workspace/best_program.py").exists()
    assert (seed / "digest.md").read_text().count("### Key Insights") == 2  # summaries appended as written


def test_richer_handover_is_a_named_setting(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
                                [{"content": SUMMARY}]], method={"handover_in_first_message": True})
    seed = _seed(run(spec).run_dir)
    first = str(_requests(seed, 2)[0][1]["content"])
    assert "# Research Digest from earlier agents" in first and "## Agent 1" in first
    assert "# Best program so far" in first and "def search_algorithm" in first
    assert (seed / "agents/agent-2/workspace/best_program.py").is_file()


def test_without_the_archive_no_best_program_is_handed_over(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
                                [{"content": SUMMARY}]], method={"handover_in_first_message": True, "archive": False})
    seed = _seed(run(spec).run_dir)
    first = str(_requests(seed, 2)[0][1]["content"])
    assert "# Best program so far" not in first and "/best_program.py" not in first
    assert "## Agent 1" in first  # the digest still is
    assert not (seed / "agents/agent-2/workspace/best_program.py").exists()


def test_the_reference_digest_is_never_distilled(tmp_path: Path):
    long_summary = SUMMARY.replace("- something", "- " + "insight " * 4000)
    spec = make_spec(tmp_path, [[{"content": long_summary}], [{"content": SUMMARY}]])
    seed = _seed(run(spec).run_dir)
    assert not (seed / "digests").exists()
    assert (seed / "digest.md").read_text().count("insight") >= 4000


# -- what run_simulation tells the agent ----------------------------------------------------------------------

LOUD = ('import sys\nprint("OUT-START" + "x" * 3000 + "OUT-END")\n'
        'print("ERR-START" + "y" * 2000 + "ERR-END", file=sys.stderr)\n')


def _loud_simulation(tmp_path: Path, **method: object) -> str:
    spec = make_spec(tmp_path, [[{"tool_calls": [write_program("/new_algorithm.py", LOUD)]},
                                 {"tool_calls": [simulate("/new_algorithm.py")]}, {"content": SUMMARY}]],
                     problem={"scenarios": ["intra_azure"]}, method=method)
    return _tool_results(_requests(_seed(run(spec).run_dir), 1)[-1])[1]


def test_simulation_output_is_cut_after_its_start_as_in_the_reference(tmp_path: Path):
    result = _loud_simulation(tmp_path)
    assert "OUT-START" + "x" * 1991 + "..." in result and "OUT-END" not in result  # 2,000 characters of stdout
    assert "ERR-START" + "y" * 991 + "..." in result and "ERR-END" not in result  # 1,000 of stderr


def test_the_end_of_the_output_is_a_named_setting(tmp_path: Path):
    result = _loud_simulation(tmp_path, simulation_output="tail")
    assert "..." + "x" * 1992 + "OUT-END\n" in result and "OUT-START" not in result  # the newline counts
    assert "..." + "y" * 992 + "ERR-END\n" in result and "ERR-START" not in result


def test_simulation_reports_the_score_alone_as_in_the_reference(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    turns = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]
    plain = make_spec(tmp_path / "a", [turns], problem={"scenarios": ["intra_azure"]})
    [result] = _tool_results(_requests(_seed(run(plain).run_dir), 1)[-1])
    assert "0.00" in result and "best so far" not in result and "intra_azure" not in result
    detailed = make_spec(tmp_path / "b", [turns], problem={"scenarios": ["intra_azure"]},
                         method={"simulation_details": True})
    [result] = _tool_results(_requests(_seed(run(detailed).run_dir), 1)[-1])
    assert "Best so far: 0.00" in result and "- intra_azure: ok (" in result and "total_cost" in result


def test_simulation_reply_is_laid_out_as_the_references(tmp_path: Path):
    """The experiment and its score to six decimals, where it is stored, the output under a title,
    and a reminder to keep the result for the summary; a failure: its error and where it is stored."""
    import re

    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"tool_calls": [write_program("/new_algorithm.py", "print('hi')\n")]},
                                 {"tool_calls": [simulate("/new_algorithm.py")]}, {"content": SUMMARY}]],
                     problem={"scenarios": ["intra_azure"]})
    results = _tool_results(_requests(_seed(run(spec).run_dir), 1)[-1])
    stored = "Stored in /archive/agent-1/experiments/exp-0002/"
    assert re.fullmatch(r"Experiment exp-0001 finished\.\nScore: 0\.\d{6}\n"
                        r"Stored in /archive/agent-1/experiments/exp-0001/\n"
                        r"  - program\.py .*\n  - evaluation\.json .*\n  - results/ .*\n\n"
                        r"Remember this result for your final summary\.", results[0])
    assert results[2] == ("Experiment exp-0002 failed.\nError: the program defines no function named "
                          f"'search_algorithm'\n{stored}\n\n--- program output (stdout) ---\nhi\n")


def test_simulation_refuses_relative_paths_and_empty_files_without_recording_them(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [write_program("/blank.py", "\n   \n")]},
                                 {"tool_calls": [simulate("initial_program.py")]},
                                 {"tool_calls": [simulate("/blank.py")]}, {"content": SUMMARY}]],
                     problem={"scenarios": ["intra_azure"]})
    seed = _seed(run(spec).run_dir)
    results = _tool_results(_requests(seed, 1)[-1])
    assert "must be an absolute path" in results[1] and "is empty" in results[2]
    assert not list((seed / "agents/agent-1/experiments").glob("exp-*"))


# -- the summary protocol -----------------------------------------------------------------------------------


def test_summary_found_in_any_message_ends_the_agent_before_its_tools_run(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"content": SUMMARY, "tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"content": "never reached"}]])
    seed = _seed(run(spec).run_dir)
    assert not list((seed / "agents/agent-1/experiments").glob("exp-*"))
    assert (seed / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()


def test_summary_is_requested_in_the_agents_own_conversation(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "All done."},
                                 {"content": SUMMARY}]])
    seed = _seed(run(spec).run_dir)
    last = _requests(seed, 1)[-1]
    assert last[1]["content"] == TASK.strip() and "exp-0001" in json.dumps(last)  # the same conversation
    assert last[-2]["content"] == "All done." and "Summary for Next Agent" in last[-1]["content"]
    assert (seed / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()


def test_tool_calls_instead_of_the_requested_summary_end_the_agent(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"content": "All done."}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"content": SUMMARY}]])
    outcome = run(spec)
    seed = _seed(outcome.run_dir)
    assert not list((seed / "agents/agent-1/experiments").glob("exp-*"))
    [end] = [e for e in map(json.loads, (seed / "events.jsonl").read_text().splitlines()) if e["type"] == "agent_end"]
    assert end["reason"] == "tool calls instead of the requested summary"
    # The whole conversation then produces the summary (the next turn of the script).
    assert (seed / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()


# -- step limit and rebuilds --------------------------------------------------------------------------------


def test_a_failed_stream_rebuilds_the_agent_which_continues_its_conversation(tmp_path: Path):
    reads = [{"tool_calls": [{"name": "read_file", "args": {"file_path": "/initial_program.py"}}]}] * 6
    spec = make_spec(tmp_path, [[*reads, {"content": SUMMARY}]],
                     method={"max_steps_per_agent": 4, "max_stream_errors": 3})
    seed = _seed(run(spec).run_dir)
    events = [json.loads(line) for line in (seed / "events.jsonl").read_text().splitlines()]
    rebuilds = [e for e in events if e["type"] == "agent_rebuild"]
    assert rebuilds and all("step limit (4)" in e["error"] for e in rebuilds)
    [end] = [e for e in events if e["type"] == "agent_end"]
    if len(rebuilds) < 2:  # the script ran out before a third failure: the summary ended it
        assert (seed / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()
    else:
        assert end["reason"].startswith("stream errors: 3 in a row")
    last = _requests(seed, 1)[-1]
    assert last[1]["content"] == TASK.strip()  # the rebuilt agent kept the conversation
    assert any("was restarted with its conversation" in str(m["content"]) for m in last if m["type"] == "human")


# -- tree search --------------------------------------------------------------------------------------------


def test_tree_search_agent_is_told_to_continue_until_its_turns_run_out(tmp_path: Path):
    turns = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "Done for now."},
             {"tool_calls": [simulate("/initial_program.py")]}, {"content": "Done again."},
             {"content": SUMMARY}]
    spec = make_spec(tmp_path, [turns], method={"name": "tree_search", "rounds": 1, "max_turns": 2},
                     problem={"scenarios": ["intra_azure"]})
    seed = _seed(run(spec).run_dir)
    last = _requests(seed, 1)[-1]
    humans = [m["content"] for m in last if m["type"] == "human"]
    assert sum("Keep working on the task" in h for h in humans) == 1  # one continuation, then 2 turns are up
    # Its summary then comes from one call over the whole conversation: the script's next turn.
    assert (seed / "agents/agent-1/summary.md").read_text().strip() == SUMMARY.strip()
    assert "Done again." in json.dumps(last)


def test_tree_search_agent_stops_when_simulations_stop_improving(tmp_path: Path):
    turns = [{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"tool_calls": [INITIAL_PROGRAM_CALL]},
             {"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": "Done for now."}, {"content": SUMMARY}]
    spec = make_spec(tmp_path, [turns], method={"name": "tree_search", "rounds": 1, "patience": 2},
                     problem={"scenarios": ["intra_azure"]})
    seed = _seed(run(spec).run_dir)
    humans = [m["content"] for m in _requests(seed, 1)[-1] if m["type"] == "human"]
    assert not any("Keep working on the task" in h for h in humans)  # 2 simulations brought no new best


def _tree_first_message(tmp_path: Path, **method: object) -> str:
    """Round 2's first message: round 1 scored the initial program and left its summary."""
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}],
                                [{"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 2, **method}, problem={"scenarios": ["intra_azure"]})
    first = _requests(_seed(run(spec).run_dir), 2)[0]
    assert [m["type"] for m in first] == ["system", "human"]
    return str(first[1]["content"])


def test_tree_search_first_message_is_the_references(tmp_path: Path):
    """The summaries first (after the tree's best score), then the task, then how to use them; the
    parent's code is a file in the workspace, not part of the message."""
    message = _tree_first_message(tmp_path)
    summaries, task, closing = message.split("\n\n---\n\n")
    assert summaries.startswith("## What the researchers before you learned\n\n**Best score in the tree so far**: 0.")
    assert "### Researcher of round 1 (score: 0." in summaries and "### Key Insights" in summaries
    assert task == TASK.strip()
    assert "Recommended Next Steps" in closing and "summary for the next researcher" in closing
    assert "Starting point for cloudcast" not in message  # the initial program's docstring


def test_tree_search_parent_code_in_the_first_message_is_a_named_setting(tmp_path: Path):
    message = _tree_first_message(tmp_path, parent_in_first_message=True)
    assert message.startswith("# Task\n\n" + TASK.strip())
    assert message.index("## Round 1 (its best program scored") < message.index("# Your starting program")
    assert "Starting point for cloudcast" in message
    spec = load_spec(REPO / "specs/cloudcast_tree_search_o3_parent_in_prompt.yaml")
    assert spec.method.name == "tree_search" and spec.method.parent_in_first_message


def test_tree_search_agents_get_a_results_file_instead_of_a_report(tmp_path: Path):
    """As the reference's tree search: no score in the reply, a per-scenario table in the workspace."""
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]},
                                 {"tool_calls": [{"name": "read_file",
                                                  "args": {"file_path": "/simulation_exp-0002.csv"}}]},
                                 {"tool_calls": [write_program("/new_algorithm.py", "x = (\n")]},
                                 {"tool_calls": [simulate("/new_algorithm.py")]}, {"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 1}, problem={"scenarios": ["intra_azure"]})
    seed = _seed(run(spec).run_dir)
    results = _tool_results(_requests(seed, 1)[-1])
    assert results[0] == "Simulation finished; its results were copied into your files at /simulation_exp-0002.csv"
    assert "scenario,cost," in results[1] and "\nintra_azure," in results[1]
    assert results[3].startswith("Simulation failed: ") and 'File "/new_algorithm.py", line 1' in results[3]
    system = str(_requests(seed, 1)[0][0]["content"])
    assert "answers with the path of a table of its results per scenario" in system


def test_single_agent_is_told_what_its_reply_holds(tmp_path: Path):
    from baselines.single_agent import system_prompt
    from engram.methods.result_file_reply import REPLY_DESCRIPTIONS
    from engram.problems.problem import load_problem

    for reply in ("report", "result_file"):
        spec = parse_spec({"name": "s", "problem": {"name": "cloudcast"}, "model": {"id": "openai/o3"},
                           "method": {"name": "single_agent", "simulation_reply": reply}},
                          source="test", base=tmp_path)
        ctx = SimpleNamespace(spec=spec, problem=load_problem("cloudcast"))
        assert REPLY_DESCRIPTIONS[reply] in system_prompt(ctx, resumed=False)


def test_tree_search_report_reply_is_a_named_setting(tmp_path: Path):
    spec = make_spec(tmp_path, [[{"tool_calls": [INITIAL_PROGRAM_CALL]}, {"content": SUMMARY}]],
                     method={"name": "tree_search", "rounds": 1, "simulation_reply": "report"},
                     problem={"scenarios": ["intra_azure"]})
    [result] = _tool_results(_requests(_seed(run(spec).run_dir), 1)[-1])
    assert result.startswith("Experiment exp-0002 finished.\nScore: 0.")


# -- the agent's world on every backend ---------------------------------------------------------------------


def test_shell_paths_name_the_file_tools_files(tmp_path: Path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "new_algorithm.py").write_text("x")
    rewritten = workspace_paths("head /new_algorithm.py /archive/agent-1 /tmp/x /usr/bin/env > /out.txt "
                                "https://a.b/c ~/d a/b $HOME/e 2>/dev/null", workspace)
    assert rewritten == (f"head {workspace}/new_algorithm.py {workspace}/archive/agent-1 /tmp/x /usr/bin/env > "
                         f"{workspace}/out.txt https://a.b/c ~/d a/b $HOME/e 2>/dev/null")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return request.param


def test_shell_reports_failures_and_agrees_with_the_file_tools(backend: str, tmp_path: Path):
    workspace = (tmp_path / "ws")
    workspace.mkdir()
    (workspace / "digest.md").write_text("# Research Digest\n")
    files = SandboxedWorkspace(workspace, get_sandbox(backend, quiet=True), readonly=[(workspace / "digest.md",) * 2],
                               readonly_files=["digest.md"], shell_timeout_s=60, memory_mb=512,
                               remaining_s=lambda: 600.0)
    try:
        assert files.write("/new_algorithm.py", "print('hello')\n").error is None
        head = files.execute("head -1 /new_algorithm.py && python3 /new_algorithm.py")
        assert head.exit_code == 0 and "hello" in head.output
        missing = files.execute("head /no_such_file.py")
        assert missing.exit_code not in (0, None) and "No such file" in missing.output
        assert "read-only" in (files.write("/digest.md", "mine").error or "")
        assert "read-only" in (files.edit("/digest.md", "Research", "Mine").error or "")
        denied = files.execute("echo mine >> /digest.md")
        if backend == "process":  # no mount namespace: the change is undone and the agent told
            assert "read-only" in denied.output and "undone" in denied.output
        else:
            assert denied.exit_code not in (0, None) and "Read-only file system" in denied.output
        assert (workspace / "digest.md").read_text() == "# Research Digest\n"
    finally:
        files.close()


def test_candidate_errors_name_the_agents_file_not_the_sandboxs_copy(backend: str, tmp_path: Path):
    """Issue 16: a syntax error or a traceback points at the file the agent wrote, by its workspace
    path, on every backend; no scratch or host path reaches the agent."""
    raising = "def helper():\n    raise ValueError('boom')\n\ndef search_algorithm(*args):\n    return helper()\n"
    spec = make_spec(tmp_path, [[{"tool_calls": [write_program("/new_algorithm.py", "def search_algorithm(:\n")]},
                                 {"tool_calls": [simulate("/new_algorithm.py")]},
                                 {"tool_calls": [write_program("/sub/raising.py", raising)]},
                                 {"tool_calls": [simulate("/sub/raising.py")]},
                                 {"content": SUMMARY}]],
                     problem={"scenarios": ["intra_azure"]}, sandbox={"backend": backend})
    seed = _seed(run(spec).run_dir)
    results = _tool_results(_requests(seed, 1)[-1])
    syntax, traceback = results[1], results[3]
    assert 'File "/new_algorithm.py", line 1' in syntax and "SyntaxError" in syntax
    assert 'File "/sub/raising.py", line 2, in helper' in traceback
    assert "raise ValueError('boom')" in traceback  # the source line is shown too
    for text in (syntax, traceback):
        assert "<workdir>" not in text and "engram-eval" not in text and str(tmp_path) not in text


def test_default_output_dir_run_has_a_working_archive_and_replays_identically(backend: str, tmp_path: Path):
    """`engram apply` from a directory with the default `output.dir` (relative `runs`): the agent's
    shell lists the archive and reads its files by the file tools' paths; the replay matches."""
    script = {"agents": [
        {"turns": [{"tool_calls": [INITIAL_PROGRAM_CALL]},
                   {"tool_calls": [{"name": "execute", "args": {
                       "command": "ls archive/agent-1/experiments && ls /archive/agent-1/experiments/exp-0001 "
                                  "&& head -1 /initial_program.py"}}]},
                   {"content": SUMMARY}]},
        {"turns": [{"tool_calls": [{"name": "execute", "args": {"command": "head -5 /digest.md"}}]},
                   {"content": SUMMARY}]},
    ]}
    (tmp_path / "turns.yaml").write_text(yaml.safe_dump(script))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "world", "problem": {"name": "cloudcast", "scenarios": ["intra_azure"]},
        "model": {"id": "scripted", "script": "turns.yaml", "price_as": "openai/o3"},
        "budget": {"max_agents": 2, "minutes_per_agent": 2}, "sandbox": {"backend": backend},
        "tracking": {"mlflow": False}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "engram.cli", "apply", "spec.yaml", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [run_dir] = list((tmp_path / "runs" / "world").iterdir())
    results = _tool_results(_requests(_seed(run_dir), 1)[-1])
    listing = results[1]
    assert "exp-0001" in listing and "evaluation.json" in listing and "Starting point for cloudcast" in listing
    assert "exit code 0" in listing
    assert "## Agent 1" in _tool_results(_requests(_seed(run_dir), 2)[-1])[0]
    # --strict: a model request that differs from the recorded one fails the replay too.
    replay = subprocess.run([sys.executable, "-m", "engram.cli", "replay", str(run_dir.relative_to(tmp_path)),
                             "--strict", "--quiet"], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=600)
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]


def test_a_run_stored_under_another_output_path_is_still_the_same_experiment(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """`output.dir` is absolute once resolved; a run recorded under another path (an older relative
    `runs`, or a checkout moved elsewhere) is still found and resumed."""
    from engram.runs.runner import RESOLVED_SPEC, find_run, new_run_dir

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"problem": {"name": "cloudcast"}, "model": {"id": "openai/o3"}}))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    run_dir = new_run_dir(spec)
    recorded = {**spec.to_plain(), "output": {"dir": "runs"}}
    (run_dir / RESOLVED_SPEC).write_text(yaml.safe_dump({"spec": recorded}))
    assert find_run(spec, include_finished=False) == run_dir


def test_llm_call_methods_see_known_solutions_only_when_the_spec_asks():
    from baselines.prompting import best_shot_messages, evolution_messages, first_sample_messages
    from engram.problems.problem import load_problem

    problem = load_problem("cloudcast")
    marker = "# Known reference algorithms for this problem"
    assert marker not in str(first_sample_messages(problem)[1].content)
    shown = str(first_sample_messages(problem, solutions=True)[1].content)
    assert marker in shown and "## expert_milp" in shown
    assert marker in str(best_shot_messages(problem, [], solutions=True)[1].content)
    assert marker not in str(evolution_messages(problem, [], "x")[1].content)
