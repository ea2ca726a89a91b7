"""Issue 15, the validator as a gate and the file outputs (items 2, 11, 12, 13).

Every file is generated here (tmp_path); the CLI runs as a subprocess where the point is the
exit code, the one-line error or the absence of a traceback; expected values come from the
rows the test wrote, not from the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streaming.aggregate import offline as aggregate_offline
from streaming.kernel.errors import SourceError
from streaming.kernel.settings import PROJECT_ROOT, Settings, load_settings
from streaming.replay.engine import ReplayEngine
from streaming.replay.offline import replay_to_jsonl
from streaming.validate.kafka_reader import TopicContents
from streaming.validate.run import validate_files, validate_kafka
from streaming.validate.ticks import read_kibot

NEW_YORK = ZoneInfo("America/New_York")
DAY = "07/01/2024"


def row(second: int, price: float = 10.0, size: int | str = 100, *, day: str = DAY, extra: str = "") -> str:
    """A Kibot row `second` seconds after 09:30:00 on `day`."""
    hh, rest = divmod(9 * 3600 + 30 * 60 + second, 3600)
    mm, ss = divmod(rest, 60)
    return f"{day},{hh:02d}:{mm:02d}:{ss:02d},{price:.2f},{price - 0.01:.2f},{price + 0.01:.2f},{size}{extra}"


def epoch_ms(second: int) -> int:
    """Event time of `row(second)` computed with zoneinfo (independent of polars)."""
    hh, rest = divmod(9 * 3600 + 30 * 60 + second, 3600)
    mm, ss = divmod(rest, 60)
    return int(datetime(2024, 7, 1, hh, mm, ss, tzinfo=NEW_YORK).timestamp() * 1000)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m streaming ...` as a user runs it (this tree's code)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, env=env, timeout=timeout)


def chain(ticks: Path, tmp_path: Path, *replay_args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """replay -> aggregate -> validate through the CLI; the validation's process and its JSON report."""
    bins, bars, dlq, report = (tmp_path / n for n in ("bins.jsonl", "bars.jsonl", "dlq.jsonl", "report.json"))
    done = cli("replay", str(ticks), "--to", str(bins), "--dlq", str(dlq), "--quiet", *replay_args)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("aggregate", "--from", str(bins), "--to", str(bars))
    assert done.returncode == 0, done.stdout + done.stderr
    checked = cli("validate", "--bins", str(bins), "--bars", str(bars), "--ticks", str(ticks), "--json", str(report))
    assert "Traceback" not in checked.stderr + checked.stdout, checked.stderr
    return checked, json.loads(report.read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def good_rows(n: int) -> list[str]:
    """n in-order ticks, two per second, prices and sizes varying."""
    return [row(i // 2, 10 + (i % 7) / 100, 100 + i) for i in range(n)]


# ---------------------------------------------------------------- item 2: outputs written atomically


def leftovers(folder: Path, name: str) -> list[Path]:
    """Temporary files of the output `name` left in `folder`."""
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}.tmp"))


def settings(**replay: object) -> Settings:
    return load_settings(replay=replay)  # type: ignore[arg-type]


def test_replay_that_fails_midway_leaves_no_output_and_keeps_the_previous(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(3000)) + "\n")
    out, dlq = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl"
    write(dlq, b"previous complete dlq\n")
    original = ReplayEngine.steps

    def failing(self: ReplayEngine) -> Iterator:  # type: ignore[type-arg]
        for index, step in enumerate(original(self)):
            if index == 1:
                raise SourceError("disk gone")
            yield step

    monkeypatch.setattr(ReplayEngine, "steps", failing)
    with pytest.raises(SourceError):
        replay_to_jsonl([str(ticks)], out, dlq, settings(chunk_rows=1000))
    assert not out.exists()
    assert dlq.read_bytes() == b"previous complete dlq\n"
    assert leftovers(tmp_path, "bins.jsonl") == [] and leftovers(tmp_path, "dlq.jsonl") == []


def test_aggregate_that_fails_midway_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(400)) + "\n")
    bins, bars, dlq = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "agg_dlq.jsonl"
    replay_to_jsonl([str(ticks)], bins, None, settings())
    write(bars, b"previous complete bars\n")
    original, seen = aggregate_offline.decode_bin, []

    def failing(raw: bytes):  # type: ignore[no-untyped-def]
        seen.append(raw)
        if len(seen) == 300:  # after the first bars were written
            raise SourceError("disk gone")
        return original(raw)

    monkeypatch.setattr(aggregate_offline, "decode_bin", failing)
    from streaming.aggregate.processor import window_config

    with pytest.raises(SourceError):
        aggregate_offline.aggregate_file(bins, bars, dlq, window_config(load_settings()))
    assert bars.read_bytes() == b"previous complete bars\n"
    assert not dlq.exists()
    assert leftovers(tmp_path, "bars.jsonl") == [] and leftovers(tmp_path, "agg_dlq.jsonl") == []


