"""Which function runs which method.

The spec's `method.name` selects an entry; its value names a `module:function` that takes a
`MethodContext` and returns a `MethodResult`. Importing lazily keeps `engram --help` and spec
validation free of the heavy libraries a method needs (deepagents, openevolve, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engram.methods.context import MethodContext, MethodResult

METHOD_RUNNERS: dict[str, str] = {
    "engram": "engram.methods.agent_chain:run_chain",
    "one_shot": "baselines.one_shot:run_one_shot",
    "best_shot": "baselines.best_shot:run_best_shot",
    "evolution": "baselines.evolution:run_evolution",
    "single_agent": "baselines.single_agent:run_single_agent",
    "tree_search": "baselines.tree_search:run_tree_search",
    "openevolve": "baselines.openevolve.method:run_openevolve",
}


def run_method(ctx: MethodContext) -> MethodResult:
    """Run the method the spec names, for one seed."""
    target = METHOD_RUNNERS[ctx.spec.method.name]
    module_name, _, function_name = target.partition(":")
    return getattr(import_module(module_name), function_name)(ctx)
