"""The changelog writer: records leave in order, in whole batches, each opened by the
partition's marks, and reach the store after.

A fake producer stands in for aiokafka's: real record batches (small, so that a partition's
records fill several), each delivered at the next offsets of its partition when the test
says, as the broker would acknowledge them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP
from test_recovery_fast_path import rocksdb_store

from risk.replay import INPUT_TOPICS
from risk.state import UserState
from streams.changelog import ChangelogWriter, PartitionWrites, Write, _batches
from streams.progress import Marks, event_time_at, is_progress_key, progress_key
from streams.runtime import TableStore

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

    def deliver(self, lost: frozenset[int] = frozenset()) -> list[Write]:
        """Acknowledge the batches sent, but fail those at the indexes in ``lost`` for good.

        Returns the records the broker stores: those of each batch delivered, whole.
        """
        stored: list[Write] = []
        for index, (topic, partition, batch, future) in enumerate(self.sent):
            if future.done():
                continue
            if index in lost:
                future.set_exception(ConnectionError("the batch failed for good"))
                continue
            tp = TopicPartition(topic, partition)
            base = self.ends[partition]
            self.ends[partition] += batch.record_count()
            future.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, 0))
            stored += _records(batch)
        return stored


def _records(batch: BatchBuilder) -> list[Write]:
    """A closed batch's records as the broker reads them."""
    records = MemoryRecords(bytes(batch._build())).next_batch()
    assert records is not None
    return [(record.key, record.value) for record in records]


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
        2: PartitionWrites(None, [(f"u-{i}".encode(), bytes([i]) * 40) for i in range(20)]),
        5: PartitionWrites(None, [(b"u-x", b"x" * 40), (b"u-y", b"y")]),
    }
    producer.ends[2] = 100  # the changelog partition already holds records
    written = asyncio.ensure_future(ChangelogWriter(_table(store)).write(producer, writes))
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
        *((key, value, TP(TOPIC, 2), 100 + i) for i, (key, value) in enumerate(writes[2].records)),
        *((key, value, TP(TOPIC, 5), i) for i, (key, value) in enumerate(writes[5].records)),
    ]


