"""Candidate side of cloudcast: runs inside the sandbox, next to the candidate program.

It rebuilds the region graph from the plain edge list the trusted side sent, gives each scenario
a fresh copy, calls `search_algorithm(src, dsts, G, num_partitions)`, and turns the returned
topology into plain data. Nothing here is trusted: the scorer re-checks everything it receives.

Programs written for the reference evaluator expect names it injected into their module (`nx`,
`np`, `pulp`, `KMeans`, `BroadCastTopology`, `make_nx_graph`, ...); `namespace` provides the same
names. numpy, pulp-the-module and scikit-learn's KMeans are imported on first use, so a program
that never touches scikit-learn does not pay for importing it; pulp's classes, constants and
exceptions are pulp's own objects (see `_pulp_names`).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
import types
import typing
from collections.abc import Mapping

import networkx as nx


class _LazyModule:
    """Stands in for a module until an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> typing.Any:
        module = importlib.import_module(self._name)
        return getattr(module, attribute)


class _LazyObject:
    """Stands in for a class or function that lives in a module imported on first use."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def _target(self) -> typing.Any:
        return getattr(importlib.import_module(self._module), self._name)

    def __call__(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attribute: str) -> typing.Any:
        return getattr(self._target(), attribute)


class BroadCastTopology:
    """Per destination and partition (as a string), the list of edges `[u, v, attributes]`."""

    def __init__(self, src: str, dsts: list[str], num_partitions: int = 4, paths: dict | None = None) -> None:
        self.src = src
        self.dsts = dsts
        self.num_partitions = num_partitions
        self.paths = paths if paths is not None else {d: {str(i): None for i in range(num_partitions)} for d in dsts}

    def get_paths(self) -> dict:
        return self.paths

    def set_num_partitions(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions

    def set_dst_partition_paths(self, dst: str, partition: int, paths: list) -> None:
        self.paths[dst][str(partition)] = paths

    def append_dst_partition_path(self, dst: str, partition: int, path: list) -> None:
        key = str(partition)
        if self.paths[dst][key] is None:
            self.paths[dst][key] = []
        self.paths[dst][key].append(path)


class _Context:
    def __init__(self, shared: dict) -> None:
        self.edges = shared["edges"]
        self.num_vms = shared["num_vms"]

    def graph(self, num_vms: int | None = None) -> nx.DiGraph:
        vms = self.num_vms if num_vms is None else num_vms
        graph = nx.DiGraph()
        for u, v, cost, sent in self.edges:
            graph.add_edge(u, v, cost=cost, throughput=vms * sent / 1e9)
        return graph


def prepare(shared: dict) -> _Context:
    return _Context(shared)


def append_src_dst_paths(src: str, dsts: list[str], G: nx.DiGraph, bc_topology: BroadCastTopology) -> BroadCastTopology:
    """Route every partition along every simple path from src to each destination in G."""
    for dst in dsts:
        found = False
        try:
            for path in nx.all_simple_paths(G, src, dst):
                found = True
                for u, v in itertools.pairwise(path):
                    for partition in range(bc_topology.num_partitions):
                        bc_topology.append_dst_partition_path(dst, partition, [u, v, G[u][v]])
        except (nx.NodeNotFound, nx.NetworkXNoPath):
            pass
        if not found:
            for partition in range(bc_topology.num_partitions):
                if bc_topology.paths[dst][str(partition)] is None:
                    bc_topology.paths[dst][str(partition)] = []
    return bc_topology


def _install_reference_modules(names: dict) -> None:
    """Programs for the reference import its helper modules by name (`from broadcast import ...`)."""
    for module_name, members in {"broadcast": ("BroadCastTopology",),
                                 "utils": ("make_nx_graph", "append_src_dst_paths", "BroadCastTopology")}.items():
        if module_name not in sys.modules:
            module = types.ModuleType(module_name)
            for member in members:
                setattr(module, member, names[member])
            sys.modules[module_name] = module


def namespace(context: _Context) -> dict:
    def make_nx_graph(cost_path: str | None = None, throughput_path: str | None = None, num_vms: int = 1,
                      small_test: bool = False) -> nx.DiGraph:
        """The full region graph (the profile paths are ignored: the data is already loaded)."""
        return context.graph(num_vms)

    names = {
        "Dict": typing.Dict, "List": typing.List, "Tuple": typing.Tuple,  # noqa: UP006
        "Optional": typing.Optional, "Any": typing.Any,
        "os": os, "sys": sys, "json": json, "subprocess": subprocess, "nx": nx,
        "np": _LazyModule("numpy"), "pulp": _LazyModule("pulp"),
        "KMeans": _LazyObject("sklearn.cluster", "KMeans"),
        "BroadCastTopology": BroadCastTopology, "make_nx_graph": make_nx_graph,
        "append_src_dst_paths": append_src_dst_paths,
    }
    names.update(_pulp_names())
    _install_reference_modules(names)
    return names


_PULP_NAMES = ("LpVariable", "LpProblem", "LpMinimize", "lpSum", "LpBinary", "LpInteger", "PulpSolverError")
"""Exactly the reference's: a program that needs more imports it, there as here."""


def _pulp_names() -> dict:
    """The solver names the reference injected, as pulp's own objects.

    Not stand-ins: pulp compares constants by value (`cat == LpBinary`, `sense == LpMinimize`) and
    `except PulpSolverError` needs the class itself, so a proxy would quietly make binary variables
    continuous or let a solver error through. Importing pulp costs about a tenth of a second, once
    per candidate process.
    """
    import pulp

    return {name: getattr(pulp, name) for name in _PULP_NAMES}


def run(search_algorithm: typing.Callable, scenario: dict, context: _Context) -> typing.Any:
    return search_algorithm(scenario["src"], list(scenario["dsts"]), context.graph(), scenario["num_partitions"])


def serialize(topology: typing.Any, scenario: dict) -> dict:
    """Plain data `{"paths": {dst: {partition: [[u, v, {cost, throughput}], ...] | None}}}`.

    Only `cost` and `throughput` of each edge's attributes are passed on: they are the ones the
    scorer checks against its own graph. Anything else in them is ignored, as scoring never reads it.
    """
    paths = topology.paths if hasattr(topology, "paths") else topology
    if not isinstance(paths, Mapping):
        raise TypeError(f"search_algorithm must return a BroadCastTopology (an object with .paths) or a "
                        f"dict of paths, not {type(topology).__name__}")
    plain: dict = {}
    for dst, by_partition in paths.items():
        if not isinstance(by_partition, Mapping):
            raise TypeError(f"paths[{dst!r}] must map partition numbers to edge lists, "
                            f"not {type(by_partition).__name__}")
        plain[str(dst)] = {str(p): _edges(edges) for p, edges in by_partition.items()}
    return {"paths": plain}


def _edges(edges: typing.Any) -> list | None:
    if edges is None:
        return None
    result = []
    for edge in edges:
        edge = list(edge)
        item = [_node(node) for node in edge[:2]]
        if len(edge) > 2 and isinstance(edge[2], Mapping):
            item.append({k: _number(edge[2][k]) for k in ("cost", "throughput") if k in edge[2]})
        result.append(item)
    return result


def _node(value: typing.Any) -> typing.Any:
    return value if isinstance(value, str) else repr(value)


def _number(value: typing.Any) -> typing.Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)
