"""Child process of section 7: backfill one time range of fact partitions into DuckDB, print JSON.

`python -m tick_tools.bench.warehouse_job START_MS END_MS` with KAFKA_* / WAREHOUSE_* in the environment
(the bench points them at its broker, the aggregator's output topic and a fresh DuckDB file).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    start_ms, end_ms = int(args[0]), int(args[1])
    t0 = time.monotonic()
    from tick_platform.backfill import materialize_facts

    imported = time.monotonic()
    report = materialize_facts(datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC),
                               with_dimensions=False)
    done = time.monotonic()
    print(json.dumps({
        "success": report.success, "partitions": report.partitions, "rows": report.rows,
        "first_partition": report.first_partition, "last_partition": report.last_partition,
        "checks_passed": report.checks_passed, "checks": len(report.checks),
        "checks_failed": sorted(c.name for c in report.checks if not c.passed),
        "import_s": imported - t0, "materialize_s": done - imported,
        "bars_read": report.metadata.get("bars_read") or report.metadata.get("bars"),
    }, default=str), flush=True)


if __name__ == "__main__":
    main()
