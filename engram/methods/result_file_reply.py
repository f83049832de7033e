"""run_simulation's reply as the reference's tree search gave it: a file, not a report.

The reference's tree-search agents (its `AgenticDeepAgents`) did not read their score in the
tool's reply. A successful simulation copied the evaluator's first result table (for cloudcast,
one row of cost and time per scenario) into the agent's files and named it; a failure gave the
error; the program's output was not shown. Engram's equivalent table is every scenario's metrics,
written into the agent's workspace under a name that carries the experiment's number (the
reference added a random one, which a replay could not repeat).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from engram.runs.archive import write_atomic

REPLY_DESCRIPTIONS = {
    "result_file": "answers with the path of a table of its results per scenario, copied into your workspace\n"
                   "   (or with its error).",
    "report": "returns its score (or its error), the folder holding its files (the per-scenario results\n"
              "   among them) and the program's output (cut when long).",
}
"""How a system prompt describes run_simulation's reply, by the method's `simulation_reply` (the
text continues "Every call is recorded as an experiment and ...", indented as a list item)."""


def result_file_reply(workspace: Path, experiment_number: int, evaluation: Any) -> str:
    if not evaluation.ok:
        return f"Simulation failed: {evaluation.error}"
    if not evaluation.scenarios:
        return f"Simulation finished with score {evaluation.score:.6f} (it wrote no result table)."
    name = f"simulation_exp-{experiment_number:04d}.csv"
    write_atomic(workspace / name, scenario_table(evaluation))
    return f"Simulation finished; its results were copied into your files at /{name}"


def scenario_table(evaluation: Any) -> str:
    """One row per scenario: its name and its metrics (columns in order of first appearance)."""
    columns: list[str] = []
    for scenario in evaluation.scenarios.values():
        columns += [key for key in scenario.metrics if key not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scenario", *columns])
    for name, scenario in evaluation.scenarios.items():
        writer.writerow([name, *(scenario.metrics.get(key, "") for key in columns)])
    return out.getvalue()
