"""A year of fact partitions in Dagster's own UI: the webserver serves them, a real browser draws the health bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.kernel.settings import PROJECT_ROOT
from tick_platform_tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS
from tick_tools.broker.runner import free_port_base

# NYSE 2025 (nyse.com): 250 sessions (10 holidays and the Jan 9 national day of mourning), early
# closes at 13:00 on Jul 3, Nov 28 and Dec 24: 250 x 78 - 3 x 36 windows.
YEAR_2025_PARTITIONS = 250 * 78 - 3 * 36
STATS = """{ assetNodes(assetKeys: [{path: ["fact_ticks_60s"]}]) {
  partitionStats { numPartitions numMaterialized } } }"""


def _post(port: int, query: str) -> dict[str, object] | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body: dict[str, object] = json.loads(resp.read())
            return body
    except OSError:
        return None


@pytest.fixture()
def year_webserver(tmp_path: Path) -> Iterator[int]:
    """`dagster-webserver` on the code location with partitions for all of 2025; always stopped."""
    port = free_port_base(1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "WAREHOUSE_PARTITIONS_START": "2025-01-01",
           "WAREHOUSE_PARTITIONS_END": "2026-01-01", "WAREHOUSE_TARGET": "duckdb",
           "WAREHOUSE_DUCKDB_PATH": str(tmp_path / "w.duckdb")}
    env.pop("WAREHOUSE_SESSION_HOURS", None)
    log = (tmp_path / "webserver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-2000:]
            body = _post(port, STATS)
            if body and body.get("data"):
                break
            time.sleep(1)
        else:
            raise AssertionError("dagster-webserver did not answer GraphQL: " +
                                 (tmp_path / "webserver.log").read_text()[-2000:])
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_year_of_partitions_loads_in_the_dagster_ui(year_webserver: int) -> None:
    port = year_webserver
    body = _post(port, STATS)
    assert body is not None
    (node,) = body["data"]["assetNodes"]  # type: ignore[index]
    assert node["partitionStats"] == {"numPartitions": YEAR_2025_PARTITIONS, "numMaterialized": 0}

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/assets/fact_ticks_60s?view=partitions", wait_until="domcontentloaded")
            # The partitions view: its count of partitions, and the health bar drawn for all of them.
            page.get_by_text(f"{YEAR_2025_PARTITIONS:,}").first.wait_for(timeout=120_000)
            page.locator('[data-testid="partition-status-bar"], [class*="PartitionStatus"]').first.wait_for(
                timeout=120_000)
            assert page.get_by_text("2025-12-31-15:55").count() + page.get_by_text("2025-01-02-09:30").count() >= 1
        finally:
            browser.close()
