"""Security tested for real: the whole pipeline through a SASL_SSL broker with SCRAM users and ACLs.

One secured single-node broker for the module (`LocalCluster(secure=True)`: a CA and broker
certificate of its own, SCRAM-SHA-512 users created at format time, StandardAuthorizer, one
principal per stage with the ACLs of docs/operations.md), on free loopback ports in a temp dir,
stopped at the end. The stages run as `python -m streaming` subprocesses with the client
snippet the runner writes (`client.env`), as a user's `.env` would hold it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, load_settings
from streaming.kernel.topics import bootstrap_topics
from streaming.replay.checkpoint import CHECKPOINT_TOPIC
from tick_platform_tests.reliability_support import compare, decode_rows, end_offsets, read_committed
from tick_tools.broker.runner import LocalCluster, free_port_base
from tick_tools.broker.security import ADMIN_USER, STAGE_USERS, stage_names

pytestmark = pytest.mark.kafka

DAY_START = datetime(2010, 2, 17, 14, 30, tzinfo=UTC)
DAY_END = datetime(2010, 2, 17, 20, 45, tzinfo=UTC)


@dataclass(frozen=True)
class SecureBroker:
    """The module's secured broker: its client snippet, the admin's settings and every secret."""

    cluster: LocalCluster
    env_file: Path
    admin: KafkaSettings  # the super user, on the module's topics
    secrets: list[str]
    denied_topic: str  # exists, but no stage principal has an ACL for it


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    """A SASL_SSL single-node broker with the stage ACLs, on free ports in a temp dir; stopped at the end."""
    run_dir = Path(tempfile.mkdtemp(prefix="tick-kafka-sec-"))
    cluster = LocalCluster(run_dir, PROJECT_ROOT / ".cache" / "kafka", f"127.0.0.1:{free_port_base(1)}", 1, "768m",
                           secure=True)
    suffix = uuid.uuid4().hex[:8]
    try:
        cluster.up(timeout_s=180)
        topics = KafkaSettings.model_validate({}).model_copy(update={
            "topic_raw": f"ticks.raw.{suffix}", "topic_agg": f"ticks.agg.1s.{suffix}",
            "topic_dlq": f"ticks.dlq.{suffix}"})
        cluster.grant_stage_acls(stage_names(topics, "tick-replay", "tick-aggregator", "tick-aggregator",
                                             "tick-platform-facts", CHECKPOINT_TOPIC))
        admin = load_settings(str(cluster.client_env_file), kafka={
            "topic_raw": topics.topic_raw, "topic_agg": topics.topic_agg, "topic_dlq": topics.topic_dlq}).kafka
        bootstrap_topics(admin)
        denied = f"ticks.raw.denied.{suffix}"
        bootstrap_topics(admin.model_copy(update={"topic_raw": denied}))
        yield SecureBroker(cluster, cluster.client_env_file, admin, list(cluster.credentials().values()), denied)
    finally:
        cluster.down()


def stage_env(secure: SecureBroker, **extra: str) -> dict[str, str]:
    """A stage subprocess's environment: the client snippet as its env file, the module's topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AGG_", "REPLAY_"))}
    env.update({
        "ENV_FILE": str(secure.env_file),
        "KAFKA_TOPIC_RAW": secure.admin.topic_raw,
        "KAFKA_TOPIC_AGG": secure.admin.topic_agg,
        "KAFKA_TOPIC_DLQ": secure.admin.topic_dlq,
        "AGG_PROGRESS_INTERVAL_S": "5",
    })
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m streaming ARGS`, output captured."""
    return subprocess.run([sys.executable, "-m", "tick_tools", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def output_of(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_no_secret(secure: SecureBroker, *texts: str) -> None:
    """No password of any principal (nor the key store's) in the captured text."""
    for text in texts:
        for secret in secure.secrets:
            assert secret not in text, "a password was printed"


def test_secured_chain_replay_aggregate_facts_validate_is_exact(secure: SecureBroker, sample_path: Path,
                                                                 tmp_path: Path) -> None:
    """Replay -> aggregate -> facts -> validate, each stage as its own principal, equal to the offline run."""
    from dagster import DagsterInstance

    from tick_platform.backfill import materialize_facts
    from tick_platform_tests.test_platform_support import assert_facts_equal, expected_ohlcv, read_kibot

    offline = os.environ.copy()
    bins_file, bars_file = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    assert run(["replay", str(sample_path), "--to", str(bins_file), "--quiet"], offline).returncode == 0
    assert run(["aggregate", "--from", str(bins_file), "--to", str(bars_file)], offline).returncode == 0
    expected_bins = {r["bin_id"]: r for r in decode_rows((0, 0, line.encode()) for line in
                                                        bins_file.read_text().splitlines())}
    expected_bars = {r["bar_id"]: r for r in decode_rows((0, 0, line.encode()) for line in
                                                        bars_file.read_text().splitlines())}

    env = stage_env(secure)
    logs: list[str] = []
    replay = run(["replay", str(sample_path), "--quiet", "--job-id", f"sec-{uuid.uuid4().hex[:8]}"], env)
    logs.append(output_of(replay))
    assert replay.returncode == 0, logs[-1][-2000:]
    aggregate = run(["aggregate", "--until-idle"], env)
    logs.append(output_of(aggregate))
    assert aggregate.returncode == 0, logs[-1][-2000:]

    bins = compare(expected_bins, decode_rows(read_committed(secure.admin, secure.admin.topic_raw)), "bin_id")
    bars = compare(expected_bars, decode_rows(read_committed(secure.admin, secure.admin.topic_agg)), "bar_id")
    assert len(expected_bins) == 19_855 and len(expected_bars) == 5_049
    assert bins.exact, bins
    assert bars.exact, bars
    assert read_committed(secure.admin, secure.admin.topic_dlq) == []

    validate = run(["validate", "--kafka", "--ticks", str(sample_path)], env)
    logs.append(output_of(validate))
    assert validate.returncode == 0 and "verdict: PASS" in logs[-1], logs[-1][-3000:]

    # The facts read ticks.agg.1s as the warehouse principal; the secrets come from the env file
    # given to the backfill (the test process's own ENV_FILE is the suite's empty one).
    settings = load_settings(str(secure.env_file), warehouse={"target": "duckdb",
                                                           "duckdb_path": str(tmp_path / "wh.duckdb")})
    topics_only = KafkaSettings.model_validate({}).model_copy(update={
        "brokers": secure.admin.brokers, "topic_raw": secure.admin.topic_raw, "topic_agg": secure.admin.topic_agg,
        "topic_dlq": secure.admin.topic_dlq})
    with DagsterInstance.ephemeral() as instance:
        report = materialize_facts(DAY_START, DAY_END, settings, kafka=topics_only, instance=instance,
                                   env_file=str(secure.env_file))
        events = [str(entry) for entry in instance.all_logs(report.run_id)]
        run_record = instance.get_run_by_id(report.run_id)
        run_config = str(run_record.run_config if run_record else "")
    assert report.success and report.checks_passed, [c for c in report.checks if not c.passed]
    assert report.rows == {"FACT_TICKS_60S": 374, "FACT_TICKS_300S": 75}
    assert report.metadata["bars_1s"] == 5_049
    import duckdb

    ticks = read_kibot(sample_path)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        assert_facts_equal(conn.sql("SELECT * FROM CORE.FACT_TICKS_60S ORDER BY BAR_ID").pl(),
                           expected_ohlcv(ticks, 60))
        assert_facts_equal(conn.sql("SELECT * FROM CORE.FACT_TICKS_300S ORDER BY BAR_ID").pl(),
                           expected_ohlcv(ticks, 300))
    assert len(events) > 10
    assert not [e for e in events if "could not commit progress" in e]  # the facts' group ACL suffices
    assert_no_secret(secure, *logs, *events, run_config, str(report.metadata),
                     *(str(check.metadata) for check in report.checks))


@pytest.mark.parametrize(("stage", "args"), [
    ("AGG", ["aggregate", "--until-idle"]),
    ("REPLAY", ["replay", "{sample}", "--quiet"]),
])
def test_a_wrong_password_is_one_line_naming_the_setting(secure: SecureBroker, sample_path: Path, stage: str,
                                                         args: list[str]) -> None:
    """Refused by the broker: exit 1, one error line naming KAFKA_<STAGE>_SASL_PASSWORD, no restarts, no traceback."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    before = end_offsets(secure.admin, secure.admin.topic_raw), end_offsets(secure.admin, secure.admin.topic_agg)
    done = run([a.format(sample=sample_path) for a in args],
               stage_env(secure, **{f"KAFKA_{stage}_SASL_PASSWORD": wrong}), timeout_s=120)
    text = output_of(done)
    assert done.returncode == 1, text[-2000:]
    errors = error_lines(text)
    assert len(errors) == 1, text[-2000:]
    assert f"KAFKA_{stage}_SASL_PASSWORD" in errors[0] and "refused the credentials" in errors[0]
    assert "Traceback" not in text and "restarting" not in text and "SASL authentication error" not in text
    assert wrong not in text
    assert_no_secret(secure, text)
    after = end_offsets(secure.admin, secure.admin.topic_raw), end_offsets(secure.admin, secure.admin.topic_agg)
    assert after == before


def test_a_principal_without_the_topic_acl_is_refused_and_writes_nothing(secure: SecureBroker,
                                                                         sample_path: Path) -> None:
    """The replay's principal has no ACL on a topic it is pointed at: one authorization line, nothing written."""
    denied = secure.admin.model_copy(update={"topic_raw": secure.denied_topic})
    before = end_offsets(denied, secure.denied_topic)
    job = f"denied-{uuid.uuid4().hex[:8]}"
    done = run(["replay", str(sample_path), "--quiet", "--job-id", job],
               stage_env(secure, KAFKA_TOPIC_RAW=secure.denied_topic), timeout_s=120)
    text = output_of(done)
    assert done.returncode == 1, text[-2000:]
    errors = error_lines(text)
    assert len(errors) == 1, text[-2000:]
    assert "not authorized (TOPIC_AUTHORIZATION_FAILED)" in errors[0]
    assert "Traceback" not in text and "restarting" not in text
    assert before and end_offsets(denied, secure.denied_topic) == before == dict.fromkeys(before, 0)
    checkpoints = [r for r in read_committed(secure.admin, CHECKPOINT_TOPIC) if r[2] is not None]
    assert not [r for r in checkpoints if job.encode() in (r[2] or b"")], "a checkpoint of the refused job committed"
    assert_no_secret(secure, text)


def test_a_client_without_tls_cannot_connect(secure: SecureBroker) -> None:
    """PLAINTEXT to the SASL_SSL port: librdkafka gets no metadata; the CLI says so in one line."""
    plain = {**secure.admin.client_base(), "security.protocol": "PLAINTEXT", "log_level": 0}
    plain.pop("sasl.mechanism")
    with pytest.raises(Exception, match=r"transport failure|timed out"):
        AdminClient(plain).list_topics(timeout=5)
    done = run(["topics", "list"], stage_env(secure, KAFKA_SECURITY_PROTOCOL="PLAINTEXT"), timeout_s=120)
    text = output_of(done)
    assert done.returncode == 1
    assert len(text.strip().splitlines()) == 1, text
    assert "KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in text and "expects TLS" in text
    assert_no_secret(secure, text)


def test_secrets_stay_in_owner_only_files_and_out_of_the_broker_logs(secure: SecureBroker) -> None:
    """client.env, the SCRAM users, key store and server.properties are mode 0600; no log names a password."""
    run_dir = secure.cluster.run_dir
    private = [secure.env_file, run_dir / "security" / "credentials.json", run_dir / "security" / "broker.p12",
               run_dir / "security" / "keystore.password", run_dir / "node-1" / "server.properties"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    snippet = secure.env_file.read_text()
    assert f"KAFKA_SASL_USERNAME={ADMIN_USER}" in snippet
    for stage, user in STAGE_USERS.items():
        assert f"KAFKA_{stage.upper()}_SASL_USERNAME={user}" in snippet
    logs = [p.read_text(errors="replace") for p in (run_dir / "node-1" / "logs").iterdir() if p.is_file()]
    assert logs and any("SASL_SSL" in text for text in logs)
    assert_no_secret(secure, *logs)
