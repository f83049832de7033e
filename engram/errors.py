"""Errors a user can act on.

Every error the command line reports is an `EngramError`: its message says what went wrong, where,
and how to fix it, and its `exit_code` lets scripts tell a bad input apart from a failed candidate.
Anything else that escapes is a bug in Engram and is shown with its traceback.
"""

from __future__ import annotations


class EngramError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 2


class ConfigError(EngramError):
    """A YAML file (problem or spec) that does not match its schema."""


class ProblemNotFoundError(EngramError):
    """A problem name or path that resolves to no problem directory."""


class DataError(EngramError):
    """A data file that is missing, corrupt or cannot be fetched."""


class SandboxError(EngramError):
    """A sandbox backend that is unavailable or misconfigured (not a candidate failure)."""


class ScorerError(EngramError):
    """The problem's own trusted code (its evaluator) failed; no candidate is to blame."""


class IntegrityError(EngramError):
    """Trusted files changed while Engram was running, so scores can no longer be trusted."""


class ProviderError(EngramError):
    """The model provider refused a call in a way no retry can cure (bad key, unknown model, a
    parameter the model does not take): the run stops and resumes once the cause is fixed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Interrupted(EngramError):
    """The user stopped a run (Ctrl-C); everything recorded so far is kept and can be resumed."""

    exit_code = 130


CANDIDATE_FAILED_EXIT_CODE = 3
"""Exit code of `engram evaluate` when the candidate program fails (distinct from bad input, 2)."""
