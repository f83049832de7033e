"""`engram ui` in a real browser: the addresses it prints and the clicks docs/tracking.md gives for
comparing methods, followed in headless Chromium against runs of two methods recorded by their
scripted twins.

MLflow's UI changes between releases (3.x moved experiments onto a GenAI overview page, hid metric
columns by default and stopped accepting `IN` on tags), and only a browser shows what a researcher
sees, so the docs' walk-through is checked here, click by click, in the installed MLflow.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, free_port, port_answers
from engram_runs import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/lib/chromium/chromium-headless-shell")
"""Debian's chromium-headless-shell (installed by .ci/run); Playwright drives it instead of a
browser of its own, which it would have to download."""

METHODS = {"engram": REPO / "specs" / "smoke.yaml", "one_shot": REPO / "specs" / "cloudcast_one_shot_scripted.yaml"}
"""Engram has nested agent runs, which the printed addresses must leave out; one-shot has none."""

WAIT_MS = 240_000
"""Upper bound on any one wait for the page (not a pause): MLflow's UI on 2 loaded cores took up
to a minute to draw the runs table."""


@dataclass(frozen=True)
class Recorded:
    uri: str
    run_ids: dict[str, str]
    """Parent run id of each method's single seed."""
    run_names: dict[str, str]
    results: dict[str, dict]
    """Each method's result.json (best score, dollars)."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    import json

    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    results = {}
    for method, spec in METHODS.items():
        outcome = run(spec, [f"output.dir={base / 'runs'}", "problem.scenarios=[quick]", f"tracking.uri={uri}"])
        results[method] = json.loads((outcome.run_dir / "seed-0" / "result.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cloudcast")
    parents = {r.data.tags["engram.method"]: r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == set(METHODS)
    assert len(client.search_runs([experiment.experiment_id])) > len(parents), "engram's agents have nested runs"
    return Recorded(uri, {m: r.info.run_id for m, r in parents.items()},
                    {m: r.info.run_name for m, r in parents.items()}, results)


@dataclass(frozen=True)
class Ui:
    runs_table: str
    charts: str


@pytest.fixture
def ui(recorded: Recorded) -> Iterator[Ui]:
    """`engram ui` started as a user would, with the two addresses it printed, once it listens."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "engram", "ui", "--uri", recorded.uri, "--port", str(port)],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        printed = "".join(process.stdout.readline() for _ in range(3))
        runs = re.search(r"runs of cloudcast: (\S+)", printed)
        charts = re.search(r"charts of cloudcast: (\S+)", printed)
        assert runs and charts, printed
        while not port_answers(port):  # the event waited for: the server listens (pytest-timeout bounds it)
            assert process.poll() is None, "engram ui exited before the server listened"
            time.sleep(0.2)
        yield Ui(runs.group(1), charts.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0


@pytest.fixture
def page() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} missing: apt-get install chromium-headless-shell (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to start its own sandbox as root (tests and CI run as root);
        # the only page it opens is our own MLflow UI on loopback.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            # Wide enough that the metric and tag columns added at the table's right end are drawn
            # (the grid draws only the columns in view) next to MLflow's assistant panel.
            page = browser.new_page(viewport={"width": 2560, "height": 1400})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            yield page
        finally:
            browser.close()


def _cell(page, run_id: str, column: str):
    return page.locator(f'[role=row][row-id="{run_id}"] [role=gridcell][col-id="{column}"]')


def test_the_printed_addresses_and_the_documented_clicks_compare_methods(recorded: Recorded, ui: Ui, page) -> None:
    from playwright.sync_api import expect

    # The printed runs table: the two seeds' runs, not engram's agents.
    page.goto(ui.runs_table)
    expect(page.get_by_text("2 matching runs")).to_be_visible()
    for name in recorded.run_names.values():
        expect(page.get_by_text(name, exact=True)).to_be_visible()

    # Columns: tick best_score, dollars, engram.method and engram.model.
    page.get_by_role("button", name="Columns").click()
    chooser = page.get_by_role("dialog")
    for column in ("best_score", "dollars", "engram.method", "engram.model"):
        chooser.get_by_text(column, exact=True).click()
    page.keyboard.press("Escape")
    for method, run_id in recorded.run_ids.items():
        expect(_cell(page, run_id, "tags.`engram.method`")).to_have_text(method)
        expect(_cell(page, run_id, "tags.`engram.model`")).to_have_text("scripted")
        for metric, key in (("best_score", "best_score"), ("dollars", "dollars")):
            cell = _cell(page, run_id, f"metrics.`{metric}`")
            expect(cell).to_have_text(re.compile(r"^\d+\.\d+$"))
            assert float(cell.inner_text()) == pytest.approx(recorded.results[method][key], rel=1e-9), metric

    # Tick both runs, Compare, then best_score in the Metrics table: best so far against evaluations.
    for run_id in recorded.run_ids.values():
        page.locator(f'[role=row][row-id="{run_id}"] input.ag-checkbox-input').check()
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_text("Comparing 2 Runs from 1 Experiment")).to_be_visible()
    page.get_by_role("link", name="best_score", exact=True).click()
    expect(page.get_by_text("Step", exact=True).first).to_be_visible()
    for method, name in recorded.run_names.items():
        expect(page.get_by_text(f"{name} (best_score)", exact=True)).to_be_visible()  # the chart's legend
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
        latest = re.match(r"(\S+) \(step=\d+\)", row.get_by_role("cell").nth(1).inner_text())
        assert latest and float(latest.group(1)) == pytest.approx(recorded.results[method]["best_score"], rel=1e-12)

    # The printed chart view, grouped by engram.method: one line per method on every metric.
    page.goto(ui.charts)
    expect(page.get_by_text("2 matching runs")).to_be_visible()
    page.get_by_role("button", name="Group by").click()
    page.get_by_role("menu").get_by_text("engram.method", exact=True).click()
    page.keyboard.press("Escape")
    for method in METHODS:
        expect(page.get_by_text(f"Group: {method}", exact=True)).to_be_visible()
        for metric in ("best_score", "dollars"):
            expect(page.get_by_text(f"{method} ({metric})", exact=True)).to_be_visible()
