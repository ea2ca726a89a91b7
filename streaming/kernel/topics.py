"""Create the platform's topics and report them like kafka-topics / kafka-consumer-groups do."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.kernel.errors import BrokerError, InUseError
from streaming.kernel.settings import KafkaSettings, Stage


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the design fixes it."""

    name: str
    partitions: int
    retention_ms: int
    purpose: str


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    """ticks.raw, the bar topic (ticks.agg.1s by default) and ticks.dlq with the configured names and shapes."""
    return [
        TopicSpec(kafka.topic_raw, kafka.partitions, kafka.retention_ms, "10 ms bins, key = symbol"),
        TopicSpec(kafka.topic_agg, kafka.partitions, kafka.retention_ms, "final bars, key = symbol"),
        TopicSpec(kafka.topic_dlq, kafka.dlq_partitions, kafka.dlq_retention_ms, "rejected input with reason"),
    ]


def admin_client(kafka: KafkaSettings, stage: Stage | None = None) -> AdminClient:
    """An AdminClient with the pass-through security settings, as `stage`'s principal (None: the shared one).

    Its log stops at notices: librdkafka reports at info level an answer that arrived after the
    request's future had its result ("Purging 1 unserved events from background queue", e.g. after
    list_consumer_groups), and a command that refuses in one line must print only that line.
    """
    return AdminClient({"log_level": 5, **kafka.client_base(stage)})


def bootstrap_topics(kafka: KafkaSettings, replication_factor: int | None = None) -> dict[str, str]:
    """Create missing topics; returns topic -> "created" | "exists". Idempotent."""
    admin = admin_client(kafka)
    try:
        md = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.brokers}: {exc}") from None
    brokers = len(md.brokers)
    rf = replication_factor or min(max(kafka.replication_factor, 3 if brokers >= 3 else 1), brokers)
    isr = max(kafka.min_insync_replicas, 2 if rf >= 3 else 1)
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for spec in topic_specs(kafka):
        if spec.name in md.topics:
            result[spec.name] = "exists"
            continue
        new.append(
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=rf,
                config={
                    "retention.ms": str(spec.retention_ms),
                    "min.insync.replicas": str(isr),
                    "cleanup.policy": "delete",
                    "message.timestamp.type": "CreateTime",
                },
            )
        )
    if new:
        for name, fut in admin.create_topics(new, request_timeout=30).items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise BrokerError(f"creating topic {name} failed: {exc}") from None
        _wait_for_leaders(admin, [t.topic for t in new])
    return result


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """New topics are usable once every partition has a leader; callers produce right after."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        ready = all(
            name in md.topics
            and md.topics[name].error is None
            and md.topics[name].partitions
            and all(p.leader >= 0 for p in md.topics[name].partitions.values())
            for name in names
        )
        if ready:
            return
        time.sleep(0.1)
    raise BrokerError(f"topics {names} have no leader after {timeout_s:.0f}s")


def _watermarks(consumer: Consumer, tp: TopicPartition, attempts: int = 50) -> tuple[int, int]:
    """Low/high offsets, retrying while leadership settles (right after creation or a broker loss)."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PartitionInfo:
    """One partition's replicas and offsets."""

    partition: int
    leader: int
    replicas: int
    isr: int
    low: int
    high: int


@dataclass(frozen=True)
class TopicInfo:
    """A topic and its partitions."""

    name: str
    partitions: list[PartitionInfo]
    retention_ms: str

    @property
    def messages(self) -> int:
        return sum(p.high - p.low for p in self.partitions)


