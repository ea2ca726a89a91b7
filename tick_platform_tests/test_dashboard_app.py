"""The Streamlit app under streamlit.testing AppTest: empty states, the live view and the health page."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Producer
from streamlit.testing.v1 import AppTest

from dashboard.feed import stop_all_feeds
from dashboard.health import FACT_TABLES, warehouse_status
from streaming.kernel.records import Bar, DlqRecord, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from streaming.kernel.warehouse.targets import DuckDBFile
from tick_platform_tests.test_dashboard_support import dashboard_env
from tick_tools.broker.runner import free_port_base

APP = str(PROJECT_ROOT / "dashboard" / "app.py")
HEALTH = str(PROJECT_ROOT / "dashboard" / "pages" / "pipeline_health.py")


@pytest.fixture(autouse=True)
def _stop_feeds() -> Iterator[None]:
    yield
    stop_all_feeds()


def _env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _sidebar_badges(at: AppTest) -> dict[str, str]:
    """label -> "colour|value" of the sidebar badges (rendered as **label** over :colour-badge[value])."""
    found = {}
    for md in at.sidebar.markdown:
        match = re.fullmatch(r"\*\*(.+)\*\*  \n:(\w+)-badge\[(.*)\]", md.value, flags=re.S)
        if match:
            found[match.group(1)] = f"{match.group(2)}|{match.group(3)}"
    return found


def test_unreachable_broker_shows_a_message_not_a_stack_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_base(1)
    _env(monkeypatch, {"KAFKA_BROKERS": f"127.0.0.1:{port}", "KAFKA_TOPIC_AGG": f"none.{uuid.uuid4().hex[:6]}"})
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert len(at.error) == 1
    assert f"cannot reach Kafka at 127.0.0.1:{port}".lower() in at.error[0].value.lower()
    assert [b.label for b in at.button] == ["Retry now"]
    assert _sidebar_badges(at)["Cached bars"] == "gray|0 bars · 0 symbols"
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) == 1


def test_bad_setting_is_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, {"DASHBOARD_HISTORY_S": "5"})
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "DASHBOARD_HISTORY_S" in at.error[0].value


def test_dashboard_env_file_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port_base(1)
    env_file = tmp_path / "dash.env"
    env_file.write_text(f"KAFKA_BROKERS=127.0.0.1:{port}\nKAFKA_TOPIC_AGG=from.env.file\n")
    _env(monkeypatch, {"DASHBOARD_ENV_FILE": str(env_file)})
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert f"127.0.0.1:{port}" in at.error[0].value
    assert any("topic from.env.file" in c.value for c in at.sidebar.caption)


@pytest.mark.kafka
def test_no_bars_yet_says_so(kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, dashboard_env(kafka))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert not at.error
    assert any(f"No bars yet in {kafka.topic_agg}" in i.value for i in at.info)
    assert len(at.selectbox) == 0


def _wait_for(check, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _bar(symbol: str, second: int, close: float, revision: int = 0) -> Bar:
    start = 1_266_417_001_000 + second * 1000
    return Bar(bar_id=f"{symbol}-{start:013d}-time-1s", symbol=symbol, spec="time-1s",
               start_ts_ms=start, end_ts_ms=start + 1000,
               open=close, high=close + 0.1, low=close - 0.1, close=close, volume=10, notional=close * 10,
               vwap=close, trade_count=1, bin_count=1, max_lateness_ms=0, api_send_ts_ms=None,
               source_event_ts_ms=start, ingest_ts_ms=int(time.time() * 1000), revision=revision)


@pytest.mark.kafka
def test_live_view_shows_the_cached_bars_with_revisions_and_bounds(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = [_bar("AAA", s, 10.0 + s / 100) for s in range(120)] + [_bar("BBB", s, 50.0) for s in range(30)]
    bars.append(_bar("AAA", 119, 99.5, revision=1))  # a correction of the newest AAA bar
    bars.append(bars[110])  # a duplicate delivery
    producer = Producer(kafka.client_base())
    for b in bars:
        producer.produce(kafka.topic_agg, key=b.symbol.encode(), value=encode(b))
    producer.produce(kafka.topic_agg, key=b"AAA", value=b"not json")
    producer.flush(30)
    _env(monkeypatch, {**dashboard_env(kafka), "DASHBOARD_MAX_BARS_PER_SYMBOL": "100"})
    from dashboard.feed import feed_for
    from dashboard.settings import dashboard_settings

    feed = feed_for(dashboard_settings().kafka, 100)
    _wait_for(lambda: feed.status().messages + feed.status().rejected >= len(bars) + 1)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.selectbox(key="symbol").options == ["AAA", "BBB"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Last close"] == "99.50"
    # 300 s window, 100 AAA bars kept (seconds 20..119): volume 100 x 10.
    assert metrics["Volume"] == "1,000"
    badges = _sidebar_badges(at)
    assert badges["Cached bars"] == "green|130 bars · 2 symbols"
    assert badges["End-to-end latency"].startswith("gray|n/a (replay of 2010-02-17)")
    # The lag badge shows the nearest-rank p50/p95 of receive time - broker timestamp of the bars this
    # feed received, green up to the SLA (p95 <= 750 ms by default) and orange past it; computed here
    # from the feed's own receipts, so the exact text and colour are known whatever the machine's load.
    lags = sorted(e.received_ms - e.kafka_ts_ms for e in feed.cache.snapshot().recent if e.kafka_ts_ms is not None)
    assert len(lags) == len(bars) - 1  # every bar but the duplicate delivery; the poison is not a bar
    p50, p95 = (lags[max(1, math.ceil(q / 100 * len(lags))) - 1] for q in (50, 95))
    colour = "green" if p95 <= dashboard_settings().dashboard.latency_sla_ms else "orange"

    def ms(value: int) -> str:
        return f"{value:,} ms" if value < 10_000 else f"{value / 1000:,.1f} s"

    assert badges["Kafka log lag"] == f"{colour}|p50 {ms(p50)} · p95 {ms(p95)}"
    assert feed.status().rejected == 1
    assert (feed.cache.snapshot().ignored_duplicates, feed.cache.snapshot().evicted) == (1, 20)

    at.selectbox(key="symbol").set_value("BBB").run()
    at.slider(key="history_s").set_value(60).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Last close"] == "50.00"
    assert metrics["Trades"] == "30"
    at.toggle(key="auto_refresh").set_value(False).run()
    assert at.selectbox(key="symbol").value == "BBB"
    assert at.slider(key="history_s").value == 60


@pytest.mark.kafka
def test_health_page_lists_topics_lag_and_dlq(kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    producer = Producer(kafka.client_base())
    for i in range(3):
        record = DlqRecord(stage="aggregate", reason="late", detail=f"late bin {i}", source="t",
                           position={"offset": i}, payload="{}", dlq_ts_ms=1_800_000_000_000 + i, late_by_ms=500 + i,
                           symbol="WDC")
        producer.produce(kafka.topic_dlq, key=b"aggregate", value=encode(record))
    producer.produce(kafka.topic_raw, key=b"WDC", value=b"{}")
    producer.flush(30)
    _env(monkeypatch, {**dashboard_env(kafka), "WAREHOUSE_DUCKDB_PATH": str(tmp_path / "none.duckdb")})
    at = AppTest.from_file(HEALTH, default_timeout=60).run()
    assert not at.exception
    topics = at.dataframe[0].value
    assert list(topics["topic"]) == [kafka.topic_raw, kafka.topic_agg, kafka.topic_dlq]
    assert list(topics["messages"]) == [1, 0, 3]
    assert list(topics["partitions"]) == [6, 6, 1]
    lags = at.dataframe[1].value
    assert list(lags["role"])[:2] == ["aggregator", "fact loader"]
    assert list(lags["total_lag"])[:2] == ["no commits yet", "no commits yet"]
    assert {m.label: m.value for m in at.metric}[f"Records in {kafka.topic_dlq}"] == "3"
    dlq = at.dataframe[2].value
    assert list(dlq["detail"]) == ["late bin 2", "late bin 1", "late bin 0"]
    assert list(dlq["reason"]) == ["late"] * 3
    facts = at.dataframe[3].value
    assert all("no warehouse file" in note for note in facts["note"])


def test_health_page_without_broker_shows_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _env(monkeypatch, {"KAFKA_BROKERS": f"127.0.0.1:{free_port_base(1)}",
                       "WAREHOUSE_DUCKDB_PATH": str(tmp_path / "none.duckdb")})
    at = AppTest.from_file(HEALTH, default_timeout=60).run()
    assert not at.exception
    assert "Cannot reach Kafka" in at.error[0].value


def test_warehouse_status_reads_the_latest_partition_and_survives_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA CORE")
    con.execute("CREATE TABLE CORE.FACT_TICKS_60S (BAR_ID VARCHAR, START_TS TIMESTAMP, LOAD_TS TIMESTAMP)")
    con.execute("INSERT INTO CORE.FACT_TICKS_60S VALUES ('a', '2010-02-17 14:30:00', '2026-01-01 00:00:00'), "
                "('b', '2010-02-17 14:36:00', '2026-01-01 00:00:05')")
    con.close()
    status = {s.table: s for s in warehouse_status(DuckDBFile(path, read_only=True, lock_retry_s=0))}
    assert set(status) == set(FACT_TABLES)
    minute = status["CORE.FACT_TICKS_60S"]
    assert (minute.rows, str(minute.latest_start), str(minute.latest_partition)) == (
        2, "2010-02-17 14:36:00", "2010-02-17 14:35:00")
    assert status["CORE.FACT_TICKS_300S"].note == "table not created yet"
    # A writer in another process holds the file: the page says so instead of failing.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        locked = warehouse_status(DuckDBFile(path, read_only=True, lock_retry_s=0))
        assert all("locked by a writer" in s.note for s in locked), [s.note for s in locked]
        assert all(s.rows is None for s in locked)
    finally:
        holder.kill()
        holder.wait()
