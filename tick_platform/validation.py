"""Pure comparisons behind the asset checks: which fact rows are wrong, and how."""

from __future__ import annotations

from typing import Any

import polars as pl

from tick_platform.rollup import FACT_COLUMNS

PRICE_TOL = 1e-6
NOTIONAL_REL_TOL = 1e-9
NOTIONAL_ABS_TOL = 1e-5
VWAP_TOL = 1e-4
VWAP_COMPARE_TOL = 2.5e-6


def _differs(col: str, actual: Any, expected: Any) -> bool:
    if actual is None or expected is None:
        return actual is not expected
    if col in ("OPEN", "HIGH", "LOW", "CLOSE"):
        return abs(float(actual) - float(expected)) > PRICE_TOL
    if col == "VWAP":
        # VWAP is notional/volume rounded to 6 decimals; from rounded notionals it may differ by one unit.
        return abs(float(actual) - float(expected)) > VWAP_COMPARE_TOL
    if col == "NOTIONAL":
        return abs(float(actual) - float(expected)) > max(NOTIONAL_ABS_TOL, NOTIONAL_REL_TOL * abs(float(expected)))
    return bool(actual != expected)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def compare_rows(
    actual: pl.DataFrame, expected: pl.DataFrame, compare: list[str] | None = None
) -> list[dict[str, Any]]:
    """Offending rows: BAR_IDs missing, unexpected, or with a column differing (warehouse vs expected)."""
    cols = compare or [c for c in FACT_COLUMNS if c != "BAR_ID"]
    got = {r["BAR_ID"]: r for r in actual.iter_rows(named=True)}
    want = {r["BAR_ID"]: r for r in expected.iter_rows(named=True)}
    problems: list[dict[str, Any]] = []
    for bar_id in sorted(want.keys() - got.keys()):
        problems.append({"BAR_ID": bar_id, "problem": "missing in warehouse"})
    for bar_id in sorted(got.keys() - want.keys()):
        problems.append({"BAR_ID": bar_id, "problem": "not backed by any bar"})
    for bar_id in sorted(got.keys() & want.keys()):
        for col in cols:
            a, e = got[bar_id][col], want[bar_id][col]
            if _differs(col, a, e):
                problems.append(
                    {"BAR_ID": bar_id, "problem": f"{col} differs", "warehouse": _jsonable(a), "expected": _jsonable(e)}
                )
    return problems


def ohlc_violations(rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows breaking low <= open, close <= high, volume >= 0, low <= vwap <= high (small tolerance)."""
    if rows.is_empty():
        return []
    bad = rows.filter(
        (pl.col("LOW") > pl.col("OPEN") + PRICE_TOL)
        | (pl.col("LOW") > pl.col("CLOSE") + PRICE_TOL)
        | (pl.col("OPEN") > pl.col("HIGH") + PRICE_TOL)
        | (pl.col("CLOSE") > pl.col("HIGH") + PRICE_TOL)
        | (pl.col("LOW") > pl.col("HIGH"))
        | (pl.col("VOLUME") < 0)
        | (pl.col("VWAP") < pl.col("LOW") - VWAP_TOL)
        | (pl.col("VWAP") > pl.col("HIGH") + VWAP_TOL)
    )
    keep = ["BAR_ID", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "VWAP"]
    return [{k: _jsonable(v) for k, v in r.items()} for r in bad.select(keep).iter_rows(named=True)]


def missing_bar_counts(rows_60s: pl.DataFrame, expected_60s: pl.DataFrame) -> list[dict[str, Any]]:
    """Minutes whose SOURCE_COUNT is below the number of 1 s bars in ticks.agg.1s (or that are absent)."""
    got = dict(zip(rows_60s["BAR_ID"].to_list(), rows_60s["SOURCE_COUNT"].to_list(), strict=True))
    problems: list[dict[str, Any]] = []
    for bar_id, want in zip(expected_60s["BAR_ID"].to_list(), expected_60s["SOURCE_COUNT"].to_list(), strict=True):
        have = got.get(bar_id, 0)
        if have < want:
            problems.append(
                {"BAR_ID": bar_id, "bars_in_kafka": want, "bars_in_warehouse": have, "missing": want - have}
            )
    return problems
