"""The Frontier-CS judge: compile a C++17 candidate once, run every test case, let the checker score it.

Semantics are the upstream judge's (see docs/problems/frontier-cs.md): per case, the program reads the
whole input on stdin under the problem's CPU limit, twice that in wall time, and its memory as
address-space, data and stack limit, with 128 MiB of stdout; then the checker runs as `chk input
output answer` (10 s of CPU, 20 s wall, 256 MiB) and its message gives the case's ratio. Interactive
cases cross the program's and the interactor's standard streams through two named pipes, the
interactor getting four times the program's CPU and memory and eight times its time in wall time.
The problem's score is 100 times the plain mean of the ratios.

What differs on purpose: a case whose program failed (time, memory, output, crash, non-zero exit)
scores 0 whatever the program printed -- its stderr is shown, never parsed; the checker and the
interactor run sandboxed as well, each in its own sandbox, and see only their case's files, while
the program sees only its input (or its pipes) and its own binary. Cases run in parallel, up to
`workers` at once. Where the runs happen -- a fresh sandbox each, or under Docker two containers per
case judged at once, reused from case to case -- is `engram.frontier_cs.slots`'s business.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from engram.errors import IntegrityError
from engram.frontier_cs.config import JudgeConfig, TestCase
from engram.frontier_cs.protocol import MESSAGE_LIMIT, message_of, read_verdict
from engram.frontier_cs.runs import ProgramRun, RunLimits, Stream, backstop, copy_regular, launch, read_capped
from engram.frontier_cs.slots import CasePlace, open_places, widest
from engram.frontier_cs.toolchain import CachedBinary, compile_source
from engram.sandbox import Sandbox
from engram.sandbox.base import MiB

STDOUT_LIMIT = 128 * MiB
CHECKER_LIMITS = RunLimits(cpu_s=10, wall_s=20, memory_bytes=256 * MiB, address_space=None, data=256 * MiB,
                           stack=256 * MiB, file_size=64 * MiB)
_TESTLIB_POINTS = {7, *range(16, 256)}
"""Exit codes of testlib's `quitp` (_points) and `quitf(_pc(k))` (_partially): an accepted answer, partial credit."""
STDERR_SHOWN = 4000
"""Characters of a program's stderr kept per case, for the agent to read."""


