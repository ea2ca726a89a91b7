"""Live mode through Dagster: from a window's close to its fact rows being visible, via the sensor.

Runs the whole pipeline as a user does (`python -m tick_tools pipeline --realtime`: API,
aggregator, `dagster dev`, replay at speed 1 with live timestamps), then reads from the
webserver's GraphQL API when each 5-minute partition was materialized (the rows are
committed before the event is written) and subtracts the window's end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import httpx
import numpy as np

from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.bench.harness import PYTHON, Bench, Figure
from tick_tools.bench.latency import percentiles
from tick_tools.broker.runner import free_port_base
from tick_tools.pipeline.demo_data import ensure_demo_data

WINDOW_S = 300
SLA_S = 30.0  # the seed's: facts within 30 s of the window's close
KEY_FORMAT = "%Y-%m-%d-%H:%M"
QUERY = """
query($keys: [String!]) {
  assetNodes(assetKeys: [{path: ["fact_ticks_60s"]}]) {
    assetMaterializations(partitions: $keys) { partition timestamp }
  }
}
"""


def _materialized(port: int, keys: list[str]) -> dict[str, float]:
    """Partition -> epoch seconds of its first materialization (what GraphQL knows so far)."""
    try:
        body = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY, "variables": {"keys": keys}},
                          timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return {}
    seen: dict[str, float] = {}
    for node in (body.get("data") or {}).get("assetNodes") or []:
        for mat in node["assetMaterializations"]:
            ts = float(mat["timestamp"]) / 1000
            seen[mat["partition"]] = min(ts, seen.get(mat["partition"], ts))
    return seen


def _key(window_start_s: int) -> str:
    return time.strftime(KEY_FORMAT, time.gmtime(window_start_s))


def run_sensor_section(bench: Bench) -> None:
    """Time `sensor_windows` live windows from close to rows visible (p50/p95/max)."""
    windows = bench.sizes.sensor_windows
    if windows <= 0:
        bench.add(Figure("sensor", "live: window close -> rows visible via the sensor", None, "s",
                         note="not run (sensor_windows=0; each window takes 5 minutes: --set sensor_windows=4)"))
        return
    tag = uuid.uuid4().hex[:6]
    port, api_port = free_port_base(1), free_port_base(1, start=40_000)
    home = bench.run_dir / "sensor_dagster_home"
    env = bench.env(
        KAFKA_TOPIC_RAW=f"bench.sensor.{tag}.raw", KAFKA_TOPIC_AGG=f"bench.sensor.{tag}.agg",
        KAFKA_TOPIC_DLQ=f"bench.sensor.{tag}.dlq", AGG_GROUP_ID=f"bench-sensor-{tag}", API_PORT=str(api_port),
        DAGSTER_HOME=str(home), WAREHOUSE_TARGET="duckdb",
        WAREHOUSE_DUCKDB_PATH=str(bench.run_dir / "sensor_warehouse.duckdb"),
    )
    for name in ("WAREHOUSE_PARTITIONS_START", "WAREHOUSE_PARTITIONS_END"):
        env.pop(name, None)  # a live run: partitions from today
    files = ensure_demo_data()
    data_args = [arg for f in files for arg in ("--data", f)]
    cmd = [PYTHON, "-m", "tick_tools", "pipeline", "--realtime", *data_args, "--dagster-port", str(port)]
    bench.command("sensor", [PYTHON, "-m", "tick_tools", "pipeline", "--realtime", "--data", "data/samples/demo/…"],
                  "DAGSTER_HOME=... WAREHOUSE_TARGET=duckdb")
    log_path = bench.run_dir / "sensor_pipeline.log"
    started = int(time.time())
    first = -(-(started + 60) // WINDOW_S) * WINDOW_S  # a whole window after start-up
    starts = [first + i * WINDOW_S for i in range(windows)]
    keys = [_key(t) for t in starts]
    bench.log(f"[sensor] live pipeline on {len(files)} demo files; timing windows {keys[0]} .. {keys[-1]} "
              f"(until ~{time.strftime('%H:%M', time.gmtime(starts[-1] + WINDOW_S + 60))} UTC)")
    seen: dict[str, float] = {}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT,
                                start_new_session=True)
    try:
        deadline = starts[-1] + WINDOW_S + 180
        while time.time() < deadline and len(seen) < len(keys) and proc.poll() is None:
            seen.update(_materialized(port, keys))
            time.sleep(1)
    finally:
        with_status = proc.poll()
        if with_status is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    latencies = [seen[k] - (t + WINDOW_S) for k, t in zip(keys, starts, strict=True) if k in seen]
    bench.sections["sensor"] = {"measured": bool(latencies), "windows": keys, "latency_s": latencies,
                                "missing": [k for k in keys if k not in seen], "log": str(log_path)}
    note = (f"{len(latencies)}/{len(keys)} live windows materialized by the sensor; close = window end "
            f"(wall clock, live timestamps); visible = materialization event (after the commit)")
    if not latencies:
        bench.add(Figure("sensor", "live: window close -> rows visible via the sensor", None, "s",
                         note=f"no window loaded (pipeline exit {with_status}); see {log_path.name}"))
        return
    stats = percentiles(np.asarray(latencies, dtype=float))
    for name in ("p50", "p95"):
        value = float(stats[name] or 0.0)
        bench.add(Figure("sensor", f"live: window close -> rows visible, {name}", value, "s",
                         goal=f"<= {SLA_S:.0f} s (seed SLA)", met=value <= SLA_S, note=note))
    bench.add(Figure("sensor", "live: window close -> rows visible, max", max(latencies), "s", note=note))
