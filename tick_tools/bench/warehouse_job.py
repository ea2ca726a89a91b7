"""Child process of section 7: backfill one time range of fact partitions into DuckDB, print JSON.

`python -m tick_tools.bench.warehouse_job START_MS END_MS` with KAFKA_* / WAREHOUSE_* in the environment
(the bench points them at its broker, the aggregator's output topic and a fresh DuckDB file).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any


def _work_seconds(run_ids: list[str], checks: list[Any]) -> dict[str, float]:
    """The steps' own seconds (Kafka read, rollup, write; the checks' re-read) from their metadata.

    One materialization per run carries its step's timings (every partition's event repeats them).
    """
    from dagster import DagsterEventType, DagsterInstance

    read = rollup = write = 0.0
    if os.environ.get("DAGSTER_HOME"):
        instance = DagsterInstance.get()
        for run_id in run_ids:
            records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1)
            for rec in records.records:
                mat = rec.event_log_entry.asset_materialization
                meta = {k: v.value for k, v in (mat.metadata if mat else {}).items()}
                read += float(meta.get("read_seconds", 0.0))  # type: ignore[arg-type]
                rollup += float(meta.get("rollup_seconds", 0.0))  # type: ignore[arg-type]
                write += float(meta.get("write_seconds", 0.0))  # type: ignore[arg-type]
    from streaming.kernel.warehouse.schema import FACT_SPECS
    from tick_platform.checks import check_name

    # The multi-asset check reads once; the finest resolution's matches_bars carries that read's seconds.
    timed = check_name(FACT_SPECS[0], "matches_bars")
    check_read = sum(float(c.metadata.get("read_seconds", 0.0)) for c in checks if c.name == timed)
    return {"read_s": read, "rollup_s": rollup, "write_s": write, "check_read_s": check_read,
            "work_s": read + rollup + write + check_read}


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    start_ms, end_ms = int(args[0]), int(args[1])
    t0 = time.monotonic()
    from tick_platform.backfill import materialize_facts

    imported = time.monotonic()
    report = materialize_facts(datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC),
                               with_dimensions=False)
    done = time.monotonic()
    work = _work_seconds(report.run_ids, report.checks)
    print(json.dumps({
        "success": report.success, "partitions": report.partitions, "rows": report.rows,
        "first_partition": report.first_partition, "last_partition": report.last_partition,
        "checks_passed": report.checks_passed, "checks": len(report.checks),
        "checks_failed": sorted(c.name for c in report.checks if not c.passed),
        "import_s": imported - t0, "materialize_s": done - imported,
        "bars_read": report.metadata.get("bars_read") or report.metadata.get("bars"),
        "runs": len(report.run_ids), **work,
    }, default=str), flush=True)


if __name__ == "__main__":
    main()
