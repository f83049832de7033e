"""Candidate side of llm_routing: runs inside the sandbox, next to the candidate's scheduler class.

The trusted simulator sends the cluster's state as plain data at every decision; this module keeps
a read-only mirror of it -- `Request` and `ReplicaScheduler` objects with the attribute names the
reference's `BaseGlobalScheduler` interface uses -- calls the candidate's `schedule()`, and turns
its `(replica_id, request)` pairs into `[replica_id, request_id]` pairs. Nothing here is trusted:
the simulator validates every pair and never reads anything else from this process.

Messages (see `Simulation.message` in simulator.py):

* ``{"type": "start", "num_replicas", "replica": {...}, "seed", "scenario"}`` -- a new scenario:
  fresh mirror, fresh scheduler instance, `random` seeded.
* ``{"type": "schedule", "now", "trigger", "requests", "replicas", "queue"}`` -- only what
  changed since the previous message; the reply is the list of assignments.

A decoding request's processed-token count is not resent every iteration: it is
``processed + replica_step - step_base``, computed here when read.
"""

from __future__ import annotations

import importlib
import math
import random
import sys
import typing


class _LazyModule:
    """Imports a module on first attribute access, so `np` costs nothing unless a program uses it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> typing.Any:
        return getattr(importlib.import_module(self._name), attribute)


class SchedulerConfig:
    """The replica scheduler's settings (read-only), as `replica._config` in the reference."""

    def __init__(self, settings: dict) -> None:
        self._settings = dict(settings)

    def __getattr__(self, name: str) -> typing.Any:
        try:
            return self._settings[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"SchedulerConfig({self._settings})"


class Request:
    """A request as the global scheduler sees it. Read-only; the number of output tokens is unknown
    until the request finishes, as in a real server."""

    __slots__ = ("_base", "_id", "_prefill", "_replica", "_restarts", "_step_base", "_t")

    def __init__(self, request_id: int, arrived_at: float) -> None:
        self._id = request_id
        self._t = arrived_at
        self._prefill = 0
        self._base = 0
        self._step_base = -1
        self._restarts = 0
        self._replica: ReplicaScheduler | None = None

    id = property(lambda self: self._id, doc="unique request id (its row in the trace)")
    arrived_at = property(lambda self: self._t, doc="arrival time in simulated seconds")
    _arrived_at = arrived_at
    num_prefill_tokens = property(lambda self: self._prefill,
                                  doc="tokens to prefill; after a preemption, everything processed before it")
    _num_prefill_tokens = num_prefill_tokens
    num_restarts = property(lambda self: self._restarts, doc="times the request was preempted")

    @property
    def num_processed_tokens(self) -> int:
        """Tokens processed so far (prompt tokens, then one per generated token)."""
        if self._step_base >= 0 and self._replica is not None:
            return self._base + self._replica._step - self._step_base
        return self._base

    _num_processed_tokens = num_processed_tokens

    @property
    def is_prefill_complete(self) -> bool:
        return self._step_base >= 0

    @property
    def replica_id(self) -> int | None:
        """The replica it was routed to, or None while it waits in the global queue."""
        return None if self._replica is None else self._replica.replica_id

    def __repr__(self) -> str:
        return (f"Request(id={self._id}, arrived_at={self._t:.3f}, num_prefill_tokens={self._prefill}, "
                f"num_processed_tokens={self.num_processed_tokens}, num_restarts={self._restarts})")


class ReplicaScheduler:
    """One replica as the global scheduler sees it (read-only; the queue lists are fresh copies)."""

    def __init__(self, replica_id: int, settings: dict) -> None:
        self._replica_id = replica_id
        self._config = SchedulerConfig(settings)
        self._num_blocks = int(settings["num_blocks"])
        self._block_size = int(settings["block_size"])
        self._watermark = int(settings["watermark_blocks"])
        self._step = 0
        self._allocated = 0
        self._pending: list[Request] = []
        self._running: list[Request] = []

    replica_id = property(lambda self: self._replica_id)
    num_blocks = property(lambda self: self._num_blocks, doc="KV-cache blocks of this replica")
    block_size = property(lambda self: self._block_size, doc="tokens per KV-cache block")
    num_allocated_blocks = property(lambda self: self._allocated, doc="blocks held by running requests")
    num_free_blocks = property(lambda self: self._num_blocks - self._allocated)
    watermark_blocks = property(lambda self: self._watermark,
                                doc="a new request is admitted only if this many blocks stay free")
    memory_usage_percent = property(lambda self: 100.0 * self._allocated / self._num_blocks)
    pending_queue = property(lambda self: list(self._pending),
                             doc="routed here, not started (or preempted); no memory held")
    _request_queue = pending_queue
    active_queue = property(lambda self: list(self._running), doc="running: holding KV-cache memory")
    _active_queue = active_queue
    num_pending_requests = property(lambda self: len(self._pending))
    num_active_requests = property(lambda self: len(self._running))
    num_iterations = property(lambda self: self._step, doc="iterations (batches) completed so far")

    @property
    def num_pending_tokens(self) -> int:
        """Prefill tokens still to compute here: pending prompts plus unfinished running prefills."""
        tokens = sum(r._prefill for r in self._pending)
        for request in self._running:
            if request._step_base < 0:
                tokens += request._prefill - request._base
        return tokens

    def can_allocate(self, num_blocks: int) -> bool:
        return self._num_blocks - self._allocated >= num_blocks

    def __repr__(self) -> str:
        return (f"ReplicaScheduler(replica_id={self._replica_id}, pending={len(self._pending)}, "
                f"active={len(self._running)}, memory_usage_percent={self.memory_usage_percent:.1f})")


class BaseGlobalScheduler:
    """Base class of the candidate's `CustomGlobalScheduler`; `schedule()` is the method to write.

    Attributes: `_request_queue` (requests waiting to be routed, a fresh list per call),
    `_num_replicas`, `_replica_schedulers` (replica id -> `ReplicaScheduler`), `now` (simulated
    seconds), `trigger` ("arrival" or "completion").
    """

    def __init__(self, config: typing.Any = None, replicas: typing.Any = None) -> None:
        self._config = config
        self._replica_schedulers: dict[int, ReplicaScheduler] = dict(replicas or {})
        self._num_replicas = len(self._replica_schedulers)
        self._request_queue: list[Request] = []
        self.now = 0.0
        self.trigger = "arrival"

    def sort_requests(self) -> None:
        """Order the global queue by arrival time (it already is; kept for the reference's programs)."""
        self._request_queue.sort(key=lambda request: request._t)

    def schedule(self) -> list[tuple[int, Request]]:
        raise NotImplementedError("CustomGlobalScheduler must implement schedule()")


class _Session:
    """The mirror of one scenario's state and the candidate's scheduler instance."""

    def __init__(self, scheduler_class: typing.Any, message: dict) -> None:
        settings = message["replica"]
        self.requests: dict[int, Request] = {}
        self.replicas = {i: ReplicaScheduler(i, settings) for i in range(int(message["num_replicas"]))}
        random.seed(message.get("seed", 0))
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed(message.get("seed", 0))
        if not isinstance(scheduler_class, type):
            raise TypeError("CustomGlobalScheduler must be a class (a subclass of BaseGlobalScheduler)")
        self.scheduler = scheduler_class(SchedulerConfig(settings), self.replicas)

    def update(self, message: dict) -> None:
        requests = self.requests
        for request_id, arrived_at, prefill, processed, step_base, restarts in message["requests"]:
            request = requests.get(request_id)
            if request is None:
                request = requests[request_id] = Request(request_id, arrived_at)
            request._prefill = prefill
            request._base = processed
            request._step_base = step_base
            request._restarts = restarts
        for replica, (step, allocated, pending, running) in zip(self.replicas.values(), message["replicas"],
                                                                strict=True):
            replica._step = step
            replica._allocated = allocated
            if pending is not None:
                replica._pending = [requests[i] for i in pending]
                replica._running = [requests[i] for i in running]
                for request in replica._pending:
                    request._replica = replica
                for request in replica._running:
                    request._replica = replica

    def schedule(self, message: dict) -> list[list[int]]:
        self.update(message)
        scheduler = self.scheduler
        scheduler._request_queue = [self.requests[i] for i in message["queue"]]
        scheduler.now = message["now"]
        scheduler.trigger = message["trigger"]
        mapping = scheduler.schedule()
        if mapping is None:
            return []
        if not isinstance(mapping, list | tuple):
            return f"<{type(mapping).__name__}>"  # the simulator rejects it, naming the type
        return [_pair(item) for item in mapping]


def _pair(item: typing.Any) -> list[typing.Any]:
    """`(replica_id, request)` -> `[replica_id, request_id]`; the trusted side checks the values."""
    try:
        replica_id, request = item
    except (TypeError, ValueError):
        return [repr(item), None]
    request_id = request._id if isinstance(request, Request) else request
    return [_plain_int(replica_id), _plain_int(request_id)]


def _plain_int(value: typing.Any) -> typing.Any:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "__index__"):  # numpy integers
        return int(value.__index__())
    return repr(value)


_session: _Session | None = None


def namespace(context: typing.Any) -> dict:
    """Names the reference injected into the candidate's module (its programs import nothing)."""
    return {
        "BaseGlobalScheduler": BaseGlobalScheduler, "Request": Request, "ReplicaScheduler": ReplicaScheduler,
        "List": typing.List, "Tuple": typing.Tuple, "Dict": typing.Dict,  # noqa: UP006
        "Optional": typing.Optional, "Any": typing.Any, "math": math, "np": _LazyModule("numpy"),
    }


def handle(entry: typing.Any, message: dict, context: typing.Any) -> typing.Any:
    global _session
    if message.get("type") == "start":
        _session = _Session(entry, message)
        return None
    if _session is None:
        raise RuntimeError("the scheduler was asked to schedule before a scenario started")
    return _session.schedule(message)
