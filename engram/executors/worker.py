"""One run unit in its own process (`child_main`), forked from a fork server that has imported the
heavy libraries once -- the local pool's driver keeps one per sweep, each Ray worker one for all the
tasks Ray gives it (Ray reuses its workers), so a run starts in a second instead of paying for a
fresh Python and its imports -- or, with `executor.fork_server: false`, started as
`python -m engram.executors.worker LOG LAUNCHER_PID` with the unit on stdin (see
`engram.executors.launch`). Each run has a process of its own, because a run owns process-wide
state (signal handlers, MLflow's active run, LangChain autolog) that must not leak into the next
run. The process:

* stops when what launched it dies (the pool's driver or the Ray worker, watched through a pidfd):
  it gets SIGINT, which stops the run like
  Ctrl-C does -- running candidates and shell commands are killed (and not recorded as failures),
  containers removed -- and the relaunched sweep resumes it;
* holds an exclusive lock on its seed directory, so a retry never runs beside an attempt that is
  still winding down (the retry waits for it);
* keeps a lease file (`worker.json`: host, pid, node, heartbeat, final state) for `engram status`,
  appends one line per attempt to `attempts.jsonl`, and stops itself when a `cancel` file appears
  (how a driver cancels gracefully on a machine it cannot signal).

Exit status: 0 done, 2 bad input (the message is in the lease and on stderr), 130 interrupted,
1 anything else (a bug, with its traceback in `worker.log`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engram.errors import EngramError, Interrupted
from engram.executors.base import (
    WORKER_EXIT_BAD_INPUT,
    WORKER_EXIT_CRASHED,
    WORKER_EXIT_DONE,
    WORKER_EXIT_INTERRUPTED,
    RunUnit,
)
from engram.runs.archive import append_jsonl, write_json

LEASE_FILE = "worker.json"
ATTEMPTS_FILE = "attempts.jsonl"
LOG_FILE = "worker.log"
CANCEL_FILE = "cancel"
LOCK_FILE = ".worker.lock"
HEARTBEAT_S = 2.0
NODE_ENV = "ENGRAM_WORKER_NODE"
"""Set by an executor to name where the worker runs (a Ray node id); recorded in the lease."""

_PR_SET_PDEATHSIG = 1


def read_lease(seed_dir: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads((seed_dir / LEASE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def request_cancel(seed_dir: Path) -> None:
    """Ask the worker of `seed_dir`, wherever it runs, to stop like on Ctrl-C (within ~2 s)."""
    with contextlib.suppress(OSError):
        (seed_dir / CANCEL_FILE).touch()


# -- inside the worker -----------------------------------------------------------------------------------


def restore_interrupts() -> None:
    """Take SIGINT back: Ray's workers block it (the mask and an ignored disposition survive exec), so
    a worker started from one would stop neither on the cancel file, nor on the sweep cap, nor on a
    dying parent -- only by the forced kill, skipping every clean-up."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def child_main(unit_json: str, log_path: str, driver_pid: int) -> None:
    """A run's process: its own process group, output to `worker.log`, stopped like Ctrl-C when the
    process that launched it (`driver_pid`: the pool's driver, a Ray worker) dies.

    The fork server is its parent but no guide to the driver's life: every child of a fork server
    holds the pipe that would tell the server its driver is gone, so the server outlives the driver
    as long as any worker runs. The worker therefore watches the driver itself."""
    os.setpgid(0, 0)
    restore_interrupts()
    _die_with_parent(None)
    _stop_when_gone(driver_pid)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (1, 2):
        os.dup2(log, stream)
    os.close(log)
    sys.exit(run_unit(RunUnit.from_json(unit_json)))


