"""The changelog writer: records leave in order, in whole batches, and reach the store after.

A fake producer stands in for aiokafka's: real record batches (small, so that a partition's
records fill several), each delivered at the next offsets of its partition when the test
says, as the broker would acknowledge them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP

from streams.changelog import ChangelogWriter

TOPIC = "app-users-changelog"


class FakeProducer:
    """``create_batch`` and ``send_batch``; batches are delivered by :meth:`deliver`."""

    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future[RecordMetadata]]] = []
        self.ends: defaultdict[int, int] = defaultdict(int)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        assert batch.closed()  # sent at once, not after the linger
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, future))
        return future

    def deliver(self) -> None:
        for topic, partition, batch, future in self.sent:
            if not future.done():
                tp = TopicPartition(topic, partition)
                base = self.ends[partition]
                self.ends[partition] += batch.record_count()
                future.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, 0))


class FakeStore:
    """What ``apply_changelog_batch`` was given: (key, value, tp, offset) of each record."""

    def __init__(self) -> None:
        self.applied: list[tuple[bytes, bytes, TP, int]] = []

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        for event in batch:
            message = event.message
            assert (event.key, event.value) == (message.key, message.value)
            assert message.partition == message.tp.partition
            self.applied.append(
                (to_key(message.key), to_value(message.value), message.tp, message.offset)
            )


def _table(store: FakeStore) -> Any:
    return SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC), data=store
    )


async def test_each_write_reaches_the_store_at_its_changelog_offset_once_delivered() -> None:
    store = FakeStore()
    producer = FakeProducer(batch_bytes=300)
    writes = {
        2: [(f"u-{i}".encode(), bytes([i]) * 40) for i in range(20)],
        5: [(b"u-x", b"x" * 40), (b"\xffprogress/5", b"marks")],
    }
    producer.ends[2] = 100  # the changelog partition already holds records
    written = asyncio.ensure_future(ChangelogWriter(_table(store)).write(producer, writes))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    assert not written.done()
    assert store.applied == []  # nothing is stored before the broker acknowledged it
    assert {(topic, partition) for topic, partition, _, _ in producer.sent} == {
        (TOPIC, 2),
        (TOPIC, 5),
    }
    assert sum(1 for _, partition, _, _ in producer.sent if partition == 2) > 1  # several batches
    producer.deliver()
    await written
    assert store.applied == [
        *((key, value, TP(TOPIC, 2), 100 + i) for i, (key, value) in enumerate(writes[2])),
        *((key, value, TP(TOPIC, 5), i) for i, (key, value) in enumerate(writes[5])),
    ]


async def test_nothing_to_write_sends_nothing() -> None:
    store = FakeStore()
    producer = FakeProducer(batch_bytes=300)
    await ChangelogWriter(_table(store)).write(producer, {})  # type: ignore[arg-type]
    assert producer.sent == []
    assert store.applied == []
