"""Evaluating candidates: the trusted loop around one sandboxed run per candidate.

`CandidateEvaluator` is built once per problem (it loads the trusted scorer and its data once) and
then evaluates many programs. For each it makes a clean working directory, runs the candidate via
`child.py` in the sandbox, reads the answers the child wrote, and scores them with the trusted
scorer. The sandbox sees the session directory (the child, the problem's adapter and the files it
imports, the shared input) and the evaluation's working directory -- not the problem directory,
its evaluator, its data or anything else the score is computed from. Before every run it checks
that the problem's trusted files and the shared inputs are unchanged, so a candidate that tampers
with them (possible only without isolation) is caught.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engram.errors import EngramError, IntegrityError, ScorerError
from engram.evaluation.channel import CandidateChannel, CandidateFailure
from engram.evaluation.hidden_data import check_hidden_data
from engram.evaluation.plain_data import check_plain, parse_untrusted
from engram.evaluation.result import ErrorKind, Evaluation, ScenarioResult, Timings
from engram.evaluation.run_secrets import TrustedSecrets
from engram.evaluation.safe_read import UnsafeFile, read_untrusted
from engram.evaluation.scoring import InvalidAnswer, Judgement, ProgramJudge, ScenarioScore, scoring_fault
from engram.problems.problem import Problem, ScenarioSpec
from engram.sandbox import Limits, Mount, Sandbox, SandboxResult, clean_environment
from engram.sandbox.base import KiB, MiB

_CHILD_SOURCE = Path(__file__).with_name("child.py")
Outcome = tuple[ScenarioScore | InvalidAnswer | CandidateFailure, float]
"""What a conversation produced for one scenario: its score or why it has none, and the time the
candidate took to answer (measured by the channel)."""
_MAX_ANSWERS_BYTES = 64 * MiB
_PROBLEM_FILES = "problem"
"""Session subdirectory holding the problem's candidate-side files."""
_MAX_ERROR_CHARS = 20_000
"""A failure event's message is the candidate's text: kept, but not without bound."""


