"""Candidate side of txn_scheduling: runs inside the sandbox, next to the candidate program.

Programs written for the reference import `Workload` from a module `txn_simulator` and the
workload strings from a module `workloads`; both are installed here from this problem directory
(the same cost model the trusted scorer uses), and their names are predefined in the program's
module too. For each scenario the adapter seeds `random` (and numpy's global generator if the
program imported numpy), builds a fresh `Workload`, calls `get_best_schedule(workload, num_seqs)`
and passes on the schedule -- a list of transaction indices -- plus, for information only, the
makespan the program claims. Nothing here is trusted: the scorer checks the schedule and computes
the makespan itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import random
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


class _LazyModule:
    """Imports a module on first attribute access, so `np` costs nothing unless a program uses it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> typing.Any:
        return getattr(importlib.import_module(self._name), attribute)


def _reference_module(name: str) -> ModuleType:
    """This directory's `<name>.py`, registered under the name the reference's programs import."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def prepare(shared: typing.Any) -> dict[str, ModuleType]:
    return {"txn_simulator": _reference_module("txn_simulator"), "workloads": _reference_module("workloads")}


def namespace(modules: dict[str, ModuleType]) -> dict:
    workloads = modules["workloads"]
    return {
        "Workload": modules["txn_simulator"].Workload,
        "WORKLOAD_1": workloads.WORKLOAD_1, "WORKLOAD_2": workloads.WORKLOAD_2, "WORKLOAD_3": workloads.WORKLOAD_3,
        "random": random, "time": time, "math": math, "np": _LazyModule("numpy"),
    }


def run(get_best_schedule: typing.Callable, scenario: dict, modules: dict[str, ModuleType]) -> typing.Any:
    random.seed(scenario["seed"])
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(scenario["seed"])
    workload = modules["txn_simulator"].Workload(scenario["workload"])
    return get_best_schedule(workload, scenario["num_seqs"])


def serialize(result: typing.Any, scenario: dict) -> dict:
    """`{"schedule": [...], "claimed_makespan": ...}` from `(makespan, schedule)` or a bare schedule."""
    claimed = None
    schedule = result
    if (isinstance(result, tuple) and len(result) == 2) or (
            isinstance(result, list) and len(result) == 2 and _is_sequence(result[1])):
        claimed, schedule = result
    if not _is_sequence(schedule):
        return {"returned": type(schedule).__name__}
    return {"schedule": [_plain_int(item) for item in schedule], "claimed_makespan": _plain_number(claimed)}


def _is_sequence(value: typing.Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str | bytes)) or hasattr(value, "tolist")


def _plain_int(value: typing.Any) -> typing.Any:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "__index__"):  # numpy integers
        return int(value.__index__())
    return repr(value)[:40]


def _plain_number(value: typing.Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
