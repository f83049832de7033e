"""`engram ui`: the MLflow UI on this project's store, and nothing left running after it.

MLflow 3 opens an experiment on its GenAI overview page, where Engram's runs do not show, so the
command prints, for each experiment, the address of its runs table and of its chart view, both
filtered to the seeds' parent runs (an Engram run's agents are nested runs with the same metrics,
which would add a line per agent to every chart). tests/test_ui_browser.py opens these addresses in
a real browser and follows the clicks docs/tracking.md gives. The server (`mlflow ui`) starts a huey
consumer of its own; it runs in its own session so that every process of it can be stopped as a
group when `engram ui` gets Ctrl-C or SIGTERM, instead of keeping the port answering.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from engram.errors import EngramError
from engram.results.tracking import TAG_AGENT
from engram.runs.interrupts import signal_as_keyboard_interrupt

STOP_GRACE_S = 10.0
"""How long MLflow gets to exit after SIGTERM before its process group is killed."""

SERVER_WORKERS = 1
"""One server process: the UI serves one researcher on loopback. MLflow's default of four uvicorn
workers imports MLflow four times over, and on a busy machine uvicorn's supervisor kills workers
that start slowly and starts them again, so the UI took minutes to answer (seen on 2 loaded cores)."""


PARENT_RUNS_FILTER = f"tags.`{TAG_AGENT}` IS NULL"
"""MLflow search filter keeping the seeds' runs (and reports) and leaving out the agents' nested runs.
MLflow 3.18 rejects `IN (...)` on tags and has no OR, so methods are told apart by grouping, not
by filtering."""


@dataclass(frozen=True)
class ExperimentViews:
    """Where a researcher comparing methods starts in the MLflow UI for one experiment."""

    name: str
    runs_table: str
    charts: str


def experiment_views(tracking_uri: str, base_url: str) -> list[ExperimentViews]:
    """The runs table and chart view of every experiment with runs in the store (the UI keeps its
    search filter and view mode in the address, so these open as they are)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    query = urlencode({"searchFilter": PARENT_RUNS_FILTER})
    found = []
    for experiment in client.search_experiments():
        if client.search_runs([experiment.experiment_id], max_results=1):
            runs = f"{base_url}/#/experiments/{experiment.experiment_id}/runs?{query}"
            found.append(ExperimentViews(experiment.name, runs, f"{runs}&compareRunsMode=CHART"))
    return found


def serve(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
          say: Callable[[str], None] = print) -> int:
    """Serve the UI in the foreground until it exits, Ctrl-C or SIGTERM; return the exit code
    (0 when stopped).

    The UI listens on loopback unless another host is passed explicitly: it has no authentication,
    so exposing it must be a deliberate choice."""
    base_url = f"http://{host}:{port}"
    check_port_free(host, port)
    try:
        views = experiment_views(tracking_uri, base_url)
    except Exception as exc:  # the store is MLflow's to open; the server reports its own problems
        views = []
        say(f"engram: warning: could not list the experiments of {tracking_uri} ({type(exc).__name__}: {exc})")
    say(f"MLflow UI for {tracking_uri} on {base_url} (Ctrl-C stops it)")
    for view in views:
        say(f"  runs of {view.name}: {view.runs_table}")
        say(f"  charts of {view.name}: {view.charts}")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
               "--host", host, "--port", str(port), "--workers", str(SERVER_WORKERS)]
    # The server imports LiteLLM, which otherwise fetches its price list from the internet at start,
    # three tries per process; Engram works offline.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", **os.environ}
    process = subprocess.Popen(command, start_new_session=True, env=env)
    with signal_as_keyboard_interrupt(signal.SIGTERM):  # a service manager's stop acts as Ctrl-C
        try:
            return process.wait()
        except KeyboardInterrupt:
            stop_group(process)
            return 0  # stopping the UI is how it is meant to end
        finally:
            if process.poll() is None:
                stop_group(process)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (often an `engram ui` left running): MLflow would
    fail after the addresses of the runs were printed, and those would lead to the other service."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EngramError(f"port {port} on {host} is taken ({exc.strerror}; another `engram ui`?): stop that "
                              f"one, or choose another port: engram ui --port {port + 1}") from None


def stop_group(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the server's whole process group, then SIGKILL what is left after the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        code = None
    # Workers may outlive the server process itself: whatever is left of the group goes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait() if code is None else code