class CandidateEvaluator:
    """Scores candidate programs for one problem; see the module docstring."""

    def __init__(
        self,
        problem: Problem,
        sandbox: Sandbox,
        *,
        scenarios: list[str] | None = None,
        time_limit_s: float | None = None,
        limits: Limits | None = None,
        work_root: Path | None = None,
        secrets: TrustedSecrets | None = None,
    ) -> None:
        """`secrets`: where the scorer keeps values it draws and hides (a run's store, so that resume,
        rescore and replay score against the same hidden data); default: this evaluator's memory."""
        self.problem = problem
        self.sandbox = sandbox
        self.scenarios = problem.select_scenarios(scenarios)
        self.limits = limits or _limits_for(problem, time_limit_s)
        self.fingerprint = problem.fingerprint()
        check_hidden_data(problem, sandbox.name, self.scenarios)
        self._work_root = work_root
        self._session = Path(tempfile.mkdtemp(prefix="engram-session-", dir=work_root))
        try:
            with self._scorer_errors():
                self.scorer = problem.make_scorer()
                if secrets is not None:
                    self.scorer.secrets = secrets
                self._shared_files = self._write_shared_files()
        except BaseException:
            shutil.rmtree(self._session, ignore_errors=True)
            raise

    # -- public ---------------------------------------------------------------------------------

    def evaluate(
        self, program: str | Path, *, artifacts_dir: Path | None = None, time_limit_s: float | None = None,
        program_name: str | None = None,
    ) -> Evaluation:
        """Score one program (its source text or a path to it). Never raises for candidate faults.

        `time_limit_s` shortens the wall-clock limit for this call only, e.g. to what is left of an
        agent's time, so that no evaluation can outlast the agent that asked for it.

        `program_name`: the file the program's author knows it by (an agent's workspace path, the
        user's file), named in its syntax errors and tracebacks instead of the sandbox's scratch copy.
        The candidate sees it, so it must not be a path of the trusted side (an archive's, say);
        default: the scratch copy, written `<workdir>/program.py`.
        """
        source = program.read_text(encoding="utf-8") if isinstance(program, Path) else program
        self._check_integrity()
        limits = self.limits
        if time_limit_s is not None and time_limit_s < limits.wall_seconds:
            limits = dataclasses.replace(limits, wall_seconds=max(1.0, time_limit_s))
        # The sandbox's own directory: for host backends a tmpfs capping the total the candidate writes.
        session = self._session
        with self.sandbox.workdir(prefix="engram-eval-", parent=self._work_root) as workdir, self._scorer_errors():
            evaluation = self._evaluate_in(workdir, source, artifacts_dir, limits, program_name)
        return stable_paths(evaluation, {session: "<session>", self._session: "<session>", workdir: "<workdir>"})

    @contextlib.contextmanager
    def _scorer_errors(self) -> Iterator[None]:
        """Failures of candidates never raise; anything else that does is the evaluator's own fault."""
        try:
            yield
        except EngramError:
            raise
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise ScorerError(
                f"the evaluator of problem {self.problem.name} failed ({where.filename}, line {where.lineno}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        shutil.rmtree(self._session, ignore_errors=True)

    def __enter__(self) -> CandidateEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup ----------------------------------------------------------------------------------

    def _renew_session(self) -> None:
        """Start over in a fresh session directory: the old one was changed, possibly into links or
        FIFOs, so nothing is written into it again."""
        old = self._session
        self._session = Path(tempfile.mkdtemp(prefix="engram-session-", dir=self._work_root))
        shutil.rmtree(old, ignore_errors=True)
        self._shared_files = self._write_shared_files()

    def _write_shared_files(self) -> dict[Path, str]:
        """The session's files: the child, the problem's candidate-side files (its adapter and the
        `sandbox_files` it imports -- nothing else of the problem directory is shown to candidates)
        and the shared input."""
        self._session.chmod(0o755)  # read-only to candidates, who may run as another (unprivileged) uid
        child = self._session / "child.py"
        shutil.copyfile(_CHILD_SOURCE, child)
        files = [child]
        (self._session / _PROBLEM_FILES).mkdir()
        for path in self.problem.candidate_files():
            copy = self._session / _PROBLEM_FILES / path.name
            shutil.copyfile(path, copy)
            files.append(copy)
        shared = self.scorer.shared_input()
        if shared is not None:
            shared_path = self._session / "shared.json"
            shared_path.write_text(json.dumps(shared, allow_nan=True), encoding="utf-8")
            files.append(shared_path)
        return {path: _sha256_bytes(path.read_bytes()) for path in files}

    def _check_integrity(self) -> None:
        self.problem.ensure_data(self.scenarios)  # re-hashes any data file whose metadata changed
        if self.problem.fingerprint() != self.fingerprint:
            raise IntegrityError(
                f"the trusted files of problem {self.problem.name} in {self.problem.root} changed while "
                f"Engram was running; scores from here on would not be comparable. Restore them and start again."
            )
        if any(_session_file_digest(self._session, p) != h for p, h in self._shared_files.items()):
            self._renew_session()

    # -- one evaluation -------------------------------------------------------------------------

    def _evaluate_in(self, workdir: Path, source: str, artifacts_dir: Path | None, limits: Limits,
                     program_name: str | None = None) -> Evaluation:
        started = time.monotonic()
        if isinstance(self.scorer, ProgramJudge):
            return self._judge_program(self.scorer, workdir, source, artifacts_dir, limits)
        (workdir / "tmp").mkdir()
        program_path = workdir / "program.py"
        program_path.write_text(source, encoding="utf-8")
        answers_path = workdir / "answers.jsonl"
        request = {
            "program": str(program_path),
            "program_name": program_name,
            "adapter": str(self._session / _PROBLEM_FILES / self.problem.adapter_path.name),
            "entry_point": self.problem.config.entry_point,
            "shared_input": str(self._session / "shared.json")
            if (self._session / "shared.json") in self._shared_files else None,
            "scenarios": [{"name": s.name, "input": self.scorer.scenario_input(s)} for s in self.scenarios],
            "answers": str(answers_path),
        }
        interactive = self.scorer.interactive
        if interactive:
            request["channel"] = CandidateChannel.create_fifos(workdir)
            request["scenarios"] = []
        request_path = workdir / "request.json"
        request_path.write_text(json.dumps(request, allow_nan=True), encoding="utf-8")
        spawned_at = time.time()
        argv = [self.sandbox.python, "-P", str(self._session / "child.py"), str(request_path)]
        mounts = [Mount(self._session)]
        outcomes: dict[str, Outcome] | None = None
        if interactive:
            run, outcomes = self._converse(argv, workdir, mounts, limits)
        else:
            run = self.sandbox.run(argv, workdir=workdir, mounts=mounts, limits=limits,
                                   env=clean_environment(workdir))
        events, unreadable = _read_events(workdir, answers_path)
        scoring_started = time.monotonic()
        try:
            evaluation, scored = self._judge(run, events, limits, outcomes, unreadable)
        except Exception as exc:  # whatever the child's events held, they are the candidate's doing
            evaluation, scored = self._unjudgeable(run, scoring_fault(exc)), {}
        scoring_s = time.monotonic() - scoring_started
        evaluation.program_sha256 = _sha256_bytes(source.encode())
        evaluation.duration_s = time.monotonic() - started
        evaluation.timings = Timings(
            sandbox_start_s=max(0.0, _finite(_first(events, "started").get("t"), spawned_at) - spawned_at),
            candidate_s=sum(r.candidate_seconds or 0.0 for r in evaluation.scenarios.values())
            + max(0.0, _finite(_first(events, "loaded").get("seconds"), 0.0)),
            scoring_s=scoring_s,
        )
        if artifacts_dir is not None:
            evaluation.artifacts = _write_artifacts(artifacts_dir, scored)
        return evaluation

    def _judge_program(self, judge: ProgramJudge, workdir: Path, source: str, artifacts_dir: Path | None,
                       limits: Limits) -> Evaluation:
        """A problem whose scorer runs the program itself: hand it over, then record what it found."""
        started = time.monotonic()
        try:
            judgement = judge.judge(source, self.scenarios, sandbox=self.sandbox, workdir=workdir, limits=limits)
        except EngramError:
            raise
        except Exception as exc:  # the judge broke on what this program produced: the program's fault
            judgement = Judgement(failure=(ErrorKind.INVALID_OUTPUT, str(scoring_fault(exc))))
        evaluation = Evaluation(
            problem=self.problem.name, score=None, ok=False, stdout=judgement.stdout, stderr=judgement.stderr,
            sandbox=self.sandbox.name, problem_fingerprint=self.fingerprint, notes=list(judgement.notes),
        )
        if judgement.failure is not None:
            _failed(evaluation, *judgement.failure)
        else:
            evaluation.scenarios = {name: result for name, (result, _) in judgement.results.items()}
            scored = {name: score for name, (_, score) in judgement.results.items()}
            self._combine_into(evaluation, scored)
        evaluation.program_sha256 = _sha256_bytes(source.encode())
        evaluation.duration_s = time.monotonic() - started
        evaluation.timings = Timings(candidate_s=judgement.candidate_s,
                                     scoring_s=max(0.0, evaluation.duration_s - judgement.candidate_s))
        if artifacts_dir is not None and judgement.artifacts:
            artifacts_dir.mkdir(parents=True, exist_ok=True)
            for name, text in judgement.artifacts.items():
                (artifacts_dir / name).write_text(text, encoding="utf-8")
            evaluation.artifacts = sorted(judgement.artifacts)
        return evaluation

    def _converse(
        self, argv: list[str], workdir: Path, mounts: list[Mount], limits: Limits
    ) -> tuple[SandboxResult, dict[str, Outcome]]:
        """Run the candidate in the background and let the scorer talk to it, scenario by scenario."""
        finished: dict[str, SandboxResult] = {}

        def run_candidate() -> None:
            finished["run"] = self.sandbox.run(argv, workdir=workdir, mounts=mounts, limits=limits,
                                               env=clean_environment(workdir))

        thread = threading.Thread(target=run_candidate, name="engram-candidate", daemon=True)
        channel = CandidateChannel(workdir, deadline=time.monotonic() + limits.wall_seconds, alive=thread.is_alive)
        thread.start()
        outcomes: dict[str, Outcome] = {}
        try:
            for scenario in self.scenarios:
                before = channel.candidate_seconds
                try:
                    outcome: ScenarioScore | InvalidAnswer | CandidateFailure = self.scorer.run_scenario(
                        scenario, channel)
                except (InvalidAnswer, CandidateFailure) as exc:
                    outcome = exc
                except Exception as exc:  # the scorer broke on the candidate's replies: the candidate's fault
                    outcome = scoring_fault(exc)
                outcomes[scenario.name] = (outcome, channel.candidate_seconds - before)
        finally:
            channel.close()
            thread.join()  # bounded by the sandbox's own wall-clock limit
        return finished["run"], outcomes

    def _judge(
        self, run: SandboxResult, events: list[dict[str, Any]], limits: Limits,
        outcomes: dict[str, Outcome] | None = None, unreadable: str | None = None,
    ) -> tuple[Evaluation, dict[str, ScenarioScore]]:
        evaluation = Evaluation(
            problem=self.problem.name, score=None, ok=False, stdout=run.stdout.text(), stderr=run.stderr.text(),
            sandbox=self.sandbox.name, problem_fingerprint=self.fingerprint, notes=list(run.notes),
        )
        answers = {e["name"]: e for e in events if e.get("event") == "scenario" and isinstance(e.get("name"), str)}
        failures = {e.get("scenario"): e for e in events
                     if e.get("event") == "failure" and isinstance(e.get("scenario"), str | None)}
        if None in failures:  # the program could not even be loaded
            failure = failures[None]
            return _failed(evaluation, _error_kind(failure.get("kind")), _error_text(failure.get("error"))), {}
        scored: dict[str, ScenarioScore] = {}
        for scenario in self.scenarios:
            if outcomes is not None:
                outcome, seconds = outcomes.get(scenario.name, (None, None))
                result, score = _judge_conversation(scenario.name, outcome, seconds, run, limits, unreadable)
            else:
                result, score = self._judge_scenario(
                    scenario, answers.get(scenario.name), failures.get(scenario.name), run, limits, unreadable
                )
            evaluation.scenarios[scenario.name] = result
            if score is not None:
                scored[scenario.name] = score
        broken = [r for r in evaluation.scenarios.values() if not r.ok]
        if broken and run.process_cap_hit:
            return _failed(evaluation, ErrorKind.KILLED,
                           f"the program tried to run more than {limits.max_processes} processes "
                           f"(the sandbox's cap); first failure: {broken[0].error}"), scored
        if broken:
            first = broken[0]
            names = ", ".join(r.name for r in broken)
            message = (f"{len(broken)} of {len(self.scenarios)} scenario(s) failed ({names}); "
                       f"first, {first.name}: {first.error}")
            return _failed(evaluation, first.error_kind or ErrorKind.RUNTIME, message), scored
        return self._combine_into(evaluation, scored), scored

    def _combine_into(self, evaluation: Evaluation, scored: dict[str, ScenarioScore]) -> Evaluation:
        """The candidate's score from its scenarios; a combination that breaks the scorer or is not a
        finite number is the candidate's invalid output."""
        try:
            score, totals = self.scorer.combine(scored)
            score = float(score)
        except Exception as exc:  # the totals of this candidate's numbers broke the scorer
            return _failed(evaluation, ErrorKind.INVALID_OUTPUT, str(scoring_fault(exc)))
        if not math.isfinite(score):
            return _failed(evaluation, ErrorKind.INVALID_OUTPUT,
                           f"the answers combine to a score of {score!r}, which is not a finite number")
        evaluation.score, evaluation.metrics, evaluation.ok = score, totals, True
        return evaluation

    def _unjudgeable(self, run: SandboxResult, reason: InvalidAnswer) -> Evaluation:
        evaluation = Evaluation(
            problem=self.problem.name, score=None, ok=False, stdout=run.stdout.text(), stderr=run.stderr.text(),
            sandbox=self.sandbox.name, problem_fingerprint=self.fingerprint, notes=list(run.notes),
        )
        return _failed(evaluation, ErrorKind.INVALID_OUTPUT, str(reason))

    def _judge_scenario(
        self, scenario: ScenarioSpec, answer: dict[str, Any] | None, failure: dict[str, Any] | None,
        run: SandboxResult, limits: Limits, unreadable: str | None,
    ) -> tuple[ScenarioResult, ScenarioScore | None]:
        if answer is not None:
            seconds = answer.get("seconds")
            seconds = float(seconds) if isinstance(seconds, int | float) and math.isfinite(seconds) else None
            try:
                scored = self.scorer.score_scenario(scenario, check_plain(answer.get("answer")))
            except InvalidAnswer as exc:
                return ScenarioResult(name=scenario.name, ok=False, error_kind=ErrorKind.INVALID_OUTPUT,
                                      error=str(exc), candidate_seconds=seconds), None
            except Exception as exc:  # the scorer broke on this answer: the answer's fault, not the run's
                return ScenarioResult(name=scenario.name, ok=False, error_kind=ErrorKind.INVALID_OUTPUT,
                                      error=str(scoring_fault(exc)), candidate_seconds=seconds), None
            return ScenarioResult(name=scenario.name, ok=True, metrics=scored.metrics,
                                  candidate_seconds=seconds), scored
        if failure is not None:
            return ScenarioResult(name=scenario.name, ok=False, error_kind=_error_kind(failure.get("kind")),
                                  error=_error_text(failure.get("error"))), None
        kind, message = _abnormal_end(run, limits, unreadable)
        return ScenarioResult(name=scenario.name, ok=False, error_kind=kind, error=message), None


def _judge_conversation(
    name: str, outcome: ScenarioScore | InvalidAnswer | CandidateFailure | None, seconds: float | None,
    run: SandboxResult, limits: Limits, unreadable: str | None = None,
) -> tuple[ScenarioResult, ScenarioScore | None]:
    if isinstance(outcome, ScenarioScore):
        return ScenarioResult(name=name, ok=True, metrics=outcome.metrics, candidate_seconds=seconds), outcome
    if isinstance(outcome, InvalidAnswer):
        return ScenarioResult(name=name, ok=False, error_kind=ErrorKind.INVALID_OUTPUT, error=str(outcome),
                              candidate_seconds=seconds), None
    if isinstance(outcome, CandidateFailure) and outcome.kind is not None:
        return ScenarioResult(name=name, ok=False, error_kind=_error_kind(outcome.kind),
                              error=_error_text(outcome.error), candidate_seconds=seconds), None
    kind, message = _abnormal_end(run, limits, unreadable)
    return ScenarioResult(name=name, ok=False, error_kind=kind, error=message), None


def _write_artifacts(directory: Path, scored: dict[str, ScenarioScore]) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for score in scored.values():
        for name, text in score.artifacts.items():
            (directory / name).write_text(text, encoding="utf-8")
            written.append(name)
    return sorted(written)


def stable_paths(evaluation: Evaluation, names: dict[Path, str]) -> Evaluation:
    """The evaluation with this process's scratch directories (random names) written as fixed names
    in its messages, so that a candidate's traceback reads the same in a replay or a rescore and an
    agent's tool result does not differ from the recorded one."""
    replacements = sorted(((str(path), name) for path, name in names.items()), key=lambda pair: -len(pair[0]))

    def fixed(text: str | None) -> str | None:
        if not text:
            return text
        for path, name in replacements:
            text = text.replace(path, name)
        return text

    scenarios = {key: scenario.model_copy(update={"error": fixed(scenario.error)})
                 for key, scenario in evaluation.scenarios.items()}
    return evaluation.model_copy(update={"error": fixed(evaluation.error), "stdout": fixed(evaluation.stdout) or "",
                                         "stderr": fixed(evaluation.stderr) or "", "scenarios": scenarios})


def _limits_for(problem: Problem, time_limit_s: float | None) -> Limits:
    limits = problem.config.limits
    return Limits(
        wall_seconds=time_limit_s or problem.config.time_limit_s,
        memory_bytes=limits.memory_mb * MiB,
        max_processes=limits.max_processes,
        output_bytes=limits.output_kb * KiB,
        file_size_bytes=limits.file_size_mb * MiB,
    )


def _failed(evaluation: Evaluation, kind: ErrorKind, message: str) -> Evaluation:
    evaluation.ok, evaluation.score, evaluation.error_kind, evaluation.error = False, None, kind, message
    return evaluation


def _error_kind(value: object) -> ErrorKind:
    try:
        return ErrorKind(str(value))
    except ValueError:
        return ErrorKind.RUNTIME


def _abnormal_end(run: SandboxResult, limits: Limits, unreadable: str | None = None) -> tuple[ErrorKind, str]:
    """Why a scenario got no answer, from how the sandboxed process ended (or, if it ended well,
    from what was wrong with the answers it left)."""
    if run.timed_out == "wall":
        return ErrorKind.TIMEOUT, f"the program did not finish within the time limit of {limits.wall_seconds:g} s"
    if run.timed_out == "cpu":
        return ErrorKind.TIMEOUT, f"the program used more than {limits.effective_cpu_seconds:g} s of CPU time"
    stderr = run.stderr.text()
    if run.oom_killed:
        return ErrorKind.MEMORY, (f"the program was killed for using more memory than its limit "
                                  f"({_mb(limits.memory_bytes)})\n{_tail(stderr)}").rstrip()
    if "MemoryError" in stderr:
        return ErrorKind.MEMORY, f"the program ran out of memory (limit {_mb(limits.memory_bytes)})\n{_tail(stderr)}"
    if run.signal is not None:
        name = _signal_name(run.signal)
        if run.signal == signal.SIGXFSZ:
            return ErrorKind.KILLED, f"the program wrote a file larger than {_mb(limits.file_size_bytes)} ({name})"
        return ErrorKind.KILLED, f"the program was killed by {name}\n{_tail(stderr)}".rstrip()
    if unreadable is not None:
        return ErrorKind.INVALID_OUTPUT, unreadable
    if run.returncode != 0:
        return ErrorKind.RUNTIME, f"the program exited with code {run.returncode}\n{_tail(stderr)}".rstrip()
    return ErrorKind.RUNTIME, "the program exited before answering (did it call os._exit?)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _mb(value: int | None) -> str:
    return "none" if value is None else f"{value // MiB} MB"


def _tail(text: str, limit: int = 2000) -> str:
    return text[-limit:]


def _read_events(workdir: Path, path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The child's event lines, and what was wrong with the file or its lines if anything was.

    The file is untrusted: it is read with `read_untrusted` (a FIFO, link or giant file put in its
    place is refused, never waited on), and a line that is not an acceptable JSON object is
    skipped, its problem kept to explain a scenario left without an answer."""
    try:
        raw = read_untrusted(path, within=workdir, max_bytes=_MAX_ANSWERS_BYTES, missing_ok=True)
    except UnsafeFile as exc:
        return [], f"the answers could not be read: {exc}"
    events: list[dict[str, Any]] = []
    problem: str | None = None
    for number, line in enumerate((raw or b"").splitlines(), start=1):
        try:
            event = parse_untrusted(line)
        except InvalidAnswer as exc:
            problem = problem or f"line {number} of the answers file was refused: {exc}"
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, problem


def _session_file_digest(session: Path, path: Path) -> str | None:
    """Digest of a shared session file, or None if it is gone or was replaced by something unsafe
    (the session directory is visible to candidates, and writable to them without isolation)."""
    try:
        data = read_untrusted(path, within=session, missing_ok=True)
    except UnsafeFile:
        return None
    return None if data is None else _sha256_bytes(data)


def _finite(value: object, default: float) -> float:
    """A number the child reported about itself (a timestamp, a duration), or `default`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _error_text(value: object) -> str:
    text = str(value)
    if len(text) > _MAX_ERROR_CHARS:
        return text[:_MAX_ERROR_CHARS] + f"\n[... {len(text) - _MAX_ERROR_CHARS} characters not kept ...]"
    return text


def _first(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((e for e in events if e.get("event") == name), {})


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
