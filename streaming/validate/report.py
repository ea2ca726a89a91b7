"""The validation report: the verdict, what was compared, totals and latencies; rich and JSON views."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from streaming.kernel.outputs import write_atomic
from streaming.validate.compare import Comparison, LatencyStats

HISTORICAL_MS = 3_600_000


@dataclass(frozen=True)
class ValidationReport:
    """Everything one validation found; `ok` is the verdict."""

    inputs: dict[str, str]
    comparisons: list[Comparison]
    totals: dict[str, int]
    latency: list[LatencyStats]
    headline_latency: str | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Passes when every comparison matches and no input was unreadable."""
        return not self.problems and bool(self.comparisons) and all(c.ok for c in self.comparisons)

    @property
    def verdict(self) -> str:
        """PASS or FAIL."""
        return "PASS" if self.ok else "FAIL"

    def latency_of(self, name: str) -> LatencyStats | None:
        """The latency statistics called `name`, if measured."""
        return next((s for s in self.latency if s.name == name), None)

    def pipeline_latencies(self) -> list[LatencyStats]:
        """The latencies that measure the pipeline (without the years-long ones of historical event times)."""
        return [s for s in self.latency if s.p50 <= HISTORICAL_MS]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `--json` report)."""
        comparisons = []
        for comp in self.comparisons:
            entry = dataclasses.asdict(comp)
            entry["ok"] = comp.ok
            comparisons.append(entry)
        return {
            "verdict": self.verdict,
            "ok": self.ok,
            "inputs": self.inputs,
            "comparisons": comparisons,
            "totals": self.totals,
            "latency_ms": {s.name: dataclasses.asdict(s) for s in self.latency},
            "headline_latency": self.headline_latency,
            "problems": self.problems,
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        """Write the machine-readable report (atomically: a temporary file renamed into place)."""
        write_atomic(path, orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]MISMATCH[/]"


def _examples(comp: Comparison) -> list[str]:
    lines = []
    if comp.missing_count:
        lines.append(f"missing {comp.missing_count}: {', '.join(comp.missing_examples)}")
    if comp.extra_count:
        lines.append(f"extra {comp.extra_count}: {', '.join(comp.extra_examples)}")
    if comp.duplicate_count:
        lines.append(f"duplicate copies {comp.duplicate_count}: {', '.join(comp.duplicate_examples)}")
    for diff in comp.diff_examples:
        lines.append(f"{diff.key} {diff.field}: expected {diff.expected!r}, got {diff.actual!r}")
    return lines


def render(report: ValidationReport, console: Console) -> None:
    """Print the report: checks, first examples of each mismatch, totals, latencies and the verdict."""
    checks = Table("check", "expected", "actual", "missing", "extra", "duplicates", "field diffs", "result",
                   title="validation", title_justify="left")
    for comp in report.comparisons:
        diffs = ", ".join(f"{k}={v}" for k, v in comp.diff_counts.items()) or "0"
        checks.add_row(comp.name, f"{comp.expected_count:,}", f"{comp.actual_count:,}", str(comp.missing_count),
                       str(comp.extra_count), str(comp.duplicate_count), diffs, _mark(comp.ok))
    console.print(checks)
    for comp in report.comparisons:
        lines = _examples(comp)
        if lines:
            console.print(Panel("\n".join(lines), title=f"{comp.name}: first examples", border_style="red"))
    totals = Table("total", "value", title="totals", title_justify="left")
    for key, value in report.totals.items():
        totals.add_row(key, f"{value:,}")
    latency = Table("latency (ms)", "count", "p50", "p95", "p99", "max", "what", title="latency",
                    title_justify="left")
    for stats in report.latency:
        star = " *" if stats.name == report.headline_latency else ""
        if stats.p50 > HISTORICAL_MS:
            # Years of "latency" only say the event times are historical; the JSON keeps the numbers.
            latency.add_row(stats.name, f"{stats.count:,}", "n/a", "", "", "", "historical event times")
            continue
        latency.add_row(stats.name + star, f"{stats.count:,}", f"{stats.p50:,.0f}", f"{stats.p95:,.0f}",
                        f"{stats.p99:,.0f}", f"{stats.max:,.0f}", stats.description)
    console.print(Group(totals, latency))
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}", highlight=False)
    for problem in report.problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False)
    colour = "green" if report.ok else "red"
    console.print(f"[bold {colour}]verdict: {report.verdict}[/]")