@dataclass
class CaseResult:
    number: int
    verdict: str
    """AC (ratio 1), PC (accepted with partial credit, possibly 0), WA (rejected), TLE, MLE, OLE, RE (the program
    failed), JE (the checker or interactor itself failed), NR (not run: the evaluation ran out of time)."""
    ratio: float
    ratio_unbounded: float
    time_s: float
    memory_bytes: int
    message: str
    """The checker's (or interactor's) message, or why the program failed."""
    stderr: str = ""
    starved: bool = False
    """Stopped at the wall-clock limit with less than half its CPU time used: the machine, not the
    program, was probably too slow (the judge tries such a case once more)."""

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("ratio", "ratio_unbounded"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = None
        return data


@dataclass
class Verdicts:
    """A whole program's result: the cases, or why it was not run at all."""

    cases: list[CaseResult]
    compile_error: str | None = None
    compile_s: float = 0.0


@dataclass(frozen=True)
class CaseFiles:
    input: Path
    answer: Path


class Judge:
    """Judges programs for one problem with one sandbox; safe to use from one thread at a time."""

    def __init__(self, sandbox: Sandbox, config: JudgeConfig, checker: CachedBinary, launcher: CachedBinary, *,
                 workers: int = 1) -> None:
        self.sandbox = sandbox
        self.config = config
        self.checker = checker
        self.launcher = launcher
        self.workers = max(1, workers)

    def judge(self, source: str, cases: dict[TestCase, CaseFiles], workdir: Path, deadline: float) -> Verdicts:
        build = workdir / "build"
        compiled = compile_source(self.sandbox, source.encode("utf-8"), self.config.source_name, build, "a")
        if compiled.binary is None:
            return Verdicts([], compile_error=compiled.log, compile_s=compiled.seconds)
        program = workdir / "program"
        program.mkdir()
        os.replace(compiled.binary, program / "a")
        for binary in (self.checker, self.launcher):
            if not binary.intact():
                raise IntegrityError(f"the compiled {binary.path.name} in {binary.path.parent} changed since it was "
                                     f"built; scores from it would not be comparable. Delete that folder and start "
                                     f"again.")
        ordered = sorted(cases, key=lambda c: c.number)
        limits = (widest([backstop(self._program_limits(c)) for c in ordered] or [backstop(CHECKER_LIMITS)]),
                  widest([backstop(self._judge_limits(c)) for c in ordered] or [backstop(CHECKER_LIMITS)]))
        places = open_places(self.sandbox, workdir, program, self.checker.path.parent, self.launcher.path.parent,
                             limits, deadline)

        def attempt(case: TestCase, name: str) -> CaseResult:
            with places.case(name) as place:
                if self.config.interactive:
                    return self._interactive_case(case, cases[case], program, place)
                return self._batch_case(case, cases[case], program, place)

        def one(case: TestCase) -> CaseResult:
            if time.monotonic() >= deadline:
                return CaseResult(case.number, "NR", 0.0, 0.0, 0.0, 0,
                                  "not run: the evaluation's time limit ran out before this case started")
            result = attempt(case, str(case.number))
            if result.starved and time.monotonic() < deadline:
                # Killed at the wall-clock limit having used little CPU: on a machine this busy the program
                # was starved, not slow. One more try; a program that really waits (or sleeps) fails again.
                retried = attempt(case, f"{case.number}-again")
                retried.message = f"{retried.message} (second try: the first was stopped at the wall-clock " \
                                  f"limit after {result.time_s:.3f} s of CPU)"
                return retried
            return result

        try:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(ordered) or 1),
                                    thread_name_prefix="engram-frontier-case") as pool:
                results = list(pool.map(one, ordered))
        finally:
            places.close()
        return Verdicts(results, compile_s=compiled.seconds)

    # -- one case -------------------------------------------------------------------------------

    def _program_limits(self, case: TestCase) -> RunLimits:
        memory = case.memory_bytes
        return RunLimits(cpu_s=case.time_s, wall_s=2 * case.time_s, memory_bytes=memory,
                         address_space=None if self.config.interactive else memory, data=memory, stack=memory,
                         file_size=STDOUT_LIMIT)

    def _judge_limits(self, case: TestCase) -> RunLimits:
        if not self.config.interactive:
            return CHECKER_LIMITS
        return RunLimits(cpu_s=4 * case.time_s, wall_s=8 * case.time_s, memory_bytes=4 * case.memory_bytes,
                         address_space=None, data=4 * case.memory_bytes, stack=4 * case.memory_bytes,
                         file_size=STDOUT_LIMIT)

    def _batch_case(self, case: TestCase, files: CaseFiles, program: Path, place: CasePlace) -> CaseResult:
        run_dir, check_dir = place.run_dir, place.check_dir
        limits = self._program_limits(case)
        # Each side gets copies of its case's files in its own folder: nothing else of the problem is mounted.
        program_input = _copy(files.input, run_dir / "input.txt")
        output, errors = run_dir / "out.txt", run_dir / "stderr.txt"
        run = launch(place.program, self.launcher.path, [str(program / "a")], workdir=run_dir,
                     streams=[Stream(program_input, "r", 0), Stream(output, "w", 1), Stream(errors, "w", 2)],
                     mounts=place.program_mounts, limits=limits)
        stderr = _text(read_capped(errors, STDERR_SHOWN))
        failure = program_failure(run, limits, stderr)
        if failure is not None:
            return CaseResult(case.number, failure[0], 0.0, 0.0, run.cpu_s, run.rss_bytes, failure[1], stderr,
                              starved=_starved(run, limits))
        # The checker reads a copy the program can no longer touch (and never a link it left instead).
        checked_output = check_dir / "out.txt"
        if not copy_regular(output, checked_output):
            return CaseResult(case.number, "WA", 0.0, 0.0, run.cpu_s, run.rss_bytes,
                              "the program's output is not a regular file", stderr)
        checker_input = _copy(files.input, check_dir / "input.txt")
        answer = _copy(files.answer, check_dir / "answer.txt")
        checker_out, checker_err = check_dir / "checker.stdout", check_dir / "checker.stderr"
        checker = launch(place.judge, self.launcher.path,
                         [str(self.checker.path), str(checker_input), str(checked_output), str(answer)],
                         workdir=check_dir,
                         streams=[Stream(checker_out, "w", 1), Stream(checker_err, "w", 2)],
                         mounts=place.judge_mounts, limits=CHECKER_LIMITS)
        message = message_of(_text(read_capped(checker_out, MESSAGE_LIMIT)),
                             _text(read_capped(checker_err, MESSAGE_LIMIT)))
        return _scored(case.number, checker, message, run, stderr)

    def _interactive_case(self, case: TestCase, files: CaseFiles, program: Path, place: CasePlace) -> CaseResult:
        run_dir, judge_dir, pipes = place.run_dir, place.check_dir, place.pipes_dir
        to_judge, to_program = pipes / "to_interactor", pipes / "to_program"
        for fifo in (to_judge, to_program):
            os.mkfifo(fifo, 0o666)
            # Whatever the umask: program and interactor may run as two different unprivileged uids.
            os.chmod(fifo, 0o666)
        limits = self._program_limits(case)
        judge_limits = self._judge_limits(case)
        judge_input = _copy(files.input, judge_dir / "input.txt")
        answer = _copy(files.answer, judge_dir / "answer.txt")
        errors, judge_errors = run_dir / "stderr.txt", judge_dir / "interactor.stderr"
        interactor_run: dict[str, ProgramRun] = {}
        interactor_error: list[BaseException] = []

        def run_interactor() -> None:
            try:
                _run_interactor()
            except BaseException as exc:  # re-raised in the case's thread; the program's run ends at its backstop
                interactor_error.append(exc)

        def _run_interactor() -> None:
            # Both launchers open the pipe towards the interactor first, so neither waits for the other.
            interactor_run["run"] = launch(
                place.judge, self.launcher.path,
                [str(self.checker.path), str(judge_input), str(judge_dir / "tout.txt"), str(answer)],
                workdir=judge_dir,
                streams=[Stream(to_judge, "r", 0), Stream(to_program, "w", 1), Stream(judge_errors, "w", 2)],
                mounts=place.judge_mounts, limits=judge_limits)

        thread = threading.Thread(target=run_interactor, name="engram-frontier-interactor", daemon=True)
        thread.start()
        run = launch(place.program, self.launcher.path, [str(program / "a")], workdir=run_dir,
                     streams=[Stream(to_judge, "w", 1), Stream(to_program, "r", 0), Stream(errors, "w", 2)],
                     mounts=place.program_mounts, limits=limits)
        thread.join()
        if interactor_error:
            raise interactor_error[0]
        stderr = _text(read_capped(errors, STDERR_SHOWN))
        failure = program_failure(run, limits, stderr)
        if failure is not None:
            return CaseResult(case.number, failure[0], 0.0, 0.0, run.cpu_s, run.rss_bytes, failure[1], stderr,
                              starved=_starved(run, limits))
        message = _text(read_capped(judge_errors, MESSAGE_LIMIT))
        return _scored(case.number, interactor_run["run"], message, run, stderr)


