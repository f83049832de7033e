"""The red-team suite's shared machinery: targets (one evaluator per problem and backend, kept for the
whole session), honest twins, attack programs read from `attacks/`, and the checks every test makes.

An attack program is an honest program with an attack appended: the attack runs when the program
is loaded, reports each thing it tried on stdout as `REDTEAM <name> BREACH|held <detail>`, and
then lets the honest code answer (or sabotages the answer, for attacks on the trusted reader). So
the honest twin of every attack is the problem's own starting program, scored once per session.

The runner's environment carries a fake API key for the whole session (`SECRET`); no output of any
attack may contain it. A decoy process started with the runner's environment stands in for the
runner wherever an attack would signal or trace it: a signal that reached the real runner would
end the test session, while a dead or stopped decoy is a clean failure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, private_data_mirror, require_backend, require_unprivileged_process_sandbox

from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.result import Evaluation
from engram.evaluation.run_secrets import TrustedSecrets
from engram.problems.problem import Problem, load_problem
from engram.sandbox import Sandbox, get_sandbox

ATTACKS = Path(__file__).with_name("attacks")
SECRET = f"sk-redteam-{uuid.uuid4().hex}"
"""Set as OPENAI_API_KEY in the runner for the whole session: it must never show up anywhere."""
SECRET_VARIABLE = "OPENAI_API_KEY"

BACKENDS = ["bwrap", "docker", "process"]
PROBLEMS: dict[str, str] = {
    "cant_be_late": "dl52.oh0.02.us-west-2a_k80_1",
    "cant_be_late_multi": "2_zones_same_region",
    "cloudcast": "intra_aws",
    "eplb": "steady",
    "llm_routing": "sharegpt_6qps",
    "llm_sql": "movies_sample",
    "prism": "seed42",
    "telemetry_repair": "case_01",
    "txn_scheduling": "workload_1",
}
"""Every built-in problem with its cheapest scenario (attacks do not need more to succeed or fail).
The Frontier-CS family is represented by the judge's own test problem (`frontier`), since its
upstream checkers are data files this machine may not have."""
FRONTIER = REPO / "tests" / "frontier_cs" / "problems" / "sum"
FRONTIER_HONEST = """#include <cstdio>
int main() { long long a, b; if (scanf("%lld %lld", &a, &b) != 2) return 1; printf("%lld\\n", a + b); return 0; }
"""

TIMED_SCORES = {"llm_sql": "mean_hit_rate"}
"""Problems whose score also rewards speed: an attack is compared with its twin on the timeless metric,
since the same answer scores a little differently from run to run."""
HANG_GUARD_S = 240.0
"""How long an evaluation may take before the runner counts as hung (the attack won); far above any
limit the attacks run under, so it never fires on a slow machine."""


@dataclass
class Target:
    """One problem on one backend: its evaluator and the honest twin's score."""

    problem: Problem
    backend: str
    evaluator: CandidateEvaluator
    honest_source: str
    honest_score: float
    honest_metrics: dict[str, Any] = field(default_factory=dict)
    host_paths: list[Path] = field(default_factory=list)
    """Host directories the candidate must not write: the problem, the data, the virtualenv."""

    def not_better_than_honest(self, result: Evaluation) -> bool:
        """The attack's score is no better than the honest twin's (on the timeless metric if any)."""
        metric = TIMED_SCORES.get(self.problem.name)
        if metric is None or result.score is None:
            return self.not_better(result.score)
        return float(result.metrics[metric]) <= float(self.honest_metrics[metric])

    def not_better(self, score: float | None) -> bool:
        if score is None:
            return True
        if self.problem.config.score.direction == "minimize":
            return score >= self.honest_score
        return score <= self.honest_score


@pytest.fixture(scope="session", autouse=True)
def runner_secret() -> Iterator[str]:
    """The fake key every attack hunts for, in the runner's (this process's) environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_VARIABLE, SECRET)
        yield SECRET


@pytest.fixture
def decoy(runner_secret: str) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the runner: same user, same environment (with the secret), outside every sandbox."""
    process = subprocess.Popen(["sleep", "infinity"], env=dict(os.environ))
    yield process
    process.kill()
    process.wait()