def run_unit(unit: RunUnit) -> int:
    """Run one unit under its seed directory's lock and lease; the exit status."""
    seed_dir = unit.seed_dir
    seed_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(seed_dir / LOCK_FILE) as waited:
        lease = Lease(seed_dir)
        lease.begin(waited)
        try:
            _run(unit)
        except (Interrupted, KeyboardInterrupt):
            lease.end("interrupted")
            return WORKER_EXIT_INTERRUPTED
        except EngramError as exc:
            lease.end("failed", str(exc))
            print(f"engram: error: {exc}", file=sys.stderr)
            return WORKER_EXIT_BAD_INPUT
        except BaseException as exc:
            lease.end("crashed", f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            return WORKER_EXIT_CRASHED
        lease.end("done")
        return WORKER_EXIT_DONE


def _run(unit: RunUnit) -> None:
    from engram.executors.budget import SweepBudget
    from engram.runs.progress import QuietProgress
    from engram.runs.runner import execute
    from engram.spec import parse_spec

    run_dir = Path(unit.run_dir)
    spec = parse_spec(dict(unit.spec), source=f"{run_dir} (sweep unit)", base=run_dir)
    cap = unit.sweep_cap
    budget = SweepBudget(cap.max_dollars, cap.seed_dirs, unit.seed_dir) if cap is not None else None
    execute(spec, run_dir, QuietProgress(), source=Path(unit.spec_file) if unit.spec_file else None,
            overrides=list(unit.overrides), resumed=True, seeds=[unit.seed], tracking_uri=unit.tracking_uri,
            shared_budget=budget)


def _stop_when_gone(pid: int) -> None:
    """SIGINT to this process (the runner's Ctrl-C) as soon as process `pid` exits."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGINT)
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        poller.poll()  # readable once the process has exited
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="engram-driver-watch", daemon=True).start()


def _die_with_parent(expected_parent: int | None) -> None:
    """Ask the kernel for SIGINT when the parent dies (a driver killed with SIGKILL, a lost Ray worker)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
    if expected_parent is not None and os.getppid() != expected_parent:  # it died before the request took effect
        raise SystemExit(WORKER_EXIT_INTERRUPTED)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Hold a POSIX lock on `path` (also honoured over NFS); yields whether another holder was waited for."""
    handle: IO[str] = path.open("a")
    waited = False
    try:
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not waited:
                    print(f"engram: waiting for an earlier attempt at {path.parent} to exit", file=sys.stderr,
                          flush=True)
                waited = True
                time.sleep(0.5)
        yield waited
    finally:
        handle.close()


class Lease:
    """`worker.json`: who runs this seed and that it is alive; a heartbeat thread also watches for `cancel`."""

    def __init__(self, seed_dir: Path) -> None:
        self.seed_dir = seed_dir
        self.record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def begin(self, waited: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.seed_dir / CANCEL_FILE).unlink()  # a request meant for an earlier attempt
        now = time.time()
        self.record = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(),
                       "node": os.environ.get(NODE_ENV), "started": now, "heartbeat": now}
        append_jsonl(self.seed_dir / ATTEMPTS_FILE, {**self.record, "waited_for_earlier_attempt": waited})
        write_json(self.seed_dir / LEASE_FILE, self.record)
        threading.Thread(target=self._beat, name="engram-worker-heartbeat", daemon=True).start()

    def end(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._stop.set()
            self.record.update(state=state, heartbeat=time.time(), ended=time.time(), error=error)
            with contextlib.suppress(OSError):
                write_json(self.seed_dir / LEASE_FILE, self.record)

    def _beat(self) -> None:
        cancelled = False
        while not self._stop.wait(HEARTBEAT_S / 4):
            if not cancelled and (self.seed_dir / CANCEL_FILE).exists():
                cancelled = True
                os.kill(os.getpid(), signal.SIGINT)  # handled by the runner exactly like Ctrl-C
            with self._lock:
                if self._stop.is_set() or time.time() - self.record["heartbeat"] < HEARTBEAT_S:
                    continue
                self.record["heartbeat"] = time.time()
                with contextlib.suppress(OSError):
                    write_json(self.seed_dir / LEASE_FILE, self.record)


if __name__ == "__main__":  # a fresh Python per run (`executor.fork_server: false`)
    child_main(sys.stdin.read(), sys.argv[1], int(sys.argv[2]))
