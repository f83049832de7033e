"""A discrete-event simulator of an LLM serving cluster, in the spirit of Vidur (trusted code).

The cluster is a set of identical replicas, each one GPU running one copy of the model. Requests
arrive from a trace; at every arrival (and whenever a request finishes while requests wait in the
global queue) the *global scheduler* -- the candidate -- is asked which replica each waiting
request goes to. Each replica runs a Sarathi-style iteration-level scheduler on its own:
continuous batching, chunked prefill under a per-iteration token budget, a KV cache of a fixed
number of blocks, and preemption by recomputation when a decoding request needs a block that is
not free. Iteration times come from measured operator profiles (Vidur's Meta-Llama-3-8B profiling
of the MLP and projection operators, interpolated by token count) plus an analytical roofline
model of attention, the LM head and a fixed CPU overhead. The model is documented in README.md
next to this file; the numbers it uses are the module constants and `GPUS` below.

Speed matters because every candidate is scored by a full simulation of thousands of requests:

* events are a heap of replica iteration ends merged with the sorted arrival list;
* the linear-operator time of an iteration is a table lookup by token count, built once;
* a decoding request advances exactly one token per iteration of its replica (the replica's
  running set never exceeds the batch cap), so its processed-token count is kept implicitly as
  ``base + (replica.step - step_base)`` and never touched per iteration; per-replica heaps say
  at which iteration each decoding request needs its next KV block and when it finishes, so an
  iteration costs time proportional to what changes in it, not to the batch size.

The simulator is deterministic: it has no randomness, and ties are broken by arrival order and
request id. Nothing in it depends on the candidate except the assignments it returns, which are
validated here (`InvalidAssignment`) before they take effect.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# -- hardware and model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Peak numbers of one GPU (dense BF16 tensor-core FLOP/s, HBM bandwidth, memory size)."""

    name: str
    memory_bytes: int
    peak_flops: float
    peak_bandwidth: float


GPUS = {
    # NVIDIA A10: 24 GB GDDR6, 600 GB/s, 125 TFLOPS dense BF16 (datasheet).
    "a10": GpuSpec("a10", 24 * 2**30, 125e12, 600e9),
    # NVIDIA A100 80 GB SXM: 2039 GB/s, 312 TFLOPS dense BF16 (datasheet).
    "a100": GpuSpec("a100", 80 * 2**30, 312e12, 2039e9),
}

COMPUTE_EFFICIENCY = 0.5
"""Fraction of peak FLOP/s that attention and the LM head reach. The profile's own MLP
up-projection at 4096 tokens reaches 53 % of the A10's peak and 75 % of the A100's; attention
kernels are less efficient than large GEMMs, so half of peak is used for both."""

BANDWIDTH_EFFICIENCY = 0.8
"""Fraction of peak bandwidth a memory-bound kernel reaches: the profile's MLP up-projection at
one token streams its 235 MB of weights at 80 % (A10) and 81 % (A100) of peak."""

ATTENTION_LAUNCH_MS = 0.015
"""Fixed cost per layer of each attention kernel an iteration runs (one for prefill chunks, one
for decodes): launch and the minimum time of a tiny kernel."""

CPU_OVERHEAD_MS = 3.0
CPU_OVERHEAD_PER_SEQUENCE_MS = 0.02
"""Per-iteration host time (scheduling, preparing inputs, sampling, processing outputs) that the
GPU does not overlap: a fixed part and a part per sequence in the batch. Vidur profiles these; its
profiles are not public, so these are round numbers of the same order."""


