"""What a bar is cut by: its kind and size (pure, no I/O).

A `BarSpec` travels on every bar (`Bar.spec`, its text form), ends every `bar_id`
(`<SYMBOL>-<start_ms 13 digits>-<spec>`) and names the bar stream's default topic
(`ticks.agg.1s`) and Dagster asset (`ticks_agg_1s`). Bars of two specs therefore never share
an id, and an aggregator of another size writes to a topic of its own by default.

The text form is canonical, one text per spec: `time-1s`, `time-5s`, `time-60s` (whole
seconds in `s`) and `time-250ms` (anything else in `ms`). `parse_spec` refuses any other
spelling (`time-1000ms`, `time-01s`), so two texts never mean the same spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

BarKind = Literal["time"]
BAR_KINDS: Final[tuple[BarKind, ...]] = ("time",)
_TEXT = re.compile(r"(?P<kind>[a-z]+)-(?P<size>[1-9][0-9]*)(?P<unit>ms|s)")
# `<SYMBOL>-<start 13 digits>-<kind>-<size>`: the symbol may hold '-', the rest is fixed shape.
_BAR_ID = re.compile(r"(?P<symbol>.+)-(?P<start>[0-9]{13})-(?P<spec>[a-z]+-[1-9][0-9]*(?:ms|s))")


class BarSpecError(ValueError):
    """A text that is not the canonical form of a bar spec (or a bar id that carries none)."""


@dataclass(frozen=True, order=True)
class BarSpec:
    """The kind and size of a bar: time bars of `size_ms` milliseconds, epoch aligned."""

    kind: BarKind
    size_ms: int

    def __post_init__(self) -> None:
        if self.kind not in BAR_KINDS:
            raise BarSpecError(f"unknown bar kind {self.kind!r} (known: {', '.join(BAR_KINDS)})")
        if isinstance(self.size_ms, bool) or not isinstance(self.size_ms, int) or self.size_ms < 1:
            raise BarSpecError(f"bar size must be a positive whole number of ms, got {self.size_ms!r}")

    @property
    def size_text(self) -> str:
        """The size alone: `1s`, `5s`, `250ms`."""
        return f"{self.size_ms // 1000}s" if self.size_ms % 1000 == 0 else f"{self.size_ms}ms"

    @property
    def text(self) -> str:
        """The canonical text form, e.g. `time-1s` (what `Bar.spec` and the bar_id carry)."""
        return f"{self.kind}-{self.size_text}"

    @property
    def label(self) -> str:
        """For people: `1 s`, `250 ms` (a time bar is named by its size alone)."""
        return self.size_text.replace("ms", " ms") if self.size_text.endswith("ms") else f"{self.size_text[:-1]} s"

    def __str__(self) -> str:
        return self.text


DEFAULT_BAR_SPEC: Final = BarSpec("time", 1_000)


def time_bars(size_ms: int) -> BarSpec:
    """The spec of time bars of `size_ms` (AGG_WINDOW_MS)."""
    return BarSpec("time", size_ms)


def format_spec(spec: BarSpec) -> str:
    """The canonical text of `spec` (the same as `spec.text`)."""
    return spec.text


def parse_spec(text: str) -> BarSpec:
    """The spec of a canonical text (`time-5s`); BarSpecError for anything else."""
    match = _TEXT.fullmatch(text)
    if match is None:
        raise BarSpecError(f"not a bar spec: {text!r} (expected e.g. time-1s, time-250ms)")
    kind, size, unit = match["kind"], int(match["size"]), match["unit"]
    if kind not in BAR_KINDS:
        raise BarSpecError(f"unknown bar kind {kind!r} in {text!r} (known: {', '.join(BAR_KINDS)})")
    spec = BarSpec("time", size * 1000 if unit == "s" else size)
    if spec.text != text:
        raise BarSpecError(f"not the canonical form of a bar spec: {text!r} (write {spec.text!r})")
    return spec


def make_bar_id(symbol: str, start_ts_ms: int, spec: BarSpec) -> str:
    """`<SYMBOL>-<start_ms 13 digits>-<spec>`, the bar's idempotency key.

    Ids of one symbol and spec sort by start (fixed width); the spec suffix keeps the bars of
    two sizes apart even where they share a start.
    """
    return f"{symbol}-{start_ts_ms:013d}-{spec.text}"


def split_bar_id(bar_id: str) -> tuple[str, int, BarSpec]:
    """(symbol, start_ts_ms, spec) of a bar id; BarSpecError when it has not that shape."""
    match = _BAR_ID.fullmatch(bar_id)
    if match is None:
        raise BarSpecError(f"not a bar id: {bar_id!r} (expected <SYMBOL>-<start_ms 13 digits>-<spec>)")
    return match["symbol"], int(match["start"]), parse_spec(match["spec"])


def bar_topic(spec: BarSpec) -> str:
    """The default topic of a spec's bars: `ticks.agg.1s`, `ticks.agg.5s` (time bars by size alone)."""
    return f"ticks.agg.{spec.size_text}" if spec.kind == "time" else f"ticks.agg.{spec.text}"


def bar_asset_name(spec: BarSpec) -> str:
    """The Dagster asset name of a spec's bar stream: `ticks_agg_1s`, `ticks_agg_5s`."""
    return bar_topic(spec).replace(".", "_").replace("-", "_")
