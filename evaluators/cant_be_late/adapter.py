"""Candidate side of cant_be_late: runs in the sandbox, simulates each trace with the candidate's strategy.

The candidate's program imports the reference simulator's names (`sky_spot.strategies.strategy.
Strategy`, `sky_spot.utils.ClusterType`, `configargparse`, ...); this module provides them as
in-memory modules with the same behaviour, written anew. For every trace of a scenario it makes a
fresh strategy, runs the reference's loop (`strategy.step()` then `env.step(request)` until the
task is done) and records the request of every tick as one character: `S` spot, `O` on-demand,
`N` none. Only those strings leave the sandbox. The trusted scorer replays them against its own
copy of the traces and computes progress, overheads and cost itself, so nothing this module or
the candidate computes -- including the candidate's view of its progress -- reaches the score.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import math
import sys
import types
import typing

logger = logging.getLogger("sky_spot")
CODES = {"SPOT": "S", "ON_DEMAND": "O", "NONE": "N"}
ON_DEMAND_PRICE = 3.06
SPOT_PRICE_RATIO = 3.06 / 0.9731
BASE_CLASS_NAMES = {"Strategy", "MultiRegionStrategy"}


class ClusterType(str, enum.Enum):  # noqa: UP042 - the reference's type, values '1', '2', '3'
    NONE = enum.auto()
    SPOT = enum.auto()
    ON_DEMAND = enum.auto()


COSTS = {ClusterType.ON_DEMAND: 3.06, ClusterType.SPOT: 0.9731, ClusterType.NONE: 0}
COST_K = COSTS[ClusterType.ON_DEMAND] / COSTS[ClusterType.SPOT]


class Trace:
    """An availability trace: `trace[i]` is 1 when spot is unavailable during tick i, else 0."""

    def __init__(self, data: list[int], gap_seconds: float) -> None:
        self._data = data
        self.gap_seconds = gap_seconds
        self.metadata = {"gap_seconds": gap_seconds}

    def __getitem__(self, index: typing.Any) -> typing.Any:
        return self._data[index]

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> typing.Iterator[int]:
        return iter(self._data)

    def get_price(self, index: int) -> None:
        return None


class Env:
    """The reference's single-region trace environment (`sky_spot.env.TraceEnv`)."""

    NAME = "trace"

    def __init__(self, trace: Trace, name: str) -> None:
        self.trace = trace
        self.gap_seconds = trace.gap_seconds
        self._trace_file = name
        self._start_index = 0
        self._base_price = ON_DEMAND_PRICE
        self._spot_price = ON_DEMAND_PRICE / SPOT_PRICE_RATIO
        self.reset()

    def reset(self) -> None:
        self.cluster_type_histroy: list[ClusterType] = []
        self.cluster_type = ClusterType.NONE
        self.tick = 0
        self.observed_tick = -1

    @property
    def elapsed_seconds(self) -> float:
        return self.tick * self.gap_seconds

    def spot_available(self) -> bool:
        if self.tick >= len(self.trace):
            raise ValueError(f"Timestamp {self.tick} out of range {len(self.trace)}")
        return not self.trace[self.tick]

    def observe(self) -> tuple[ClusterType, bool]:
        self.observed_tick = self.tick
        has_spot = self.spot_available()
        last = self.cluster_type
        self.cluster_type_histroy.append(last)
        if self.cluster_type == ClusterType.SPOT and not has_spot:
            self.cluster_type = ClusterType.NONE
        return last, has_spot

    def step(self, request_type: ClusterType) -> ClusterType:
        if self.observed_tick != self.tick:
            self.observe()
        if request_type == ClusterType.SPOT and not self.spot_available():
            raise ValueError("Spot not available")
        self.cluster_type = request_type
        self.tick += 1
        return self.cluster_type

    def get_constant_cost_map(self) -> dict[ClusterType, float]:
        return {ClusterType.ON_DEMAND: float(self._base_price), ClusterType.SPOT: float(self._spot_price),
                ClusterType.NONE: 0.0}

    get_price = get_constant_cost_map

    @property
    def accumulated_cost(self) -> float:
        prices = self.get_constant_cost_map()
        return sum(prices[kind] * self.gap_seconds / 3600 for kind in self.cluster_type_histroy)

    def get_trace_before_end(self, end: float) -> typing.Any:
        return self.trace[: math.ceil(end / self.gap_seconds)]

    def next_wait_spot_length(self) -> tuple[int, int]:
        """Ticks until spot is next available, and how long that spot period lasts."""
        wait = spot = 0
        start = self.tick
        if not self.spot_available():
            for i in range(start, len(self.trace)):
                if not self.trace[i]:
                    start = i
                    break
                wait += 1
        for i in range(start, len(self.trace)):
            if self.trace[i]:
                break
            spot += 1
        return wait, spot

    def info(self) -> dict:
        return {"Timestamp": self.tick - 1, "Elapsed": (self.tick - 1) * self.gap_seconds,
                "Cost": self.accumulated_cost}

    @property
    def config(self) -> dict:
        return {"name": self.NAME, "trace_file": self._trace_file, "start_index": 0, "metadata": self.trace.metadata}


