"""Streamlit entry of the tick platform dashboard: `make dashboard` (streamlit run dashboard/app.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; the project root makes `dashboard.*` importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboard.live import render_live  # noqa: E402
from dashboard.settings import dashboard_settings  # noqa: E402
from streaming.kernel.errors import ConfigError  # noqa: E402

st.set_page_config(page_title="Tick platform", page_icon=":material/candlestick_chart:", layout="wide")

try:
    settings = dashboard_settings()
except ConfigError as exc:
    st.error(f"Bad setting: {exc}")
    st.stop()


def live_page() -> None:
    """The live view of ticks.agg.1s."""
    render_live(settings)


navigation = st.navigation([
    st.Page(live_page, title="Live bars", icon=":material/candlestick_chart:", default=True),
    st.Page(Path(__file__).parent / "pages" / "pipeline_health.py", title="Pipeline health",
            icon=":material/monitor_heart:"),
])
navigation.run()