def kill_when(proc: subprocess.Popen[bytes], started: Callable[[], bool], sig: int, timeout_s: float = 120) -> None:
    """Send `sig` as soon as `started()` holds (the stage has begun writing its output)."""
    deadline = time.monotonic() + timeout_s
    while not started():
        assert proc.poll() is None, "the stage ended before it was killed"
        assert time.monotonic() < deadline, "the stage never began writing"
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(60)


def written(folder: Path, name: str) -> Callable[[], bool]:
    """True once the output `name` (at its name or under a temporary one) holds bytes."""

    def check() -> bool:
        target = folder / name
        paths = [*leftovers(folder, name), *([target] if target.exists() else [])]
        return any(p.stat().st_size > 0 for p in paths if p.exists())

    return check


def popen(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_replay_killed_mid_write_leaves_no_file_at_the_output_name(tmp_path: Path) -> None:
    # Paced at 4x over 40 s of ticks: the replay writes its bins over ten seconds.
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(row(s // 2) for s in range(80)) + "\n")
    proc = popen("replay", str(ticks), "--to", str(tmp_path / "bins.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl"),
                 "--speed", "4", "--commit-interval-ms", "20", "--quiet")
    kill_when(proc, written(tmp_path, "bins.jsonl"), signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "bins.jsonl").exists()
    assert not (tmp_path / "dlq.jsonl").exists()


def test_replay_stopped_by_ctrl_c_removes_its_part_and_keeps_the_previous_file(tmp_path: Path) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(row(s // 2) for s in range(80)) + "\n")
    out = write(tmp_path / "bins.jsonl", b"previous complete bins\n")
    proc = popen("replay", str(ticks), "--to", str(out), "--speed", "4", "--commit-interval-ms", "20", "--quiet")
    # Begun: bytes under the temporary name, or (writing in place) the previous file truncated.
    kill_when(proc, lambda: (written(tmp_path, "bins.jsonl")() and out.read_bytes() != b"previous complete bins\n")
              or any(p.stat().st_size for p in leftovers(tmp_path, "bins.jsonl")), signal.SIGINT)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.returncode == 130, stdout
    assert "stopped by SIGINT" in stdout and "not written" in stdout
    assert out.read_bytes() == b"previous complete bins\n"
    assert leftovers(tmp_path, "bins.jsonl") == []


def test_aggregate_killed_mid_write_keeps_the_previous_complete_file(tmp_path: Path) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(row(i // 40, 10 + (i % 9) / 100) for i in range(60_000)) + "\n")
    bins = tmp_path / "bins.jsonl"
    replay_to_jsonl([str(ticks)], bins, None, settings())
    bars = write(tmp_path / "bars.jsonl", b"previous complete bars\n")

    def begun() -> bool:
        return written(tmp_path, "bars.jsonl")() and (bool(leftovers(tmp_path, "bars.jsonl"))
                                                      or bars.read_bytes() != b"previous complete bars\n")

    proc = popen("aggregate", "--from", str(bins), "--to", str(bars))
    kill_when(proc, lambda: begun() or bars.stat().st_size == 0, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert bars.read_bytes() == b"previous complete bars\n"


def test_a_completed_run_replaces_the_output_with_the_whole_file(tmp_path: Path) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(50)) + "\n")
    out = write(tmp_path / "bins.jsonl", b"old\n")
    done = cli("replay", str(ticks), "--to", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert sum(b["trade_count"] for b in jsonl(out)) == 50
    assert leftovers(tmp_path, "bins.jsonl") == []
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_an_output_that_cannot_be_written_is_one_line_error(tmp_path: Path) -> None:
    ticks = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(20)) + "\n")
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    replay_to_jsonl([str(ticks)], bins, None, settings())
    aggregate_offline.aggregate_file(bins, bars, None, _window_config())
    blocked = ticks / "sub" / "out.jsonl"  # a folder under a file: nothing can be created there
    for args in (["replay", str(ticks), "--to", str(blocked)], ["aggregate", "--from", str(bins), "--to", str(blocked)],
                 ["validate", "--bins", str(bins), "--bars", str(bars), "--json", str(blocked)]):
        done = cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines() == [f"error: cannot write {blocked}: Not a directory"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- item 11: never PASS on nothing


def test_a_tick_file_that_parses_to_nothing_fails(tmp_path: Path) -> None:
    good = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(40)) + "\n")
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    replay_to_jsonl([str(good)], bins, None, settings())
    assert cli("aggregate", "--from", str(bins), "--to", str(bars)).returncode == 0
    junk = write(tmp_path / "AAA_junk.txt", "01/02/2024,10:00:00,abc,1,1,1\n" + "01/01/2024,x,y\n" * 5)
    done = cli("validate", "--bins", str(bins), "--bars", str(bars), "--ticks", str(junk))
    assert done.returncode == 1, done.stdout
    assert "verdict: FAIL" in done.stdout
    assert "no ticks parsed" in done.stdout and "6 rejected" in done.stdout


@pytest.mark.parametrize("which", ["bins", "bars", "both"])
def test_empty_bins_or_bars_files_fail(tmp_path: Path, which: str) -> None:
    good = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(40)) + "\n")
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    replay_to_jsonl([str(good)], bins, None, settings())
    assert cli("aggregate", "--from", str(bins), "--to", str(bars)).returncode == 0
    if which in ("bins", "both"):
        bins.write_bytes(b"")
    if which in ("bars", "both"):
        bars.write_bytes(b"\n")
    report = validate_files(bins, bars)
    assert not report.ok
    emptied = ["bins", "bars"] if which == "both" else [which]
    for label in emptied:
        assert any(p.startswith(f"no {label} in ") for p in report.problems), report.problems
    done = cli("validate", "--bins", str(bins), "--bars", str(bars))
    assert done.returncode == 1 and "nothing to check" in done.stdout


def test_ticks_of_a_symbol_the_outputs_do_not_hold_fail_with_the_reason(tmp_path: Path) -> None:
    good = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(40)) + "\n")
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    replay_to_jsonl([str(good)], bins, None, settings())
    aggregate_offline.aggregate_file(bins, bars, None, _window_config())
    other = write(tmp_path / "ZZZ_t.txt", "\n".join(good_rows(40)) + "\n")
    report = validate_files(bins, bars, [other])
    assert not report.ok
    assert any("no symbol of the tick files (ZZZ)" in p for p in report.problems), report.problems


