"""Values the trusted side draws for a run and keeps to itself, such as the seeds of hidden workloads.

A problem that generates what it scores against (eplb's future load windows) cannot take the seed
from `problem.yaml`: candidates and agents can read the problem's code and, with the seed, compute
exactly what they will be scored on. So the scorer asks `TrustedSecrets.seed(name)`: the first
request draws a fresh 63-bit value from the operating system, later ones return the same value.

Within a run the values live in `<run>/trusted/secrets.json` (directory 0700, file 0600, outside
every workspace and never mounted into a sandbox), so that resume, rescore and replay score
against the same hidden data. Without a run (`engram evaluate`) they live in memory only: each
evaluation draws afresh unless given a store (`--secrets FILE`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as system_random  # the standard library module
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

SECRETS_DIR = "trusted"
SECRETS_FILE = "secrets.json"


class TrustedSecrets:
    """A store of named secret values; see the module docstring. Safe across threads and processes
    sharing one run directory (seeds of a sweep run in separate workers)."""

    def __init__(self, path: Path | None = None, values: dict[str, int] | None = None, *,
                 private_dir: bool = False) -> None:
        """`path`: the JSON file holding the values (None: memory only); `private_dir`: its directory
        belongs to the store and is kept 0700."""
        self.path = path
        self._values: dict[str, int] = dict(values or {})
        self._lock = threading.Lock()
        self._private_dir = private_dir

    @classmethod
    def of_run(cls, run_dir: Path) -> TrustedSecrets:
        return cls(run_dir / SECRETS_DIR / SECRETS_FILE, private_dir=True)

    def seed(self, name: str) -> int:
        """The secret seed called `name`, drawn on first use."""
        with self._lock, self._file_lock():
            values = self._load()
            if name not in values:
                values[name] = system_random.randbits(63)
                self._save(values)
            self._values = values
            return values[name]

    def copy_to(self, run_dir: Path) -> None:
        """Give another run (a replay) the same secrets, so it scores against the same hidden data."""
        if self.path is not None and self.path.is_file():
            target = TrustedSecrets.of_run(run_dir)
            assert target.path is not None
            _private_dir(target.path.parent)
            shutil.copyfile(self.path, target.path)
            os.chmod(target.path, 0o600)

    def _load(self) -> dict[str, int]:
        if self.path is None or not self.path.is_file():
            return dict(self._values)
        stored = json.loads(self.path.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in stored.items()}

    def _save(self, values: dict[str, int]) -> None:
        if self.path is None:
            self._values = values
            return
        self._prepare_dir()
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        self._prepare_dir()
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _prepare_dir(self) -> None:
        assert self.path is not None
        if self._private_dir:
            _private_dir(self.path.parent)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