def describe_topics(kafka: KafkaSettings, names: list[str] | None = None) -> list[TopicInfo]:
    """Partitions, replication and low/high offsets of the platform's topics (or `names`)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = admin_client(kafka)
    md = admin.list_topics(timeout=10)
    wanted = names or [s.name for s in topic_specs(kafka)]
    consumer = Consumer({**kafka.client_base(), "group.id": "tick-platform-inspector", "enable.auto.commit": False})
    infos: list[TopicInfo] = []
    try:
        for name in wanted:
            tmd = md.topics.get(name)
            if tmd is None or tmd.error is not None:
                continue
            parts = []
            for pid, pmd in sorted(tmd.partitions.items()):
                low, high = _watermarks(consumer, TopicPartition(name, pid))
                parts.append(PartitionInfo(pid, pmd.leader, len(pmd.replicas), len(pmd.isrs), low, high))
            res = ConfigResource(ResourceType.TOPIC, name)
            cfg = admin.describe_configs([res])[res].result(timeout=10)
            retention = cfg["retention.ms"].value if "retention.ms" in cfg else "?"
            infos.append(TopicInfo(name, parts, str(retention)))
    finally:
        consumer.close()
    return infos


# Answers of a group coordinator that is moving, loading or finishing a transaction: wait them out.
_COORDINATOR_BUSY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError.UNSTABLE_OFFSET_COMMIT}


def committed_offsets(consumer: Consumer, tps: list[TopicPartition], wait_s: float) -> list[TopicPartition]:
    """The consumer's group's committed offsets, retrying transient coordinator errors for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return list(consumer.committed(tps, timeout=30))
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _COORDINATOR_BUSY) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def group_lag(kafka: KafkaSettings, group: str, topic: str, stage: Stage | None = None) -> dict[int, int | None]:
    """Lag per partition of a consumer group on a topic (None where it has committed nothing).

    `stage` picks the principal that asks (None: the shared one). It needs DESCRIBE on the
    topic and on the group only: end offsets and committed offsets, never the records.
    """
    admin = admin_client(kafka, stage)
    md = admin.list_topics(topic, timeout=10)
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None:
        return {}
    tps = [TopicPartition(topic, p) for p in sorted(tmd.partitions)]
    # A consumer in the group that never subscribes reads its offsets without joining it. Not
    # AdminClient.list_consumer_group_offsets: librdkafka dereferences the admin client's missing
    # group handle when the coordinator answers NOT_COORDINATOR or is still loading, and the
    # process dies with SIGSEGV (librdkafka#5040, confluent-kafka-python#1982).
    consumer = Consumer({**kafka.client_base(stage), "group.id": group, "enable.auto.commit": False})
    try:
        committed = {tp.partition: tp.offset for tp in committed_offsets(consumer, tps, wait_s=30)}
        lag: dict[int, int | None] = {}
        for tp in tps:
            _, high = _watermarks(consumer, tp)
            off = committed.get(tp.partition, -1001)
            lag[tp.partition] = None if off is None or off < 0 else max(0, high - off)
        return lag
    finally:
        consumer.close()


def list_groups(kafka: KafkaSettings) -> list[str]:
    """Consumer group ids known to the cluster."""
    admin = admin_client(kafka)
    try:
        res = admin.list_consumer_groups(request_timeout=10).result()
    except KafkaException as exc:
        raise BrokerError(f"cannot list the consumer groups at {kafka.brokers}: {exc}") from None
    return sorted(g.group_id for g in res.valid)


@dataclass(frozen=True)
class GroupInUse:
    """A consumer group with active members: who they are and which of the topics in question they read."""

    group_id: str
    state: str
    client_ids: tuple[str, ...]
    topics: tuple[str, ...]

    def describe(self) -> str:
        """`group tick-aggregator: 2 active members (client ids a, b) on ticks.raw`."""
        count = len(self.client_ids)
        clients = ", ".join(sorted(set(self.client_ids)))
        where = f" on {', '.join(self.topics)}" if self.topics else ""
        return (f"consumer group {self.group_id}: {count} active member{'s' if count != 1 else ''} "
                f"(client ids {clients}; state {self.state}){where}")


def groups_in_use(kafka: KafkaSettings, topics: list[str], groups: list[str], wait_s: float = 30.0) -> list[GroupInUse]:
    """The consumer groups with active members that read one of `topics`, or are one of `groups`.

    Asked of the group coordinators (describe_consumer_groups: state and members with their
    assignment), so a consumer that is running now counts and one that merely committed
    offsets once does not.
    """
    admin = admin_client(kafka)
    known = list_groups(kafka)
    if not known:
        return []
    wanted_topics, wanted_groups = set(topics), set(groups)
    found: list[GroupInUse] = []
    for group_id, future in admin.describe_consumer_groups(known, request_timeout=30).items():
        deadline = time.monotonic() + wait_s
        while True:
            try:
                desc = future.result()
                break
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                    desc = None  # gone since it was listed
                    break
                if not (err.retriable() or err.code() in _COORDINATOR_BUSY) or time.monotonic() > deadline:
                    raise BrokerError(f"cannot describe consumer group {group_id}: {exc}") from None
                time.sleep(0.2)
                future = admin.describe_consumer_groups([group_id], request_timeout=30)[group_id]
        if desc is None or not desc.members:
            continue
        assigned = {tp.topic for m in desc.members if m.assignment is not None
                    for tp in m.assignment.topic_partitions}
        hit = sorted(assigned & wanted_topics)
        if hit or group_id in wanted_groups:
            state = getattr(desc.state, "name", str(desc.state)).lower()
            found.append(GroupInUse(group_id, state, tuple(m.client_id for m in desc.members), tuple(hit)))
    return found


