"""The peer: the same 1 s OHLCV tumbling-window job written the idiomatic Quix Streams way.

ticks.raw bins (key = symbol, event time = the bin's start_ts_ms) -> tumbling 1 s windows with
the same grace, `.agg(...)` with First/Max/Min/Last/Sum/Count, `.final()` closing by partition
(the aggregator's watermark is per input partition too) -> bars on an output topic.

Run as a child process by the bench:
`python -m tick_tools.bench.quix_job --brokers B --input T --output T2 --group G --count N`.
It stops once it has processed N input messages, prints progress lines to stderr and one JSON
summary line to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, First, Last, Max, Min, Sum

from streaming.kernel.bar_spec import make_bar_id, time_bars

PROGRESS_EVERY = 2_000


def to_bar(value: dict[str, Any], key: Any, _timestamp: int, _headers: Any) -> dict[str, Any]:
    """A closed window as a bar with the fields the aggregator's bars carry (contract names)."""
    symbol = key.decode() if isinstance(key, bytes) else str(key)
    volume = value["volume"]
    return {
        # The contract's id, so the bench compares bar by bar_id with the aggregator's bars.
        "bar_id": make_bar_id(symbol, value["start"], time_bars(value["end"] - value["start"])),
        "symbol": symbol, "start_ts_ms": value["start"],
        "end_ts_ms": value["end"], "open": value["open"], "high": value["high"], "low": value["low"],
        "close": value["close"], "volume": volume, "notional": value["notional"],
        "vwap": value["notional"] / volume if volume else value["close"], "trade_count": value["trade_count"],
        "bin_count": value["bin_count"], "source": "quixstreams",
    }


def init_bar(b: dict[str, Any]) -> dict[str, Any]:
    """The reduce variant's first state of a window."""
    return {"open": b["open"], "high": b["high"], "low": b["low"], "close": b["close"], "volume": b["volume"],
            "notional": b["notional"], "trade_count": b["trade_count"], "bin_count": 1}


def reduce_bin(acc: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Fold one more bin in (input order: the last bin read sets close)."""
    acc["high"] = max(acc["high"], b["high"])
    acc["low"] = min(acc["low"], b["low"])
    acc["close"] = b["close"]
    acc["volume"] += b["volume"]
    acc["notional"] += b["notional"]
    acc["trade_count"] += b["trade_count"]
    acc["bin_count"] += 1
    return acc


def flatten_window(window: dict[str, Any]) -> dict[str, Any]:
    """{start, end, value: {...}} of the reduce variant -> the agg variant's flat shape."""
    return {"start": window["start"], "end": window["end"], **window["value"]}


def bin_event_time(value: Any, _headers: Any, _timestamp: int, _ts_type: Any) -> int:
    """Event time from the payload (the Kafka timestamp is production wall clock)."""
    return int(value["start_ts_ms"])


def build(args: argparse.Namespace) -> tuple[Application, dict[str, Any]]:
    """The Application and its dataframe; `stats` is filled as messages are processed."""
    stats: dict[str, Any] = {"consumed": 0, "bars": 0, "first": None, "last": None}
    next_print = [time.monotonic() + args.progress_s]

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        now = time.monotonic()
        if stats["first"] is None:
            stats["first"] = now
        stats["consumed"] += 1
        stats["last"] = now
        n = stats["consumed"]
        if n % PROGRESS_EVERY == 0 and now >= next_print[0]:
            next_print[0] = now + args.progress_s
            print(f"bins {n:,} bars {stats['bars']:,}", file=sys.stderr, flush=True)
        if n >= args.count:
            app.stop()

    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        state_dir=args.state_dir,
        loglevel="WARNING",
        on_message_processed=processed,
        auto_create_topics=True,
    )
    source = app.topic(args.input, value_deserializer="json", key_deserializer="str",
                       timestamp_extractor=bin_event_time)
    sink = app.topic(args.output, value_serializer="json", key_serializer="str")
    sdf = app.dataframe(source)
    window = sdf.tumbling_window(args.window_ms, grace_ms=args.grace_ms)
    if args.variant == "agg":
        # The documented way: one built-in aggregation per column.
        sdf = window.agg(open=First("open"), high=Max("high"), low=Min("low"), close=Last("close"),
                         volume=Sum("volume"), notional=Sum("notional"), trade_count=Sum("trade_count"),
                         bin_count=Count()).final(closing_strategy="partition")
    else:
        # One custom reducer: a single state value per window (fewer state reads and writes).
        sdf = window.reduce(reduce_bin, init_bar).final(closing_strategy="partition")
        sdf = sdf.apply(flatten_window)
    sdf = sdf.apply(to_bar, metadata=True)

    def count_bar(_bar: dict[str, Any]) -> None:
        stats["bars"] += 1

    sdf = sdf.update(count_bar)
    # Quix stamps a window result with its start (event time); on a topic with time retention an
    # old-dated bar is deleted at once, so stamp the production wall clock like the aggregator does.
    sdf = sdf.set_timestamp(lambda _value, _key, _ts, _headers: time.time_ns() // 1_000_000)
    sdf.to_topic(sink)
    return app, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True, help="Stop after this many input messages.")
    parser.add_argument("--guarantee", choices=["at-least-once", "exactly-once"], default="at-least-once")
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--variant", choices=["agg", "reduce"], default="agg")
    parser.add_argument("--window-ms", type=int, default=1_000)
    parser.add_argument("--grace-ms", type=int, default=100)
    parser.add_argument("--progress-s", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    started = time.monotonic()
    app, stats = build(args)
    app.run()
    ended = time.monotonic()
    first, last = stats["first"], stats["last"]
    busy = (last - first) if first is not None and last is not None else None
    print(json.dumps({
        "consumed": stats["consumed"], "bars": stats["bars"], "wall_s": ended - started,
        "first_to_last_s": busy, "startup_s": (first - started) if first is not None else None,
    }), flush=True)
    print(f"quix done: bins {stats['consumed']:,} bars {stats['bars']:,}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
