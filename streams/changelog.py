"""A batch's table writes sent to the changelog as whole record batches, then stored locally.

Each write through Faust's ``Table.__setitem__`` queues one changelog message in Faust's
``ProducerBuffer``, whose task hands it to aiokafka's ``send`` one at a time, through
Faust's topic, sensors and callbacks. Measured on the development broker, that path cost
more per changed user than the risk core per record. :class:`ChangelogWriter` does what the
table does, a batch at a time:

- the records go to the table's changelog topic on the partition of the input records that
  changed them (the inputs and the changelog are co-partitioned), as raw bytes, as Faust
  writes them, in closed aiokafka record batches that leave without lingering;
- a partition's opening record (its marks) heads every one of its record batches. The
  broker stores a record batch whole or not at all, so whichever batches of a flush are
  lost, to a stop or to a send that fails for good, every state that arrives has the marks
  of its flush before it (RELIABILITY.md, defect 10);
- once the broker has acknowledged them, they are applied to the local store as the
  changelog's recovery applies them: a RocksDB store gets each partition's records and
  the changelog offset it has applied in one write batch (a restart then replays only the
  changelog's tail, and a crash cannot leave the store newer than its offset); other
  stores get them through ``apply_changelog_batch``, the call Faust's recovery makes.

Only for ``at_least_once``: with ``exactly_once`` the changelog must be written by the
partition's transactional producer, which Faust's table does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata
from faust.types import TP

from streams.recovery import write_with_offset, writes_atomically

Write = tuple[bytes, bytes]
"""A table key and its new value, both as stored."""

BATCH_OVERHEAD = 256
"""Bytes beyond its records' that a record batch of two records takes at most (v2 format: 61
for the header, at most 32 a record), with room to spare."""


class PartitionWrites(NamedTuple):
    """One partition's changelog records of a flush."""

    opening: Write | None
    """Written before ``records`` and again at the head of each of their record batches."""
    records: Sequence[Write]

    def __bool__(self) -> bool:
        return self.opening is not None or bool(self.records)

    def in_order(self) -> Sequence[Write]:
        """The opening, once, then the records: what a store ends up holding either way."""
        return _held(self.opening, self.records)


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
        self, producer: AIOKafkaProducer, writes: Mapping[int, PartitionWrites]
    ) -> None:
        """Deliver ``writes`` (by partition) to the changelog, then apply them to the store.

        Returns once the broker has acknowledged every record: a caller acks its input
        records only after that.
        """
        sent = await asyncio.gather(
            *(self._send(producer, partition, taken) for partition, taken in writes.items())
        )
        applied: dict[TP, list[_Applied]] = {}
        for chunks in sent:
            for metadata, records in chunks:
                tp = TP(metadata.topic, metadata.partition)
                base = metadata.offset
                applied.setdefault(tp, []).extend(
                    _Applied(k, v, tp, base + i) for i, (k, v) in enumerate(records)
                )
        store = self._table.data
        if writes_atomically(store):
            for tp, in_order in applied.items():
                write_with_offset(store, tp.partition, in_order)
        elif applied:
            everything = [record for in_order in applied.values() for record in in_order]
            store.apply_changelog_batch(everything, to_key=_same, to_value=_same)

    async def _send(
        self, producer: AIOKafkaProducer, partition: int, taken: PartitionWrites
    ) -> list[tuple[RecordMetadata, Sequence[Write]]]:
        """One partition's records, in as many record batches as the producer's size takes.

        aiokafka queues a partition's next batch only once the one before has left, so each
        partition is sent by its own coroutine, side by side with the others.
        """
        futures: list[tuple[asyncio.Future[RecordMetadata], Sequence[Write]]] = []
        for chunk, batch in _batches(producer, taken):
            futures.append(
                (await producer.send_batch(batch, self._topic, partition=partition), chunk)
            )
        delivered = await asyncio.gather(*(future for future, _ in futures))
        return [(metadata, chunk) for metadata, (_, chunk) in zip(delivered, futures, strict=True)]


def _batches(
    producer: AIOKafkaProducer, taken: PartitionWrites
) -> Iterable[tuple[Sequence[Write], Any]]:
    """Closed record batches of ``taken`` in order, each with the records it holds.

    Each batch starts with the opening record. A record too large to follow it in a batch
    of the producer's size gets a batch of its own size with it.
    """
    opening, records = taken
    start = 0
    batch = _opened(producer, opening)
    for index, (key, value) in enumerate(records):
        if batch.append(key=key, value=value, timestamp=None) is not None:
            continue
        if index > start:  # full: the record starts the next batch
            yield _held(opening, records[start:index]), batch
            start = index
            batch = _opened(producer, opening)
            if batch.append(key=key, value=value, timestamp=None) is not None:
                continue
        batch = _opened(producer, opening, room=len(key) + len(value))
        batch.append(key=key, value=value, timestamp=None)
    if opening is not None or len(records) > start:
        batch.close()  # closed, the batch is sent at once rather than after the linger
        yield _held(opening, records[start:]), batch


def _opened(producer: AIOKafkaProducer, opening: Write | None, room: int = 0) -> Any:
    """A new record batch holding ``opening``; with ``room``, one sized to fit that much more.

    The producer's own batches have its batch size and compression; a sized one is
    uncompressed, which the broker takes as well.
    """
    if room:
        size = room + BATCH_OVERHEAD + (0 if opening is None else sum(map(len, opening)))
        batch = BatchBuilder(size, DefaultRecordBatch.CODEC_NONE)
    else:
        batch = producer.create_batch()
    if opening is not None:
        batch.append(key=opening[0], value=opening[1], timestamp=None)  # the first always fits
    return batch


def _held(opening: Write | None, records: Sequence[Write]) -> Sequence[Write]:
    """``records`` after ``opening``, if there is one."""
    return records if opening is None else [opening, *records]