def _copy(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    os.chmod(destination, 0o644)
    return destination


def _scored(number: int, judge_run: ProgramRun, message: str, run: ProgramRun, stderr: str) -> CaseResult:
    """The case's ratio from the checker's (or interactor's) message and exit, read as upstream reads them."""
    verdict = read_verdict(judge_run.clean_exit, message)
    if judge_run.signal == signal.SIGPIPE and verdict.ratio == 0:
        label = "WA"  # the program ended (or closed its input) while the interactor still had to talk to it
        message = f"the interactor could not write to the program, which had stopped reading; {message}".rstrip("; ")
    elif judge_run.killed or judge_run.signal is not None or judge_run.exit_code is None:
        label = "JE"
        how = "was killed at its time limit" if judge_run.killed or judge_run.cpu_s > CHECKER_LIMITS.cpu_s \
            else f"ended abnormally ({_describe_end(judge_run)})"
        message = f"the judge program {how}; its message: {message}".rstrip()
    elif verdict.ratio == 1.0:  # upstream calls a case correct by its ratio, whatever the exit code
        label = "AC"
    elif verdict.ok or judge_run.exit_code in _TESTLIB_POINTS or verdict.ratio > 0:
        label = "PC"  # a valid answer, with the credit the checker gave it (possibly none)
    else:
        label = "WA"
    return CaseResult(number, label, verdict.ratio, verdict.unbounded, run.cpu_s, run.rss_bytes, message, stderr)


def _starved(run: ProgramRun, limits: RunLimits) -> bool:
    return (run.killed == "wall" or run.sandbox.timed_out == "wall") and run.cpu_s < limits.cpu_s / 2


def program_failure(run: ProgramRun, limits: RunLimits, stderr: str) -> tuple[str, str] | None:
    """(verdict, reason) when the program did not end cleanly within its limits, else None."""
    if run.killed == "wall" or run.sandbox.timed_out == "wall":
        return "TLE", f"the program did not finish within {limits.wall_s:g} s of wall-clock time"
    if run.cpu_s > limits.cpu_s or run.signal == signal.SIGXCPU:
        return "TLE", f"the program used {run.cpu_s:.3f} s of CPU time (limit {limits.cpu_s:g} s)"
    if run.sandbox.oom_killed or run.rss_bytes > limits.memory_bytes:
        return "MLE", f"the program used more than its {limits.memory_bytes // MiB} MiB of memory"
    if run.signal == signal.SIGXFSZ:
        return "OLE", f"the program wrote more than {(limits.file_size or 0) // MiB} MiB of output"
    if run.exit_code is None and run.signal is None:
        return "RE", f"the sandbox ended the program ({_describe_end(run)})"
    if run.signal is not None or run.exit_code != 0:
        if "std::bad_alloc" in stderr:  # a refused allocation under the address-space limit
            return "MLE", f"the program could not allocate memory within {limits.memory_bytes // MiB} MiB " \
                          f"({_describe_end(run)})"
        return "RE", f"the program {_describe_end(run)}"
    return None


def _describe_end(run: ProgramRun) -> str:
    if run.signal is not None:
        try:
            name = signal.Signals(run.signal).name
        except ValueError:
            name = f"signal {run.signal}"
        return f"was killed by {name}"
    if run.exit_code is not None:
        return f"exited with code {run.exit_code}"
    sandbox = run.sandbox
    return f"sandbox status {sandbox.returncode}, timed out: {sandbox.timed_out}; {sandbox.stderr.text()[-300:]}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
