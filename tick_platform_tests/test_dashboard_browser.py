"""End to end in a real browser: the real sample replayed and aggregated, the dashboard in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.kernel.records import Bar
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from tick_platform_tests.test_dashboard_support import dashboard_env, fill_with_real_pipeline
from tick_tools.broker.runner import free_port_base

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_BARS = 900


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("streamlit did not become healthy")


@pytest.fixture()
def streamlit_server(kafka: KafkaSettings, output_dir: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a free port, pointed at this test's topics; always terminated."""
    port = free_port_base(1)
    env = {**os.environ, **dashboard_env(kafka, DASHBOARD_MAX_BARS_PER_SYMBOL=str(MAX_BARS),
                                         AGG_GROUP_ID=agg_group_of(kafka))}
    log = (output_dir / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "streamlit"), "run", str(PROJECT_ROOT / "dashboard" / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def agg_group_of(kafka: KafkaSettings) -> str:
    """The aggregator group of this test (the dashboard is told it through AGG_GROUP_ID)."""
    return f"test-agg-{kafka.topic_agg.rsplit('.', 1)[-1]}"


def _expected_window(bars: list[Bar], history_s: int) -> list[Bar]:
    ordered = sorted(bars, key=lambda b: b.start_ts_ms)[-MAX_BARS:]
    since = ordered[-1].end_ts_ms - history_s * 1000
    return [b for b in ordered if b.start_ts_ms >= since]


# A render is settled when no element is stale (Streamlit marks the previous run's elements while a
# run is under way), no run is in progress, there is one chart, and its drawn candles were counted in
# the same JavaScript turn as its data (so both come from one render).
_RENDER_STATE = """() => {
  const plots = document.querySelectorAll('.js-plotly-plot');
  const gd = plots[0];
  return {
    stale: document.querySelectorAll('[data-stale="true"]').length,
    running: document.querySelectorAll('[data-testid="stStatusWidgetRunningIcon"]').length,
    plots: plots.length,
    candles: gd ? gd.querySelectorAll('g.trace.boxes path.box').length : -1,
    traces: gd && gd.data ? gd.data.map(t => ({type: t.type, n: (t.y || t.close).length,
      last: t.close ? t.close[t.close.length - 1] : t.y[t.y.length - 1]})) : [],
  };
}"""


def switch_auto_refresh_off(page: Any) -> None:
    """Turn the sidebar's Auto-refresh toggle off and wait until the page says so (one full rerun follows)."""
    toggle = page.locator('[data-testid="stSidebar"] [data-testid="stCheckbox"]').filter(has_text="Auto-refresh")
    box = toggle.locator('input[type="checkbox"]')
    assert box.is_checked(), "auto-refresh should be on by default"
    toggle.locator("label").first.click()
    page.wait_for_function("el => !el.checked", arg=box.element_handle(), timeout=30_000)


def settled_render(page: Any, timeout_ms: int = 60_000) -> dict[str, Any]:
    """The chart's data and drawn candles once the page has finished its last run (see _RENDER_STATE).

    Waits for the same state twice in a row half a second apart: a run that was about to start
    (the rerun the toggle caused) shows up as a change, and the wait goes on.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    previous: dict[str, Any] | None = None
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_RENDER_STATE)
        quiet = state["stale"] == 0 and state["running"] == 0 and state["plots"] >= 1 and state["traces"]
        if quiet and state == previous:
            return state
        previous = state if quiet else None
        page.wait_for_timeout(500)
    raise AssertionError(f"the dashboard did not settle within {timeout_ms / 1000:.0f}s; last state {state}")


_PAGE_STATE = """() => ({
  stale: document.querySelectorAll('[data-stale="true"]').length,
  running: document.querySelectorAll('[data-testid="stStatusWidgetRunningIcon"]').length,
  text: (document.querySelector('[data-testid="stMain"]') || document.body).innerText,
})"""


def settled_page(page: Any, timeout_ms: int = 60_000) -> str:
    """The main area's text once the page's run is over: no stale element, nothing running, the same text twice
    half a second apart (a page switch first shows the new page's header beside the old page's elements)."""
    deadline = time.monotonic() + timeout_ms / 1000
    previous: str | None = None
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_PAGE_STATE)
        quiet = state["stale"] == 0 and state["running"] == 0
        if quiet and state["text"] == previous:
            return str(state["text"])
        previous = state["text"] if quiet else None
        page.wait_for_timeout(500)
    raise AssertionError(f"the page did not settle within {timeout_ms / 1000:.0f}s; last state {state}")


@pytest.mark.kafka
@pytest.mark.browser
@pytest.mark.timeout(420)
def test_dashboard_renders_real_candles_and_badges(kafka: KafkaSettings, sample_path: Path, output_dir: Path,
                                                   request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (apt-get install chromium) installs it")
    url = request.getfixturevalue("streamlit_server")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            # Opened before any bar exists: the empty state, then the bars arrive without a reload.
            page.get_by_text(f"No bars yet in {kafka.topic_agg}").wait_for(timeout=60_000)
            bars = fill_with_real_pipeline(kafka, sample_path, agg_group_of(kafka))
            assert len(bars) == 5049
            assert sum(b.volume for b in bars) == 3_582_490
            window = _expected_window(bars, 300)
            last = window[-1]
            page.get_by_text(f"{MAX_BARS:,} bars · 1 symbol").first.wait_for(timeout=90_000)
            page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first.wait_for(timeout=60_000)
            # The bars arrived by the auto-refresh alone (no reload). Now stop it, so that nothing re-renders
            # while the page is read: a count taken during a fragment rerun saw the stale and the new
            # candles together (168 path.box for a window of 90 on a loaded machine).
            page.wait_for_function(
                "n => { const gd = document.querySelector('.js-plotly-plot');"
                " return gd && gd.data && gd.data[0].close.length === n; }",
                arg=len(window), timeout=60_000,
            )
            switch_auto_refresh_off(page)
            render = settled_render(page)
            page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)
            assert render["plots"] == 1, render
            traces = render["traces"]
            assert [t["type"] for t in traces] == ["candlestick", "scatter", "bar"]
            assert [t["n"] for t in traces] == [len(window)] * 3
            assert traces[0]["last"] == last.close
            window_vwap = sum(b.notional for b in window) / sum(b.volume for b in window)
            assert traces[1]["last"] == pytest.approx(window_vwap, rel=1e-9)
            assert traces[2]["last"] == last.volume
            # Drawn candles, counted in the same plot and the same settled DOM as its data.
            assert render["candles"] == len(window), render

            metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
            assert metrics[0] == f"{last.close:.2f}"  # the sample's last close, 42.52
            assert metrics[2] == f"{sum(b.volume for b in window):,}"
            sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
            assert "End-to-end latency\nn/a (replay of 2010-02-17)" in sidebar
            assert re.search(r"Kafka log lag\np50 [\d,.]+ m?s · p95 [\d,.]+ m?s", sidebar), sidebar
            assert re.search(r"Data freshness\n[\d,.]+ (s|min) old", sidebar), sidebar
            assert re.search(r"Last update\n\d\d:\d\d:\d\d UTC", sidebar), sidebar
            assert f"Cached bars\n{MAX_BARS:,} bars · 1 symbol" in sidebar

            page.get_by_role("link", name="Pipeline health").click()
            page.get_by_text("Consumer-group lag").wait_for(timeout=60_000)
            page.get_by_text(kafka.topic_agg).first.wait_for(state="attached", timeout=60_000)
            # The aggregator's group is listed under its role, with its committed lag (0 after until-idle).
            page.get_by_text("aggregator", exact=True).first.wait_for(state="attached", timeout=30_000)
            page.get_by_text(agg_group_of(kafka)).first.wait_for(state="attached")
            # Read from the settled health page, not from a DOM that may still hold the live view's elements:
            # the sample has no late or malformed tick, so the dead-letter queue is empty (was not asserted).
            health = settled_page(page)
            assert re.search(rf"Records in {re.escape(kafka.topic_dlq)}\s+0\s", health), health
            assert "No rejected input." in health, health
            page.screenshot(path=str(output_dir / "health.png"), full_page=True)
        finally:
            browser.close()
    assert (output_dir / "dashboard.png").stat().st_size > 20_000
    shutil.copy(output_dir / "dashboard.png", output_dir / "dashboard-latest.png")