def _window_config():  # type: ignore[no-untyped-def]
    from streaming.aggregate.processor import window_config

    return window_config(load_settings())


def test_kafka_validation_of_empty_topics_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import streaming.validate.kafka_reader as kafka_reader

    def empty(kafka: object, topic: str, timeout_s: float) -> TopicContents:
        return TopicContents(topic, [], [], 1)

    monkeypatch.setattr(kafka_reader, "read_topic", empty)
    report = validate_kafka(load_settings().kafka)
    assert not report.ok
    assert any(p.startswith("no bins in kafka") for p in report.problems), report.problems
    assert any(p.startswith("no bars in kafka") for p in report.problems), report.problems


# ---------------------------------------------------------------- item 12: no traceback on odd tick files


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty", b""),
        ("blank_only", b"\n\n   \n\t\n"),
        ("cr_only", b"\r\r\r\r"),
        ("crlf_blank", b"\r\n\r\n"),
    ],
)
def test_tick_files_without_ticks_fail_in_one_line(tmp_path: Path, name: str, content: bytes) -> None:
    ticks = write(tmp_path / f"AAA_{name}.txt", content)
    done, report = chain(ticks, tmp_path)
    assert done.returncode == 1
    assert report["totals"]["ticks"] == 0
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert any("no ticks parsed" in p for p in problems), done.stdout


