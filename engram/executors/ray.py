"""Runs on a Ray cluster (`pip install 'engram[ray]'`): each run is one Ray task.

The task declares its resources -- `cpus_per_run` CPUs, and one unit of the custom resource
`docker_resource` when the run's sandbox is `docker`, so a node started with
`ray start --resources '{"engram_docker": 4}'` runs at most four such runs (and their container
evaluations) at once -- and has `max_retries`: when its worker or node dies, Ray starts it again
elsewhere and the run resumes from its archive, so a lost node costs only its unfinished work.

Inside the task the run executes in a process forked from the Ray worker's fork server (the heavy
libraries imported once per Ray worker; `fork_server=False`: a fresh Python per run), which stops
like on Ctrl-C when the Ray worker dies (a forced cancellation, a lost node). All results go to
the run directory -- on a filesystem every node sees -- and MLflow; the task returns only the
worker's exit status. Cancelling (Ctrl-C, a sweep budget stop) first asks each worker
through a `cancel` file to stop like on Ctrl-C, then force-cancels the tasks after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from engram.executors.base import Executor, ExecutorError, RunUnit, Tick, UnitOutcome, outcome_from_exit
from engram.executors.launch import signal_group, start_run
from engram.executors.worker import NODE_ENV, read_lease, request_cancel

STOP_GRACE_S = 20.0
_WAIT_S = 1.0


def run_unit_task(unit_json: str, fork_server: bool = True) -> dict[str, Any]:
    """The body of a run's Ray task: run the unit in a process of its own and report its exit status.

    Ray reuses its workers for later tasks of the same job, so the worker's fork server, started at
    its first run, serves its later runs too: they start without a fresh Python and its imports
    (11-18 s on a busy machine). Every run inherits the worker's environment, which names the node."""
    import ray

    unit = RunUnit.from_json(unit_json)
    node = ray.get_runtime_context().get_node_id()
    os.environ[NODE_ENV] = node
    process = start_run(unit, os.getpid(), fork_server=fork_server)
    try:
        process.join()
    except BaseException:  # a non-forced cancellation interrupts the wait: stop the run like Ctrl-C
        signal_group(process, signal.SIGINT)
        process.join(timeout=STOP_GRACE_S)
        if process.exitcode is None:
            signal_group(process, signal.SIGKILL)
            process.join()
        raise
    lease = read_lease(unit.seed_dir) or {}
    return {"returncode": process.exitcode, "node": node, "error": lease.get("error")}


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_run: float = 1.0,
                 docker_resource: str = "engram_docker", max_retries: int = 2, fork_server: bool = True) -> None:
        self.address = address
        self.fork_server = fork_server
        self.cpus_per_run = cpus_per_run
        self.docker_resource = docker_resource
        self.max_retries = max_retries

    def describe(self) -> str:
        start = "" if self.fork_server else ", a fresh Python per run"
        return f"ray at {self.address or 'auto'}, {self.cpus_per_run:g} CPU per run, {self.max_retries} retries{start}"

    def run(self, units: Sequence[RunUnit], tick: Tick) -> list[UnitOutcome]:
        ray = _import_ray()
        self._connect(ray)
        self._check_docker_resource(ray, units)
        task = ray.remote(run_unit_task)
        refs: dict[Any, int] = {}
        for i, unit in enumerate(units):
            resources = {self.docker_resource: 1} if unit.uses_docker() else {}
            ref = task.options(num_cpus=self.cpus_per_run, resources=resources, max_retries=self.max_retries,
                               retry_exceptions=False, name=f"engram:{unit.name}"
                               ).remote(unit.to_json(), self.fork_server)
            refs[ref] = i
        outcomes: dict[int, UnitOutcome] = {}
        try:
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=_WAIT_S)
                for ref in ready:
                    outcomes[refs[ref]] = self._outcome(ray, ref, units[refs[ref]])
                if waiting and not tick():
                    self._cancel(ray, waiting, units, refs)
                    for ref in waiting:
                        outcomes[refs[ref]] = UnitOutcome(units[refs[ref]], "cancelled", 1)
                    waiting = []
        except BaseException:
            self._cancel(ray, [r for r in refs if refs[r] not in outcomes], units, refs)
            raise
        return [outcomes[i] for i in range(len(units))]

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as exc:
            raise ExecutorError(f"cannot reach a Ray cluster at {address}: {exc}. Start one with `ray start --head` "
                                "(and `ray start --address HEAD:PORT` on the other machines), or pass --address"
                                ) from None

    def _check_docker_resource(self, ray: Any, units: Sequence[RunUnit]) -> None:
        """A Docker run asks for one unit of `docker_resource`; with no node offering it Ray would keep
        the task pending forever, without a word."""
        docker = [unit.name for unit in units if unit.uses_docker()]
        if docker and not ray.cluster_resources().get(self.docker_resource):
            raise ExecutorError(
                f"{len(docker)} run(s) use the docker sandbox ({docker[0]}, ...), but no node of the Ray cluster "
                f"offers the resource {self.docker_resource!r} they need: start the nodes that have Docker with "
                f"`ray start ... --resources '{{\"{self.docker_resource}\": 4}}'` (four Docker runs at once per "
                "node), or choose another sandbox (--set sandbox.backend=bwrap)")

    def _outcome(self, ray: Any, ref: Any, unit: RunUnit) -> UnitOutcome:
        try:
            reply = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return UnitOutcome(unit, "cancelled", 1)
        except ray.exceptions.RayError as exc:  # retries used up: worker or node lost each time
            return UnitOutcome(unit, "failed", self.max_retries + 1, f"{type(exc).__name__}: {str(exc)[:300]}")
        return outcome_from_exit(unit, int(reply["returncode"]), 1, reply.get("error"))

    def _cancel(self, ray: Any, refs: list[Any], units: Sequence[RunUnit], index: dict[Any, int]) -> None:
        """Ask the runs to stop cleanly through their directories, then force-cancel what is left."""
        for ref in refs:
            request_cancel(units[index[ref]].seed_dir)
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)  # drops tasks not started yet
        deadline = time.monotonic() + STOP_GRACE_S
        left = list(refs)
        while left and time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C must not abandon the runs
                _, left = ray.wait(left, num_returns=len(left), timeout=_WAIT_S)
        for ref in left:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if left:
            with contextlib.suppress(Exception, KeyboardInterrupt):
                ray.wait(left, num_returns=len(left), timeout=10)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install 'engram[ray]'") from None
    return ray