class PowerLoss:
    """A partition's RocksDB database whose writes after the first never reach the disk."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.writes = 0

    def _write(self) -> None:
        self.writes += 1
        if self.writes > 1:
            raise OSError("the power was lost")

    def write(self, batch: Any) -> None:
        self._write()
        self.db.write(batch)

    def put(self, key: bytes, value: bytes) -> None:
        self._write()
        self.db.put(key, value)

    def delete(self, key: bytes) -> None:
        self._write()
        self.db.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_rocksdb_stores_each_partitions_records_and_offset_in_one_write(
    tmp_path: Path,
) -> None:
    """A crash after any write leaves the store at the offset of what it holds.

    Faust's ``apply_changelog_batch`` wrote the data, then the offset in a put of its own:
    a power loss between them left a store newer than its offset, which the next first
    recovery took for another changelog's and rebuilt (RELIABILITY.md, defect 41).
    """
    store = rocksdb_store(tmp_path, "users")
    for partition in (2, 5):
        store._db_for_partition(partition)
    disks = {partition: PowerLoss(store._dbs[partition]) for partition in (2, 5)}
    store._dbs.update(disks)
    producer = FakeProducer(batch_bytes=300)
    producer.ends[2] = 100
    states = [(b"u-%d" % (i % 3), bytes([i]) * 40) for i in range(12)]  # several batches
    writes = {2: PartitionWrites(None, states), 5: PartitionWrites(None, [(b"u-x", b"x")])}
    written = asyncio.ensure_future(ChangelogWriter(_table(store)).write(producer, writes))
    for _ in range(5):
        await asyncio.sleep(0)
    producer.deliver()
    with contextlib.suppress(OSError):
        await written
    store._dbs.update({partition: disk.db for partition, disk in disks.items()})
    assert {partition: disk.writes for partition, disk in disks.items()} == {2: 1, 5: 1}
    assert store.persisted_offset(TP(TOPIC, 2)) == 111
    assert store.persisted_offset(TP(TOPIC, 5)) == 0
    assert dict(store._db_for_partition(2).items()) == dict(states) | {store.offset_key: b"111"}
    assert dict(store._db_for_partition(5).items()) == {b"u-x": b"x", store.offset_key: b"0"}


async def test_the_opening_record_heads_every_batch_and_is_stored_at_each_of_its_offsets() -> None:
    store = FakeStore()
    producer = FakeProducer(batch_bytes=300)
    opening = (b"\xffprogress/2", b"marks")
    states = [(f"u-{i}".encode(), bytes([i]) * 40) for i in range(20)]
    written = asyncio.ensure_future(
        ChangelogWriter(_table(store)).write(producer, {2: PartitionWrites(opening, states)})
    )
    for _ in range(5):
        await asyncio.sleep(0)
    batches = [_records(batch) for _, _, batch, _ in producer.sent]
    assert len(batches) > 1
    assert all(records[0] == opening for records in batches)
    assert [write for records in batches for write in records[1:]] == states
    producer.deliver()
    await written
    stored = [write for records in batches for write in records]
    assert [(key, value) for key, value, _, _ in store.applied] == stored
    assert [offset for _, _, _, offset in store.applied] == list(range(len(stored)))


async def test_a_record_too_large_to_follow_the_opening_gets_a_batch_of_its_own_size() -> None:
    producer = FakeProducer(batch_bytes=300)
    opening = (b"\xffprogress/0", b"marks")
    states = [(b"u-small", b"s" * 10), (b"u-large", b"L" * 1_000), (b"u-next", b"n" * 10)]
    written = asyncio.ensure_future(
        ChangelogWriter(_table(FakeStore())).write(producer, {0: PartitionWrites(opening, states)})
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert [_records(batch) for _, _, batch, _ in producer.sent] == [
        [opening, states[0]],
        [opening, states[1], states[2]],  # its size, with room to spare for a small one
    ]
    producer.deliver()
    await written


async def test_marks_alone_are_written() -> None:
    store = FakeStore()
    producer = FakeProducer(batch_bytes=300)
    opening = (b"\xffprogress/0", b"marks")
    written = asyncio.ensure_future(
        ChangelogWriter(_table(store)).write(producer, {0: PartitionWrites(opening, [])})
    )
    for _ in range(5):
        await asyncio.sleep(0)
    producer.deliver()
    await written
    assert store.applied == [(*opening, TP(TOPIC, 0), 0)]


async def test_a_flush_that_loses_any_of_its_batches_leaves_no_state_without_its_marks() -> None:
    """Whatever a flush leaves on the broker, each state has its flush's marks before it.

    A worker stopped mid-flush, or a record batch that fails for good while later ones go
    through, leaves some of a partition's record batches. Its successor resumes the
    watermark from the marks of the committed offsets; a state without them put the
    watermark at the states' latest activity, and timers were lost (RELIABILITY.md,
    defect 10: a partition's first flush, cut after some states).
    """
    partition, at = 1, 1_770_000_000_000_000
    committed = [0] * len(INPUT_TOPICS)
    marks = Marks(committed, None).advance([9, 0, 0, 0, 0], at + 8, [None] * len(INPUT_TOPICS))
    assert marks is not None
    batches, _ = await _flush(partition, marks, at, lost=frozenset())
    assert batches >= 3
    for lost_count in range(batches + 1):
        for lost in itertools.combinations(range(batches), lost_count):
            _, stored = await _flush(partition, marks, at, frozenset(lost))
            if any(not is_progress_key(key) for key in stored):
                assert event_time_at(stored.get(progress_key(partition)), committed) == (True, None)


async def _flush(
    partition: int, marks: bytes, at: int, lost: frozenset[int]
) -> tuple[int, dict[bytes, bytes]]:
    """Nine users' first flush, with the record batches at the indexes in ``lost`` failing.

    Returns how many record batches it took, and what the broker stores of them.
    """
    users = TableStore(SimpleNamespace(data={}), partition)
    for index in range(9):
        user = f"u-{index}"
        users[user] = UserState(user, first_seen=at, clock=at, last_activity=at + index)
    producer = FakeProducer(batch_bytes=700)
    writer = ChangelogWriter(_table(FakeStore()))
    written = asyncio.ensure_future(writer.write(producer, {partition: users.take(marks)}))
    for _ in range(5):
        await asyncio.sleep(0)
    stored = dict(producer.deliver(lost))
    outcome = (await asyncio.gather(written, return_exceptions=True))[0]
    assert (outcome is None) == (not lost)
    return len(producer.sent), stored


def test_marks_piled_up_between_commits_still_share_record_batches_with_states() -> None:
    """The marks head every record batch of a flush: they must leave room for states.

    Before, 900 batches without a confirmed commit made a marks record past the producer's
    16 KB record batch, and every state went in a record batch of its own, each with a full
    copy of the marks.
    """
    committed = [1_000_000_000, 500_000_000, 20_000_000, 3_000_000, 700_000]
    at = 1_764_000_000_000_000
    marks, record = Marks(committed, at), None
    for n in range(1, 900):
        position = [committed[0] + n, committed[1] + n, *committed[2:]]
        record = marks.advance(position, at + n * 1_000, [None] * len(committed))
    assert record is not None
    producer = FakeProducer(batch_bytes=16_384)  # aiokafka's default max_batch_size
    states = [(f"u-{i}".encode(), b"s" * 300) for i in range(100)]
    writes = PartitionWrites((progress_key(0), record), states)
    batches = list(_batches(producer, writes))  # type: ignore[arg-type]  # a stand-in
    assert len(batches) <= 4  # 31 KB of states, in 16 KB batches each headed by the marks
    assert all(chunk[0] == (progress_key(0), record) for chunk, _ in batches)
    assert event_time_at(record, committed) == (True, at)
