"""The secured local broker's material: a CA and broker certificate, SCRAM users, ACLs per stage.

`python -m tick_tools broker up --secure` uses this to run the broker the way a managed cluster
runs: a SASL_SSL listener (SCRAM-SHA-512 over TLS) for every client, the StandardAuthorizer with
deny-by-default, and one principal per stage that may do exactly what that stage does
(docs/operations.md, "Secured broker"). The certificates come from the `cryptography` package, so
no keytool step and no openssl binary is needed.

The pure parts (which ACLs a stage needs, the client snippet) take plain values; the file writers
are kept apart from them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streaming.kernel.settings import STAGES, KafkaSettings, Stage, stage_env_name

SCRAM_MECHANISM = "SCRAM-SHA-512"
# The broker's certificate subject: the principal of its TLS client certificate on the controller
# listener (mutual TLS), one of the super users.
BROKER_SUBJECT = "tick-platform-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_SUBJECT}"
ADMIN_USER = "tick-admin"
# The default principal of each stage on the local secured broker.
STAGE_USERS: dict[Stage, str] = {
    "replay": "tick-replay",
    "agg": "tick-aggregator",
    "warehouse": "tick-warehouse",
    "dashboard": "tick-dashboard",
    "validate": "tick-validator",
}
CERT_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA and the broker's key store are, and the key store's password."""

    ca_pem: Path
    keystore: Path
    keystore_password: str


@dataclass(frozen=True)
class StageNames:
    """The topics, groups and transactional ids the stages use: what their ACLs name."""

    topic_raw: str
    topic_agg: str
    topic_dlq: str
    checkpoint_topic: str
    replay_transactional_id: str
    agg_group: str
    agg_transactional_id_prefix: str
    facts_group: str


def new_password() -> str:
    """A random password: hex only, so it needs no quoting in JAAS, .env or `--add-scram` syntax."""
    return secrets.token_hex(24)


def load_or_create_credentials(path: Path) -> dict[str, str]:
    """The SCRAM users of a run folder (user -> password), created once and kept (mode 0600)."""
    if path.is_file():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    users = {ADMIN_USER: new_password(), **{user: new_password() for user in STAGE_USERS.values()}}
    _write_private(path, json.dumps(users, indent=2))
    return users


def _write_private(path: Path, text: str | bytes) -> None:
    """Write a file only its owner can read, atomically (a half-written key store never exists)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text.encode() if isinstance(text, str) else text)
    tmp.replace(path)


def generate_tls(folder: Path, hosts: list[str]) -> TlsFiles:
    """A self-signed CA and a broker certificate for `hosts`, once per run folder.

    The broker's key and certificate go into a PKCS12 key store (what the JVM reads); the CA is
    a PEM file, the broker's trust store and librdkafka's `ssl.ca.location` alike.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files = TlsFiles(folder / "ca.pem", folder / "broker.p12", "")
    password_file = folder / "keystore.password"
    if files.ca_pem.is_file() and files.keystore.is_file() and password_file.is_file():
        return TlsFiles(files.ca_pem, files.keystore, password_file.read_text().strip())
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tick-platform local CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in sorted(set(hosts)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_SUBJECT)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # serverAuth for the listeners, clientAuth because the broker shows the same certificate
        # to the controller listener (mutual TLS).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    password = new_password()
    store = pkcs12.serialize_key_and_certificates(
        b"broker", key, cert, [ca_cert], serialization.BestAvailableEncryption(password.encode())
    )
    _write_private(files.keystore, store)
    _write_private(password_file, password)
    # The CA's key is not kept: nothing signs again; a new certificate means a new run folder.
    files.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(files.ca_pem, files.keystore, password)