def test_latin1_tick_file_is_checked_with_the_bad_row_counted(tmp_path: Path) -> None:
    rows = [r.encode() for r in good_rows(20)]
    rows.insert(3, "01/07/2024,09:30:01,caf\xe9,1,1,5".encode("latin-1"))  # a Latin-1 byte in the price
    rows.insert(8, row(3, size="12").encode() + b"\xb0")  # a Latin-1 degree sign after the size
    ticks = write(tmp_path / "AAA_latin.txt", b"\n".join(rows) + b"\n")
    done, report = chain(ticks, tmp_path)
    assert done.returncode == 0, done.stdout
    assert report["totals"]["ticks"] == 20
    assert report["totals"]["tick_rows_rejected"] == 2
    assert read_kibot(ticks).reasons == {"malformed": 2}


def test_a_short_row_near_the_top_is_a_counted_reject(tmp_path: Path) -> None:
    rows = good_rows(30)
    rows.insert(1, "07/01/2024,09:30:00,10.00")
    rows.insert(3, "07/01/2024")
    ticks = write(tmp_path / "AAA_short.txt", "\n".join(rows) + "\n")
    done, report = chain(ticks, tmp_path)
    assert done.returncode == 0, done.stdout
    assert report["totals"]["ticks"] == 30 and report["totals"]["tick_rows_rejected"] == 2


