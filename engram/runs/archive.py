"""The run directory: the single source of truth of an experiment.

Everything a run produces is written here first -- append-only event log, experiments, agent
workspaces, transcripts, summaries, digest, best program -- each file atomically (temporary file,
fsync, rename), so a run killed at any instant leaves a consistent directory that `resume` can
continue. MLflow and reports are built from it, never the other way round.

Layout of one seed (see also the README):

    seed-<k>/
      events.jsonl                  append-only: every experiment and agent boundary, with cost so far
      best/program.py, best/evaluation.json
      agents/agent-<n>/experiments/exp-<m>/{program.py, evaluation.json, results/...}
                                    (+ proposal.json: the origin a baseline method records)
      agents/agent-<n>/{transcript.jsonl, summary.md, workspace/}
      digest.md                     the Research Digest handed to the next agent
      digests/distill-<j>.json      each distillation of the digest: input, output, cost
      workspace/                    the live workspace of the running agent
      result.json                   written last: best score, totals, stop reason
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.evaluation.result import Evaluation

EXPERIMENT_DIR = re.compile(r"^exp-(\d+)$")
AGENT_DIR = re.compile(r"^agent-(\d+)$")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix.

    The file gets the mode any new file gets (0666 less the umask): mkstemp's private 0600 would make
    results, programs and reports unreadable to the colleagues and tools that every other file reaches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, allow_nan=True, default=str) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync it: an event is either fully in the log or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, allow_nan=True, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a crash tore the last line: keep it apart, or this record is lost with it
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


@dataclass(frozen=True)
class Experiment:
    number: int
    agent: int
    path: Path

    @property
    def program(self) -> Path:
        return self.path / "program.py"

    @property
    def evaluation_file(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    @property
    def proposal_file(self) -> Path:
        return self.path / "proposal.json"

    def proposal(self) -> dict[str, Any] | None:
        """What the method recorded about where the program came from (reasoning, parents, operator)."""
        if not self.proposal_file.is_file():
            return None
        return json.loads(self.proposal_file.read_text(encoding="utf-8"))

    def evaluation(self) -> Evaluation | None:
        if not self.evaluation_file.is_file():
            return None
        return Evaluation.model_validate_json(self.evaluation_file.read_text(encoding="utf-8"))


class SeedArchive:
    """The directory of one seed of one run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def digest_file(self) -> Path:
        return self.root / "digest.md"

    @property
    def result_file(self) -> Path:
        return self.root / "result.json"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    def agent_dir(self, agent: int) -> Path:
        return self.agents_dir / f"agent-{agent}"

    # -- events ---------------------------------------------------------------------------------

    def log(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"type": kind, "t": time.time(), **fields}
        append_jsonl(self.events_file, record)
        return record

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        records = read_jsonl(self.events_file)
        return [r for r in records if kind is None or r.get("type") == kind]

    # -- experiments ----------------------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        found = []
        if self.agents_dir.is_dir():
            for agent_dir in self.agents_dir.iterdir():
                agent = AGENT_DIR.match(agent_dir.name)
                if not agent or not (agent_dir / "experiments").is_dir():
                    continue
                for exp_dir in (agent_dir / "experiments").iterdir():
                    number = EXPERIMENT_DIR.match(exp_dir.name)
                    if number:
                        found.append(Experiment(int(number.group(1)), int(agent.group(1)), exp_dir))
        return sorted(found, key=lambda e: e.number)

    def new_experiment(self, agent: int, program: str, proposal: dict[str, Any] | None = None) -> Experiment:
        """Reserve the next experiment number (never reused, also across restarts) and store the program.

        `proposal` (the model's reasoning, parents, operator...) is written before the program, so an
        experiment that has a program always has its origin too, also after a crash.
        """
        taken = max((e.number for e in self.experiments()), default=0)
        parent = self.agent_dir(agent) / "experiments"
        parent.mkdir(parents=True, exist_ok=True)
        number = taken + 1
        while True:
            path = parent / f"exp-{number:04d}"
            try:
                path.mkdir()  # exclusive: two writers can never get the same number
                break
            except FileExistsError:
                number += 1
        experiment = Experiment(number, agent, path)
        if proposal is not None:
            write_json(experiment.proposal_file, proposal)
        write_atomic(experiment.program, program)
        return experiment

    def record_evaluation(self, experiment: Experiment, evaluation: Evaluation, results: Path | None) -> None:
        if results is not None and results.is_dir():
            shutil.copytree(results, experiment.results_dir, dirs_exist_ok=True)
        write_atomic(experiment.evaluation_file, evaluation.model_dump_json(indent=2))

    def logged_experiment_numbers(self) -> set[int]:
        return {int(e["experiment"]) for e in self.events("experiment") if "experiment" in e}

    # -- best program ---------------------------------------------------------------------------

    def best(self) -> tuple[float, Experiment] | None:
        """The best-scoring experiment so far (ties: the earliest), from the experiments on disk."""
        best: tuple[float, Experiment] | None = None
        for experiment in self.experiments():
            evaluation = experiment.evaluation()
            if evaluation is None or evaluation.score is None:
                continue
            if best is None or evaluation.score > best[0]:
                best = (evaluation.score, experiment)
        return best

    def update_best(self) -> float | None:
        found = self.best()
        if found is None:
            return None
        score, experiment = found
        write_atomic(self.best_dir / "program.py", experiment.program.read_bytes())
        write_atomic(self.best_dir / "evaluation.json", experiment.evaluation_file.read_bytes())
        write_json(self.best_dir / "source.json", {"experiment": experiment.number, "agent": experiment.agent,
                                                   "score": score})
        return score

    # -- agents ---------------------------------------------------------------------------------

    def started_agents(self) -> list[int]:
        """Agents started so far. One that a provider error stopped before its first experiment is left
        out (see `engram.runs.runner`): it did nothing, so resume starts it again rather than closing it."""
        started: list[int] = []
        for event in self.events():
            if event.get("type") == "agent_start" and int(event["agent"]) not in started:
                started.append(int(event["agent"]))
            elif event.get("type") == "provider_error" and event.get("restart_agent") in started:
                started.remove(int(event["restart_agent"]))
        return started

    def finished_agents(self) -> list[int]:
        return [int(e["agent"]) for e in self.events("agent_end")]

    def digest(self) -> str:
        return self.digest_file.read_text(encoding="utf-8") if self.digest_file.is_file() else ""

    def write_digest(self, text: str) -> None:
        write_atomic(self.digest_file, text)

    def archive_workspace(self, agent: int) -> None:
        """Move the live workspace into the agent's archive folder. It is kept in every mode: the
        no-archive ablation hides earlier agents from later ones, but the record stays complete."""
        target = self.agent_dir(agent) / "workspace"
        if self.workspace.exists():
            if not target.exists():
                shutil.copytree(self.workspace, target, symlinks=True,
                                ignore=shutil.ignore_patterns("archive", "digest.md"))
            shutil.rmtree(self.workspace, ignore_errors=True)

    def is_finished(self) -> bool:
        return self.result_file.is_file()
