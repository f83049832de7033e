"""Where a Frontier-CS case runs: its folders, and the runners for the program and for the checker or interactor.

Every backend can start a fresh sandbox for each run (`PerRunPlaces`): nothing of a run outlives it.
Under Docker a fresh container costs about 0.7 s, twice per case, so there `Slots` keep, for each case
judged at once, two long-lived containers -- one for the candidate's runs, one for the checker's or
interactor's -- and start each case's launcher in them as an `exec`. What a fresh container gave for
free is checked instead, case by case:

- the candidate's container mounts only the launcher, the program, the folder its cases' folders are
  made in and the folder of their pipes; each case's input is copied into the case's folder, so it
  never sees the answers, the checker, or another case's input. The checker's container never sees
  the program's folder;
- a case's folder is handed to the container's unprivileged uid (when Engram is root) and removed
  after the case; the folders around it stay root's, so nothing can be left beside it. Were anything
  left anyway, the slot is dropped and the next case gets a new one;
- the launcher runs with `--sweep`: after the program it kills every process of its container but the
  idle init and checks that /tmp, /dev/mqueue and System V IPC hold nothing. When it cannot say so --
  it found something, was killed by the program, or was still running at its backstop -- that
  container is removed, and the slot's next case starts a fresh one;
- limits are the launcher's, as on every backend; the containers' own (memory, processes, wall clock
  per exec) are the backstops of the slot's largest case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engram.frontier_cs.runs import Runner, SandboxRunner, parse_report
from engram.sandbox import Limits, Mount, Sandbox, SandboxResult, identity

if TYPE_CHECKING:
    from engram.sandbox.docker import DockerSandbox, ExecContainer

_LIFETIME_SLACK_S = 120.0
"""How long a slot's container outlives the evaluation's deadline (its backstop if Engram dies)."""


@dataclass(frozen=True)
class CasePlace:
    run_dir: Path
    """The program's working folder: its input copy, output and stderr."""
    check_dir: Path
    """The checker's or interactor's working folder."""
    pipes_dir: Path
    """Where an interactive case's two named pipes are made."""
    program: Runner
    judge: Runner
    program_mounts: list[Mount]
    judge_mounts: list[Mount]


class Places(Protocol):
    def case(self, name: str) -> contextlib.AbstractContextManager[CasePlace]: ...

    def close(self) -> None: ...


class PerRunPlaces:
    """Each run in a fresh sandbox, each case in folders of its own under `workdir/cases`."""

    def __init__(self, sandbox: Sandbox, workdir: Path, program_dir: Path, checker_dir: Path) -> None:
        self._runner = SandboxRunner(sandbox)
        self._workdir = workdir
        self._program_dir = program_dir
        self._checker_dir = checker_dir
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[CasePlace]:
        case_dir = self._workdir / "cases" / name
        with self._lock:
            case_dir.mkdir(parents=True)
        folders = [case_dir / part for part in ("run", "check", "pipes")]
        for folder in folders:
            folder.mkdir()
        run_dir, check_dir, pipes = folders
        yield CasePlace(run_dir, check_dir, pipes, self._runner, self._runner,
                        [Mount(self._program_dir), Mount(pipes)], [Mount(self._checker_dir), Mount(pipes)])

    def close(self) -> None:
        pass


def widest(limits: list[Limits]) -> Limits:
    """Limits that cover each of `limits` (a container serving several runs needs the largest)."""
    def most(values: list[float | int | None]) -> float | int | None:
        return None if any(v is None for v in values) else max(v for v in values if v is not None)

    return Limits(wall_seconds=max(x.wall_seconds for x in limits),
                  cpu_seconds=most([x.cpu_seconds for x in limits]),
                  memory_bytes=most([x.memory_bytes for x in limits]),  # type: ignore[arg-type]
                  file_size_bytes=most([x.file_size_bytes for x in limits]),  # type: ignore[arg-type]
                  max_processes=most([x.max_processes for x in limits]),  # type: ignore[arg-type]
                  output_bytes=max(x.output_bytes for x in limits))


class ContainerRunner:
    """Runs launchers (with `--sweep`) as execs in one container, replacing it after any run that did
    not leave it clean."""

    sweeps = True

    def __init__(self, container: ExecContainer, uid: int | None) -> None:
        self.container = container
        self._uid = uid

    def run(self, command: list[str], *, workdir: Path, mounts: list[Mount], limits: Limits) -> SandboxResult:
        del mounts  # the container's own mounts, fixed when it started, hold everything a case uses
        if self._uid is not None:
            identity.hand_over(workdir, self._uid)
        result = self.container.run(command, workdir=workdir, wall_seconds=limits.wall_seconds,
                                    output_bytes=limits.output_bytes)
        if parse_report(result).clean is not True:
            self.container.close()  # the next run gets a fresh container
        return result