def secure_properties(tls: TlsFiles, admin_password: str) -> dict[str, object]:
    """server.properties entries of the SASL_SSL listener, mutual-TLS controller and the authorizer."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{ADMIN_USER}" password="{admin_password}";')
    return {
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": tls.keystore,
        "ssl.keystore.password": tls.keystore_password,
        "ssl.key.password": tls.keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": tls.ca_pem,
        # The controller listener is TLS with client certificates: only a holder of a key the
        # local CA signed (the brokers) reaches the quorum; SCRAM cannot guard it, its users live
        # in the metadata the quorum serves.
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER};{BROKER_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_arguments(credentials: dict[str, str]) -> list[str]:
    """`kafka-storage format` arguments that create every SCRAM user at format time."""
    args: list[str] = []
    for user, password in sorted(credentials.items()):
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
    return args


def stage_names(kafka: KafkaSettings, replay_transactional_id: str, agg_group: str, agg_prefix: str,
                facts_group: str, checkpoint_topic: str) -> StageNames:
    """The names the ACLs are about, from the settings the stages read."""
    return StageNames(kafka.topic_raw, kafka.topic_agg, kafka.topic_dlq, checkpoint_topic,
                      replay_transactional_id, agg_group, agg_prefix, facts_group)


def _acl(principal: str, rtype: ResourceType, name: str, op: AclOperation,
         pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> AclBinding:
    return AclBinding(rtype, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)


def stage_acls(names: StageNames, users: dict[Stage, str]) -> list[AclBinding]:
    """The ACLs of each stage's principal: what it reads, writes, and which groups/transactions it owns.

    Producers need WRITE (and DESCRIBE, implied) on their topics and WRITE on their
    transactional ids; consumers READ on the topic and on their group. The readers that only
    assign partitions still look up their (random, prefixed) group's coordinator when they ask
    for offsets (the validator does), so they get READ on their group prefix too; a group ACL
    without the topic's grants no data. Only the replay's checkpoint reader asks for none.
    Transactional-id rules are prefixed: the stages add a job or instance id.
    """
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    read, write, create, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE
    prefixed = ResourcePatternType.PREFIXED
    replay, agg = users["replay"], users["agg"]
    acls = [
        _acl(replay, topic, names.topic_raw, write),
        _acl(replay, topic, names.topic_dlq, write),
        # The checkpoint topic: created on first use, written in the transaction, read at start.
        _acl(replay, topic, names.checkpoint_topic, create),
        _acl(replay, topic, names.checkpoint_topic, write),
        _acl(replay, topic, names.checkpoint_topic, read),
        _acl(replay, txn, names.replay_transactional_id, write, prefixed),  # "<id>-<job>"
        _acl(agg, topic, names.topic_raw, read),
        _acl(agg, group, names.agg_group, read),
        _acl(agg, topic, names.topic_agg, write),
        _acl(agg, topic, names.topic_dlq, write),
        _acl(agg, txn, names.agg_transactional_id_prefix, write, prefixed),  # "<prefix>-<instance>"
    ]
    acls.append(_acl(users["warehouse"], topic, names.topic_agg, read))
    acls.append(_acl(users["warehouse"], group, names.facts_group, read))  # commits its progress
    acls.append(_acl(users["warehouse"], group, "tick-platform-reader-", read, prefixed))
    # The ticks_raw observation and the sensor read ticks.raw's end offsets and the aggregator's
    # committed ones (its lag): metadata and offsets only, no data.
    acls.append(_acl(users["warehouse"], topic, names.topic_raw, describe))
    acls.append(_acl(users["warehouse"], group, names.agg_group, describe))
    acls.append(_acl(users["dashboard"], topic, names.topic_agg, read))
    acls.append(_acl(users["dashboard"], group, "tick-dashboard-", read, prefixed))
    acls += [_acl(users["validate"], topic, name, read) for name in (names.topic_raw, names.topic_agg, names.topic_dlq)]
    acls.append(_acl(users["validate"], group, "tick-validate-", read, prefixed))
    return acls


def client_env(bootstrap: str, ca_pem: Path, credentials: dict[str, str]) -> str:
    """The `.env` lines a client of the secured local broker needs (one principal per stage)."""
    lines = [
        "# Written by `python -m tick_tools broker up --secure`: keep it private (mode 0600).",
        f"KAFKA_BROKERS={bootstrap}",
        "KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        f"KAFKA_SASL_MECHANISM={SCRAM_MECHANISM}",
        f"KAFKA_SSL_CA_LOCATION={ca_pem}",
        "# The admin principal: topics bootstrap / list, smoke, and any stage without its own below.",
        f"KAFKA_SASL_USERNAME={ADMIN_USER}",
        f"KAFKA_SASL_PASSWORD={credentials[ADMIN_USER]}",
    ]
    for stage in STAGES:
        user = STAGE_USERS[stage]
        lines.append(f"{stage_env_name(stage, 'username')}={user}")
        lines.append(f"{stage_env_name(stage, 'password')}={credentials[user]}")
    return "\n".join(lines) + "\n"


def write_client_env(path: Path, bootstrap: str, ca_pem: Path, credentials: dict[str, str]) -> Path:
    """Write the client snippet next to the broker's files, readable by its owner only."""
    _write_private(path, client_env(bootstrap, ca_pem, credentials))
    return path
