"""Imported once by the local pool's fork server, so that each run's worker starts with them loaded.

Only imports: no thread may be running when the server forks (none of these modules starts one).
"""

from importlib import import_module

HEAVY_MODULES = ("engram.models.llm", "engram.methods.agent_chain", "engram.evaluation.evaluator", "engram.runs.runner",
                 "engram.results.tracking", "mlflow")

for _name in HEAVY_MODULES:
    import_module(_name)
