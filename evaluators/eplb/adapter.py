"""Candidate side of eplb: runs inside the sandbox, next to the candidate program.

For each window of a scenario -- sent one at a time by the scorer, the next only after the answer
for this one -- it calls `rebalance_experts(weight, num_replicas, num_groups,
num_nodes, num_gpus)` and turns the three returned arrays into plain data. `weight` is a numpy
int64 array -- unless the program imported torch, in which case it is a torch tensor, as in the
reference, so torch programs run unchanged where torch is installed. Torch is not a dependency of
Engram: where it is missing, importing it fails with a message that says so and what to do.

`log2phy` is mostly -1 padding, so only its non-negative entries are sent (positions and
values); `phy2log` and `logcnt` are sent whole. Nothing here is trusted: the scorer validates
the arrays as the reference does and computes the balancedness on its own copy of the workload.
"""

from __future__ import annotations

import importlib.abc
import inspect
import os
import re
import sys
import typing

import numpy as np

TORCH_MISSING = ("No module named 'torch': torch is not installed where the sandbox runs. The eplb evaluator "
                 "passes `weight` as a numpy int64 array; write rebalance_experts with numpy (see "
                 "initial_program.py), or install torch into the sandbox's Python to run a torch program "
                 "unchanged.")


class _TorchMissing(importlib.abc.MetaPathFinder):
    """Last on `sys.meta_path`: reached only when no real torch was found."""

    def find_spec(self, name: str, path: typing.Any = None, target: typing.Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(TORCH_MISSING, name=name)


class _TorchPlaceholder:
    """The reference predefined `torch` in the program's module; here it is the real module if
    installed, else this object, which fails with the same explanation on first use."""

    def __getattr__(self, attribute: str) -> typing.Any:
        raise ModuleNotFoundError(TORCH_MISSING, name="torch")


def _torch() -> typing.Any:
    try:
        import torch
    except ImportError:
        return _TorchPlaceholder()
    return torch


def prepare(shared: typing.Any) -> None:
    sys.meta_path.append(_TorchMissing())


def namespace(context: typing.Any) -> dict:
    """The names the reference predefined in the program's module."""
    return {"np": np, "os": os, "re": re, "inspect": inspect, "torch": _torch()}


def handle(rebalance_experts: typing.Callable, message: dict, context: typing.Any) -> dict:
    """Plan one window: the scorer sends windows one by one, the next only after this reply."""
    torch = sys.modules.get("torch")  # imported by the program, and really installed
    weight = np.asarray(message["weight"], dtype=np.int64)
    if torch is not None:
        weight = torch.from_numpy(weight)
    try:
        result = rebalance_experts(weight, message["num_replicas"], message["num_groups"],
                                   message["num_nodes"], message["num_gpus"])
    except Exception as error:
        error.add_note(f"(while rebalancing window {message['window']} of {message['windows']})")
        raise
    return _plain(result)


def _plain(result: typing.Any) -> dict:
    if not isinstance(result, tuple | list) or len(result) != 3:
        return {"returned": f"{type(result).__name__} of length {len(result)}" if isinstance(result, tuple | list)
                else type(result).__name__}
    phy2log, log2phy, logcnt = (_array(item) for item in result)
    return {"phy2log": _dense(phy2log), "logcnt": _dense(logcnt), "log2phy": _sparse(log2phy)}


def _array(value: typing.Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _dense(array: np.ndarray) -> dict:
    plain = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.dtype.kind in "iu":
        plain["data"] = array.ravel().tolist()
    return plain


def _sparse(array: np.ndarray) -> dict:
    plain = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.dtype.kind in "iu":
        positions = np.nonzero(array >= 0)
        plain["positions"] = [axis.tolist() for axis in positions]
        plain["values"] = array[positions].tolist()
    return plain
