"""Owners and scratch roots: what a killed Engram process leaves is recognised, a live one's is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import unavailable

from engram.runs.leftovers import (
    TEMP_PREFIX,
    Owner,
    current_owner,
    dead_temp_roots,
    is_dead,
    owned_temp_root,
    remove_dead_temp_roots,
)

_HOLD_A_ROOT = """
import sys, tempfile, time
from pathlib import Path
from engram.runs.leftovers import owned_temp_root
with owned_temp_root() as root:
    Path(tempfile.mkdtemp(prefix="engram-session-")).joinpath("child.py").write_text("x")
    print(root, flush=True)
    time.sleep(600)
"""


def test_an_owner_is_alive_exactly_while_its_process_runs():
    child = subprocess.Popen(["sleep", "600"])
    try:
        me = current_owner()
        stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        owner = Owner(me.host, me.boot_id, child.pid, int(stat[19]))
        assert owner.alive() is True and not is_dead(owner.label)
        assert Owner.parse(owner.label) == owner
        reused = Owner(me.host, me.boot_id, child.pid, int(stat[19]) + 1)  # same pid, another process
        assert reused.alive() is False
    finally:
        child.kill()
        child.wait()
    assert owner.alive() is False and is_dead(owner.label)
    assert Owner(me.host, "another-boot", me.pid, me.start_ticks).alive() is False
    assert Owner("another-host", me.boot_id, 1, 0).alive() is None and not is_dead(f"another-host:{me.boot_id}:1:0")
    assert is_dead(None) and is_dead("garbage")


def test_a_run_scratch_root_holds_every_temp_directory_and_goes_with_the_run():
    with owned_temp_root() as root:
        assert root.name.startswith(TEMP_PREFIX) and Path(tempfile.gettempdir()) == root
        made = Path(tempfile.mkdtemp(prefix="engram-eval-"))
        assert made.parent == root
        with owned_temp_root() as nested:  # re-entrant in the same process
            assert nested == root
        assert root not in dead_temp_roots()  # its owner (this process) is alive
    assert not root.exists() and Path(tempfile.gettempdir()) != root


def test_a_killed_processs_scratch_root_is_found_and_removed():
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_A_ROOT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout is not None
        root = Path(holder.stdout.readline().strip())
        assert root.is_dir() and root not in dead_temp_roots()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert root in dead_temp_roots() and list(root.glob("engram-session-*/child.py"))
    assert remove_dead_temp_roots() >= 1 and not root.exists()


def test_a_dead_roots_mounted_work_directories_are_unmounted_first(tmp_path: Path):
    """Evaluations may run in a tmpfs of their own; a killed runner leaves it mounted."""
    import ctypes

    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    root = tmp_path / f"{TEMP_PREFIX}1-dead"
    work = root / "engram-eval-x"
    work.mkdir(parents=True)
    (root / ".owner").write_text("garbage\n")  # no live process writes that: dead
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mount(b"tmpfs", str(work).encode(), b"tmpfs", 0, b"size=1m") == 0, os.strerror(ctypes.get_errno())
    (work / "answers.jsonl").write_text("{}\n")
    assert dead_temp_roots(tmp_path) == [root]
    assert remove_dead_temp_roots(tmp_path) == 1
    assert not root.exists() and not os.path.ismount(work)