def refuse_if_in_use(kafka: KafkaSettings, topics: list[str], groups: list[str], action: str, force_hint: str) -> None:
    """InUseError (one line: who, and how to force) when live consumers use `topics` or are `groups`."""
    busy = groups_in_use(kafka, topics, groups)
    if busy:
        raise InUseError(f"refusing to {action}: " + "; ".join(g.describe() for g in busy)
                         + f". Stop those consumers first, or {force_hint} to do it anyway")


def _existing(kafka: KafkaSettings, names: list[str]) -> list[str]:
    admin = admin_client(kafka)
    try:
        present = set(admin.list_topics(timeout=10).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.brokers}: {exc}") from None
    return [name for name in names if name in present]


def recreate_topics(kafka: KafkaSettings, extra: list[str] | None = None, *, force: bool = False,
                    force_hint: str = "pass --force") -> list[str]:
    """Delete the platform's topics (and `extra` ones) and create them empty again; returns those deleted.

    For the demo on the local broker: a second `make demo` starts from the same empty state.
    Refuses (InUseError) while a live consumer group reads one of them, unless `force`: a running
    aggregator would see its input vanish and dead-letter everything after as late.
    """
    admin = admin_client(kafka)
    doomed = _existing(kafka, [s.name for s in topic_specs(kafka)] + (extra or []))
    if doomed and not force:
        refuse_if_in_use(kafka, doomed, [], f"recreate topics {', '.join(doomed)}", force_hint)
    if doomed:
        for name, fut in admin.delete_topics(doomed, operation_timeout=30).items():
            try:
                fut.result()
            except KafkaException as exc:
                raise BrokerError(f"deleting topic {name} failed: {exc}") from None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(doomed) & set(admin.list_topics(timeout=10).topics):
            time.sleep(0.2)
    # Creation can briefly fail while the deletion settles.
    for attempt in range(50):
        try:
            bootstrap_topics(kafka)
            return doomed
        except BrokerError:
            if attempt == 49:
                raise
            time.sleep(0.3)
    raise AssertionError("unreachable")


def delete_groups(kafka: KafkaSettings, groups: list[str], *, force: bool = False,
                  force_hint: str = "pass --force") -> dict[str, str]:
    """Forget consumer groups' committed offsets; returns group -> "deleted" | why it was kept.

    Refuses (InUseError) while one of them has active members, unless `force`. Even then the
    broker keeps a group that has members (NON_EMPTY_GROUP): that is reported, not hidden.
    """
    admin = admin_client(kafka)
    known = set(list_groups(kafka))
    wanted = [g for g in groups if g in known]
    if not wanted:
        return {}
    if not force:
        refuse_if_in_use(kafka, [], wanted, f"delete consumer group(s) {', '.join(wanted)}", force_hint)
    result: dict[str, str] = {}
    for group, fut in admin.delete_consumer_groups(wanted, request_timeout=30).items():
        try:
            fut.result()
            result[group] = "deleted"
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                result[group] = "deleted"  # gone already is what we want
            elif err.code() == KafkaError.NON_EMPTY_GROUP:
                result[group] = "kept: it still has active members"
            else:
                raise BrokerError(f"deleting consumer group {group} failed: {exc}") from None
    return result


def reset_platform(kafka: KafkaSettings, extra: list[str], groups: list[str], *, force: bool,
                   force_hint: str) -> tuple[list[str], dict[str, str]]:
    """Topics (and `extra`) recreated empty and `groups` deleted, after one check of who uses them.

    The check comes first and covers both, so a refusal names every live consumer and changes
    nothing. Returns the topics deleted and each group's outcome.
    """
    if not force:
        doomed = _existing(kafka, [s.name for s in topic_specs(kafka)] + extra)
        what = f"recreate topics {', '.join(doomed) or '(none yet)'} and delete consumer group(s) {', '.join(groups)}"
        refuse_if_in_use(kafka, doomed, groups, what, force_hint)
    deleted = recreate_topics(kafka, extra, force=True)
    return deleted, delete_groups(kafka, groups, force=True)
