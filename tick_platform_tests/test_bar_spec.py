"""BarSpec: the canonical text form, bar ids, topic and asset names (issue 16, point 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.kernel.bar_spec import (
    DEFAULT_BAR_SPEC,
    BarSpec,
    BarSpecError,
    bar_asset_name,
    bar_topic,
    format_spec,
    make_bar_id,
    parse_spec,
    split_bar_id,
    time_bars,
)
from streaming.kernel.bounds import SYMBOL_PATTERN
from streaming.kernel.errors import ConfigError
from streaming.kernel.settings import load_settings


@pytest.mark.parametrize(
    ("size_ms", "text", "label", "topic", "asset"),
    [
        (1_000, "time-1s", "1 s", "ticks.agg.1s", "ticks_agg_1s"),
        (5_000, "time-5s", "5 s", "ticks.agg.5s", "ticks_agg_5s"),
        (60_000, "time-60s", "60 s", "ticks.agg.60s", "ticks_agg_60s"),
        (250, "time-250ms", "250 ms", "ticks.agg.250ms", "ticks_agg_250ms"),
        (1_500, "time-1500ms", "1500 ms", "ticks.agg.1500ms", "ticks_agg_1500ms"),
    ],
)
def test_text_forms(size_ms: int, text: str, label: str, topic: str, asset: str) -> None:
    spec = time_bars(size_ms)
    assert (spec.text, format_spec(spec), str(spec), spec.label) == (text, text, text, label)
    assert (bar_topic(spec), bar_asset_name(spec)) == (topic, asset)
    assert parse_spec(text) == spec == BarSpec("time", size_ms)


def test_default_is_one_second_time_bars_with_the_historic_names() -> None:
    assert BarSpec("time", 1000) == DEFAULT_BAR_SPEC
    assert (bar_topic(DEFAULT_BAR_SPEC), bar_asset_name(DEFAULT_BAR_SPEC)) == ("ticks.agg.1s", "ticks_agg_1s")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("time-1000ms", "write 'time-1s'"),
        ("time-5000ms", "write 'time-5s'"),
        ("time-0s", "not a bar spec"),
        ("time-01s", "not a bar spec"),
        ("time-1", "not a bar spec"),
        ("tick-100s", "unknown bar kind 'tick'"),
        ("Time-1s", "not a bar spec"),
        ("time-1s ", "not a bar spec"),
        ("", "not a bar spec"),
    ],
)
def test_only_the_canonical_text_parses(text: str, says: str) -> None:
    with pytest.raises(BarSpecError, match=says.replace("(", r"\(")):
        parse_spec(text)


@pytest.mark.parametrize("size", [0, -5, True, 2.5])
def test_a_spec_refuses_sizes_that_are_not_positive_whole_ms(size: object) -> None:
    with pytest.raises(BarSpecError, match="positive whole number"):
        BarSpec("time", size)  # type: ignore[arg-type]


def test_bar_ids_carry_the_spec_and_split_back_even_with_dashes_in_the_symbol() -> None:
    one, five = time_bars(1000), time_bars(5000)
    assert make_bar_id("WDC", 1_266_417_000_000, one) == "WDC-1266417000000-time-1s"
    assert make_bar_id("WDC", 1_266_417_000_000, five) == "WDC-1266417000000-time-5s"
    assert split_bar_id("BRK-B-0000000001000-time-250ms") == ("BRK-B", 1000, time_bars(250))
    for bad in ("WDC-1266417000000", "WDC-126641700000-time-1s", "WDC-1266417000000-time-1000ms", "x"):
        with pytest.raises(BarSpecError):
            split_bar_id(bad)


@given(
    st.from_regex(SYMBOL_PATTERN, fullmatch=True),
    st.integers(0, 9_999_999_999_999),
    st.integers(1, 3_600_000),
)
def test_ids_round_trip_and_sort_by_start_within_a_spec(symbol: str, start: int, size: int) -> None:
    spec = time_bars(size)
    bar_id = make_bar_id(symbol, start, spec)
    assert split_bar_id(bar_id) == (symbol, start, spec)
    assert parse_spec(spec.text) == spec
    later = make_bar_id(symbol, start + 1, spec) if start < 9_999_999_999_999 else bar_id
    assert bar_id <= later  # fixed width start: string order is time order


def test_settings_name_the_topic_group_and_transactional_id_after_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_WINDOW_MS", "5000")
    s = load_settings()
    assert (s.agg.spec, s.kafka.topic_agg) == (time_bars(5000), "ticks.agg.5s")
    assert (s.agg.group_id, s.agg.transactional_id_prefix) == ("tick-aggregator-time-5s", "tick-aggregator-time-5s")
    monkeypatch.setenv("KAFKA_TOPIC_AGG", "bars.five")
    monkeypatch.setenv("AGG_GROUP_ID", "five")
    s = load_settings()  # set explicitly: the names win as given
    assert (s.kafka.topic_agg, s.agg.group_id, s.agg.transactional_id_prefix) == (
        "bars.five",
        "five",
        "tick-aggregator-time-5s",
    )
    monkeypatch.delenv("AGG_WINDOW_MS")
    monkeypatch.delenv("KAFKA_TOPIC_AGG")
    monkeypatch.delenv("AGG_GROUP_ID")
    s = load_settings(agg={"window_ms": 250})  # a CLI flag counts like the environment
    assert (s.kafka.topic_agg, s.agg.group_id) == ("ticks.agg.250ms", "tick-aggregator-time-250ms")


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            "7000",
            "AGG_WINDOW_MS (7000) must divide the fact windows 60,000 ms and 300,000 ms: "
            "a bar would straddle two facts (REPLAY_BIN_MS is 10)",
        ),
        ("1005", "REPLAY_BIN_MS (10) must divide AGG_WINDOW_MS (1005): a bin would straddle two bars"),
        ("5", "AGG_WINDOW_MS: Input should be greater than or equal to 10 (got '5')"),
    ],
)
def test_a_wrong_window_is_one_config_error_line(monkeypatch: pytest.MonkeyPatch, window: str, message: str) -> None:
    monkeypatch.setenv("AGG_WINDOW_MS", window)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