def test_a_binary_tick_file_is_one_line_error(tmp_path: Path) -> None:
    good = write(tmp_path / "AAA_t.txt", "\n".join(good_rows(10)) + "\n")
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    replay_to_jsonl([str(good)], bins, None, settings())
    aggregate_offline.aggregate_file(bins, bars, None, _window_config())
    binary = write(tmp_path / "AAA_bin.txt", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    done = cli("validate", "--bins", str(bins), "--bars", str(bars), "--ticks", str(binary))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "binary" in done.stderr


# ---------------------------------------------------------------- item 13: the replay's acceptance rules


def hostile_mix() -> tuple[list[str], int, int, dict[str, int]]:
    """Rows the replay keeps, rejects and skips: (rows, ticks kept, skipped, DLQ reasons)."""
    rows = [
        row(0, 10.00, 100),
        row(0, 10.05, 0),  # size 0: kept (a zero-volume tick still sets OHLC and counts a trade)
        row(1, 10.10, 50, extra=",9"),  # 7 fields: malformed
        row(1, 10.10, "100.0"),  # size not an integer literal: malformed
        row(1, 10.10, 40).replace(",10.09,", ",bid,"),  # bid not a number: malformed
        row(1, 10.20, 30),
        "",  # blank: skipped
        "Date,Time,Price,Bid,Ask,Size",  # a header mid-file: skipped
        row(2, 10.30, -5),  # negative size: bad_size
        row(2, 0.0, 10),  # price 0: bad_price
        row(2, 10.30, 10).replace("09:30:02", "25:30:02"),  # bad_time
        row(3, 10.40, 0),  # a second with size-0 ticks only: a bar of volume 0, vwap = close
        row(3, 10.45, 0),
        row(4, 10.50, 70),
        row(4, 10.55, 80),
    ]
    return rows, 7, 2, {"bad_price": 1, "bad_size": 1, "bad_time": 1, "malformed": 3}


def test_validator_accepts_exactly_the_rows_the_replay_accepts(tmp_path: Path) -> None:
    rows, kept, skipped, reasons = hostile_mix()
    ticks = write(tmp_path / "AAA_mix.txt", "\n".join(rows) + "\n")
    summary = replay_to_jsonl([str(ticks)], tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl", settings())
    assert (summary.ticks, summary.skipped, summary.dlq_by_reason) == (kept, skipped, reasons)
    parsed = read_kibot(ticks)
    assert parsed.ticks.height == kept and parsed.skipped == skipped and parsed.reasons == reasons
    assert parsed.lines == len(rows) == kept + parsed.rejected + parsed.skipped
    assert parsed.ticks["size"].to_list() == [100, 0, 30, 0, 0, 70, 80]
    assert parsed.ticks["ts_ms"].to_list()[:2] == [epoch_ms(0), epoch_ms(0)]


def test_correct_output_of_hostile_rows_passes(tmp_path: Path) -> None:
    rows, kept, _skipped, _reasons = hostile_mix()
    ticks = write(tmp_path / "AAA_mix.txt", "\n".join(rows) + "\n")
    done, report = chain(ticks, tmp_path)
    assert done.returncode == 0, done.stdout
    assert report["verdict"] == "PASS" and report["totals"]["ticks"] == kept
    bars = {b["start_ts_ms"]: b for b in jsonl(tmp_path / "bars.jsonl")}
    zero = bars[epoch_ms(3)]
    assert (zero["volume"], zero["trade_count"], zero["close"], zero["vwap"]) == (0, 2, 10.45, 10.45)
    first = bars[epoch_ms(0)]
    assert (first["volume"], first["trade_count"], first["open"], first["close"]) == (100, 2, 10.00, 10.05)


def test_validator_models_the_spreading_of_out_of_order_seconds(tmp_path: Path) -> None:
    # Second 5, then 4 (within the lateness), then 5 again: three runs, each spread on its own.
    rows = [row(5, 10.0, 1), row(5, 10.1, 2), row(4, 10.2, 3), row(5, 10.3, 4), row(5, 10.4, 5), row(6, 10.5, 6)]
    ticks = write(tmp_path / "AAA_ooo.txt", "\n".join(rows) + "\n")
    done, report = chain(ticks, tmp_path, "--max-late-ms", "2000")
    assert done.returncode == 0, done.stdout
    bins = jsonl(tmp_path / "bins.jsonl")
    # Each run of second 5 has two ticks: +0 and +500 ms, so the bins at +0 and +500 hold two ticks each.
    starts = sorted((b["start_ts_ms"] - epoch_ms(5), b["trade_count"]) for b in bins if b["start_ts_ms"] >= epoch_ms(5)
                    and b["start_ts_ms"] < epoch_ms(6))
    assert starts == [(0, 2), (500, 2)]
    assert report["totals"]["ticks"] == 6


def test_validator_builds_bars_over_bins_in_event_time_order(tmp_path: Path) -> None:
    # Second 5 (a +0 ms, b +500 ms), a late-but-allowed tick of second 4, then d of second 5 again
    # (+0 ms, a new run): the bar's close is the close of its latest bin (b), not the last tick read (d).
    rows = [row(5, 10.0, 1), row(5, 10.1, 2), row(4, 10.2, 3), row(5, 10.3, 4), row(6, 10.5, 6)]
    ticks = write(tmp_path / "AAA_late.txt", "\n".join(rows) + "\n")
    done, report = chain(ticks, tmp_path, "--max-late-ms", "2000")
    assert done.returncode == 0, done.stdout
    bar = next(b for b in jsonl(tmp_path / "bars.jsonl") if b["start_ts_ms"] == epoch_ms(5))
    assert (bar["open"], bar["close"], bar["volume"], bar["bin_count"]) == (10.0, 10.1, 7, 2)
    assert report["verdict"] == "PASS" and report["totals"]["ticks"] == 5
