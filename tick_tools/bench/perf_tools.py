"""Section 1, the limit: Kafka's own ProducerPerformance / ConsumerPerformance on the same broker.

The record size is the size of a real bin's JSON, so "records/s" means the same thing for the
perf tools and for our stages. The tools come from the same Maven jars the broker runs from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.kernel.errors import BrokerError
from streaming.kernel.records import Bin, encode, make_bin_id
from tick_tools.bench.harness import Bench, Figure, ProcResult, run_measured

PRODUCER_CLASS = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_CLASS = "org.apache.kafka.tools.ConsumerPerformance"
# Their JVMs get a fixed heap so a perf run cannot crowd the broker on a small machine.
JAVA_OPTS = ["-Xms256m", "-Xmx512m"]

_PRODUCED = re.compile(
    r"(?P<n>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
    r"(?:, (?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th)?"
)


def sample_bin(symbol: str = "AAPL", start_ts_ms: int = 1_709_908_200_000, price: float = 171.2345) -> Bin:
    """A realistic bin (the values a replay of the synthetic day writes)."""
    return Bin(
        bin_id=make_bin_id(symbol, start_ts_ms), symbol=symbol, start_ts_ms=start_ts_ms,
        end_ts_ms=start_ts_ms + 10, window_ms=10, open=price, high=price + 0.02, low=price - 0.01,
        close=price + 0.01, volume=300, notional=round(300 * price, 4), trade_count=3, max_lateness_ms=0,
        api_send_ts_ms=None, source_event_ts_ms=start_ts_ms, ingest_ts_ms=1_764_000_000_000 + start_ts_ms % 997,
    )


def bin_record_size() -> int:
    """Bytes of one encoded bin: the record size the perf tools use."""
    return len(encode(sample_bin()))


def write_payload_file(path: Path, count: int = 5_000) -> Path:
    """Real bin JSON lines (varied symbols, prices, times) for ProducerPerformance --payload-file."""
    symbols = ["AAPL", "MSFT", "WDC", "IBM", "INTC", "SABC", "SXYZ", "NVDA"]
    rows = []
    for i in range(count):
        b = sample_bin(symbols[i % len(symbols)], 1_709_908_200_000 + 10 * i, 20 + (i * 7919 % 28_000) / 100)
        rows.append(encode(b).decode())
    path.write_text("\n".join(rows) + "\n")
    return path


def create_topic(brokers: str, name: str, partitions: int = 6) -> None:
    """A topic shaped like ticks.raw (CreateTime, delete policy)."""
    admin = AdminClient({"bootstrap.servers": brokers})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                              request_timeout=30)[name]
    try:
        fut.result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerError(f"creating topic {name} failed: {exc}") from None


@dataclass(frozen=True)
class ProducerResult:
    records: int
    records_per_s: float
    mb_per_s: float
    avg_latency_ms: float
    max_latency_ms: float
    p99_latency_ms: float | None


@dataclass(frozen=True)
class ConsumerResult:
    records: int
    records_per_s: float
    mb_per_s: float
    fetch_records_per_s: float
    fetch_mb_per_s: float
    rebalance_ms: float


def parse_producer(text: str) -> ProducerResult:
    """The final summary line of ProducerPerformance (interval lines and warnings are skipped)."""
    found = [m for m in _PRODUCED.finditer(text)]
    if not found:
        raise BrokerError(f"ProducerPerformance printed no summary:\n{text[-800:]}")
    m = found[-1]
    return ProducerResult(int(m["n"]), float(m["rps"]), float(m["mbps"]), float(m["avg"]), float(m["max"]),
                          float(m["p99"]) if m["p99"] else None)


def parse_consumer(text: str) -> ConsumerResult:
    """The CSV row after ConsumerPerformance's header (deprecation warnings are skipped)."""
    rows = [r for r in text.splitlines() if r.count(",") >= 9 and not r.lower().startswith(("warn", "start.time"))]
    if not rows:
        raise BrokerError(f"ConsumerPerformance printed no result:\n{text[-800:]}")
    cells = [c.strip() for c in rows[-1].split(",")]
    # start, end, MB, MB/s, nMsg, nMsg/s, rebalance ms, fetch ms, fetch MB/s, fetch nMsg/s
    return ConsumerResult(int(float(cells[4])), float(cells[5]), float(cells[3]), float(cells[9]),
                          float(cells[8]), float(cells[6]))


