"""Line coverage of the suite per package, as the last lines of `make test`.

    python tick_platform_tests/coverage_summary.py [DATA_FILE]

Reads the coverage data that `pytest --cov` wrote (the code run in the pytest process, not in the
`python -m streaming` children the tests start; see [tool.coverage.run] in pyproject.toml) and
prints statements, missed and percent covered for streaming, tick_platform, dashboard and tick_tools, and
their total.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streaming", "tick_platform", "dashboard", "tick_tools")


def package_totals(data_file: Path) -> dict[str, tuple[int, int]]:
    """(statements, missed) per package of PACKAGES, from the combined data file."""
    cov = coverage.Coverage(data_file=str(data_file), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    totals = dict.fromkeys(PACKAGES, (0, 0))
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            _name, statements, _excluded, missing, _text = cov.analysis2(str(path))
            if statements:  # an empty __init__.py counts for nothing
                seen, missed = totals[package]
                totals[package] = (seen + len(statements), missed + len(missing))
    return totals


def render(totals: dict[str, tuple[int, int]]) -> str:
    """The summary table (percent of statements executed at least once)."""
    def line(name: str, statements: int, missed: int) -> str:
        percent = 100.0 * (statements - missed) / statements if statements else 100.0
        return f"{name:<15}{statements:>8,}{missed:>8,}{percent:>8.1f}%"

    rows = [line(name, *totals[name]) for name in PACKAGES]
    statements, missed = sum(s for s, _ in totals.values()), sum(m for _, m in totals.values())
    head = f"{'coverage':<15}{'stmts':>8}{'missed':>8}{'cover':>9}"
    return "\n".join([head, *rows, line("total", statements, missed)])


def main(argv: list[str]) -> int:
    """Print the summary; 1 when there is no coverage data (the suite did not run with --cov)."""
    data_file = Path(argv[1]) if len(argv) > 1 else ROOT / "tick_platform_tests" / "_output" / "coverage" / ".coverage"
    if not data_file.is_file():
        print(f"no coverage data at {data_file}: run pytest with --cov", file=sys.stderr)
        return 1
    print(render(package_totals(data_file)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
