"""Validation end to end: load bins/bars/ticks, recompute independently, compare, measure latency.

`validate_files` and `validate_kafka` are what the CLI and the demo call; both
return a ValidationReport (verdict in `.ok`, latencies in `.latency`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from streaming.kernel.errors import SourceError
from streaming.kernel.settings import KafkaSettings
from streaming.validate.compare import Comparison, LatencyStats, compare_sets, latency_stats
from streaming.validate.recompute import (
    BAR_FIELDS_FLOAT,
    BAR_FIELDS_INT,
    BIN_FIELDS_FLOAT,
    BIN_FIELDS_INT,
    bars_from_bins,
    bars_from_ticks,
    bins_from_ticks,
    latest_revisions,
)
from streaming.validate.records_io import Loaded, read_bars_jsonl, read_bins_jsonl
from streaming.validate.report import HISTORICAL_MS, ValidationReport
from streaming.validate.ticks import TickFile, read_tick_files

# Event times older than this relative to ingestion mean a historical replay,
# where ingest - end measures the data's age, not the pipeline.
LIVE_LATENCY_LIMIT_MS = HISTORICAL_MS
# How many of the produced symbols a "no symbol matched" problem names.
EXAMPLE_SYMBOLS = 5


def _mode(values: pl.Series, default: int) -> int:
    clean = values.drop_nulls()
    if clean.is_empty():
        return default
    return int(clean.mode().sort()[0])


def _latencies(bars: pl.DataFrame, bins: pl.DataFrame | None, window_ms: int) -> list[LatencyStats]:
    found: list[LatencyStats] = []

    def add(name: str, description: str, values: pl.Series) -> None:
        stats = latency_stats(name, description, values.drop_nulls().cast(pl.Float64).to_list())
        if stats is not None:
            found.append(stats)

    add("event_to_bar", "bar ingest_ts_ms - end_ts_ms (end-to-end for live replays)",
        bars["ingest_ts_ms"] - bars["end_ts_ms"])
    add("api_to_bar", "bar ingest_ts_ms - api_send_ts_ms (earliest send of its ticks)",
        bars["ingest_ts_ms"] - bars["api_send_ts_ms"])
    if bins is not None and bins.height:
        add("event_to_bin", "bin ingest_ts_ms - end_ts_ms (replay, live replays)",
            bins["ingest_ts_ms"] - bins["end_ts_ms"])
        last_bin = bars.select("bar_id", "ingest_ts_ms").join(
            bars_from_bins(bins, window_ms).select("bar_id", "last_bin_ingest_ts_ms"), on="bar_id", how="inner"
        )
        add("bin_to_bar", "bar ingest_ts_ms - ingest_ts_ms of its last bin (aggregator hop)",
            last_bin["ingest_ts_ms"] - last_bin["last_bin_ingest_ts_ms"])
    if "kafka_ts_ms" in bars.columns:
        add("bar_to_kafka", "broker timestamp of the bar - its ingest_ts_ms",
            bars["kafka_ts_ms"] - bars["ingest_ts_ms"])
    return found


def headline_latency(found: list[LatencyStats]) -> str | None:
    """The latency that best measures the pipeline: end-to-end for live event times, else per hop."""
    names = {s.name: s for s in found}
    event = names.get("event_to_bar")
    if event is not None and event.p50 < LIVE_LATENCY_LIMIT_MS:
        return "event_to_bar"
    return next((n for n in ("api_to_bar", "bin_to_bar") if n in names), None)


def validate_frames(
    bins: Loaded | None,
    bars: Loaded | None,
    ticks: pl.DataFrame | None = None,
    tick_files: list[TickFile] | None = None,
    *,
    spread: bool = True,
    bin_ms: int = 10,
    window_ms: int = 1_000,
    inputs: dict[str, str] | None = None,
    notes: list[str] | None = None,
) -> ValidationReport:
    """Compare every available pair of ticks -> bins -> bars; see validate_files for the meaning."""
    problems: list[str] = []
    notes = list(notes or [])
    comparisons: list[Comparison] = []
    totals: dict[str, int] = {}
    where = inputs or {}
    for label, loaded in (("bins", bins), ("bars", bars)):
        if loaded is not None and loaded.unreadable:
            problems.append(f"{loaded.unreadable} {label} do not satisfy the contract (first: {loaded.first_error})")
        elif loaded is not None and loaded.frame.height == 0:
            # An empty input proves nothing: a gate that passes on it checked nothing.
            problems.append(f"no {label} in {where.get(label, 'the input')}: nothing to check")
    if ticks is not None and ticks.height == 0:
        lines = sum(f.lines for f in tick_files or [])
        rejected = sum(f.rejected for f in tick_files or [])
        skipped = sum(f.skipped for f in tick_files or [])
        problems.append(f"no ticks parsed from {where.get('ticks', 'the tick files')} ({lines} lines: "
                        f"{rejected} rejected, {skipped} blank/header): nothing to check")
    bin_frame = bins.frame if bins is not None else None
    bar_frame = bars.frame if bars is not None else None
    if bin_frame is not None and bin_frame.height:
        bin_ms = _mode(bin_frame["window_ms"], bin_ms)
    if bar_frame is not None and bar_frame.height:
        window_ms = _mode(bar_frame["end_ts_ms"] - bar_frame["start_ts_ms"], window_ms)
    final_bars = latest_revisions(bar_frame) if bar_frame is not None else None

    if bin_frame is not None and bar_frame is not None:
        from_bins = bars_from_bins(bin_frame, window_ms)
        comparisons.append(compare_sets("bars <- bins", from_bins, bar_frame, "bar_id", BAR_FIELDS_INT,
                                        BAR_FIELDS_FLOAT, duplicate_on=["bar_id", "revision"]))
    if ticks is not None and (bin_frame is not None or bar_frame is not None):
        symbols = ticks["symbol"].unique().to_list()
        produced = set()
        for frame in (bin_frame, bar_frame):
            if frame is not None:
                produced.update(frame["symbol"].unique().to_list())
        if symbols and produced and not produced.intersection(symbols):
            problems.append(f"no symbol of the tick files ({', '.join(sorted(symbols))}) is in the bins/bars "
                            f"({', '.join(sorted(produced)[:EXAMPLE_SYMBOLS])}): the ticks were compared with nothing")
        if bin_frame is not None:
            scoped = bin_frame.filter(pl.col("symbol").is_in(symbols))
            comparisons.append(compare_sets("bins <- ticks", bins_from_ticks(ticks, bin_ms, spread), scoped,
                                            "bin_id", BIN_FIELDS_INT, BIN_FIELDS_FLOAT))
            others = bin_frame.filter(~pl.col("symbol").is_in(symbols))["symbol"].unique().sort().to_list()
            if others:
                notes.append(f"symbols without a tick file, checked bins -> bars only: {', '.join(others)}")
        if bar_frame is not None:
            scoped = bar_frame.filter(pl.col("symbol").is_in(symbols))
            comparisons.append(compare_sets("bars <- ticks", bars_from_ticks(ticks, window_ms, bin_ms, spread),
                                            scoped, "bar_id", BAR_FIELDS_INT, BAR_FIELDS_FLOAT,
                                            duplicate_on=["bar_id", "revision"]))
    elif bin_frame is not None and bar_frame is None:
        problems.append("bins alone cannot be validated: give bars or ticks as well")
    if bin_frame is not None and ticks is None:
        # Without ticks nothing else would notice a bin published twice.
        comparisons.append(compare_sets("bins unique", bin_frame.unique(subset=["bin_id"]), bin_frame, "bin_id",
                                        [], [], duplicate_on=["bin_id"]))
    if not comparisons and not problems:
        problems.append("nothing to compare: give two of --ticks, --bins, --bars (or --kafka)")
    for comp in comparisons:
        if comp.expected_count == 0 and comp.actual_count == 0 and comp.name != "bins unique":
            problems.append(f"{comp.name}: nothing compared (no records expected and none found)")

    if ticks is not None:
        totals["ticks"] = ticks.height
        totals["tick_volume"] = int(ticks["size"].sum() or 0)
        totals["tick_rows_rejected"] = sum(f.rejected for f in tick_files or [])
        totals["tick_rows_skipped"] = sum(f.skipped for f in tick_files or [])
    if bin_frame is not None:
        totals["bins"] = bin_frame.height
    latency: list[LatencyStats] = []
    if final_bars is not None:
        totals["bars"] = final_bars.height
        totals["bar_messages"] = bar_frame.height if bar_frame is not None else 0
        totals["symbols"] = final_bars["symbol"].n_unique()
        totals["bar_trades"] = int(final_bars["trade_count"].sum() or 0)
        totals["bar_volume"] = int(final_bars["volume"].sum() or 0)
        latency = _latencies(final_bars, bin_frame, window_ms)
    headline = headline_latency(latency)
    if headline is not None and headline != "event_to_bar":
        notes.append(f"event times are historical (a backfill replay): the headline latency is {headline}")
    all_inputs = dict(inputs or {})
    all_inputs.update({"bin_ms": str(bin_ms), "window_ms": str(window_ms), "spread": str(spread).lower()})
    return ValidationReport(all_inputs, comparisons, totals, latency, headline, problems, notes)


def validate_files(
    bins_path: Path | None,
    bars_path: Path | None,
    tick_paths: list[Path] | None = None,
    *,
    symbol: str | None = None,
    spread: bool = True,
    bin_ms: int = 10,
    window_ms: int = 1_000,
) -> ValidationReport:
    """Validate JSON-lines bins/bars (and optionally raw Kibot tick files) by independent recomputation.

    Checks: bars recomputed from the bins, and with ticks also bins and bars recomputed
    from the ticks (spread within a second modelled as the replay does when `spread`).
    """
    bins = read_bins_jsonl(bins_path) if bins_path else None
    bars = read_bars_jsonl(bars_path) if bars_path else None
    ticks, files = read_tick_files(list(tick_paths or []), symbol) if tick_paths else (None, [])
    inputs = {"bins": str(bins_path or "-"), "bars": str(bars_path or "-"),
              "ticks": ", ".join(str(p) for p in tick_paths or []) or "-"}
    return validate_frames(bins, bars, ticks, files, spread=spread, bin_ms=bin_ms, window_ms=window_ms,
                           inputs=inputs)


def validate_kafka(
    kafka: KafkaSettings,
    tick_paths: list[Path] | None = None,
    *,
    symbol: str | None = None,
    spread: bool = True,
    bin_ms: int = 10,
    window_ms: int = 1_000,
    timeout_s: float = 120.0,
) -> ValidationReport:
    """Validate what is in the bins and bars topics now (read_committed, up to the end offsets)."""
    from streaming.kernel.records import decode_watermark
    from streaming.validate.kafka_reader import read_topic
    from streaming.validate.records_io import bars_from_values, bins_from_values

    raw = read_topic(kafka, kafka.topic_raw, timeout_s)
    agg = read_topic(kafka, kafka.topic_agg, timeout_s)
    dlq = read_topic(kafka, kafka.topic_dlq, timeout_s)
    ticks, files = read_tick_files(list(tick_paths or []), symbol) if tick_paths else (None, [])
    notes = []
    if dlq.messages:
        notes.append(f"{kafka.topic_dlq} holds {dlq.messages} record(s); rejected input is not in bins/bars")
    inputs = {"bins": f"kafka {kafka.brokers} {kafka.topic_raw}", "bars": f"kafka {kafka.brokers} {kafka.topic_agg}",
              "ticks": ", ".join(str(p) for p in tick_paths or []) or "-", "dlq_records": str(dlq.messages)}
    # The replay's watermark records share ticks.raw with the bins; they are not bins.
    kept = [(v, ts) for v, ts in zip(raw.values, raw.timestamps, strict=True) if decode_watermark(v) is None]
    report = validate_frames(
        bins_from_values([v for v, _ in kept], [ts for _, ts in kept]), bars_from_values(agg.values, agg.timestamps),
        ticks, files, spread=spread, bin_ms=bin_ms, window_ms=window_ms, inputs=inputs, notes=notes,
    )
    report.totals["dlq"] = dlq.messages
    return report


__all__ = ["SourceError", "validate_files", "validate_frames", "validate_kafka"]
