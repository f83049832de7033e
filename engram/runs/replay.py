"""`engram replay RUN_DIR`: run a recorded run again from its transcripts, offline, and check every score.

The replay is an ordinary run of the recorded spec through the ordinary runner -- same method, same
budgets, same seeds, every candidate evaluated again in the sandbox by the problem's evaluator as
it is now -- except that the model is `scripted` with a playback script (see `engram.models.playback`):
each model call gets the reply recorded for it, with its tool calls, ids and token counts. No API
key is needed and nothing is spent; dollars come out as recorded because the token counts do.

Afterwards each experiment of the replay is paired with the recorded one (same seed, agent and
program; see `engram.runs.rescore.compare_by_program`) and their scores compared; the transcripts are
compared too, as a diagnosis of where a replay went its own way. The run directory of the replay
holds `replay.json` with both comparisons.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engram.errors import ConfigError
from engram.models.playback import (
    RecordedCall,
    forget_players,
    recorded_calls,
    split_conversations,
    write_playback_script,
)
from engram.runs.archive import write_json
from engram.runs.progress import Progress
from engram.runs.rescore import (
    ScoreComparison,
    compare_by_program,
    fingerprint_notes,
    recorded_scores,
    seed_dirs,
)

PLAYBACK_SCRIPT = "replay.yaml"
REPLAY_RECORD = "replay.json"
TRANSCRIPT = "transcript.jsonl"
_SHOWN_DIVERGENCES = 5


@dataclass
class ReplayOutcome:
    source: Path
    replay_dir: Path
    comparison: ScoreComparison
    transcript_notes: list[str] = field(default_factory=list)
    transcripts_identical: bool = True
    dollars: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)


def replay_run(source: Path, progress: Progress, *, out: Path | None = None, problem: str | None = None,
               tolerance: float = 0.0, mlflow: bool = False, sandbox: str | None = None,
               accept_changed_problem: bool = False) -> ReplayOutcome:
    """Replay `source` into a fresh run directory and compare; see the module docstring. A problem
    whose trusted files differ from the recorded run's is refused unless `accept_changed_problem`."""
    from engram.evaluation.run_secrets import TrustedSecrets
    from engram.problems.problem import load_problem
    from engram.problems.record import check_problem, record_acceptance
    from engram.runs.runner import load_run_spec

    source = source.resolve()
    seeds = seed_dirs(source)
    if not seeds:
        raise ConfigError(f"{source} has no seed-<k> directories: nothing was recorded to replay")
    scored_with = load_problem(problem if problem is not None else load_run_spec(source).problem.name)
    accepted = check_problem(source, scored_with, command="replay", accept=accept_changed_problem)
    replay_dir = _fresh_dir(out or source.parent / f"{source.name}-replay-{time.strftime('%Y%m%d-%H%M%S')}")
    write_playback_script(replay_dir / PLAYBACK_SCRIPT, source=source, target=replay_dir)
    TrustedSecrets.of_run(source).copy_to(replay_dir)  # the same hidden data as the recorded run
    spec = replay_spec(source, replay_dir, seeds=sorted(seeds), problem=problem, mlflow=mlflow, sandbox=sandbox)
    try:
        _execute_as_recorded(source, spec, replay_dir, progress)
    finally:
        forget_players(source)
    if accepted is not None:
        record_acceptance(replay_dir, accepted, adopt=False)
    comparison = compare_by_program(recorded_scores(source), recorded_scores(replay_dir), tolerance)
    comparison.notes += fingerprint_notes(source, _fingerprint(replay_dir))
    outcome = ReplayOutcome(source, replay_dir, comparison, dollars=_dollars(source, replay_dir))
    outcome.transcript_notes, outcome.transcripts_identical = compare_transcripts(source, replay_dir)
    write_json(replay_dir / REPLAY_RECORD, {
        "source": str(source), "tolerance": tolerance, "transcripts_identical": outcome.transcripts_identical,
        "transcript_notes": outcome.transcript_notes,
        "dollars": {str(seed): {"recorded": a, "replayed": b} for seed, (a, b) in outcome.dollars.items()},
        "accepted_problem_change": accepted,
        **comparison.as_dict(),
    })
    return outcome


def _execute_as_recorded(source: Path, spec: Any, replay_dir: Path, progress: Progress) -> None:
    """Run the replay, resuming it wherever the recording was stopped by a provider error (a refused
    key) and then resumed: the recorded refusal stops the replay too, and the calls after it are
    played back, in the same conversations, by the resumed replay."""
    from engram.errors import ProviderError
    from engram.runs.runner import execute

    stops = sum(1 for seed_dir in seed_dirs(source).values() for line in _events(seed_dir)
                if line.get("type") == "provider_error")
    resumed = False
    while True:
        try:
            execute(spec, replay_dir, progress, source=None, overrides=[], resumed=resumed)
            return
        except ProviderError:
            if stops == 0:
                raise
            stops, resumed = stops - 1, True


