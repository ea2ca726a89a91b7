"""`python -m tick_tools pipeline` with the real sample: SIGINT mid-run, restart, and the data is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from streaming.kernel.topics import describe_topics
from streaming.validate.run import validate_kafka
from tick_platform_tests.reliability_support import PATIENT_STOP_S, patient_pipeline
from tick_tools.broker.runner import free_port_base

pytestmark = pytest.mark.kafka

SAMPLE_BARS = 5_049


def _env(kafka: KafkaSettings, group: str, api_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BROKERS": kafka.brokers,
        "KAFKA_TOPIC_RAW": kafka.topic_raw,
        "KAFKA_TOPIC_AGG": kafka.topic_agg,
        "KAFKA_TOPIC_DLQ": kafka.topic_dlq,
        "AGG_GROUP_ID": group,
        "API_PORT": str(api_port),
        # 6 h of 2010 trading in about 15 s: long enough to interrupt, short enough for the suite.
        "REPLAY_SPEED": "1500",
        "PYTHONUNBUFFERED": "1",
    }


def _ours(topic: str) -> list[psutil.Process]:
    """Live processes started for this test (they carry its unique topic in their environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("KAFKA_TOPIC_RAW") == topic and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _launch(sample: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            patient_pipeline("--data", str(sample), "--no-dagster"),
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )


def _raw_messages(kafka: KafkaSettings) -> int:
    return sum(info.messages for info in describe_topics(kafka, [kafka.topic_raw]))


def test_sigint_stops_everything_and_a_restart_finishes_the_data(
    kafka: KafkaSettings, sample_path: Path, tmp_path: Path
) -> None:
    env = _env(kafka, f"agg-{uuid.uuid4().hex[:6]}", free_port_base(1))
    log = tmp_path / "pipeline.log"

    first = _launch(sample_path, env, log)
    deadline = time.monotonic() + 240
    while _raw_messages(kafka) < 2_000:
        assert first.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "no bins arrived"
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=PATIENT_STOP_S + 120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "SIGINT received; stopping in reverse order" in text
    assert "SIGKILL needed" not in text  # every child stopped by itself (see patient_pipeline)
    assert _ours(kafka.topic_raw) == []
    interrupted_at = _raw_messages(kafka)

    second = _launch(sample_path, env, log)
    try:
        deadline = time.monotonic() + 420
        while "replay finished" not in log.read_text():
            assert second.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        report = validate_kafka(kafka, [sample_path], timeout_s=120)
        while not report.ok and time.monotonic() < deadline:  # the aggregator's idle flush of the last bars
            time.sleep(2)
            report = validate_kafka(kafka, [sample_path], timeout_s=120)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=PATIENT_STOP_S + 120)
    assert "resuming job" in log.read_text()
    assert interrupted_at < _raw_messages(kafka)
    assert report.ok, report.to_dict()
    assert report.totals["bars"] == SAMPLE_BARS
    assert report.totals["ticks"] == 20_000
    assert _ours(kafka.topic_raw) == []