@dataclass(frozen=True)
class ModelSpec:
    """The transformer shape; parameter count and KV-cache size follow from it."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    bytes_per_value: int = 2  # BF16 weights and KV cache

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        """Embedding, per-layer attention (Q, K, V, O), gated MLP (gate, up, down), two norms per
        layer, the final norm and an untied LM head (Llama 3 does not tie them)."""
        kv_width = self.kv_heads * self.head_dim
        attention = self.hidden * (self.hidden + 2 * kv_width) + self.hidden * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden
        return 2 * self.vocab * self.hidden + self.layers * per_layer + self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.parameters * self.bytes_per_value

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * self.bytes_per_value  # K and V

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_bytes_per_token_per_layer


MODELS = {
    "meta-llama/Meta-Llama-3-8B": ModelSpec("meta-llama/Meta-Llama-3-8B", layers=32, hidden=4096, heads=32,
                                            kv_heads=8, intermediate=14336, vocab=128256),
}

PER_LAYER_OPS = {
    # operator in the profile -> times it runs per layer
    "input_layernorm": 1, "attn_pre_proj": 1, "attn_rope": 1, "attn_post_proj": 1,
    "post_attention_layernorm": 1, "mlp_up_proj": 1, "mlp_act": 1, "mlp_down_proj": 1,
    "add": 2,  # the two residual additions
}
PER_MODEL_OPS = {"emb": 1, "input_layernorm": 1}  # the embedding lookup and the final norm (a layer norm)


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """Everything that defines a scenario besides the trace. Defaults: the paper's set-up."""

    gpu: str = "a10"
    model: str = "meta-llama/Meta-Llama-3-8B"
    replicas: int = 4
    block_size: int = 16
    batch_size_cap: int = 128
    chunk_size: int = 8192
    watermark_fraction: float = 0.01
    memory_margin_fraction: float = 0.1944
    """Share of GPU memory kept free of weights and KV cache (activations, the CUDA context,
    allocator slack). 0.1944 makes the A10's cache exactly the 2240 blocks of the reference's
    configuration."""
    # Semantics where our first model and Vidur's defaults differ. The defaults are Vidur's; the
    # other value is the first model, kept as a setting (README: "Vidur's semantics").
    cpu_overhead: bool = False
    """Charge a fixed CPU cost per iteration (3 ms + 0.02 ms per sequence). Vidur's default
    configuration skips CPU overheads."""
    embedding_and_lm_head: bool = False
    """Charge the embedding lookup, the final norm and the LM head. Vidur's default execution-time
    predictor leaves them out."""
    reserve_first_token: bool = False
    """Admit a prompt only when blocks for the prompt *and* its first output token are free.
    Vidur reserves the prompt alone; the first output token then takes a block as a decode."""
    schedule_on_completion: bool = True
    """Also ask the global scheduler when a request finishes while requests wait in the global
    queue. Public Vidur asks on arrivals only; the reference's task promises calls at completions
    too, and a policy that holds requests back needs them, so this stays on by default."""

    @classmethod
    def from_params(cls, params: dict[str, Any], *,
                    other: tuple[str, ...] = ("trace", "seed", "trace_qps", "qps", "duration_s")) -> ClusterConfig:
        """The config from a scenario's params; `other` are keys that belong to the scenario instead."""
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - fields - set(other))
        if unknown:
            raise ValueError(f"unknown scenario parameter(s) {unknown}; known: {sorted(fields | set(other))}")
        config = cls(**{k: v for k, v in params.items() if k in fields})
        if config.gpu not in GPUS or config.model not in MODELS:
            raise ValueError(f"unknown gpu {config.gpu!r} or model {config.model!r}; "
                             f"known: {sorted(GPUS)}, {sorted(MODELS)}")
        return config

    @property
    def gpu_spec(self) -> GpuSpec:
        return GPUS[self.gpu]

    @property
    def model_spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def num_blocks(self) -> int:
        """KV-cache blocks per replica: what is left of the GPU's memory after the margin and the
        weights, in blocks of `block_size` tokens."""
        model, gpu = self.model_spec, self.gpu_spec
        free = gpu.memory_bytes * (1 - self.memory_margin_fraction) - model.weight_bytes
        return max(0, int(free // (self.block_size * model.kv_bytes_per_token)))

    @property
    def watermark_blocks(self) -> int:
        return int(self.watermark_fraction * self.num_blocks)


# -- execution time --------------------------------------------------------------------------------


class ExecutionModel:
    """Time of one iteration (ms) on one replica, from the operator profile plus analytical terms."""

    def __init__(self, profile_csv: str, config: ClusterConfig) -> None:
        self.config = config
        model, gpu = config.model_spec, config.gpu_spec
        self.layers = model.layers
        self.flops_rate = gpu.peak_flops * COMPUTE_EFFICIENCY / 1e3  # FLOP per ms
        self.byte_rate = gpu.peak_bandwidth * BANDWIDTH_EFFICIENCY / 1e3  # bytes per ms
        self.kv_layer_bytes = model.kv_bytes_per_token_per_layer
        self.attention_flops_per_score = 4 * model.heads * model.head_dim  # QK^T and PV, per layer
        self.activation_bytes_per_token = 2 * model.hidden * model.bytes_per_value  # Q in, output out
        self.lm_head_weight_bytes = model.hidden * model.vocab * model.bytes_per_value
        self.lm_head_flops_per_sequence = 2 * model.hidden * model.vocab
        self.lm_head_output_bytes = model.vocab * 4  # FP32 logits per sequence
        self.profile_max_tokens, self.linear_ms = self._linear_table(profile_csv, config.chunk_size)

    def _linear_table(self, profile_csv: str, max_tokens: int) -> tuple[int, list[float]]:
        """`table[t]`: ms of every non-attention operator of the model for a batch of t tokens.

        The profile's median times are interpolated linearly between measured token counts;
        beyond the largest measured count (4096 on the A10) they are extrapolated along the
        straight line through the largest count and half of it, which is where the operators are
        already compute-bound and scale linearly.
        """
        frame = pd.read_csv(profile_csv)
        frame = frame[frame["num_tensor_parallel_workers"] == 1]
        per_layer = sum(count * frame[f"time_stats.{op}.median"] for op, count in PER_LAYER_OPS.items())
        per_model = sum(count * frame[f"time_stats.{op}.median"] for op, count in PER_MODEL_OPS.items())
        if not self.config.embedding_and_lm_head:
            per_model = 0 * per_model
        total = (self.layers * per_layer + per_model).groupby(frame["num_tokens"]).median().sort_index()
        tokens = total.index.to_numpy(dtype=float)
        times = total.to_numpy(dtype=float)
        grid = np.arange(max_tokens + 1, dtype=float)
        table = np.interp(grid, tokens, times)
        largest = tokens[-1]
        if max_tokens > largest:
            half = tokens[np.searchsorted(tokens, largest / 2)]
            slope = (times[-1] - np.interp(half, tokens, times)) / (largest - half)
            beyond = grid > largest
            table[beyond] = times[-1] + slope * (grid[beyond] - largest)
        table[0] = 0.0
        return int(largest), [float(x) for x in table]

    def prefill_attention_ms(self, chunk: int, context: int) -> float:
        """Attention of a prefill chunk of `chunk` new tokens after `context` cached ones, all layers.

        Causal attention scores each new token against the cached context and the new tokens up
        to itself; its FLOPs are compared with the bytes it moves (the KV of context and chunk, the
        chunk's queries and outputs), and the larger time wins (roofline).
        """
        scores = chunk * context + chunk * (chunk + 1) / 2
        flops = self.attention_flops_per_score * scores
        moved = (context + chunk) * self.kv_layer_bytes + chunk * self.activation_bytes_per_token
        return self.layers * max(flops / self.flops_rate, moved / self.byte_rate)

    def decode_attention_ms(self, sequences: int, context_tokens: int) -> float:
        """Attention of `sequences` decoding requests whose caches hold `context_tokens` in total:
        reading every cached K and V once per layer dominates (memory-bound)."""
        moved = context_tokens * self.kv_layer_bytes + sequences * self.activation_bytes_per_token
        flops = self.attention_flops_per_score * context_tokens
        return self.layers * max(flops / self.flops_rate, moved / self.byte_rate)

    def lm_head_ms(self, sequences: int) -> float:
        """Logits for the last token of each sequence that produces one (roofline of a GEMM)."""
        if sequences == 0:
            return 0.0
        moved = self.lm_head_weight_bytes + sequences * self.lm_head_output_bytes
        return max(sequences * self.lm_head_flops_per_sequence / self.flops_rate, moved / self.byte_rate)

    def iteration_ms(self, decodes: int, decode_context: int, chunks: list[tuple[int, int]],
                     sequences_out: int) -> float:
        """One iteration: `decodes` decoding requests with `decode_context` cached tokens in total,
        prefill `chunks` as (new tokens, cached tokens), `sequences_out` sequences producing a token."""
        tokens = decodes
        attention = 0.0
        if chunks:
            attention += self.layers * ATTENTION_LAUNCH_MS
            for chunk, context in chunks:
                tokens += chunk
                attention += self.prefill_attention_ms(chunk, context)
        if decodes:
            attention += self.layers * ATTENTION_LAUNCH_MS + self.decode_attention_ms(decodes, decode_context)
        total = self.linear_ms[tokens] + attention
        if self.config.embedding_and_lm_head:
            total += self.lm_head_ms(sequences_out)
        if self.config.cpu_overhead:
            total += CPU_OVERHEAD_MS + CPU_OVERHEAD_PER_SEQUENCE_MS * (decodes + len(chunks))
        return total


# -- requests and replicas -------------------------------------------------------------------------

QUEUED, PENDING, PREFILL, DECODE, DONE = range(5)
"""Where a request is: the global queue, a replica's pending queue (no memory), running its
prefill, running its decode, finished."""


class Request:
    """One request of the trace and its progress. `output_tokens` is never shown to the scheduler."""

    __slots__ = ("arrived_at", "assigned_at", "base", "blocks", "done_at", "epoch", "first_token_at", "id",
                 "key", "output_tokens", "prefill", "processed", "prompt_tokens", "replica", "restarts",
                 "sent", "state", "step_base", "total")

    def __init__(self, request_id: int, arrived_at: float, prompt_tokens: int, output_tokens: int) -> None:
        self.id = request_id
        self.arrived_at = arrived_at
        self.key = (arrived_at, request_id)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefill = prompt_tokens  # tokens to (re)compute before decoding; grows on preemption
        self.total = prompt_tokens + output_tokens
        self.processed = 0  # exact unless DECODE (then base + replica.step - step_base)
        self.base = 0
        self.step_base = -1
        self.restarts = 0
        self.blocks = 0
        self.epoch = 0  # bumped on preemption, so stale heap entries are skipped
        self.state = QUEUED
        self.replica: Replica | None = None
        self.assigned_at = math.nan
        self.first_token_at = math.nan
        self.done_at = math.nan
        self.sent = False  # whether the scheduler has seen the current values (see Simulation._mark)


class Replica:
    """One GPU: its queues, its KV-cache blocks and the bookkeeping for implicit decode progress."""

    def __init__(self, replica_id: int, num_blocks: int) -> None:
        self.id = replica_id
        self.num_blocks = num_blocks
        self.free_blocks = num_blocks
        self.pending: deque[Request] = deque()
        self.running: list[Request] = []  # sorted by (arrived_at, id): the newest is preempted first
        self.running_keys: list[tuple[float, int]] = []
        self.prefilling: list[Request] = []  # running requests still in their prefill, in arrival order
        self.step = 0  # iterations completed
        self.busy = False
        self.decodes = 0
        self.decode_context_offset = 0  # sum of (base - step_base) over decoding requests
        self.block_heap: list[tuple[int, float, int, int, Request]] = []
        self.done_heap: list[tuple[int, float, int, int, Request]] = []
        self.membership = 0  # bumped whenever pending or running changes
        self.assigned = 0
        self.busy_ms = 0.0
        self.iterations = 0
        self.preemptions = 0

    def processed_of(self, request: Request) -> int:
        if request.state == DECODE:
            return request.base + self.step - request.step_base
        return request.processed

    def add_running(self, request: Request) -> None:
        index = bisect.bisect(self.running_keys, request.key)
        self.running_keys.insert(index, request.key)
        self.running.insert(index, request)

    def remove_running(self, request: Request) -> None:
        index = bisect.bisect_left(self.running_keys, request.key)
        del self.running_keys[index]
        del self.running[index]


@dataclass
class Batch:
    """One iteration in flight: its prefill chunks (request, tokens) are applied when it ends;
    its decodes need no record, their progress follows from the replica's iteration count."""

    decodes: int
    chunks: list[tuple[Request, int]]
    duration_ms: float


class InvalidAssignment(Exception):
    """The scheduler's reply breaks a rule; the message says which, and when."""


Scheduler = Callable[[dict[str, Any]], Any]
"""Receives one state message (plain data, see `Simulation.message`), returns the reply."""


@dataclass
class SimulationResult:
    requests: list[Request]
    replicas: list[Replica]
    calls: int
    makespan_s: float
    num_blocks: int
    peak_allocated_blocks: list[int] = field(default_factory=list)


def rescale_trace(trace: list[tuple[float, int, int]], factor: float,
                  duration_s: float) -> list[tuple[float, int, int]]:
    """The same requests arriving `factor` times later, those within `duration_s`.

    The public ShareGPT traces are one arrival sequence at different rates: each is the 12 queries/s
    trace with its arrival times multiplied by 12 / rate and cut at 300 s (all five others match
    that to 1e-12 s). So a rate the repository does not ship, the paper's 7.5 queries/s, is the same
    construction: factor 12 / 7.5 = 1.6, cut at 300 s.
    """
    return [(arrived * factor, prompt, output) for arrived, prompt, output in trace if arrived * factor <= duration_s]


def read_trace(trace_csv: str) -> list[tuple[float, int, int]]:
    """(arrival s, prompt tokens, output tokens) per request, in arrival order (ties by row)."""
    frame = pd.read_csv(trace_csv)
    rows = list(zip(frame["arrived_at"].astype(float), frame["num_prefill_tokens"].astype(int),
                    frame["num_decode_tokens"].astype(int), strict=True))
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
    return [(float(rows[i][0]), int(rows[i][1]), int(rows[i][2])) for i in order]


# -- the simulation ---------------------------------------------------------------------------------


class Simulation:
    """One run of a trace through the cluster with one global scheduler."""

    def __init__(self, config: ClusterConfig, execution: ExecutionModel, trace: list[tuple[float, int, int]],
                 *, check_invariants: bool = False) -> None:
        self.config = config
        self.execution = execution
        self.block_size = config.block_size
        self.num_blocks = config.num_blocks
        self.watermark = config.watermark_blocks
        self.cap = config.batch_size_cap
        self.chunk_size = config.chunk_size
        self.reserved_beyond_prompt = 1 if config.reserve_first_token else 0
        self.check_invariants = check_invariants
        if config.chunk_size < config.batch_size_cap + 1:
            raise ValueError("chunk_size must leave room for a prefill token beside a full batch of decodes")
        self.requests = [Request(i, t, p, d) for i, (t, p, d) in enumerate(trace)]
        largest = max((r.total for r in self.requests), default=0)
        if self._blocks_for(largest + 1) > self.num_blocks - self.watermark:
            raise ValueError(f"a request of {largest} tokens does not fit into {self.num_blocks} KV blocks "
                             f"of {self.block_size} tokens; it could never run")
        self.replicas = [Replica(i, self.num_blocks) for i in range(config.replicas)]
        self.queue: dict[int, Request] = {}  # the global queue, in arrival order
        self.events: list[tuple[float, int, int, Batch]] = []  # (end time s, sequence, replica, batch)
        self.sequence = 0
        self.now = 0.0  # simulated seconds
        self.calls = 0
        self.dirty: list[Request] = []
        self.sent_membership = [-1] * config.replicas
        self.peak_allocated = [0] * config.replicas

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # -- driving ------------------------------------------------------------------------------------

    def run(self, scheduler: Scheduler) -> SimulationResult:
        """Replay the trace; `scheduler` is asked at every arrival and, while requests wait in the
        global queue, whenever a request finishes. Raises `InvalidAssignment` for a bad reply."""
        arrivals = self.requests
        next_arrival = 0
        events = self.events
        while True:
            arrival = arrivals[next_arrival].arrived_at if next_arrival < len(arrivals) else math.inf
            if events and events[0][0] <= arrival:
                end, _, replica_id, batch = heapq.heappop(events)
                self.now = end
                finished = self._end_iteration(self.replicas[replica_id], batch)
                if finished and self.queue and self.config.schedule_on_completion:
                    self._ask(scheduler, "completion")
                self._start_idle()
            elif next_arrival < len(arrivals):
                request = arrivals[next_arrival]
                next_arrival += 1
                self.now = arrival
                self.queue[request.id] = request
                self._mark(request)
                self._ask(scheduler, "arrival")
                self._start_idle()
            else:
                break
            if self.queue and not events and next_arrival == len(arrivals):
                waiting = list(self.queue)
                shown = ", ".join(map(str, waiting[:10])) + (" ..." if len(waiting) > 10 else "")
                raise InvalidAssignment(
                    f"{len(waiting)} request(s) were never assigned to a replica (ids {shown}): at "
                    f"t={self.now:.3f} s every replica is idle, no request is due any more, and the "
                    f"scheduler still kept them in the global queue; every request must be routed eventually")
        unfinished = [r.id for r in self.requests if r.state != DONE]
        if unfinished:  # cannot happen unless the simulator itself is wrong
            raise RuntimeError(f"simulation ended with {len(unfinished)} unfinished requests")
        return SimulationResult(self.requests, self.replicas, self.calls, self.now, self.num_blocks,
                                self.peak_allocated)

    def _start_idle(self) -> None:
        for replica in self.replicas:
            if not replica.busy:
                self._start_iteration(replica)

    # -- the global scheduler ----------------------------------------------------------------------

    def _mark(self, request: Request) -> None:
        """Remember that the scheduler has not seen this request's current values."""
        request.sent = False
        self.dirty.append(request)

    def message(self, trigger: str) -> dict[str, Any]:
        """The state the scheduler sees, as plain data, sending only what changed since the last call.

        * ``requests``: ``[id, arrived_at, prefill_tokens, processed, step_base, restarts]`` for
          each request that is new or changed. While a request decodes, ``step_base >= 0`` and its
          processed tokens are ``processed + replica_step - step_base``; otherwise ``step_base``
          is -1 and ``processed`` is exact.
        * ``replicas``: per replica ``[step, allocated_blocks, pending_ids, running_ids]``, the id
          lists being null when unchanged since the previous message.
        * ``queue``: ids in the global queue, in arrival order.
        """
        records = []
        for request in self.dirty:
            if request.sent or request.state == DONE:
                continue
            request.sent = True
            if request.state == DECODE:
                processed, step_base = request.base, request.step_base
            else:
                processed, step_base = request.processed, -1
            records.append([request.id, request.arrived_at, request.prefill, processed, step_base,
                            request.restarts])
        self.dirty.clear()
        replicas = []
        for replica in self.replicas:
            if self.sent_membership[replica.id] != replica.membership:
                self.sent_membership[replica.id] = replica.membership
                lists: list[Any] = [[r.id for r in replica.pending], [r.id for r in replica.running]]
            else:
                lists = [None, None]
            replicas.append([replica.step, replica.num_blocks - replica.free_blocks, *lists])
        return {"type": "schedule", "now": self.now, "trigger": trigger, "requests": records,
                "replicas": replicas, "queue": list(self.queue)}

    def _ask(self, scheduler: Scheduler, trigger: str) -> None:
        self.calls += 1
        reply = scheduler(self.message(trigger))
        for replica_id, request in self._validate(reply):
            del self.queue[request.id]
            replica = self.replicas[replica_id]
            request.state = PENDING
            request.replica = replica
            request.assigned_at = self.now
            replica.pending.append(request)
            replica.assigned += 1
            replica.membership += 1

    def _validate(self, reply: Any) -> list[tuple[int, Request]]:
        where = f"call {self.calls} (t={self.now:.3f} s)"
        if not isinstance(reply, list):
            raise InvalidAssignment(f"{where}: the scheduler must return a list of (replica_id, request) "
                                    f"pairs; it returned {str(reply)[:100]}")
        seen: set[int] = set()
        result = []
        for index, item in enumerate(reply):
            if not isinstance(item, list | tuple) or len(item) != 2 or not all(_is_int(x) for x in item):
                raise InvalidAssignment(f"{where}: assignment {index} is {item!r}; each must be a pair "
                                        f"(replica_id, request) with an integer replica id")
            replica_id, request_id = int(item[0]), int(item[1])
            if not 0 <= replica_id < len(self.replicas):
                raise InvalidAssignment(f"{where}: assignment {index} names replica {replica_id}, but the "
                                        f"replicas are 0..{len(self.replicas) - 1}")
            if request_id in seen:
                raise InvalidAssignment(f"{where}: request {request_id} is assigned twice in one reply")
            seen.add(request_id)
            request = self.queue.get(request_id)
            if request is None:
                known = 0 <= request_id < len(self.requests) and self.requests[request_id].state != QUEUED
                what = "was already assigned earlier" if known else "is not a request in the global queue"
                raise InvalidAssignment(f"{where}: assignment {index} routes request {request_id}, which {what}")
            result.append((replica_id, request))
        return result

    # -- one replica ----------------------------------------------------------------------------------

    def _start_iteration(self, replica: Replica) -> None:
        batch = self._form_batch(replica)
        if batch is None:
            return
        replica.busy = True
        self.sequence += 1
        heapq.heappush(self.events, (self.now + batch.duration_ms / 1e3, self.sequence, replica.id, batch))
        replica.busy_ms += batch.duration_ms
        replica.iterations += 1

    def _form_batch(self, replica: Replica) -> Batch | None:
        """Sarathi-style batch: every decoding request (each gets the KV block it needs, preempting
        the newest running requests when none is free), then running prefills, then new requests
        from the pending queue while the batch cap, the KV watermark and the token budget allow."""
        step = replica.step
        block_size = self.block_size
        heap = replica.block_heap
        while heap and heap[0][0] <= step:
            need_step, arrived, request_id, epoch, request = heapq.heappop(heap)
            if request.epoch != epoch or request.state != DECODE:
                continue
            while replica.free_blocks == 0:
                victim = replica.running[-1]
                self._preempt(replica, victim)
                if victim is request:
                    break
            if request.state != DECODE:
                continue
            replica.free_blocks -= 1
            request.blocks += 1
            heapq.heappush(heap, (need_step + block_size, arrived, request_id, epoch, request))
        decodes = replica.decodes
        budget = self.chunk_size - decodes
        chunks: list[tuple[Request, int]] = []
        for request in replica.prefilling:
            if budget <= 0:
                break
            take = min(request.prefill - request.processed, budget)
            chunks.append((request, take))
            budget -= take
        pending = replica.pending
        while pending and budget > 0 and len(replica.running) < self.cap:
            request = pending[0]
            need = self._blocks_for(request.prefill + self.reserved_beyond_prompt)
            if replica.free_blocks - need < self.watermark:
                break
            pending.popleft()
            replica.free_blocks -= need
            request.blocks = need
            request.state = PREFILL
            request.processed = 0
            replica.add_running(request)
            bisect.insort(replica.prefilling, request, key=_arrival_key)
            replica.membership += 1
            self._mark(request)
            take = min(request.prefill, budget)
            chunks.append((request, take))
            budget -= take
        if not decodes and not chunks:
            return None
        allocated = self.num_blocks - replica.free_blocks
        if allocated > self.peak_allocated[replica.id]:
            self.peak_allocated[replica.id] = allocated
        if self.check_invariants:
            self._check(replica)
        finishing = sum(1 for request, take in chunks if request.processed + take == request.prefill)
        context = replica.decode_context_offset + decodes * step
        duration = self.execution.iteration_ms(decodes, context, [(take, r.processed) for r, take in chunks],
                                               decodes + finishing)
        return Batch(decodes, chunks, duration)

    def _end_iteration(self, replica: Replica, batch: Batch) -> bool:
        """Apply an iteration's progress; True if a request finished."""
        replica.busy = False
        replica.step += 1
        step = replica.step
        finished = False
        for request, take in batch.chunks:
            if request.state != PREFILL:  # cannot happen: prefills are never preempted mid-iteration
                continue
            request.processed += take
            self._mark(request)
            if request.processed < request.prefill:
                continue
            # The last chunk of the prompt yields the first output token.
            request.processed += 1
            if math.isnan(request.first_token_at):
                request.first_token_at = self.now
            replica.prefilling.remove(request)
            if request.processed >= request.total:
                self._finish(replica, request)
                finished = True
                continue
            request.state = DECODE
            request.base = request.processed
            request.step_base = step
            replica.decodes += 1
            replica.decode_context_offset += request.base - step
            held = request.blocks * self.block_size
            heapq.heappush(replica.block_heap, (held - request.base + step, request.arrived_at, request.id,
                                                request.epoch, request))
            heapq.heappush(replica.done_heap, (request.total - request.base + step, request.arrived_at,
                                               request.id, request.epoch, request))
        heap = replica.done_heap
        while heap and heap[0][0] <= step:
            _, _, _, epoch, request = heapq.heappop(heap)
            if request.epoch != epoch or request.state != DECODE:
                continue
            replica.decodes -= 1
            replica.decode_context_offset -= request.base - request.step_base
            request.processed = request.total
            self._finish(replica, request)
            finished = True
        return finished

    def _finish(self, replica: Replica, request: Request) -> None:
        request.state = DONE
        request.done_at = self.now
        replica.free_blocks += request.blocks
        request.blocks = 0
        replica.remove_running(request)
        replica.membership += 1

    def _preempt(self, replica: Replica, request: Request) -> None:
        """Free the request's KV cache and send it back to the front of its replica's pending queue.

        Its progress is kept by recomputation: a decoding request's prompt becomes everything it
        has processed so far (prompt and output), to be prefilled again; a request preempted during
        its prefill starts that prefill over.
        """
        if request.state == DECODE:
            processed = replica.processed_of(request)
            replica.decodes -= 1
            replica.decode_context_offset -= request.base - request.step_base
            request.prefill = processed
        else:
            replica.prefilling.remove(request)
        request.processed = 0
        request.step_base = -1
        request.base = 0
        request.restarts += 1
        request.epoch += 1
        request.state = PENDING
        replica.free_blocks += request.blocks
        request.blocks = 0
        replica.remove_running(request)
        replica.pending.appendleft(request)
        replica.membership += 1
        replica.preemptions += 1
        self._mark(request)

    def _check(self, replica: Replica) -> None:
        """Invariants (tests switch this on): memory accounting and capacity, and that every running
        request holds the blocks for what it has processed plus the token of this iteration."""
        held = sum(r.blocks for r in replica.running)
        assert held + replica.free_blocks == self.num_blocks, (held, replica.free_blocks)
        assert 0 <= replica.free_blocks <= self.num_blocks
        assert len(replica.running) <= self.cap
        assert replica.decodes == sum(1 for r in replica.running if r.state == DECODE)
        for request in replica.running:
            processed = replica.processed_of(request)
            if request.state == DECODE:
                assert request.blocks * self.block_size >= processed + 1, (request.id, processed, request.blocks)
                assert processed < request.total
            else:
                assert request.blocks * self.block_size >= request.prefill + self.reserved_beyond_prompt
        assert all(r.state == PENDING and r.blocks == 0 for r in replica.pending)


def _arrival_key(request: Request) -> tuple[float, int]:
    return request.key


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- results ----------------------------------------------------------------------------------------


def summarize(result: SimulationResult) -> dict[str, Any]:
    """Per-scenario metrics: latencies, time to first token, preemptions and per-replica load."""
    e2e = np.array([r.done_at - r.arrived_at for r in result.requests])
    ttft = np.array([r.first_token_at - r.arrived_at for r in result.requests])
    metrics: dict[str, Any] = {
        "requests": len(result.requests),
        "mean_e2e_s": float(e2e.mean()),
        "p50_e2e_s": float(np.percentile(e2e, 50)),
        "p99_e2e_s": float(np.percentile(e2e, 99)),
        "mean_ttft_s": float(ttft.mean()),
        "p99_ttft_s": float(np.percentile(ttft, 99)),
        "preemptions": int(sum(r.restarts for r in result.requests)),
        "makespan_s": result.makespan_s,
        "scheduler_calls": result.calls,
    }
    for replica in result.replicas:
        metrics[f"requests_r{replica.id}"] = replica.assigned
    for replica in result.replicas:
        metrics[f"busy_pct_r{replica.id}"] = round(100 * replica.busy_ms / 1e3 / result.makespan_s, 2)
    return metrics


def requests_csv(result: SimulationResult) -> str:
    """One row per request, for agents to analyse (written with --artifacts / in results/)."""
    lines = ["id,arrived_at,prompt_tokens,output_tokens,replica,assigned_at,first_token_at,done_at,"
             "e2e_s,ttft_s,restarts"]
    for r in result.requests:
        replica = r.replica.id if r.replica is not None else -1
        lines.append(f"{r.id},{r.arrived_at:.6f},{r.prompt_tokens},{r.output_tokens},{replica},"
                     f"{r.assigned_at:.6f},{r.first_token_at:.6f},{r.done_at:.6f},"
                     f"{r.done_at - r.arrived_at:.6f},{r.first_token_at - r.arrived_at:.6f},{r.restarts}")
    return "\n".join(lines) + "\n"
