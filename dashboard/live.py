"""The live view: symbol picker, history window, candlestick chart and sidebar badges.

Only the chart and the badges rerun on the auto-refresh (st.fragment with
run_every), so the widgets keep their state and the page never reloads.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboard.badges import all_badges
from dashboard.chart import bar_figure, exchange_time, summarize
from dashboard.feed import METADATA_TIMEOUT_S, BarFeed, feed_for
from streaming.kernel.settings import KafkaSettings, Settings
from streaming.kernel.wallclock import now_ms


@st.cache_resource(show_spinner=False)
def shared_feed(brokers: str, topic: str, max_bars_per_symbol: int, _kafka: KafkaSettings) -> BarFeed:
    """The one background consumer of this server process for these brokers and topic."""
    return feed_for(_kafka, max_bars_per_symbol)


def price_text(value: float) -> str:
    """A price with at least two and at most four decimals (Kibot prices have up to four)."""
    text = f"{value:,.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.partition(".")[2]))


def _empty_state(feed: BarFeed) -> None:
    status = feed.status()
    if status.state == "unreachable":
        st.error(f"{status.message[:1].upper()}{status.message[1:]}. The view retries by itself every few "
                 "seconds; check `make status` or KAFKA_BROKERS.", icon=":material/cloud_off:")
        st.button("Retry now", key="retry")
    elif status.state == "no_topic":
        st.warning(f"{status.message}. Create it with `make topics` (or start the pipeline).",
                   icon=":material/hourglass_empty:")
        st.button("Retry now", key="retry")
    elif status.state == "connecting":
        st.info(f"Connecting to Kafka at {feed.kafka.brokers} …", icon=":material/hourglass_empty:")
    else:
        st.info(f"No bars yet in {feed.topic}. Start the replay and the aggregator "
                "(`make pipeline`, or `make replay` + `make aggregate`); bars appear here as they arrive.",
                icon=":material/inbox:")


def _chart_panel(feed: BarFeed, symbol: str | None, history_s: int) -> None:
    symbols = feed.cache.symbols()
    if not symbols:
        _empty_state(feed)
        return
    if symbol not in symbols:
        # New symbols arrived since the picker was drawn: a full rerun rebuilds it (widgets keep their keys).
        st.rerun()
    assert symbol is not None
    status = feed.status()
    if status.state == "unreachable":
        st.warning(f"Kafka is unreachable — showing cached bars. {status.message}", icon=":material/cloud_off:")
    bars = feed.cache.window(symbol, history_s)
    summary = summarize(bars)
    if summary is None:
        st.info(f"No bars of {symbol} yet.")
        return
    cols = st.columns(4)
    cols[0].metric("Last close", price_text(summary.last_close))
    cols[1].metric(f"VWAP ({history_s} s)", price_text(summary.vwap))
    cols[2].metric("Volume", f"{summary.volume:,}")
    cols[3].metric("Trades", f"{summary.trades:,}")
    first, last = exchange_time(summary.first_start_ms), exchange_time(summary.last_end_ms)
    st.caption(
        f"{symbol}: {summary.bars:,} one-second bars from {first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} "
        "America/New_York — the last history window before the newest bar's event time."
    )
    st.plotly_chart(bar_figure(symbol, bars), key="bars_chart", config={"displaylogo": False})


def _badge_panel(feed: BarFeed, settings: Settings) -> None:
    st.subheader("Health")
    snapshot = feed.cache.snapshot()
    for badge in all_badges(snapshot, now_ms(), settings.dashboard.latency_sla_ms, settings.dashboard.freshness_sla_s):
        # Label above, coloured value below: long values stay readable in a narrow sidebar.
        st.markdown(f"**{badge.label}**  \n:{badge.colour}-badge[{badge.value}]", help=badge.help)


def render_live(settings: Settings) -> None:
    """The live page."""
    kafka = settings.kafka
    feed = shared_feed(kafka.brokers, kafka.topic_agg, settings.dashboard.max_bars_per_symbol, kafka)
    feed.wait_until_known(METADATA_TIMEOUT_S + 1)
    st.title(f"Live {settings.agg.spec.label} bars")  # the size AGG_WINDOW_MS gives the bar topic
    with st.sidebar:
        auto = st.toggle("Auto-refresh", value=True, key="auto_refresh",
                         help=f"Reruns only the chart and the badges every {settings.dashboard.refresh_ms} ms.")
        symbols = feed.cache.symbols()
        symbol = st.selectbox("Symbol", symbols, key="symbol", placeholder="no symbols yet") if symbols else None
        history_s = st.slider("History window (s)", 60, 900, settings.dashboard.history_s, step=30, key="history_s")
    every = timedelta(milliseconds=settings.dashboard.refresh_ms) if auto else None
    with st.sidebar:
        st.fragment(_badge_panel, run_every=every)(feed, settings)
        st.caption(f"Kafka {kafka.brokers} · topic {kafka.topic_agg} · up to "
                   f"{settings.dashboard.max_bars_per_symbol:,} bars per symbol")
    st.fragment(_chart_panel, run_every=every)(feed, symbol, history_s)
