"""Run a real Apache Kafka (KRaft) on loopback from the official Maven Central jars.

No Docker: Maven gathers org.apache.kafka:kafka_2.13 and kafka-tools (pom.xml
beside this file) into a cache folder once; each node is a JVM started in its
own session with its pid, config, data and logs under a run folder, so `down`
stops exactly the processes `up` started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streaming.kernel.errors import BrokerError
from tick_tools.broker import security

POM = Path(__file__).with_name("pom.xml")

LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def kafka_version() -> str:
    """The Kafka version pinned in pom.xml."""
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def fetch_jars(cache_dir: Path, *, quiet: bool = True) -> Path:
    """Gather the broker's jars with Maven once; later calls reuse the folder."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    libs = cache_dir / f"kafka-{kafka_version()}-{digest}" / "libs"
    marker = libs / ".complete"
    if marker.is_file():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH: install it (apt-get install maven) to fetch Kafka")
    if shutil.which("java") is None:
        raise BrokerError("java is not on PATH: install OpenJDK 17 or newer to run Kafka")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-B", *(["-q"] if quiet else []), "-f", str(POM),
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BrokerError("Maven could not fetch the Kafka jars:\n" + "\n".join(tail))
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(kafka_version())
    return libs


@dataclass(frozen=True)
class Node:
    """One combined broker+controller of the local cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def plan_nodes(brokers: str, count: int) -> list[Node]:
    """Nodes on consecutive port pairs from the first KAFKA_BROKERS entry (9092/9093, 9094/9095, ...)."""
    host, _, port_text = brokers.split(",")[0].strip().rpartition(":")
    base = int(port_text)
    return [Node(i + 1, host, base + 2 * i, base + 2 * i + 1) for i in range(count)]


def free_port_base(count: int, host: str = "127.0.0.1", start: int = 20_000) -> int:
    """A base port with 2*count free consecutive ports, for test clusters beside a user's broker."""
    rng = int.from_bytes(os.urandom(2), "big")
    for attempt in range(200):
        base = start + ((rng + attempt * 97) % 20_000)
        if all(_port_free(host, base + k) for k in range(2 * count)):
            return base
    raise BrokerError("no free port range found for a test broker")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class LocalCluster:
    """The broker(s) whose state lives in one run folder."""

    def __init__(self, run_dir: Path, cache_dir: Path, brokers: str, nodes: int = 1, heap: str = "1g",
                 secure: bool | None = None):
        """`secure`: a SASL_SSL broker (security.py); None keeps what the run folder was formatted as."""
        self.run_dir = run_dir.resolve()
        self.cache_dir = cache_dir.resolve()
        self.heap = heap
        saved = self._saved_layout()
        self.nodes = saved if saved else plan_nodes(brokers, nodes)
        saved_secure = self._saved_secure()
        if saved is not None and secure is not None and secure != saved_secure:
            mode = "SASL_SSL" if saved_secure else "plaintext"
            raise BrokerError(f"{self.run_dir} holds a {mode} broker; `broker reset` it first to change "
                              "between plaintext and --secure")
        self.secure = saved_secure if saved is not None else bool(secure)
        # The processes this object started: until the JVM has exec'd, /proc shows the parent's
        # command line, so liveness during start comes from the handle, not the pid file.
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # layout -----------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node_dir(self, node: Node) -> Path:
        return self.run_dir / f"node-{node.node_id}"

    def _layout_file(self) -> Path:
        return self.run_dir / "cluster.json"

    def _saved_layout(self) -> list[Node] | None:
        path = self._layout_file()
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return [Node(**n) for n in data["nodes"]]

    def _saved_secure(self) -> bool:
        path = self._layout_file()
        return bool(path.is_file() and json.loads(path.read_text()).get("secure", False))

    # security ---------------------------------------------------------------
    @property
    def security_dir(self) -> Path:
        return self.run_dir / "security"

    @property
    def client_env_file(self) -> Path:
        """The `.env` snippet for clients of a secured broker (written by `up`)."""
        return self.run_dir / "client.env"

    def credentials(self) -> dict[str, str]:
        """The SCRAM users and passwords of a secured broker (created on first use)."""
        return security.load_or_create_credentials(self.security_dir / "credentials.json")

    def _tls(self) -> security.TlsFiles:
        return security.generate_tls(self.security_dir, [n.host for n in self.nodes])

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of the runner's own admin client (the super user on a secured broker)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": 2}
        if self.secure:
            conf.update({
                "security.protocol": "SASL_SSL", "sasl.mechanism": security.SCRAM_MECHANISM,
                "sasl.username": security.ADMIN_USER, "sasl.password": self.credentials()[security.ADMIN_USER],
                "ssl.ca.location": str(self._tls().ca_pem),
            })
        return conf

    def grant_stage_acls(self, names: security.StageNames) -> int:
        """Create every stage principal's ACLs (idempotent) and write the client snippet; returns how many."""
        if not self.secure:
            raise BrokerError("ACLs need a secured broker: start it with `broker up --secure`")
        bindings = security.stage_acls(names, security.STAGE_USERS)
        admin = AdminClient(self.admin_config())
        try:
            for future in admin.create_acls(bindings, request_timeout=30).values():
                future.result()
        except KafkaException as exc:
            raise BrokerError(f"creating the stage ACLs failed: {exc.args[0].str()}") from None
        security.write_client_env(self.client_env_file, self.bootstrap, self._tls().ca_pem, self.credentials())
        return len(bindings)

    def pid_of(self, node: Node) -> int | None:
        pid_file = self.node_dir(node) / "pid"
        if not pid_file.is_file():
            return None
        pid = int(pid_file.read_text().strip() or 0)
        return pid if pid and _pid_alive(pid) and self._is_our_java(pid, node) else None

    def _is_our_java(self, pid: int, node: Node) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return True  # no /proc: trust the pid file
        return str(self.node_dir(node)) in cmdline

    def running(self) -> list[Node]:
        return [n for n in self.nodes if self.pid_of(n) is not None]

    # configuration ----------------------------------------------------------
    def _server_properties(self, node: Node) -> str:
        n = len(self.nodes)
        voters = ",".join(f"{x.node_id}@{x.host}:{x.controller_port}" for x in self.nodes)
        rf = min(3, n)
        isr = 2 if n >= 3 else 1
        client = "SASL_SSL" if self.secure else "PLAINTEXT"
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"{client}://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": f"{client}://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": self.node_dir(node) / "data",
            "num.partitions": 6,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "log.retention.minutes": 60,
            "num.network.threads": 2,
            "num.io.threads": 4,
            # A controlled shutdown moves leadership to other replicas; a single node has none, so it only
            # leaves every partition leaderless while the transaction coordinator still completes
            # transactions, and the coordinator then drops their markers as if the partitions were
            # deleted: a hanging transaction that stalls read_committed readers after the restart
            # (docs/reliability.md, finding 5). Without it, pending markers are re-sent from the
            # transaction log when the node comes back.
            "controlled.shutdown.enable": "true" if n > 1 else "false",
        }
        if n == 1:
            # Without the controlled shutdown the old incarnation stays registered until its session
            # expires, and the restarted node waits for that (9 s by default) before it serves; 5 s still
            # rides out a long GC pause on a busy machine.
            props["broker.heartbeat.interval.ms"] = 1_000
            props["broker.session.timeout.ms"] = 5_000
        if self.secure:
            props.update(security.secure_properties(self._tls(), self.credentials()[security.ADMIN_USER]))
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _prepare(self, libs: Path) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        layout = self._layout_file()
        cluster_id_file = self.run_dir / "cluster.id"
        if not cluster_id_file.is_file():
            cluster_id_file.write_text(_random_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        # SCRAM users exist from the first metadata record on, so the brokers can authenticate to
        # each other before any admin call could create them.
        scram = security.scram_arguments(self.credentials()) if self.secure else []
        for node in self.nodes:
            ndir = self.node_dir(node)
            (ndir / "logs").mkdir(parents=True, exist_ok=True)
            _write_owner_only(ndir / "server.properties", self._server_properties(node))
            (ndir / "log4j2.properties").write_text(LOG4J2)
            if not (ndir / "data" / "meta.properties").is_file():
                fmt = subprocess.run(
                    ["java", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
                     "-t", cluster_id, "-c", str(ndir / "server.properties"), "-g", *scram],
                    capture_output=True, text=True,
                )
                if fmt.returncode != 0:
                    detail = _redact(fmt.stderr.strip()[-500:], self.credentials().values() if self.secure else ())
                    raise BrokerError(f"formatting node {node.node_id} failed: {detail}")
        layout.write_text(json.dumps({"nodes": [asdict(n) for n in self.nodes], "secure": self.secure}, indent=2))

    # lifecycle --------------------------------------------------------------
    def up(self, timeout_s: float = 90.0) -> bool:
        """Start every node that is not running and wait until the cluster answers.

        Returns False if everything was already running (nothing was done).
        """
        if len(self.running()) == len(self.nodes):
            self.wait_ready(timeout_s)
            return False
        for node in self.nodes:
            if self.pid_of(node) is None:
                self._check_ports_free(node)
        libs = fetch_jars(self.cache_dir)
        self._prepare(libs)
        for node in self.nodes:
            if self.pid_of(node) is None:
                self.start_node(node.node_id, libs)
        self.wait_ready(timeout_s)
        return True

    def _check_ports_free(self, node: Node) -> None:
        for port in (node.port, node.controller_port):
            if not _port_free(node.host, port):
                raise BrokerError(
                    f"port {node.host}:{port} is taken by another process; "
                    "set KAFKA_BROKERS to a free host:port (the controller uses port+1)"
                )

    def start_node(self, node_id: int, libs: Path | None = None) -> int:
        """Start one node's JVM in its own session; returns its pid."""
        node = self._node(node_id)
        libs = libs or fetch_jars(self.cache_dir)
        ndir = self.node_dir(node)
        cmd = [
            "java", f"-Xms{min_heap(self.heap)}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ndir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={ndir / 'logs'}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(ndir / "server.properties"),
        ]
        with open(ndir / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        (ndir / "pid").write_text(str(proc.pid))
        self._procs[node.node_id] = proc
        return proc.pid

    def _exited(self, node: Node) -> bool:
        proc = self._procs.get(node.node_id)
        if proc is not None:
            return proc.poll() is not None
        return self.pid_of(node) is None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until every node is registered and answers metadata requests."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if self._exited(n)]
            if dead:
                log = self.node_dir(dead[0]) / "logs" / "server.log"
                tail = log.read_text(errors="replace").splitlines()[-5:] if log.is_file() else []
                raise BrokerError(f"broker node {dead[0].node_id} exited during start:\n" + "\n".join(tail))
            try:
                admin = AdminClient({**self.admin_config(), "socket.timeout.ms": 2000})
                md = admin.list_topics(timeout=2)
                if len(md.brokers) == len(self.nodes):
                    return
                last = f"{len(md.brokers)}/{len(self.nodes)} brokers registered"
            except Exception as exc:  # the broker is still starting
                last = str(exc)
            time.sleep(0.3)
        raise BrokerError(f"broker did not answer within {timeout_s:.0f}s ({last}); logs in {self.run_dir}")

    def stop_node(self, node_id: int, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> bool:
        """Stop one node (SIGTERM for a clean shutdown, SIGKILL for a crash) and wait for it."""
        node = self._node(node_id)
        proc = self._procs.get(node_id)
        pid = proc.pid if proc is not None and proc.poll() is None else self.pid_of(node)
        if pid is None:
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        (self.node_dir(node) / "pid").unlink(missing_ok=True)
        self._procs.pop(node.node_id, None)
        return True

    def down(self, timeout_s: float = 60.0) -> int:
        """Stop every node this run folder started; returns how many were running."""
        stopped = 0
        for node in reversed(self.nodes):
            if self.stop_node(node.node_id, signal.SIGTERM, timeout_s):
                stopped += 1
        return stopped

    def reset(self) -> None:
        """Stop and delete all data, logs and the cluster id (the jars stay cached)."""
        self.down()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no node {node_id} in {self.run_dir}")


def broker_answers(bootstrap: str, timeout_s: float = 3.0, client: dict[str, Any] | None = None) -> bool:
    """Whether a Kafka broker answers a metadata request at `bootstrap` (with `client`'s security settings)."""
    try:
        AdminClient({**(client or {}), "bootstrap.servers": bootstrap, "log_level": 2}).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return True


def ensure_broker(run_dir: Path, cache_dir: Path, brokers: str, heap: str = "1g", timeout_s: float = 90.0,
                  client: dict[str, Any] | None = None) -> str:
    """Use the broker at `brokers` if one answers; otherwise start the local one there. Says which.

    `client`: the clients' librdkafka settings, so a secured broker is asked the way they ask it.
    A local broker started here is the run folder's own kind (plaintext unless formatted --secure).
    """
    if broker_answers(brokers, client=client):
        return f"using the broker at {brokers}"
    cluster = LocalCluster(run_dir, cache_dir, brokers, heap=heap)
    wants_tls = str((client or {}).get("security.protocol", "PLAINTEXT")).upper() != "PLAINTEXT"
    if wants_tls != cluster.secure:
        raise BrokerError(
            f"no broker answers at {brokers} with KAFKA_SECURITY_PROTOCOL="
            f"{(client or {}).get('security.protocol', 'PLAINTEXT')}, and the local one in {cluster.run_dir} is "
            f"{'SASL_SSL' if cluster.secure else 'plaintext'}: start it with `broker up"
            f"{' --secure' if wants_tls else ''}` or fix the KAFKA_* settings"
        )
    cluster.up(timeout_s)
    return f"broker up at {cluster.bootstrap} (logs in {cluster.run_dir})"


def _write_owner_only(path: Path, text: str) -> None:
    """server.properties of a secured node holds key store and admin passwords: owner-only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def _redact(text: str, secrets_: Any) -> str:
    """`text` with every secret replaced by ***, for error lines that quote a tool's output."""
    for secret in secrets_:
        text = text.replace(secret, "***")
    return text


def _reap(pid: int) -> None:
    """Collect a child that exited, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, at least 128 MB."""
    unit = heap[-1].lower()
    mb = int(heap[:-1]) * (1024 if unit == "g" else 1)
    return f"{max(128, mb // 4)}m"


def _random_cluster_id() -> str:
    import base64

    # A leading "-" would be read as an option by StorageTool's argument parser.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