class Task:
    """A single job of `duration` hours (`sky_spot.task.SingleTask`)."""

    def __init__(self, config: dict) -> None:
        self._config = config
        self._duration_seconds = float(config["duration"]) * 3600.0
        self._progress: list[float] = []

    def set_progress_source(self, done: list[float]) -> None:
        self._progress = done

    def get_current_progress_seconds(self) -> float:
        return sum(self._progress or [])

    def get_total_duration_seconds(self) -> float:
        return self._duration_seconds

    def get_total_duration_hours(self) -> float:
        return self._duration_seconds / 3600.0

    def get_remaining_duration_seconds(self) -> float:
        return max(0.0, self._duration_seconds - self.get_current_progress_seconds())

    @property
    def is_done(self) -> bool:
        return self.get_remaining_duration_seconds() <= 1e-8

    def reset(self) -> None:
        pass

    def get_config(self) -> dict:
        return self._config

    def get_info(self) -> dict:
        return {"task_type": "SingleTask", "Done(seconds)": self.get_current_progress_seconds(),
                "Remaining(seconds)": self.get_remaining_duration_seconds(), "task_is_done": self.is_done,
                "Target(seconds)": self._duration_seconds}

    def __str__(self) -> str:
        return f"SingleTask({self.get_total_duration_hours():.1f}h)"


SingleTask = Task


class Strategy:
    """The reference's strategy base class: bookkeeping, then `_step`, a deadline guard and a spot check."""

    NAME = "abstract"
    SUBCLASSES: typing.ClassVar[dict[str, type]] = {}

    def __init__(self, args: typing.Any) -> None:
        self.args = args

    def __init_subclass__(cls, **kwargs: typing.Any) -> None:
        super().__init_subclass__(**kwargs)
        Strategy.SUBCLASSES.setdefault(cls.NAME, cls)

    def reset(self, env: Env, task: Task) -> None:
        args = self.args
        self.task = task
        self.deadline = args.deadline_hours * 3600
        self.task_duration = task.get_total_duration_seconds()
        self.restart_overheads = [hours * 3600 for hours in args.restart_overhead_hours]
        self.restart_overhead = self.restart_overheads[0]
        self.inter_task_overheads = [hours * 3600 for hours in getattr(args, "inter_task_overhead", [0.0])]
        self.inter_task_overhead = self.inter_task_overheads[0]
        self.task_done_time: list[float] = []
        task.set_progress_source(self.task_done_time)
        self.remaining_restart_overhead = 0.0
        self.remaining_inter_task_overhead = 0
        self._last_known_subtask_index = -1
        self.env = env

    def _apply_strong_guarantee(self, proposed: ClusterType, last_cluster_type: ClusterType) -> ClusterType:
        """Force on-demand once the remaining work (plus a restart) no longer fits before the deadline."""
        gap = self.env.gap_seconds
        remaining_time = math.floor((self.deadline - self.env.elapsed_seconds) / gap) * gap
        remaining_work = self.task_duration - sum(self.task_done_time)
        if remaining_work <= 1e-3:
            return proposed
        needed = math.ceil((remaining_work + self.restart_overhead) / gap) * gap
        if needed >= remaining_time:
            if last_cluster_type == ClusterType.SPOT and self.remaining_restart_overhead < 1e-3:
                return ClusterType.SPOT
            return ClusterType.ON_DEMAND
        return proposed

    def _before_decision_hook(self, last_cluster_type: ClusterType, request_type: ClusterType) -> None:
        pass

    def step(self) -> ClusterType:
        env = self.env
        try:
            last_cluster_type, has_spot = env.observe()
        except ValueError:
            last_cluster_type, has_spot = ClusterType.NONE, False
        if last_cluster_type == ClusterType.NONE:
            self.task_done_time.append(0)
        else:
            worked = max(env.gap_seconds - self.remaining_restart_overhead, 0)
            self.remaining_restart_overhead -= env.gap_seconds - worked
            if self.remaining_restart_overhead < 1e-3:
                self.remaining_restart_overhead = 0
            self.task_done_time.append(min(worked, self.task_duration - sum(self.task_done_time)))
        request = self._apply_strong_guarantee(self._step(last_cluster_type, has_spot), last_cluster_type)
        self._before_decision_hook(last_cluster_type, request)
        if request == ClusterType.SPOT and not env.spot_available():
            request = ClusterType.NONE
        running = ClusterType.NONE if last_cluster_type == ClusterType.SPOT and not has_spot else last_cluster_type
        if running != request and request != ClusterType.NONE:
            self.remaining_restart_overhead = self.restart_overheads[0]
        return request

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        raise NotImplementedError

    @property
    def task_done(self) -> bool:
        return self.task.is_done

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def config(self) -> dict:
        return {"name": self.NAME, "deadline": self.deadline, "task_duration": self.task_duration,
                "restart_overhead": self.restart_overhead, "task": self.task.get_config()}

    def info(self) -> dict:
        return {"Strategy/RemainingRestartOverhead(seconds)": self.remaining_restart_overhead}

    def __repr__(self) -> str:
        return f"{self.NAME}({json.dumps(self.config)})"

    @classmethod
    def get(cls, name: str) -> type:
        return cls.SUBCLASSES[name]

    @classmethod
    def _from_args(cls, parser: typing.Any) -> Strategy:
        args, _ = parser.parse_known_args()
        return cls(args)