def _events(seed_dir: Path) -> list[dict[str, Any]]:
    from engram.runs.archive import read_jsonl

    return read_jsonl(seed_dir / "events.jsonl")


def replay_spec(source: Path, replay_dir: Path, *, seeds: list[int], problem: str | None, mlflow: bool,
                sandbox: str | None) -> Any:
    """The recorded spec with the playback model in place of the recorded one (priced like it)."""
    from engram.runs.runner import RESOLVED_SPEC
    from engram.spec import parse_spec

    stored = yaml.safe_load((source / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
    data = dict(stored.get("spec") or {})
    if not data:
        raise ConfigError(f"{source / RESOLVED_SPEC} holds no spec")
    model = dict(data.get("model") or {})
    data["model"] = {"id": "scripted", "script": str(replay_dir / PLAYBACK_SCRIPT),
                     "price_as": model.get("price_as") or (None if model.get("id") == "scripted" else model.get("id")),
                     "timeout_s": model.get("timeout_s", 600), "max_retries": model.get("max_retries", 6)}
    data["first_seed"], data["runs"] = seeds[0], seeds[-1] - seeds[0] + 1
    data["tracking"] = {**(data.get("tracking") or {}), "mlflow": mlflow}
    data["output"] = {"dir": str(replay_dir.parent)}
    if problem is not None:
        data["problem"] = {**data["problem"], "name": str(Path(problem).resolve()) if "/" in problem else problem}
    if sandbox is not None:
        data["sandbox"] = {**(data.get("sandbox") or {}), "backend": sandbox}
    return parse_spec(data, source=f"{source / RESOLVED_SPEC} (replay)", base=source)


def _fresh_dir(path: Path) -> Path:
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path} exists and is not empty: a replay writes a fresh run directory (choose --out)")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _fingerprint(run_dir: Path) -> str:
    from engram.runs.runner import RESOLVED_SPEC

    stored = yaml.safe_load((run_dir / RESOLVED_SPEC).read_text(encoding="utf-8")) or {}
    return str((stored.get("meta") or {}).get("problem_fingerprint") or "")


def _dollars(source: Path, replay_dir: Path) -> dict[int, tuple[float | None, float | None]]:
    def dollars(seed_dir: Path) -> float | None:
        result = seed_dir / "result.json"
        return json.loads(result.read_text(encoding="utf-8")).get("dollars") if result.is_file() else None

    replayed = seed_dirs(replay_dir)
    return {seed: (dollars(path), dollars(replayed[seed]) if seed in replayed else None)
            for seed, path in seed_dirs(source).items()}


# -- transcripts ---------------------------------------------------------------------------------------


def compare_transcripts(source: Path, replay_dir: Path) -> tuple[list[str], bool]:
    """Compare every model call of the recording with the replay's, conversation by conversation.

    Requests may differ where a tool's output is not deterministic (a timing, a date) without any
    score moving; the notes say where the first differences are, for a reader to judge.
    """
    notes: list[str] = []
    total = differing = 0
    for recorded_path in sorted(source.glob(f"seed-*/**/{TRANSCRIPT}")):
        relative = recorded_path.relative_to(source)
        if "workspace" in relative.parts:
            continue  # a copy an agent made in its workspace, not a record
        recorded = _flatten(split_conversations(recorded_calls(recorded_path)))
        replayed = _flatten(split_conversations(recorded_calls(replay_dir / relative)))
        total += len(recorded)
        for index in range(max(len(recorded), len(replayed))):
            problem = _call_difference(recorded[index] if index < len(recorded) else None,
                                       replayed[index] if index < len(replayed) else None)
            if problem:
                differing += 1
                if differing <= _SHOWN_DIVERGENCES:
                    notes.append(f"{relative}: call {index + 1}: {problem}")
    if differing > _SHOWN_DIVERGENCES:
        notes.append(f"... and {differing - _SHOWN_DIVERGENCES} more")
    summary = (f"transcripts: all {total} recorded model calls replayed with identical requests and replies"
               if not differing else f"transcripts: {differing} model call(s) differ from the recording "
                                     f"({total} recorded)")
    return [summary, *notes], differing == 0


def _flatten(conversations: list[list[RecordedCall]]) -> list[RecordedCall]:
    return [call for conversation in conversations for call in conversation]


def _call_difference(recorded: RecordedCall | None, replayed: RecordedCall | None) -> str:
    if replayed is None:
        return "recorded, but the replay never asked for it"
    if recorded is None:
        return "asked for by the replay, but not in the recording (answered with an empty reply)"
    if recorded.request != replayed.request:
        return "request differs " + _first_difference(recorded.request, replayed.request)
    if _reply(recorded) != _reply(replayed):
        return "reply differs"
    return ""


def _reply(call: RecordedCall) -> Any:
    if call.response is not None:
        return call.response.get("message")
    error = call.error or {}
    return ("error", error.get("error_type"), error.get("error"))


def _first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"at message {index + 1} ({x.get('type')})"
    return f"in length ({len(a)} recorded, {len(b)} replayed messages)"