def runner_identity() -> dict[str, Any]:
    """This process (the runner), as an attack would recognise it in /proc."""
    cmdline = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ")
    return {"runner_pid": os.getpid(), "runner_cmdline": cmdline.decode(errors="replace")}


def decoy_intact(process: subprocess.Popen[bytes]) -> bool:
    """Alive, not stopped and not traced by anyone."""
    if process.poll() is not None:
        return False
    status = Path(f"/proc/{process.pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return fields["State"][0] not in "Tt" and fields["TracerPid"].strip() == "0"


@pytest.fixture(scope="session")
def sandboxes() -> dict[str, Sandbox]:
    return {}


def sandbox_for(backend: str, cache: dict[str, Sandbox]) -> Sandbox:
    require_backend(backend)
    if backend not in cache:
        cache[backend] = get_sandbox(backend, quiet=True)
    return cache[backend]


class Targets:
    """Evaluators made on first use and kept for the session (loading a scorer costs seconds)."""

    def __init__(self, sandboxes: dict[str, Sandbox]) -> None:
        self._sandboxes = sandboxes
        self._targets: dict[tuple[str, str], Target] = {}
        self._refused: dict[tuple[str, str], str] = {}
        self._honest: dict[str, Evaluation] = {}
        self._secrets: dict[str, TrustedSecrets] = {}
        """Per problem, one store of the values its scorer hides (eplb's seeds): every backend's
        evaluator and every attack is then scored on the same hidden data as the honest twin."""

    def get(self, name: str, backend: str) -> Target:
        """The target, kept for the session. A problem with hidden data under `process` has none:
        `process` scores it only from a data store closed to other users (`open`)."""
        key = (name, backend)
        if key not in self._targets:
            assert not _needs_private_store(name, backend), f"use Targets.open for {name} on {backend}"
            self._make(name, backend)
        return self._targets[key]

    @contextlib.contextmanager
    def open(self, name: str, backend: str) -> Iterator[Target]:
        """The target for one test. Under `process`, a problem with hidden data is scored from a
        private copy of it, with candidates on a uid of their own (else it is refused up front, which
        tests/test_sandbox_hardening.py tests): a target of its own, made inside that store."""
        if not _needs_private_store(name, backend):
            yield self.get(name, backend)
            return
        require_unprivileged_process_sandbox()
        private = Targets(self._sandboxes)
        try:
            with private_data_mirror(load_problem(name)):
                private._make(name, backend)
                yield private._targets[(name, backend)]
        finally:
            private.close()

    def _make(self, name: str, backend: str) -> None:
        key = (name, backend)
        if key not in self._targets:
            sandbox = sandbox_for(backend, self._sandboxes)
            if name == "frontier":
                problem = load_problem(FRONTIER)
                evaluator = CandidateEvaluator(problem, sandbox, time_limit_s=60)
                honest = FRONTIER_HONEST
            else:
                problem = load_problem(name)
                evaluator = CandidateEvaluator(problem, sandbox, scenarios=[PROBLEMS[name]], time_limit_s=60,
                                               secrets=self.secrets(name))
                honest = problem.initial_program.read_text(encoding="utf-8")
            if name not in self._honest:
                result = evaluate(evaluator, honest)
                assert result.ok, f"the honest twin of {name} failed on {backend}: {result.error}"
                self._honest[name] = result
            twin = self._honest[name]
            self._targets[key] = Target(problem, backend, evaluator, honest, twin.score,  # type: ignore[arg-type]
                                        honest_metrics=dict(twin.metrics), host_paths=_host_paths(problem))

    def secrets(self, name: str) -> TrustedSecrets:
        return self._secrets.setdefault(name, TrustedSecrets())

    def close(self) -> None:
        for target in self._targets.values():
            target.evaluator.close()


@pytest.fixture(scope="session")
def targets(sandboxes: dict[str, Sandbox]) -> Iterator[Targets]:
    found = Targets(sandboxes)
    yield found
    found.close()


def _needs_private_store(name: str, backend: str) -> bool:
    return backend == "process" and name != "frontier" and bool(load_problem(name).config.hidden_data)


def _host_paths(problem: Problem) -> list[Path]:
    import site

    paths = [problem.root, *(Path(p) for p in site.getsitepackages())]
    data = os.environ.get("ENGRAM_DATA_DIR")
    if data:
        paths.append(Path(data))
    return [p for p in paths if p.is_dir()]


def evaluate(evaluator: CandidateEvaluator, source: str, artifacts_dir: Path | None = None) -> Evaluation:
    """Evaluate in a helper thread so that a hung runner fails the test instead of the session."""
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            done["result"] = evaluator.evaluate(source, artifacts_dir=artifacts_dir)
        except BaseException as exc:
            done["error"] = exc

    thread = threading.Thread(target=work, name="redteam-evaluate", daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"the runner hung for {HANG_GUARD_S:.0f} s on an attack"
    if "error" in done:
        raise done["error"]
    return done["result"]


def attack(name: str, **params: Any) -> str:
    """The attack program `attacks/<name>.py`, with its parameters as the `ATTACK` dict."""
    return f"\nATTACK = {json.dumps(params)}\n" + (ATTACKS / f"{name}.py").read_text(encoding="utf-8")


PROCESS_ALLOWS = {"network", "proc-runner-visible"}
"""What `process` never promises to stop: it has no network or PID namespace of its own."""
ROOT_WITHOUT_UID = "ran as root without capabilities"
"""The note `process` leaves when, as root, it could not use an unprivileged uid (the interpreter or
the working directory is closed to other users): the command then still owns what root owns."""
PROCESS_AS_ROOT_ALLOWS = {"write-readonly", "write-after-remount", "read-host-file", "proc-runner-files",
                          "signal-runner"}


def allowed_breaches(backend: str, notes: str) -> set[str]:
    """What a backend does not promise to stop, given the notes of the run (docs/security.md)."""
    if backend != "process":
        return set()
    return PROCESS_ALLOWS | (PROCESS_AS_ROOT_ALLOWS if ROOT_WITHOUT_UID in notes else set())


def unexpected_breaches(output: str, backend: str, notes: str) -> list[str]:
    allowed = allowed_breaches(backend, notes)
    return [line for line in breaches(output) if line.split()[1] not in allowed]


def breaches(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("REDTEAM ") and " BREACH " in f"{line} "]


def reports(output: str) -> dict[str, str]:
    """Each sub-attack's last verdict line, by name."""
    found = {}
    for line in output.splitlines():
        if line.startswith("REDTEAM "):
            parts = line.split(" ", 3)
            if len(parts) >= 3:
                found[parts[1]] = line
    return found


def leaked(evaluation: Evaluation | str) -> bool:
    text = evaluation if isinstance(evaluation, str) else json.dumps(evaluation.to_json_dict())
    return SECRET in text


def host_places(*extra: Path) -> list[Path]:
    """Every host directory an escape attack tries to write (to find and remove what landed)."""
    import site
    import sys

    places = {Path(sys.prefix), Path("/usr/lib"), Path("/usr/local/lib"), Path("/etc"), Path("/"),
              *(Path(p) for p in site.getsitepackages()), *_system_python_places(), *extra}
    data = os.environ.get("ENGRAM_DATA_DIR")
    if data:
        places.add(Path(data))
    return sorted(p for p in places if p.is_dir())


@functools.cache
def _system_python_places() -> tuple[Path, ...]:
    """Prefixes and site directories of the other `python3`s a candidate's shell may start (a C++
    program's environment may not name Engram's interpreter first)."""
    places: list[Path] = []
    script = "import site, sys; print(sys.prefix); print(*site.getsitepackages(), sep=chr(10))"
    for python in {shutil.which("python3"), "/usr/local/bin/python3", "/usr/bin/python3"} - {None}:
        if not Path(python).exists():  # type: ignore[arg-type]
            continue
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60,  # type: ignore[list-item]
                              check=False)
        places += [Path(line) for line in done.stdout.splitlines() if line.strip()]
    return tuple(places)


def markers(paths: list[Path], token: str) -> list[Path]:
    """Files an attack managed to create in `paths` (its marker names carry the token)."""
    found = []
    for path in paths:
        found += [p for p in path.glob(f"*{token}*")]
    return found


def remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
