"""Offline aggregation, JSON lines to JSON lines, through the same window code as the Kafka processor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streaming.aggregate.dead_letters import decode_bin, late_record, poison_record
from streaming.aggregate.kinds import windows_for
from streaming.aggregate.windows import LateBin, WindowConfig
from streaming.kernel.errors import SourceError
from streaming.kernel.outputs import atomic_files
from streaming.kernel.records import Bar, Bin, DlqRecord, encode
from streaming.kernel.wallclock import now_ms


@dataclass(frozen=True)
class OfflineResult:
    """Counts of one offline run."""

    bins_in: int
    bars_out: int
    late: int
    poison: int
    duplicates: int = 0  # second copies of a bin_id (duplicate_bin)
    out_of_range: int = 0  # bins beyond the contract's bounds, alone or summed into their bar


def bars_of_bins(bins: Iterable[Bin], config: WindowConfig) -> tuple[list[Bar], list[DlqRecord]]:
    """Bars and late-bin DLQ records of one bin sequence (one partition), flushed at the end."""
    windows = windows_for(config)
    dlq: list[DlqRecord] = []
    bars: list[Bar] = []
    for offset, b in enumerate(bins):
        windows.add(b, offset, now_ms())
    windows.finish(now_ms())
    out, late = windows.drain()
    bars.extend(out)
    dlq.extend(late_record(x, "offline", {"offset": x.offset}, now_ms()) for x in late)
    return bars, dlq


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                stripped = line.strip()
                if stripped:
                    yield number, stripped
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None


def aggregate_file(src: Path, dst: Path, dlq_path: Path | None, config: WindowConfig) -> OfflineResult:
    """Read bins from `src` (JSON lines), write bars to `dst` and late/poison records to `dlq_path`."""
    if not src.is_file():
        raise SourceError(f"no such bins file: {src}")
    windows = windows_for(config)
    bins_in = bars_out = poison = 0
    refused: dict[str, int] = {}  # DLQ reason -> bins the windows did not count
    source = str(src)
    # Bars and DLQ appear together at their names only when the whole input was read.
    with atomic_files(dst, dlq_path) as (out, dlq_out):
        assert out is not None

        def write(bars: list[Bar], late: list[LateBin], clock: int) -> None:
            for bar in bars:
                out.write(encode(bar) + b"\n")
            for x in late:
                refused[x.reason] = refused.get(x.reason, 0) + 1
                if dlq_out is not None:
                    rec = late_record(x, source, {"file": source, "line": x.offset}, clock)
                    dlq_out.write(encode(rec) + b"\n")

        for line_no, raw in _lines(src):
            decoded = decode_bin(raw)
            clock = now_ms()
            if isinstance(decoded, tuple):
                if decoded[0] == "out_of_range":
                    refused["out_of_range"] = refused.get("out_of_range", 0) + 1
                else:
                    poison += 1
                if dlq_out is not None:
                    rec = poison_record(decoded[0], decoded[1], raw, source,
                                        {"file": source, "line": line_no}, clock)
                    dlq_out.write(encode(rec) + b"\n")
                continue
            bins_in += 1
            windows.add(decoded, line_no, clock)
            if windows.bars or windows.late:
                bars, late = windows.drain()
                bars_out += len(bars)
                write(bars, late, clock)
        windows.finish(now_ms())
        bars, late = windows.drain()
        bars_out += len(bars)
        write(bars, late, now_ms())
    late_count = refused.get("late", 0) + refused.get("late_beyond_horizon", 0)
    poison += refused.get("bad_window", 0)  # not a bin of these windows at all
    return OfflineResult(bins_in, bars_out, late_count, poison, refused.get("duplicate_bin", 0),
                         refused.get("out_of_range", 0))
