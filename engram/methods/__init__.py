"""Methods: strategies that propose candidate programs for a problem.

Every method receives a `MethodContext` and reports every evaluation through it, so that the
archive, budgets, tracking and resume work the same for Engram's agent chain and for baselines.
"""