def producer_cmd(libs: Path, brokers: str, topic: str, records: int, size: int | None,
                 payload: Path | None = None, extra: list[str] | None = None) -> list[str]:
    """kafka-producer-perf-test: unthrottled, acks=all, idempotent (like our replay producer)."""
    source = ["--payload-file", str(payload)] if payload else ["--record-size", str(size)]
    return ["java", *JAVA_OPTS, "-cp", f"{libs}/*", PRODUCER_CLASS, "--bootstrap-server", brokers,
            "--topic", topic, "--num-records", str(records), *source, "--throughput", "-1",
            "--command-property", "acks=all", "enable.idempotence=true", *(extra or [])]


def consumer_cmd(libs: Path, brokers: str, topic: str, records: int, group: str,
                 extra: list[str] | None = None) -> list[str]:
    """kafka-consumer-perf-test: read `records` from the beginning in a fresh group."""
    return ["java", *JAVA_OPTS, "-cp", f"{libs}/*", CONSUMER_CLASS, "--bootstrap-server", brokers,
            "--topic", topic, "--num-records", str(records), "--group", group, "--timeout", "60000",
            *(["--command-property", *extra] if extra else [])]


def _run(bench: Bench, section: str, cmd: list[str], timeout_s: float = 900) -> ProcResult:
    bench.command(section, cmd)
    result = run_measured(cmd, env=bench.env(), timeout_s=timeout_s)
    if result.rc != 0:
        raise BrokerError(f"{cmd[6]} failed (exit {result.rc}):\n{result.tail()}")
    return result


def run_consumer_perf(bench: Bench, topic: str, records: int, group: str, section: str = "limit",
                      read_committed: bool = False) -> ConsumerResult:
    """ConsumerPerformance over `records` of `topic` (read_committed like the aggregator, if asked)."""
    extra = ["isolation.level=read_committed"] if read_committed else None
    res = _run(bench, section, consumer_cmd(bench.libs, bench.brokers, topic, records, group, extra))
    return parse_consumer(res.text("out"))


def run_limit(bench: Bench) -> None:
    """Section 1: producer and consumer perf tests with the bin record size, plus a run with real bin payloads."""
    size = bin_record_size()
    n = bench.sizes.perf_records
    topic = "bench.perf.raw"
    create_topic(bench.brokers, topic)
    bench.log(f"[limit] ProducerPerformance: {n:,} records of {size} B (a real bin's JSON)")
    prod = parse_producer(_run(bench, "limit", producer_cmd(bench.libs, bench.brokers, topic, n, size)).text())
    bench.log(f"[limit] producer {prod.records_per_s:,.0f} rec/s {prod.mb_per_s:.1f} MB/s")
    cons = run_consumer_perf(bench, topic, n, "bench-perf-consumer")
    bench.log(f"[limit] consumer {cons.records_per_s:,.0f} rec/s (fetch {cons.fetch_records_per_s:,.0f} rec/s)")
    # The same tool with real bin JSON payloads and our replay producer's batching and lz4:
    # the ceiling for exactly the bytes and settings the replay sends.
    payload = write_payload_file(bench.run_dir / "bin_payloads.jsonl")
    topic2 = "bench.perf.raw.lz4"
    create_topic(bench.brokers, topic2)
    tuned = producer_cmd(bench.libs, bench.brokers, topic2, n, None, payload,
                         ["linger.ms=5", "batch.size=1000000", "compression.type=lz4"])
    prod2 = parse_producer(_run(bench, "limit", tuned).text())
    bench.log(f"[limit] producer (bin payloads, lz4, linger 5) {prod2.records_per_s:,.0f} rec/s")
    bench.sections["limit"] = {
        "record_size_bytes": size, "records": n, "producer": prod.__dict__, "consumer": cons.__dict__,
        "producer_bin_payload_lz4": prod2.__dict__,
    }
    bench.add(Figure("limit", "producer perf test", prod.records_per_s, "records/s",
                     note=f"{prod.mb_per_s:.1f} MB/s, {size} B records, acks=all, idempotent; "
                          f"p99 latency {prod.p99_latency_ms} ms"))
    bench.add(Figure("limit", "producer perf test, real bin payloads, lz4, linger.ms=5", prod2.records_per_s,
                     "records/s", note=f"{prod2.mb_per_s:.1f} MB/s (our replay producer's settings)"))
    bench.add(Figure("limit", "consumer perf test", cons.records_per_s, "records/s",
                     note=f"{cons.mb_per_s:.1f} MB/s; fetch-only {cons.fetch_records_per_s:,.0f} records/s"))
