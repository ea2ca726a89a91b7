"""Aggregator throughput and memory: bins/s through one process on a pre-filled topic.

`python -m streaming.aggregate.benchmark --brokers HOST:PORT [--bins N] [--symbols 10,100,1000]`
creates fresh topics per run, fills ticks.raw with synthetic bins (10 ms apart per
symbol, in time order), runs `python -m streaming aggregate --max-bins N` with
exactly-once on and off, and prints bins/s (first to last bin) and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer

from streaming.broker.topics import bootstrap_topics
from streaming.config import PROJECT_ROOT, KafkaSettings
from streaming.records import Bin, encode, make_bin_id

T0 = 1_266_417_001_000


@dataclass(frozen=True)
class BenchResult:
    """One aggregator run."""

    symbols: int
    exactly_once: bool
    bins: int
    bins_per_s: float
    bars: int
    peak_rss_mb: float


def fill(kafka: KafkaSettings, bins: int, symbols: int) -> None:
    """`bins` synthetic bins over `symbols` symbols into ticks.raw (idempotent producer, key = symbol)."""
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "linger.ms": 50,
                         "batch.size": 1_000_000, "compression.type": "lz4",
                         "queue.buffering.max.messages": 2_000_000})
    names = [f"B{i:04d}" for i in range(symbols)]
    for i in range(bins):
        symbol = names[i % symbols]
        start = T0 + (i // symbols) * 10
        price = 50.0 + (i % 97) * 0.01
        b = Bin(bin_id=make_bin_id(symbol, start), symbol=symbol, start_ts_ms=start, end_ts_ms=start + 10,
                window_ms=10, open=price, high=price + 0.02, low=price - 0.01, close=price + 0.01, volume=300,
                notional=price * 300, trade_count=2, max_lateness_ms=0, api_send_ts_ms=start,
                source_event_ts_ms=start, ingest_ts_ms=start)
        while True:
            try:
                producer.produce(kafka.topic_raw, encode(b), symbol)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 20_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise SystemExit("could not deliver the benchmark input")


def run_once(brokers: str, bins: int, symbols: int, exactly_once: bool) -> BenchResult:
    """Fresh topics, fill, one aggregator process; its rate and peak RSS."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(brokers=brokers, topic_raw=f"bench.raw.{suffix}",  # type: ignore[call-arg]
                          topic_agg=f"bench.agg.{suffix}", topic_dlq=f"bench.dlq.{suffix}")
    bootstrap_topics(kafka)
    fill(kafka, bins, symbols)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AGG_"))}
    env.update({"KAFKA_BROKERS": brokers, "KAFKA_TOPIC_RAW": kafka.topic_raw, "KAFKA_TOPIC_AGG": kafka.topic_agg,
                "KAFKA_TOPIC_DLQ": kafka.topic_dlq, "AGG_GROUP_ID": f"bench-{suffix}",
                "AGG_INSTANCE_ID": f"bench-{suffix}", "AGG_EXACTLY_ONCE": str(exactly_once).lower(),
                "AGG_PROGRESS_INTERVAL_S": "3600"})
    proc = subprocess.Popen([sys.executable, "-m", "streaming", "aggregate", "--max-bins", str(bins)],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"aggregator failed:\n{output[-2000:]}")
    found = re.search(r"bins ([\d,]+) \(([\d,]+)/s\)\s+bars ([\d,]+)", output)
    if found is None:
        raise SystemExit(f"no summary in the aggregator output:\n{output[-2000:]}")
    done, rate, bars = (int(x.replace(",", "")) for x in found.groups())
    return BenchResult(symbols, exactly_once, done, float(rate), bars, usage.ru_maxrss / 1024)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--bins", type=int, default=300_000)
    parser.add_argument("--symbols", default="10,100,1000")
    parser.add_argument("--modes", default="eos,alo", help="eos (exactly-once) and/or alo (at-least-once)")
    args = parser.parse_args()
    print(f"{'symbols':>8} {'mode':>14} {'bins':>10} {'bins/s':>10} {'bars':>8} {'peak RSS MB':>12}")
    for symbols in (int(s) for s in args.symbols.split(",")):
        for mode in args.modes.split(","):
            r = run_once(args.brokers, args.bins, symbols, mode == "eos")
            label = "exactly-once" if r.exactly_once else "at-least-once"
            print(f"{r.symbols:>8} {label:>14} {r.bins:>10,} {r.bins_per_s:>10,.0f} {r.bars:>8,} "
                  f"{r.peak_rss_mb:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
