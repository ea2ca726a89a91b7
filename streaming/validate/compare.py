"""Compare an expected set of bins/bars with the actual one, and latency statistics.

Pure functions over polars frames: missing / extra / duplicate keys and field
differences (integers exact, floats within a relative tolerance), each with the
first few examples so a report can show what went wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

REL_TOL = 1e-9
EXAMPLES = 5


@dataclass(frozen=True)
class FieldDiff:
    """One field of one record that differs from the recomputation."""

    key: str
    field: str
    expected: float | int | None
    actual: float | int | None


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one expected set with one actual set."""

    name: str
    expected_count: int
    actual_count: int
    missing_count: int = 0
    missing_examples: list[str] = field(default_factory=list)
    extra_count: int = 0
    extra_examples: list[str] = field(default_factory=list)
    duplicate_count: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    diff_counts: dict[str, int] = field(default_factory=dict)
    diff_examples: list[FieldDiff] = field(default_factory=list)

    @property
    def differing(self) -> int:
        """Number of field differences over all fields."""
        return sum(self.diff_counts.values())

    @property
    def ok(self) -> bool:
        """True when nothing is missing, extra, duplicated or different."""
        return not (self.missing_count or self.extra_count or self.duplicate_count or self.differing)


def floats_close(expected: float | None, actual: float | None, rel_tol: float = REL_TOL) -> bool:
    """Equal within `rel_tol` of the larger magnitude (both None counts as equal)."""
    if expected is None or actual is None:
        return expected is None and actual is None
    return math.isclose(expected, actual, rel_tol=rel_tol, abs_tol=0.0)


def duplicate_keys(actual: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows of (keys, copies) that occur more than once."""
    return actual.group_by(keys).agg(pl.len().alias("copies")).filter(pl.col("copies") > 1).sort(keys)


def compare_sets(
    name: str,
    expected: pl.DataFrame,
    actual: pl.DataFrame,
    key: str,
    int_fields: list[str],
    float_fields: list[str],
    duplicate_on: list[str] | None = None,
) -> Comparison:
    """Compare `actual` with `expected` on `key`; `actual` may hold duplicates (by `duplicate_on`)."""
    dup_keys = duplicate_on or [key]
    dups = duplicate_keys(actual, dup_keys)
    # Sorted by the duplicate keys, "last" is the highest revision of a bar (a plain key for bins).
    deduped = actual.sort(dup_keys).unique(subset=[key], keep="last", maintain_order=True)
    exp_keys = expected.select(key)
    act_keys = deduped.select(key)
    missing = exp_keys.join(act_keys, on=key, how="anti").sort(key)[key].to_list()
    extra = act_keys.join(exp_keys, on=key, how="anti").sort(key)[key].to_list()

    fields = [*int_fields, *float_fields]
    joined = expected.select([key, *fields]).join(
        deduped.select([key, *fields]), on=key, how="inner", suffix="__actual"
    ).sort(key)
    counts: dict[str, int] = {}
    examples: list[FieldDiff] = []
    for name_ in fields:
        exp_col, act_col = pl.col(name_), pl.col(f"{name_}__actual")
        if name_ in int_fields:
            bad = ~exp_col.eq_missing(act_col)
        else:
            scale = pl.max_horizontal(exp_col.abs(), act_col.abs())
            # NaN never compares close, so a NaN on either side is a difference.
            bad = ((exp_col - act_col).abs() > scale * REL_TOL).fill_null(True) | (
                exp_col.is_nan() | act_col.is_nan()
            ).fill_null(False)
            bad = bad & ~(exp_col.is_null() & act_col.is_null())
        rows = joined.filter(bad)
        if rows.height:
            counts[name_] = rows.height
            for row in rows.head(EXAMPLES).iter_rows(named=True):
                if len(examples) < EXAMPLES * 2:
                    examples.append(FieldDiff(row[key], name_, row[name_], row[f"{name_}__actual"]))
    return Comparison(
        name=name,
        expected_count=expected.height,
        actual_count=actual.height,
        missing_count=len(missing),
        missing_examples=missing[:EXAMPLES],
        extra_count=len(extra),
        extra_examples=extra[:EXAMPLES],
        duplicate_count=int(dups["copies"].sum() - dups.height) if dups.height else 0,
        duplicate_examples=[
            " rev ".join(str(v) for v in row) for row in dups.select(dup_keys).head(EXAMPLES).iter_rows()
        ],
        diff_counts=counts,
        diff_examples=examples,
    )


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of one latency in milliseconds (nearest-rank percentiles)."""

    name: str
    description: str
    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list: the smallest value with at least q% at or below it."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_stats(name: str, description: str, values: list[float]) -> LatencyStats | None:
    """p50/p95/p99/max/mean of `values`, or None when there are none."""
    clean = sorted(v for v in values if v is not None and not math.isnan(v))
    if not clean:
        return None
    return LatencyStats(
        name, description, len(clean),
        percentile(clean, 50), percentile(clean, 95), percentile(clean, 99), clean[-1], sum(clean) / len(clean),
    )
