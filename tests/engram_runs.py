"""Helpers for tests that run whole experiments with the scripted model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from engram.progress import QuietProgress
from engram.runner import RunOutcome, apply

INITIAL_PROGRAM_CALL = {"name": "run_simulation", "args": {"file_path": "/initial_program.py"}}


def write_program(path: str, source: str) -> dict[str, Any]:
    return {"name": "write_file", "args": {"file_path": path, "content": source}}


def simulate(path: str) -> dict[str, Any]:
    return {"name": "run_simulation", "args": {"file_path": path}}


SUMMARY = """## Mode
Exploration.
## Best result
See the experiments.
## What was tried
- one thing
## Key insights
- something
## Recommended next steps
- more
## Dead ends
- none
"""


def make_spec(tmp_path: Path, agents: list[list[dict[str, Any]]], *, distill: list[str] = (),
              **sections: dict[str, Any]) -> Path:
    """A spec for the scripted model playing `agents` (one list of turns per agent) on cloudcast."""
    script = {"agents": [{"turns": turns} for turns in agents]}
    if distill:
        script["distill"] = [{"content": text} for text in distill]
    (tmp_path / "turns.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    spec: dict[str, Any] = {
        "name": "t",
        "problem": {"name": "cloudcast", "scenarios": ["quick"]},
        "model": {"id": "scripted", "script": "turns.yaml", "price_as": "openai/o3", "max_retries": 3},
        "budget": {"max_agents": len(agents), "minutes_per_agent": 2},
        "tracking": {"mlflow": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, values in sections.items():
        merged = copy.deepcopy(spec.get(key, {}))
        merged.update(values)
        spec[key] = merged
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(spec: Path, overrides: list[str] = ()) -> RunOutcome:
    return apply(spec, list(overrides), QuietProgress())
