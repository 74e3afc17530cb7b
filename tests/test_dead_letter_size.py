"""A dead letter as large as its record and more: sent whole when it can be, never a crash.

A dead letter carries the rejected record's original bytes plus about 150 bytes of ``dlt.*``
headers. With Faust's default ``producer_max_request_size`` (1,000,000), a record of
999,850 to 1,048,588 bytes, which Kafka's default limit lets into an input topic, was
rejected as ``too_large`` and then refused by the producer with
``MessageSizeTooLargeError``: the worker stopped, and after each restart read the same
record and stopped again.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from risk.contract import Reason, Rejection
from streams.preflight import (
    DEAD_LETTER_HEADROOM,
    KAFKA_MAX_MESSAGE_BYTES,
    PRODUCER_MAX_REQUEST_SIZE,
)
from streams.runtime import TRUNCATED_HEADER, Runtime

INPUT = "credit.purchases.v1"
REJECTION = Rejection(Reason.TOO_LARGE, "value of 999900 bytes exceeds 65536 bytes")


class _Topic:
    """A Faust topic, as far as the direct send path reads it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


def _runtime(dead_letter_topic: str) -> Any:
    """The attributes ``Runtime._dead_letter`` reads, without a Faust app."""
    runtime = SimpleNamespace(
        topics=(INPUT,),
        dead_letter_topics={INPUT: _Topic(dead_letter_topic)},
        _topic_names={},
    )
    for name in ("_send", "_delivered_or_without_value", "_dead_letter_without_value"):
        setattr(runtime, name, partial(getattr(Runtime, name), runtime))
    return runtime


def _record(value: bytes, partition: int = 0) -> Any:
    return SimpleNamespace(
        topic=INPUT, partition=partition, offset=123_456, key=b"u-1", value=value, headers=[]
    )


def test_the_worker_producer_takes_the_dead_letter_of_any_record_kafka_takes_by_default() -> None:
    from streams.app import app

    assert app.conf.producer_max_request_size == PRODUCER_MAX_REQUEST_SIZE
    headers = [("dlt.original.topic", b"t" * 249), ("dlt.error", "é".encode() * 500)]
    largest = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        b"k" * 1_000, b"x" * KAFKA_MAX_MESSAGE_BYTES, headers
    )
    assert largest < KAFKA_MAX_MESSAGE_BYTES + DEAD_LETTER_HEADROOM < PRODUCER_MAX_REQUEST_SIZE


@pytest.mark.integration
def test_a_dead_letter_the_producer_refuses_goes_with_a_note_for_its_value(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """Faust's former ``max_request_size``: the producer refuses before sending."""
    dead_letters = f"{unique_prefix}.purchases.dlt"
    value = b"x" * 999_900  # within Kafka's default limit: it reached the input topic
    delivered = asyncio.run(_dead_letter(kafka_bootstrap, dead_letters, value, 1_000_000))
    assert delivered.key == b"u-1"
    headers = dict(delivered.headers)
    assert headers[TRUNCATED_HEADER] == b"999900"
    assert headers["dlt.reason"] == b"too_large"
    assert headers["dlt.original.offset"] == b"123456"
    assert [name for name, _ in delivered.headers] == [
        "dlt.original.topic", "dlt.original.partition", "dlt.original.offset", "dlt.reason",
        "dlt.error", TRUNCATED_HEADER,
    ]  # fmt: skip
    assert delivered.value == b"value of 999900 bytes not kept: too large for the dead-letter topic"


@pytest.mark.integration
def test_with_the_worker_producers_limit_the_same_dead_letter_keeps_its_bytes(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    dead_letters = f"{unique_prefix}.purchases.dlt"
    value = b"x" * 999_900
    delivered = asyncio.run(
        _dead_letter(kafka_bootstrap, dead_letters, value, PRODUCER_MAX_REQUEST_SIZE)
    )
    assert delivered.value == value
    assert TRUNCATED_HEADER not in dict(delivered.headers)


async def _dead_letter(bootstrap: str, topic: str, value: bytes, max_request_size: int) -> Any:
    """Dead-letter one record through a real producer; the record the topic then holds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=max_request_size)
    await producer.start()
    try:
        await producer.partitions_for(topic)  # creates it on the development broker
        sent = await Runtime._dead_letter(_runtime(topic), producer, _record(value), 0, REJECTION)
        await sent
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        return await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()


class RefusingProducer:
    """aiokafka's ``send``: queued, then failed by the broker with ``refusal`` (once)."""

    def __init__(self, refusal: Exception) -> None:
        self.refusal: Exception | None = refusal
        self.sent: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, value: bytes, **options: Any) -> asyncio.Future[str]:
        self.sent.append((value, options["headers"]))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self.refusal is not None:
            future.set_exception(self.refusal)
            self.refusal = None
        else:
            future.set_result(topic)
        return future


async def test_a_dead_letter_the_broker_refuses_as_too_large_goes_with_a_note() -> None:
    """The broker's ``max.message.bytes`` for the dead-letter topic (Tansu does not enforce
    it, so a fake producer plays the broker's answer)."""
    producer = RefusingProducer(MessageSizeTooLargeError())
    value = b"x" * 2_000_000
    sent = await Runtime._dead_letter(_runtime("dlt"), producer, _record(value), 0, REJECTION)  # type: ignore[arg-type]
    assert await sent == "dlt"
    (first, original_headers), (note, headers) = producer.sent
    assert first == value
    assert note == b"value of 2000000 bytes not kept: too large for the dead-letter topic"
    assert headers == [*original_headers, (TRUNCATED_HEADER, b"2000000")]


async def test_a_dead_letter_failing_for_another_reason_still_fails() -> None:
    producer = RefusingProducer(KafkaTimeoutError())
    sent = await Runtime._dead_letter(_runtime("dlt"), producer, _record(b"{}"), 0, REJECTION)  # type: ignore[arg-type]
    with pytest.raises(KafkaTimeoutError):
        await sent
    assert len(producer.sent) == 1
