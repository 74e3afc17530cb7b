"""The embedded Tansu broker: process lifecycle, and the ListOffsets shim measured on it.

These tests start brokers of their own rather than using ``kafka_bootstrap``: the bug
and the shim are Tansu's, and the shim must not be exercised against a real Kafka.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from streams.devbroker import TANSU_FAST_JOIN, BrokerStartError, TansuBroker, apply_tansu_shims

pytestmark = pytest.mark.integration

RECORDS_PER_BATCH = 10
BATCHES = 3


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuBroker]:
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def restore_end_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test patch ``end_offsets`` and put the original back afterwards."""
    monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", AIOKafkaConsumer.end_offsets)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_start_and_stop_leave_no_process() -> None:
    broker = TansuBroker()
    broker.start()
    try:
        process = broker.process
        assert process is not None
        port = broker.port
        assert process.poll() is None
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert broker.url == f"kafka://127.0.0.1:{port}"
        assert _accepts(port)
    finally:
        broker.stop()
    assert process.poll() is not None
    assert not _accepts(port)
    broker.stop()  # a second stop is harmless


def test_the_broker_runs_in_a_session_of_its_own() -> None:
    """A terminal's Ctrl-C reaches its starter, which stops its clients before the broker."""
    with TansuBroker() as broker:
        assert broker.process is not None
        pid = broker.process.pid
        assert os.getsid(pid) == pid
        assert os.getpgid(pid) == pid
        assert os.getsid(pid) != os.getsid(0)


def test_the_broker_gets_none_of_lineguards_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEGUARD_KAFKA_SASL_PASSWORD", "hunter2-secret")
    broker = TansuBroker()
    broker.start()
    try:
        assert broker.process is not None
        environ = Path(f"/proc/{broker.process.pid}/environ").read_bytes().split(b"\0")
    finally:
        broker.stop()
    assert any(entry.startswith(b"PATH=") for entry in environ)
    assert not [entry for entry in environ if entry.startswith(b"LINEGUARD_")]


def test_context_manager_stops_the_broker_when_the_body_fails() -> None:
    with pytest.raises(ZeroDivisionError), TansuBroker() as broker:
        process = broker.process
        assert process is not None
        _ = 1 / 0
    assert process is not None
    assert process.poll() is not None
    assert broker.process is None


def test_a_broker_that_cannot_start_says_why_and_leaves_nothing_running() -> None:
    broker = TansuBroker(storage="bogus://nowhere/", attempts=2)
    with pytest.raises(BrokerStartError, match="UnsupportedStorageUrl"):
        broker.start()
    assert broker.process is None


def test_fast_join_settings_match_the_measured_values() -> None:
    assert TANSU_FAST_JOIN == {
        "broker_session_timeout": 2.0,
        "broker_heartbeat_interval": 0.5,
        "broker_rebalance_timeout": 2.0,
    }


@pytest.mark.usefixtures("restore_end_offsets")
def test_apply_tansu_shims_is_idempotent() -> None:
    original = AIOKafkaConsumer.end_offsets
    apply_tansu_shims()
    patched = AIOKafkaConsumer.end_offsets
    apply_tansu_shims()
    assert AIOKafkaConsumer.end_offsets is patched
    assert patched is not original


@pytest.mark.usefixtures("restore_end_offsets")
async def test_patched_end_offsets_counts_every_record_of_a_batched_topic(
    tansu: TansuBroker, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}.batched"
    tp = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
    await producer.start()
    try:
        for number in range(BATCHES):
            batch = producer.create_batch()
            for index in range(RECORDS_PER_BATCH):
                value = f"{number}-{index}".encode()
                assert batch.append(key=b"k", value=value, timestamp=None) is not None
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    total = BATCHES * RECORDS_PER_BATCH

    consumer = AIOKafkaConsumer(bootstrap_servers=tansu.bootstrap)
    await consumer.start()
    try:
        unpatched = (await consumer.end_offsets([tp]))[tp]
        apply_tansu_shims()
        patched = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()

    # Tansu's bug: the newest batch's base offset + 1, i.e. 20 + 1 here.
    assert unpatched == total - RECORDS_PER_BATCH + 1
    assert patched == total
