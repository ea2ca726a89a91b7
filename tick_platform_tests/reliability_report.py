"""Turn the reliability suite's scorecard rows into the table of docs/reliability.md.

    python tick_platform_tests/reliability_report.py [ROWS.jsonl] [DOC.md]

Reads tick_platform_tests/_output/reliability.jsonl (one JSON row per scenario run, appended by
the tests), keeps the latest row of each scenario and replaces the text between the scorecard
markers of docs/reliability.md; the rest of the document is left as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROWS = ROOT / "tick_platform_tests" / "_output" / "reliability.jsonl"
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"

# Extra fields worth a word in the notes column, with how to show them.
NOTES: dict[str, str] = {
    "runs": "runs recorded: {}",
    "broker_away_s": "broker away {} s",
    "kills": "{} kills",
    "recovery_each_s": "recovery per kill {} s",
    "peak_rss_mb": "peak RSS {} MB",
    "max_open_windows_seen": "max open windows {}",
    "late_to_dlq": "{} late bins in DLQ",
    "rejected": "{} rejected",
    "dead_lettered": "{} dead-lettered",
    "mismatched": "{} mismatched",
    "mismatched_vs_ticks": "{} bars differ from the raw ticks",
    "unit": "counted in {}",
    "old_rows_kept_after_kill": "old rows intact after the kill: {}",
    "error": "error: {}",
}


def _exact(row: dict[str, Any]) -> bool:
    return not (row["lost"] or row["duplicated"] or row.get("mismatched"))


def latest_rows(path: Path) -> list[dict[str, Any]]:
    """The last row of each scenario (sorted by name), with how many runs the file holds and how many were not exact.

    Why the history: an intermittent failure must stay visible after a later clean run.
    """
    latest: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[bool]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest[row["scenario"]] = row
            runs.setdefault(row["scenario"], []).append(_exact(row))
    for name, row in latest.items():
        row["runs"] = f"{len(runs[name])} ({runs[name].count(False)} not exact)"
    return sorted(latest.values(), key=lambda r: r["scenario"])


def _cell(value: Any) -> str:
    text = "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _notes(row: dict[str, Any]) -> str:
    parts = []
    for key, template in NOTES.items():
        value = row.get(key)
        if value is None or value == [] or value == "" or value == 0:
            continue
        parts.append(template.format(value))
    return "; ".join(parts)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value} s"


def _restarts(row: dict[str, Any]) -> str:
    """The harness restarts of a run: rows before the column counted them as stage_restarts_on_error."""
    value = row.get("harness_restarts", row.get("stage_restarts_on_error"))
    return "-" if value is None else f"{value:,}"


HEAD = ("| scenario | injected | messages in | messages out | lost | duplicated | harness restarts | recovery time "
        "| notes | run at |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
# The column the harness restarts went in at (0-based, among the cells of a row).
RESTARTS_COLUMN = 6


def table(rows: list[dict[str, Any]]) -> str:
    """The scorecard as a Markdown table."""
    body = "".join(
        f"| {_cell(r['scenario'])} | {_cell(r['injected'])} | {_cell(r['messages_in'])} | "
        f"{_cell(r['messages_out'])} | {_cell(r['lost'])} | {_cell(r['duplicated'])} | {_restarts(r)} | "
        f"{_seconds(r.get('recovery_s'))} | {_cell(_notes(r))} | "
        f"{_cell(r.get('recorded_at'))} |\n"
        for r in rows
    )
    return HEAD + body


def _widened(line: str) -> str:
    """A row of a table written before the harness restarts column, with "-" (not recorded) in it."""
    cells = line.strip().strip("|").split(" | ")
    if len(cells) == HEAD.split("\n", 1)[0].count(" | "):  # one cell short of the current header
        cells.insert(RESTARTS_COLUMN, "-")
    return "| " + " | ".join(c.strip() for c in cells) + " |"


def _kept_lines(doc: str, fresh: set[str]) -> list[str]:
    """Rows of the current table whose scenario has no row in this run's file (not re-run here)."""
    if START not in doc or END not in doc:
        return []
    old = doc.split(START, 1)[1].split(END, 1)[0].strip().splitlines()[2:]  # below the header
    return [_widened(line) for line in old if line.startswith("| ") and line.split(" | ", 1)[0][2:] not in fresh]


def render(doc: str, rows: list[dict[str, Any]]) -> str:
    """`doc` with the table between the markers (appended with markers if they are missing).

    Scenarios without a row in `rows` keep their line from the current table, so running a
    part of the suite updates its rows and leaves the others as last measured.
    """
    fresh = table(rows)
    kept = _kept_lines(doc, {str(r["scenario"]) for r in rows})
    if kept:
        head, body = fresh.split("|---", 1)
        body_lines = ("|---" + body).splitlines()
        rows_sorted = sorted(body_lines[1:] + kept, key=lambda line: line.split(" | ", 1)[0])
        fresh = head + body_lines[0] + "\n" + "".join(line + "\n" for line in rows_sorted)
    block = f"{START}\n{fresh}{END}"
    if START in doc and END in doc:
        before, rest = doc.split(START, 1)
        _old, after = rest.split(END, 1)
        return before + block + after
    return doc.rstrip() + "\n\n## Scorecard\n\n" + block + "\n"


def main(argv: list[str]) -> int:
    rows_path = Path(argv[1]) if len(argv) > 1 else ROWS
    doc_path = Path(argv[2]) if len(argv) > 2 else DOC
    if not rows_path.is_file():
        print(f"no scorecard rows at {rows_path}: run the reliability suite first", file=sys.stderr)
        return 1
    rows = latest_rows(rows_path)
    doc = doc_path.read_text() if doc_path.is_file() else "# Reliability\n"
    doc_path.write_text(render(doc, rows))
    failing = [r["scenario"] for r in rows if r["lost"] or r["duplicated"] or r.get("harness_restarts")]
    print(f"scorecard: {len(rows)} scenarios -> {doc_path}" + (f"; NOT CLEAN: {', '.join(failing)}" if failing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