class _Slot:
    """Two containers and their folders, serving one case at a time."""

    def __init__(self, sandbox: DockerSandbox, root: Path, program_dir: Path, checker_dir: Path, launcher_dir: Path,
                 limits: tuple[Limits, Limits], lifetime_s: float) -> None:
        from engram.sandbox.docker import ExecContainer

        self.roots = [root / part for part in ("run", "judge", "pipes")]
        for folder in [root, *self.roots]:
            folder.mkdir(parents=True)
            os.chmod(folder, 0o755)
        run_root, judge_root, pipes_root = self.roots
        runners = []
        for own_root, binaries, own_limits in ((run_root, program_dir, limits[0]),
                                               (judge_root, checker_dir, limits[1])):
            uid = identity.uid_for(own_root) if identity.running_as_root() else None
            user = f"{uid}:{uid}" if uid is not None else f"{os.getuid()}:{os.getgid()}"
            # One process more than a run's own sandbox allows: the container's idle init.
            processes = own_limits.max_processes + 1 if own_limits.max_processes is not None else None
            container = ExecContainer(sandbox, mounts=[Mount(launcher_dir), Mount(binaries),
                                                       Mount(own_root, writable=True),
                                                       Mount(pipes_root, writable=True)],
                                      limits=dataclasses.replace(own_limits, max_processes=processes), user=user,
                                      lifetime_s=lifetime_s)
            runners.append(ContainerRunner(container, uid))
        self.program, self.judge = runners
        self._program_dir, self._checker_dir = program_dir, checker_dir

    def place(self, name: str) -> CasePlace:
        folders = [root / name for root in self.roots]
        for folder in folders:
            folder.mkdir()
            os.chmod(folder, 0o755)
        run_dir, check_dir, pipes = folders
        return CasePlace(run_dir, check_dir, pipes, self.program, self.judge,
                         [Mount(self._program_dir), Mount(pipes)], [Mount(self._checker_dir), Mount(pipes)])

    def clear(self) -> bool:
        """Remove what the case left in the slot's folders; False if something could not be removed."""
        for root in self.roots:
            for entry in list(root.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()
        return not any(any(root.iterdir()) for root in self.roots)

    def close(self) -> None:
        self.program.container.close()
        self.judge.container.close()


class Slots:
    """The docker backend's places: a slot per case judged at once, each reused case after case."""

    def __init__(self, sandbox: DockerSandbox, workdir: Path, program_dir: Path, checker_dir: Path,
                 launcher_dir: Path, limits: tuple[Limits, Limits], deadline: float) -> None:
        self._sandbox = sandbox
        self._folders = (program_dir, checker_dir, launcher_dir)
        self._limits = limits
        self._deadline = deadline
        self._root = workdir / "slots"
        self._numbers = itertools.count()
        self._free: list[_Slot] = []
        self._all: list[_Slot] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[CasePlace]:
        with self._lock:
            if self._free:
                slot = self._free.pop()
            else:
                lifetime = max(self._deadline - time.monotonic(), 0) + self._limits[0].wall_seconds + _LIFETIME_SLACK_S
                slot = _Slot(self._sandbox, self._root / str(next(self._numbers)), *self._folders, self._limits,
                             lifetime)
                self._all.append(slot)
        try:
            yield slot.place(name)
        finally:
            if slot.clear():
                with self._lock:
                    self._free.append(slot)
            else:  # something of the case's stayed in its folders: no later case may find it
                slot.close()

    def close(self) -> None:
        with self._lock:
            slots, self._all, self._free = self._all, [], []
        for slot in slots:
            slot.close()


def open_places(sandbox: Sandbox, workdir: Path, program_dir: Path, checker_dir: Path, launcher_dir: Path,
                limits: tuple[Limits, Limits], deadline: float) -> Places:
    """`Slots` under Docker, fresh sandboxes per run elsewhere. `limits` are the largest backstops of
    the program's runs and of the checker's or interactor's."""
    if sandbox.name == "docker":
        from engram.sandbox.docker import DockerSandbox

        if isinstance(sandbox, DockerSandbox):
            return Slots(sandbox, workdir, program_dir, checker_dir, launcher_dir, limits, deadline)
    return PerRunPlaces(sandbox, workdir, program_dir, checker_dir)