# -- configargparse, as far as strategies use it ------------------------------------------------


class ArgumentParser:
    """Collects the arguments a strategy declares and returns the simulation's values for the rest."""

    def __init__(self, values: dict | None = None, *args: typing.Any, **kwargs: typing.Any) -> None:
        self._values = dict(values or {})
        self._defaults: dict[str, typing.Any] = {}

    def add_argument_group(self, *args: typing.Any, **kwargs: typing.Any) -> ArgumentParser:
        return self

    def add_argument(self, *names: str, **options: typing.Any) -> None:
        long_names = [n for n in names if n.startswith("--")] or list(names)
        dest = options.get("dest") or long_names[0].lstrip("-").replace("-", "_")
        self._defaults[dest] = options.get("default")

    def parse_known_args(self, *args: typing.Any, **kwargs: typing.Any) -> tuple[argparse.Namespace, list]:
        return argparse.Namespace(**{**self._defaults, **self._values}), []

    def parse_args(self, *args: typing.Any, **kwargs: typing.Any) -> argparse.Namespace:
        return self.parse_known_args()[0]


def _module(name: str, **attributes: typing.Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _install_modules() -> None:
    """Register `sky_spot.*` and `configargparse` so the candidate's imports resolve to this module."""
    utils = _module("sky_spot.utils", ClusterType=ClusterType, COSTS=COSTS, COST_K=COST_K,
                    DEVICE_COSTS={"v100_1": 3.06, "k80_1": 3.06})
    strategy = _module("sky_spot.strategies.strategy", Strategy=Strategy, ClusterType=ClusterType, logger=logger)
    strategies = _module("sky_spot.strategies", strategy=strategy)
    env = _module("sky_spot.env", Env=Env, TraceEnv=Env, ClusterType=ClusterType)
    task = _module("sky_spot.task", Task=Task, SingleTask=SingleTask)
    trace = _module("sky_spot.trace", Trace=Trace)
    _module("sky_spot", utils=utils, strategies=strategies, env=env, task=task, trace=trace)
    _module("configargparse", ArgumentParser=ArgumentParser, ArgParser=ArgumentParser, Namespace=argparse.Namespace)


def namespace(context: typing.Any) -> dict:
    """The base classes are also given to the program directly, so the entry point always exists."""
    _install_modules()
    return {"Strategy": Strategy, "ClusterType": ClusterType}


def prepare(shared: dict) -> dict:
    return shared


# -- running a scenario --------------------------------------------------------------------------


def strategy_class(module: types.ModuleType) -> type:
    """The first concrete `Strategy` subclass in the program, in `dir()` order, as the reference picks it."""
    for attribute in dir(module):
        value = getattr(module, attribute)
        if (isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy
                and value.__name__ not in BASE_CLASS_NAMES):
            return value
    raise TypeError("the program defines no strategy: write a subclass of Strategy with a _step method")


def make_strategy(cls: type, scenario_input: dict) -> Strategy:
    values = {
        "deadline_hours": float(scenario_input["deadline_hours"]),
        "task_duration_hours": [float(scenario_input["duration_hours"])],
        "restart_overhead_hours": [float(scenario_input["overhead_hours"])],
        "checkpoint_size_gb": 50.0, "env": "trace", "env_start_hours": 0.0, "strategy_file": None,
    }
    return cls._from_args(ArgumentParser(values))


def simulate(cls: type, trace: Trace, name: str, scenario_input: dict) -> str:
    """The reference's loop for one trace; returns the request of every tick."""
    env = Env(trace, name)
    task = Task({"duration": float(scenario_input["duration_hours"])})
    strategy = make_strategy(cls, scenario_input)
    strategy.reset(env, task)
    requests: list[str] = []
    while not strategy.task_done and len(requests) <= len(trace):
        request = strategy.step()
        if not isinstance(request, ClusterType):
            raise TypeError(f"{name}, tick {env.tick}: the strategy chose {request!r}; return ClusterType.SPOT, "
                            f"ClusterType.ON_DEMAND or ClusterType.NONE")
        env.step(request)
        requests.append(CODES[request.name])
    return "".join(requests)


def run(entry: typing.Any, scenario_input: dict, context: dict) -> list[str]:
    cls = strategy_class(sys.modules["candidate"])
    runs = []
    for name in scenario_input["traces"]:
        trace = context["traces"][name]
        runs.append(simulate(cls, Trace([int(c) for c in trace["unavailable"]], trace["gap_seconds"]), name,
                             scenario_input))
    return runs
