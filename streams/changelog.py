"""A batch's table writes sent to the changelog as whole record batches, then stored locally.

Each write through Faust's ``Table.__setitem__`` queues one changelog message in Faust's
``ProducerBuffer``, whose task hands it to aiokafka's ``send`` one at a time, through
Faust's topic, sensors and callbacks. Measured on the development broker, that path cost
more per changed user than the risk core per record. :class:`ChangelogWriter` does what the
table does, a batch at a time:

- the records go to the table's changelog topic on the partition of the input records that
  changed them (the inputs and the changelog are co-partitioned), as raw bytes, as Faust
  writes them, in closed aiokafka record batches that leave without lingering;
- once the broker has acknowledged them, they are applied to the local store with
  ``apply_changelog_batch``, the call Faust's recovery makes with the same records, so the
  RocksDB store also persists the changelog offset it has applied (a restart then replays
  only the changelog's tail).

Only for ``at_least_once``: with ``exactly_once`` the changelog must be written by the
partition's transactional producer, which Faust's table does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from faust.types import TP

Write = tuple[bytes, bytes]
"""A table key and its new value, both as stored."""


class _Applied:
    """A changelog record as a store's ``apply_changelog_batch`` reads it (event and message)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, key: bytes, value: bytes, tp: TP, offset: int) -> None:
        self.key = key
        self.value = value
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset

    @property
    def message(self) -> _Applied:
        return self


def _same(raw: Any) -> Any:
    return raw


class ChangelogWriter:
    """Writes a table's changed keys: changelog first, then the local store."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._topic: str = table.changelog_topic.get_topic_name()

    async def write(
        self, producer: AIOKafkaProducer, writes: Mapping[int, Sequence[Write]]
    ) -> None:
        """Deliver ``writes`` (by partition) to the changelog, then apply them to the store.

        Returns once the broker has acknowledged every record: a caller acks its input
        records only after that.
        """
        sent = await asyncio.gather(
            *(self._send(producer, partition, records) for partition, records in writes.items())
        )
        applied: list[_Applied] = []
        for chunks in sent:
            for metadata, records in chunks:
                tp = TP(metadata.topic, metadata.partition)
                base = metadata.offset
                applied += (_Applied(k, v, tp, base + i) for i, (k, v) in enumerate(records))
        if applied:
            self._table.data.apply_changelog_batch(applied, to_key=_same, to_value=_same)

    async def _send(
        self, producer: AIOKafkaProducer, partition: int, records: Sequence[Write]
    ) -> list[tuple[RecordMetadata, Sequence[Write]]]:
        """One partition's records, in as many record batches as the producer's size takes.

        aiokafka queues a partition's next batch only once the one before has left, so each
        partition is sent by its own coroutine, side by side with the others.
        """
        futures: list[tuple[asyncio.Future[RecordMetadata], Sequence[Write]]] = []
        for chunk, batch in _batches(producer, records):
            futures.append(
                (await producer.send_batch(batch, self._topic, partition=partition), chunk)
            )
        return [(await future, chunk) for future, chunk in futures]


def _batches(
    producer: AIOKafkaProducer, records: Sequence[Write]
) -> Iterable[tuple[Sequence[Write], Any]]:
    """Closed record batches of ``records`` in order, each with the records it holds."""
    start = 0
    batch = producer.create_batch()
    for index, (key, value) in enumerate(records):
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: a new one
            yield records[start:index], batch
            start = index
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # the first always fits
    if len(records) > start:
        batch.close()  # closed, the batch is sent at once rather than after the linger
        yield records[start:], batch
