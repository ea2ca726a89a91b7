"""Section 6: peak RSS of the replay and the aggregator as the stream grows and as symbols grow.

Each point is a fresh replay (speed 0) into fresh topics, then one aggregator over all of it
(`--until-idle`), both as child processes; the kernel's high-water mark (VmHWM) is their peak.
"Flat in stream length" is judged as: the largest stream's peak within 25% of the smallest's.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient

from tick_tools.bench.aggregate_bench import run_ours
from tick_tools.bench.harness import Bench, Figure
from tick_tools.bench.replay_bench import make_topics, run_replay, synth_files

FLAT_TOLERANCE = 1.25


def _point(bench: Bench, symbols: int, ticks: int) -> dict[str, Any]:
    files = synth_files(bench, symbols, max(1, ticks // symbols))
    topics = make_topics(bench, f"mem-{symbols}x{ticks}")
    rep = run_replay(bench, files, topics, "memory")
    agg = run_ours(bench, topics.raw, True, None, section="memory", label=f"mem-{symbols}")
    # The topics of a point are not needed again: free the broker's disk for the next, larger one.
    admin = AdminClient({"bootstrap.servers": bench.brokers})
    admin.delete_topics([topics.raw, topics.agg, topics.dlq, agg.output_topic])
    return {"symbols": symbols, "ticks": rep.ticks, "bins": rep.bins, "replay_peak_rss_mb": rep.peak_rss_mb,
            "replay_ticks_per_s": rep.ticks_per_s, "aggregator_peak_rss_mb": agg.peak_rss_mb,
            "aggregator_bins_per_s": agg.rate, "bars": agg.bars}


def run_memory_section(bench: Bench) -> None:
    """Stream length at 100 symbols, then symbol count at a fixed length."""
    s = bench.sizes
    lengths = []
    for n in s.memory_lengths:
        bench.log(f"[memory] stream length {n:,} ticks (100 symbols)")
        point = _point(bench, 100, n)
        bench.log(f"[memory]   replay {point['replay_peak_rss_mb']:.0f} MB, aggregator "
                  f"{point['aggregator_peak_rss_mb']:.0f} MB")
        lengths.append(point)
    symbols = []
    for k in s.memory_symbols:
        bench.log(f"[memory] {k:,} symbols ({s.memory_symbols_ticks:,} ticks)")
        point = _point(bench, k, s.memory_symbols_ticks)
        bench.log(f"[memory]   replay {point['replay_peak_rss_mb']:.0f} MB, aggregator "
                  f"{point['aggregator_peak_rss_mb']:.0f} MB")
        symbols.append(point)
    bench.sections["memory"] = {"by_length": lengths, "by_symbols": symbols}
    for stage in ("replay", "aggregator"):
        key = f"{stage}_peak_rss_mb"
        first, last = lengths[0], lengths[-1]
        growth = last[key] / first[key] if first[key] else None
        series = ", ".join(f"{p['ticks'] / 1e6:g}M: {p[key]:.0f} MB" for p in lengths)
        bench.add(Figure("memory", f"{stage} peak RSS at {last['ticks'] / 1e6:g}M ticks", last[key], "MB", growth,
                         f"peak at {first['ticks'] / 1e6:g}M ticks", "flat in stream length (<= 1.25x)",
                         None if growth is None else growth <= FLAT_TOLERANCE,
                         series + ("" if growth is None or growth <= FLAT_TOLERANCE
                                   else f"; grows {growth:.2f}x over {last['ticks'] / first['ticks']:.0f}x the ticks")))
        by_sym = ", ".join(f"{p['symbols']:,} symbols: {p[key]:.0f} MB" for p in symbols)
        if stage == "replay":
            # Same total ticks spread over more files: what the per-file merge costs.
            bench.add(Figure("memory", f"replay throughput at {symbols[-1]['symbols']:,} symbols",
                             symbols[-1]["replay_ticks_per_s"], "ticks/s",
                             symbols[-1]["replay_ticks_per_s"] / symbols[0]["replay_ticks_per_s"]
                             if symbols[0]["replay_ticks_per_s"] else None, f"at {symbols[0]['symbols']} symbols",
                             note=", ".join(f"{p['symbols']:,} symbols: {p['replay_ticks_per_s']:,.0f} ticks/s"
                                            for p in symbols)))
        bench.add(Figure("memory", f"{stage} peak RSS at {symbols[-1]['symbols']:,} symbols", symbols[-1][key], "MB",
                         symbols[-1][key] / symbols[0][key] if symbols[0][key] else None,
                         f"peak at {symbols[0]['symbols']} symbols", note=by_sym))
