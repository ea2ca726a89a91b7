"""The candlestick figure: bars (their spec names the size), the VWAP line and a volume panel (plotly)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from streaming.kernel.bar_spec import BarSpecError, parse_spec
from streaming.kernel.records import Bar

EXCHANGE_ZONE = ZoneInfo("America/New_York")
UP, DOWN, VWAP = "#26a69a", "#ef5350", "#ff9800"


@dataclass(frozen=True)
class WindowSummary:
    """The numbers shown above the chart for the bars in view."""

    last_close: float
    vwap: float
    volume: int
    trades: int
    bars: int
    first_start_ms: int
    last_end_ms: int


def summarize(bars: list[Bar]) -> WindowSummary | None:
    """Last close, volume-weighted average price, volume and trades of `bars` (oldest first)."""
    if not bars:
        return None
    volume = sum(b.volume for b in bars)
    notional = sum(b.notional for b in bars)
    return WindowSummary(
        last_close=bars[-1].close,
        vwap=notional / volume if volume else bars[-1].close,
        volume=volume,
        trades=sum(b.trade_count for b in bars),
        bars=len(bars),
        first_start_ms=bars[0].start_ts_ms,
        last_end_ms=bars[-1].end_ts_ms,
    )


def running_vwap(bars: list[Bar]) -> list[float]:
    """Volume-weighted average price from the first bar in view up to each bar."""
    notional = volume = 0.0
    line = []
    for b in bars:
        notional += b.notional
        volume += b.volume
        line.append(notional / volume if volume else b.close)
    return line


def exchange_time(ms: int) -> datetime:
    """Epoch ms as naive New York wall-clock time (plotly shows naive times as they are)."""
    return datetime.fromtimestamp(ms / 1000, EXCHANGE_ZONE).replace(tzinfo=None)


def _size_label(spec: str) -> str:
    """`5 s` for time-5s; a spec text the kernel does not know is shown as it is."""
    try:
        return parse_spec(spec).label
    except BarSpecError:
        return spec


def bar_figure(symbol: str, bars: list[Bar]) -> go.Figure:
    """Candles with the per-bar VWAP on top, volume below, sharing the time axis."""
    times = [exchange_time(b.start_ts_ms) for b in bars]
    # The bars say their own size (time-5s: "5 s"); the cache holds one topic, so one spec.
    size = _size_label(bars[-1].spec) if bars else ""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.74, 0.26], vertical_spacing=0.03)
    fig.add_trace(
        go.Candlestick(
            x=times, open=[b.open for b in bars], high=[b.high for b in bars], low=[b.low for b in bars],
            close=[b.close for b in bars], name=f"{symbol} {size}".rstrip(), increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Scatter(x=times, y=running_vwap(bars), name="VWAP (window)", mode="lines",
                   line={"color": VWAP, "width": 1.5}),
        row=1, col=1,
    )
    fig.add_trace(
        go.Bar(x=times, y=[b.volume for b in bars], name="volume",
               marker_color=[UP if b.close >= b.open else DOWN for b in bars]),
        row=2, col=1,
    )
    fig.update_layout(
        height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_rangeslider_visible=False,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0}, uirevision=symbol,
        hovermode="x unified",
    )
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    fig.update_xaxes(title_text="time (America/New_York)", row=2, col=1)
    return fig
