"""Engram: LLM agents that design algorithms for computer systems.

The package is deliberately light to import: heavy libraries are imported by the modules that need
them, so that `engram --help` and the sandboxed evaluation child start fast.
"""

__version__ = "0.1.0"
