"""Smoke tests of the benchmark harness (tick_tools/bench): parsers, profiles, and the peer job.

No timing is asserted anywhere: only that the pieces run and that our aggregator and the
Quix Streams job produce the same bars on a tiny topic.
"""

from __future__ import annotations

import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from streaming.kernel.records import bin_decoder, encode
from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.bench import harness
from tick_tools.bench.aggregate_bench import compare_bars, read_bars, run_ours, run_quix
from tick_tools.bench.harness import Bench, Sizes, run_measured
from tick_tools.bench.perf_tools import bin_record_size, parse_consumer, parse_producer
from tick_tools.bench.profiling import self_times
from tick_tools.bench.replay_bench import SYNTH_DATE, make_topics, run_replay
from tick_tools.broker.runner import LocalCluster, fetch_jars

PRODUCER_OUT = """\
WARN the --producer-props option is deprecated
150000 records sent, 30000.0 records/sec (10.10 MB/sec), 5.1 ms avg latency, 420.0 ms max latency.
300000 records sent, 53927.736833 records/sec (18.15 MB/sec), 1143.34 ms avg latency, 1666.00 ms max latency, \
1100 ms 50th, 1500 ms 95th, 1637 ms 99th, 1660 ms 99.9th.
"""

CONSUMER_OUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, \
fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-24 19:09:40:100, 2026-11-24 19:09:42:411, 100.9, 43.7015, 300000, 129813.9334, 1006, 1305, 77.3901, \
229885.0575
"""


def test_perf_tool_outputs_are_parsed() -> None:
    prod = parse_producer(PRODUCER_OUT)
    assert (prod.records, prod.records_per_s, prod.mb_per_s, prod.p99_latency_ms) == (300000, 53927.736833, 18.15,
                                                                                       1637.0)
    cons = parse_consumer(CONSUMER_OUT)
    assert (cons.records, cons.records_per_s, cons.fetch_records_per_s) == (300000, 129813.9334, 229885.0575)


def test_record_size_is_a_real_bin() -> None:
    from tick_tools.bench.perf_tools import sample_bin

    raw = encode(sample_bin())
    assert bin_decoder.decode(raw).symbol == "AAPL"
    assert bin_record_size() == len(raw)


def test_self_time_folds_the_profile_tree() -> None:
    tree = {"root_frame": {"function": "main", "file_path_short": "a.py", "line_no": 1, "time": 1.0, "children": [
        {"function": "hot", "file_path_short": "b.py", "line_no": 2, "time": 0.7, "children": []},
        {"function": "warm", "file_path_short": "c.py", "line_no": 3, "time": 0.2, "children": []},
    ]}}
    total, frames = self_times(tree)
    assert total == 1.0
    assert [name.split(" ")[0] for name, _ in frames] == ["hot", "warm", "main"]


def test_native_time_is_charged_to_our_calling_function() -> None:
    tree = {"root_frame": {"function": "<module>", "file_path": "runpy.py", "time": 1.0, "children": [
        {"function": "_process", "file_path": "/x/streaming/aggregate/processor.py", "line_no": 9, "time": 0.9,
         "children": [{"function": "consume", "file_path": "<built-in>", "time": 0.6, "children": []}]},
    ]}}
    _, frames = self_times(tree, by_our_caller=True)
    assert frames[0][0].startswith("_process") and abs(frames[0][1] - 0.9) < 1e-9


def test_measured_child_reports_peak_rss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child fills 50 MiB and holds them until the harness has sampled it once after that: peak >= 50 MB."""
    release = tmp_path / "release"
    allocated = threading.Event()
    original = harness._tree_peak

    def sampled(proc: Any) -> float:
        peak = original(proc)
        if allocated.is_set():  # this sample was taken while the 50 MiB were in use: the child may go
            release.touch()
        return peak

    monkeypatch.setattr(harness, "_tree_peak", sampled)
    child = ("import pathlib, sys, time\nx = b'\\x01' * (50 * 2**20)\nprint('allocated', flush=True)\n"
             "while not pathlib.Path(sys.argv[1]).exists():\n    time.sleep(0.01)\nprint('ok')")

    def on_line(line: harness.Line) -> None:
        if line.text == "allocated":
            allocated.set()

    res = run_measured([sys.executable, "-c", child, str(release)], timeout_s=60, cwd=tmp_path, on_line=on_line)
    assert res.rc == 0 and not res.timed_out and res.text("out") == "allocated\nok"
    # peak_rss_mb is in MiB (VmHWM / 1024): 50 MiB of touched bytes plus an interpreter (about 10 MiB).
    assert 50 <= res.peak_rss_mb < 50 + 100, res.peak_rss_mb


@pytest.mark.kafka
def test_quix_job_and_our_aggregator_make_the_same_bars(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    from streaming.sources.synth import write_synth

    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    bench = Bench(True, Sizes.quick(), tmp_path, kafka_cluster.bootstrap, fetch_jars(PROJECT_ROOT / ".cache" / "kafka"),
                  env_file, log=lambda _line: None)
    files = [f.path for f in write_synth(4, 400, 3, date.fromisoformat(SYNTH_DATE), tmp_path / "synth")]
    topics = make_topics(bench, "test")
    replayed = run_replay(bench, files, topics, "test", timeout_s=120)
    assert replayed.ticks == 1600 and replayed.bins > 0

    ours = run_ours(bench, topics.raw, True, None, label="test-ours")
    peer = run_quix(bench, topics.raw, replayed.bins, "exactly-once", label="test-quix")
    assert ours.bins == replayed.bins and peer.bins == replayed.bins

    check = compare_bars(read_bars(bench.brokers, ours.output_topic), read_bars(bench.brokers, peer.output_topic))
    assert check["common"] > 0
    assert check["mismatched"] == 0, check["examples"]
    assert check["only_quix"] == 0
    # Quix final() closes a window only on a later message of its partition: each symbol's last window(s)
    # stay open at the end of the input, where our idle timeout flushes them.
    assert check["only_ours"] <= 2 * 4


def test_history_bars_are_the_aggregators_contract_in_its_order() -> None:
    """The history section's synthetic bars decode as Bars, are consistent OHLC, and come in event-time order."""
    from streaming.kernel.records import bar_decoder
    from tick_tools.bench.history_bench import _sessions, session_bars

    sessions = _sessions(12)
    days = [d for d, _, _ in sessions]
    assert "2024-03-29" not in days  # Good Friday is no session
    before, after = sessions[days.index("2024-03-08")], sessions[days.index("2024-03-11")]
    assert before[1] % 86_400_000 == (14 * 60 + 30) * 60_000  # 09:30 EST = 14:30 UTC
    assert after[1] % 86_400_000 == (13 * 60 + 30) * 60_000  # 09:30 EDT = 13:30 UTC (DST from 2024-03-10)
    _, open_ms, close_ms = sessions[0]
    frame = session_bars(open_ms, close_ms, ["AAA", "BBB"], 0.4, seed=1)
    bars = [bar_decoder.decode(line) for line in frame.write_ndjson().encode().splitlines()]
    assert len(bars) == frame.height
    assert 0.35 < len(bars) / (2 * (close_ms - open_ms) / 1000) < 0.45
    starts = [b.start_ts_ms for b in bars]
    assert starts == sorted(starts) and open_ms <= starts[0] and starts[-1] < close_ms
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    assert all(b.bar_id == f"{b.symbol}-{b.start_ts_ms:013d}-time-1s" for b in bars)
