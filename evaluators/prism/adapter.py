"""Candidate side of prism: runs inside the sandbox, next to the candidate program.

For each case it builds fresh `Model` objects (the reference's dataclass, same fields), calls
`compute_model_placement(gpu_num=..., models=...)` as the reference did, and turns the returned
`{gpu_id: [Model, ...]}` into plain data: per GPU, its id and the names of its models. Only names
leave the sandbox -- the trusted scorer looks sizes, rates and SLOs up in its own copy of the case
-- so editing a `Model`'s fields, or returning made-up ones, changes nothing. Nothing here is
trusted: the scorer checks every id and name it receives.
"""

from __future__ import annotations

import importlib
import random
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass

GPU_MEM_SIZE = 80


@dataclass
class Model:
    """One LLM to place (the reference's fields; sizes in GB)."""

    model_name: str
    model_size: int
    req_rate: int
    slo: int
    cur_gpu_id: int


class _LazyModule:
    """Imports a module on first attribute access, so `np` costs nothing unless a program uses it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> typing.Any:
        return getattr(importlib.import_module(self._name), attribute)


def namespace(context: typing.Any) -> dict:
    """Names a program written for the reference may use without defining them."""
    return {"Model": Model, "GPU_MEM_SIZE": GPU_MEM_SIZE, "np": _LazyModule("numpy")}


def run(compute_model_placement: typing.Callable, scenario: dict, context: typing.Any) -> list:
    """Every case's raw placement; `random` (and numpy's global generator) seeded once per scenario."""
    random.seed(scenario["seed"])
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(scenario["seed"])
    placements = []
    for number, case in enumerate(scenario["cases"]):
        models = [Model(name, size, rate, slo, j) for j, (name, size, rate, slo) in enumerate(case["models"])]
        try:
            placements.append(compute_model_placement(gpu_num=case["gpu_num"], models=models))
        except Exception as error:
            error.add_note(f"(while placing case {number}: {case['gpu_num']} GPUs, {len(models)} models)")
            raise
    return placements


def serialize(placements: list, scenario: dict) -> dict:
    return {"cases": [_plain(placement) for placement in placements]}


def _plain(placement: typing.Any) -> dict:
    if not isinstance(placement, Mapping):
        return {"returned": type(placement).__name__}
    return {"gpus": [[_gpu_id(gpu), _names(models)] for gpu, models in placement.items()]}


def _gpu_id(value: typing.Any) -> typing.Any:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "__index__"):  # numpy integers
        return int(value.__index__())
    return repr(value)


def _names(models: typing.Any) -> list:
    if isinstance(models, str | bytes | Mapping) or not hasattr(models, "__iter__"):
        return [repr(models)[:80]]
    return [_name(model) for model in models]


def _name(model: typing.Any) -> typing.Any:
    name = getattr(model, "model_name", model)
    return name if isinstance(name, str) else repr(name)[:80]
