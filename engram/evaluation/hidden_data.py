"""Whether a candidate could read the data a problem scores it against (`hidden_data`).

The isolating sandboxes (bwrap, docker) show a candidate only the session and its working
directory, so the data store is out of its sight. The `process` sandbox hides nothing from the
filesystem: a file there is safe only if the candidate's user cannot open it. That holds when
Engram runs as root, candidates can get an unprivileged uid of their own (the interpreter and the
temporary directory are reachable by one; otherwise they stay root, only without capabilities) and
every hidden file is closed to other users -- not when candidates run as the same user as Engram, and not for a
shared, world-readable data mirror. In those cases the evaluator refuses to start, rather than
score candidates that could read their ground truth.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from engram.errors import SandboxError
from engram.problems.problem import Problem, ScenarioSpec
from engram.sandbox import identity


def check_hidden_data(problem: Problem, sandbox_name: str, scenarios: list[ScenarioSpec] | None = None) -> None:
    """Raise `SandboxError` if a candidate in `sandbox_name` could read `problem`'s hidden data (of
    `scenarios` only, when given: the files other scenarios read need not even be fetched)."""
    if sandbox_name != "process" or not problem.config.hidden_data:
        return
    wanted = None if scenarios is None or any(s.data is None for s in scenarios) else \
        {path for s in scenarios for path in s.data or []}
    for relative in problem.config.hidden_data:
        if wanted is not None and relative not in wanted:
            continue
        path = problem.data_file(relative)
        reason = _why_readable(path)
        if reason is not None:
            raise SandboxError(
                f"problem {problem.name} scores candidates against {relative}, which a candidate could read "
                f"under the 'process' sandbox ({reason[0]}); use --sandbox bwrap or docker, or {reason[1]}")


def _why_readable(path: Path) -> tuple[str, str] | None:
    """Why a candidate could read `path`, and what else would close it to them; None if it cannot."""
    if os.geteuid() != 0:
        return "candidates run as the same user as Engram", _CLOSED_STORE
    unreachable = identity.reachable_by_others([*identity.interpreter_paths(), Path(tempfile.gettempdir())])
    if unreachable is not None:  # the sandbox then keeps candidates root, only without capabilities
        return (f"candidates would run as root: {unreachable} is closed to an unprivileged uid",
                "run Engram from an interpreter every user can reach (e.g. a venv of /usr/bin/python3 under /opt)")
    if _first_closed(path) is None:
        return f"{path} is readable by every user", _CLOSED_STORE
    return None


_CLOSED_STORE = "run Engram as root with ENGRAM_DATA_DIR in a directory closed to other users (chmod o-rwx)"


def _first_closed(path: Path) -> Path | None:
    """The first place on the way to `path` that other users cannot pass (a directory without
    o+x, or the file itself without o+r), or None when it is open to them."""
    resolved = path.resolve()
    for directory in reversed(resolved.parents):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None if os.stat(resolved).st_mode & stat.S_IROTH else resolved
