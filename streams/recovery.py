"""Table recovery a fetch at a time: changelog records applied straight from each fetch.

faust-streaming 0.15.3 hands every changelog record to its table the way it hands input
records to agents: per record a task pair in the fetch loop (``Service.wait_first``), the
conductor's flow-control and producer waits, an ``Event`` decoded and queued, and in
``Recovery._slurp_changelogs`` an ``asyncio.wait_for`` on the queue plus a recount of
every partition's remaining offsets (``need_recovery``). py-spy on a worker recovering
100,000 users showed that machinery, not Kafka or the store, as the bound: about 4,000
records/s with the event loop busy and the consumer's fetch thread mostly idle.

:class:`ChangelogFastPath` takes the records of the tables' changelog partitions out of
the consumer's fetch result, before Faust turns them into messages, and applies each
partition's records to its table at once (:func:`apply_records`: one RocksDB write batch,
or one ``apply_changelog_batch`` call), with exactly the bookkeeping ``_slurp_changelogs``
does per record (the replaced code is named in each method). It runs synchronously
between the fetch returning and Faust's own iteration, so a record is applied under the
same assignment as Faust would have seen.

:class:`CheckedRecovery` drops, before Faust seeks them, the RocksDB partitions whose
store is not from their changelog: a data directory from another changelog.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import suppress
from time import monotonic
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.stores import rocksdb as rocksdb_store
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP

from streams.metrics import STORE_PARTITIONS_DROPPED

log = structlog.get_logger(__name__)

RecordMap = Mapping[Any, Sequence[Any]]
"""aiokafka's fetch result: topic-partition -> its records, in offset order."""
GetMany = Callable[[Any, float], Awaitable[RecordMap]]

_MARKER: Final = "__lineguard_changelog_fast_path__"


class ChangelogRecord:
    """One changelog record, shaped as the ``Event`` the stores read in a batch.

    ``MemoryStore`` reads ``event.key``, ``event.value``, ``event.message.value`` and
    ``event.message.partition``; ``RocksDBStore`` reads ``event.message`` for ``tp``,
    ``offset``, ``partition``, ``key`` and ``value``. With raw bytes keys and values the
    decoded and the raw forms are the same objects, so one small object serves as both.
    """

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> ChangelogRecord:
        """The record itself: the stores read the raw key and value from here."""
        return self


def accelerated_changelogs(tables: Any) -> frozenset[str]:
    """The changelog topics whose records can bypass Faust's per-record path.

    A table qualifies when its changelog carries raw bytes keys and values (so a decoded
    ``Event`` would hold the record's own bytes) and it has no ``on_changelog_event``
    callback, which Faust awaits per record. Other tables keep Faust's path.
    """
    topics = set()
    for table in tables.values():
        topic = table.changelog_topic
        raw = (
            topic.key_type is bytes
            and topic.value_type is bytes
            and topic.key_serializer == "raw"
            and topic.value_serializer == "raw"
        )
        if raw and table._on_changelog_event is None:
            topics.add(topic.get_topic_name())
    return frozenset(topics)


class ChangelogFastPath:
    """Applies fetched changelog records to their tables as whole batches.

    Install it with :meth:`install` before the consumer's first fetch (``on_worker_init``),
    so that no record of an accelerated changelog ever goes through Faust's queue: a
    partition's records must all take one path, or a late queued record could be applied
    over a newer one.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._topics: frozenset[str] = frozenset()
        self._consumer: Any = None

    def install(self, consumer: Any) -> None:
        """Wrap the consumer's ``_getmany`` (Faust's call into aiokafka); idempotent."""
        if consumer is self._consumer or getattr(consumer._getmany, _MARKER, False):
            return
        self._topics = accelerated_changelogs(self.app.tables)
        getmany: GetMany = consumer._getmany

        async def getmany_applying_changelogs(
            active_partitions: Collection[Any] | None,
            timeout: float,  # noqa: ASYNC109 - Faust's signature
        ) -> RecordMap:
            records = await getmany(active_partitions, timeout)
            # Faust drops a fetch that returns while flow is stopped (a rebalance began),
            # and seeks back; so are its changelog records.
            if not records or not consumer.flow_active:
                return records
            return self.apply(records)

        setattr(getmany_applying_changelogs, _MARKER, True)
        consumer._getmany = getmany_applying_changelogs
        self._consumer = consumer
        clear_stale_recovery_end(self.app.tables.recovery)

    def apply(self, records: RecordMap) -> RecordMap:
        """Apply the accelerated changelogs' records; return the rest for Faust.

        Per partition, as ``Recovery._slurp_changelogs`` does per record: only a
        partition being recovered or kept as a standby is applied, only records past the
        offset it has reached (a seek back reads some again), and that offset moves to
        the last record applied. The table gets them in log order in one batch, so the
        last write of a key wins, and RocksDB persists the batch's last offset with it.
        """
        recovery = self.app.tables.recovery
        rest: dict[Any, Sequence[Any]] = {}
        applied = False
        now = monotonic()
        for fetched_tp, batch in records.items():
            if fetched_tp.topic not in self._topics:
                rest[fetched_tp] = batch
                continue
            tp = TP(fetched_tp.topic, fetched_tp.partition)
            if tp in recovery.active_tps:
                offsets, received = recovery.active_offsets, recovery._active_events_received_at
            elif tp in recovery.standby_tps:
                offsets, received = recovery.standby_offsets, recovery._standby_events_received_at
            else:
                # Assigned to the consumer but to no recovery yet (a rebalance is under
                # way): the recovery that follows seeks this partition and reads it again.
                log.info("changelog_records_not_applied", topic=tp.topic,
                         partition=tp.partition, records=len(batch))  # fmt: skip
                continue
            seen = offsets.get(tp)
            fresh = [record for record in batch if seen is None or record.offset > seen]
            received[tp] = now
            if fresh:
                apply_records(recovery.tp_to_table[tp], tp, fresh)
                offsets[tp] = fresh[-1].offset
                applied = True
        if applied:
            recovery._last_flush_at = now
            self._signal_progress(recovery)
        return rest

    def _signal_progress(self, recovery: Any) -> None:
        """End the active recovery, or mark standbys ready, once nothing remains.

        ``_slurp_changelogs``' ``_maybe_signal_recovery_end`` and its standby check, run
        once per fetch instead of once per record.
        """
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
        tables = self.app.tables
        if recovery._standbys_span is None and tables.standbys_ready:
            return
        try:
            remaining = recovery.standby_remaining_total()
        except TypeError:
            # A standby partition added by a rebalance has no offset until its recovery
            # builds one (Faust's own loop logs and skips this case the same way).
            return
        if not remaining:
            if recovery._standbys_span is not None:
                recovery._standbys_span.finish()
                recovery._standbys_span = None
            tables.on_standbys_ready()


def clear_stale_recovery_end(recovery: Any) -> None:
    """Clear the last recovery's end signal whenever a recovery starts; idempotent.

    Faust clears ``signal_recovery_end`` at the top of ``_slurp_changelogs``' loop, that
    is once per record taken from the changelog queue, or every 5 s without one. The fast
    path leaves that queue empty, so the end set by one recovery was still set when the
    next one waited on it: a rebalance within 5 s of a recovery that had read records
    ended its own at once, with nothing read. A chaos run lost a timer's freeze that way,
    its partition recovered with 0 users. The signal is cleared here before either of the
    recovery's ``_set_recovery_started`` calls; the last one comes just before it resumes
    the fetches that could end it, so no end of the new recovery is lost.
    """
    started = recovery._set_recovery_started
    if getattr(started, _MARKER, False):
        return

    def set_recovery_started() -> None:
        recovery.signal_recovery_end.clear()
        started()

    setattr(set_recovery_started, _MARKER, True)
    recovery._set_recovery_started = set_recovery_started


def apply_records(table: Any, tp: TP, records: Sequence[Any]) -> None:
    """Apply one changelog partition's fetched records, in log order, to the table's store.

    A RocksDB store (rocksdict) gets them as one write batch with the offset it persists
    (:func:`write_with_offset`). Other stores take them as Faust's recovery gives them.
    """
    store = table.data
    if writes_atomically(store):
        write_with_offset(store, tp.partition, records)
        return
    table.apply_changelog_batch(
        [ChangelogRecord(tp, record.offset, record.key, record.value) for record in records]
    )


def writes_atomically(store: Any) -> bool:
    """Whether :func:`write_with_offset` can write to the store: RocksDB through rocksdict."""
    return isinstance(store, rocksdb_store.Store) and store.use_rocksdict


def write_with_offset(store: rocksdb_store.Store, partition: int, records: Sequence[Any]) -> None:
    """Write one partition's records, in log order, and the last one's offset in one batch.

    What the store's ``apply_changelog_batch`` writes, without an ``Event``-shaped object
    and a loop of bookkeeping per record, and with data and offset written atomically: it
    writes the data, then the offset with a put of its own, and a crash between the two
    left a store newer than its offset, which :class:`CheckedRecovery` takes for another
    changelog's and drops.
    """
    from rocksdict import WriteBatch  # optional (the rocksdb extra); Faust imported it

    batch = WriteBatch(raw_mode=True)
    put, delete = batch.put, batch.delete
    for record in records:
        if record.value is None:
            delete(record.key)
        else:
            put(record.key, record.value)
    put(store.offset_key, str(records[-1].offset).encode())  # as set_persisted_offset
    store._db_for_partition(partition).write(batch)


def changelog_mismatch(applied: int | None, earliest: int | None, end: int | None) -> str | None:
    """Why a store cannot resume from its stored offset in this changelog partition, or None.

    ``applied`` is the offset of the last record the store applied (Faust's persisted
    offset; None or -1: none), ``earliest`` and ``end`` the partition's first offset and the
    one after its last, as the broker gives them (None: unknown). The store can resume from
    ``applied + 1`` only if the changelog holds that offset or ends just before it, as Kafka
    Streams requires of its checkpoints: at or past the end, the store applied records the
    changelog never had; before the earliest, it missed records the changelog no longer has.
    """
    if applied is None or applied < 0 or end is None:
        return None
    if applied >= end:
        return "ahead_of_changelog"
    if earliest is not None and applied + 1 < earliest:
        return "behind_changelog_start"
    return None


class CheckedRecovery(Recovery):
    """Faust's table recovery, which first drops each RocksDB partition its changelog rejects.

    Faust resumes a partition from the offset its RocksDB store persisted. A data directory
    kept across a new cluster or a re-created changelog topic holds offsets of another
    changelog: past the new one's end, Faust's own check stopped the recovery with
    ``ConsistencyError`` and the worker exited, again at every restart; before its earliest
    offset, the recovery went on from there and the store kept states the changelog lost;
    within it (a new changelog another worker had written further), the worker skipped the
    records before it and served the old states. As Kafka Streams does with a checkpoint
    out of the changelog's range (:func:`changelog_mismatch`), or when the store does not
    hold the changelog's last writes up to its offset (:func:`holds`), such a partition's
    store is dropped and rebuilt from the whole changelog.
    """

    def __init__(self, app: Any, tables: Any, **kwargs: Any) -> None:
        super().__init__(app, tables, **kwargs)
        self._compared: set[TP] = set()
        """Partitions this process has recovered once: their store is compared only then."""

    async def _build_offsets(
        self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        """``Recovery._build_offsets``, after dropping the stores the changelog rejects.

        Faust calls it for the active and the standby partitions, before it seeks them.
        A partition's first recovery in this process also compares the changelog's last
        records up to the stored offset with the store: a new changelog already longer than
        the old one has offsets the store could resume from, but other records. Only the
        first: from then on the worker writes the store itself, and a batch it writes while
        a rebalance starts could make the store newer than the offset Faust read.
        """
        tables: Mapping[TP, Any] = self.tp_to_table
        stored = {
            tp: applied
            for tp in tps
            if isinstance(tables[tp].data, rocksdb_store.Store)
            and (applied := destination.get(tp)) is not None
            and applied >= 0
        }
        if not stored:
            self._compared.update(tps)  # empty stores: what they hold next, this process wrote
            await super()._build_offsets(consumer, tps, destination, title)
            return
        earliest = await consumer.earliest_offsets(*stored)
        ends = await consumer.highwaters(*stored)
        reasons = {
            tp: changelog_mismatch(applied, earliest.get(tp), ends.get(tp))
            for tp, applied in stored.items()
        }
        unread = {
            tp: (max(stored[tp] - _COMPARED_RECORDS + 1, earliest.get(tp) or 0), stored[tp])
            for tp, reason in reasons.items()
            if reason is None and tp not in self._compared
        }
        for tp, records in (await self.records_at(unread)).items():
            if not holds(tables[tp].data, tp, records):
                reasons[tp] = "other_changelog"
        self._compared.update(tps)
        for tp, reason in reasons.items():
            if reason is not None:
                drop_partition(tables[tp].data, tp.partition)
                destination[tp] = -1  # nothing applied: Faust reads from the earliest offset
                STORE_PARTITIONS_DROPPED.inc()
                log.warning(
                    "changelog_store_dropped", topic=tp.topic, partition=tp.partition,
                    reason=reason, stored_offset=stored[tp], earliest_offset=earliest.get(tp),
                    end_offset=ends.get(tp),
                )  # fmt: skip
        await super()._build_offsets(consumer, tps, destination, title)

    async def records_at(self, spans: Mapping[TP, tuple[int, int]]) -> dict[TP, list[Any]]:
        """The changelog records each partition holds from the first to the last offset given.

        Read by a consumer of its own, from the worker's broker with its credentials:
        Faust's consumer has these partitions assigned, and a seek of it would move its
        recovery. Only the partitions whose read reached the last offset are returned: a
        prefix of the records would be compared as if a key had no later write in them.
        The others, whose fetches did not get there within a few seconds or failed, are
        left out and logged; their stores are trusted, as Faust trusts them.
        """
        found: dict[TP, list[Any]] = {tp: [] for tp in spans}
        reached: set[TP] = set()
        if not spans:
            return found
        error = "the read did not reach the last offset in time"
        conf = self.app.conf
        reader = AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker, 9092), group_id=None,
            enable_auto_commit=False,
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )  # fmt: skip
        try:
            await reader.start()
            reading = {TopicPartition(tp.topic, tp.partition): tp for tp in spans}
            reader.assign(list(reading))
            for partition, tp in reading.items():
                reader.seek(partition, spans[tp][0])
            for _ in range(_READ_ATTEMPTS):  # bounded: a partition may bring nothing
                for partition, records in (await reader.getmany(timeout_ms=_READ_WAIT_MS)).items():
                    tp = reading[partition]
                    last = spans[tp][1]
                    found[tp] += (record for record in records if record.offset <= last)
                    if records and records[-1].offset >= last:
                        reached.add(tp)
                        reader.pause(partition)
                if len(reached) == len(reading):
                    break
        except KafkaError as failure:
            error = repr(failure)
        finally:
            await reader.stop()
        if len(reached) < len(spans):
            log.warning("changelog_not_compared", partitions=len(spans) - len(reached), error=error)
        return {tp: found[tp] for tp in reached}


_COMPARED_RECORDS: Final = 32
"""The changelog records up to a store's offset that :class:`CheckedRecovery` compares."""
_READ_ATTEMPTS: Final = 10
_READ_WAIT_MS: Final = 500
""":meth:`CheckedRecovery.records_at` fetches at most this many times, each waiting this
long: records the broker has come in the first fetch or two."""


def holds(store: rocksdb_store.Store, tp: TP, records: Sequence[Any]) -> bool:
    """Whether the partition's store holds, for each key, its last write in these records.

    It must, for the records up to the last one it applied: the worker writes the store
    only with records the changelog has acknowledged, in log order, and persists the last
    offset with them. (Compaction keeps only a key's last record, which is the one to
    compare.) Records of another changelog hold other states, or delete keys it has.
    """
    last = {record.key: record.value for record in records}
    db = store._db_for_partition(tp.partition)
    return all(db.get(key) == value for key, value in last.items())


def drop_partition(store: rocksdb_store.Store, partition: int) -> None:
    """Close and delete one partition's database; the store opens an empty one when next used."""
    db = store._dbs.pop(partition, None)
    if db is not None:
        db.close()
    store._key_index.clear()  # it may send a key to the dropped partition's database
    with suppress(FileNotFoundError):
        shutil.rmtree(store.partition_path(partition))


class PromptTableManager(TableManager):
    """Faust's table manager, without the second it sleeps before starting the tables.

    Nothing waits on that sleep: the conductor subscribes only once the agents have started
    and this manager has registered the tables (``wait_until_tables_registered``), and
    lineguard declares its one table at import. Every worker start, and so every recovery,
    took a second longer for it. Its recovery is a :class:`CheckedRecovery`.
    """

    @property
    def recovery(self) -> Recovery:
        """The recovery service, a :class:`CheckedRecovery`."""
        if self._recovery is None:
            self._recovery = CheckedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

    async def on_start(self) -> None:
        """``TableManager.on_start`` less its ``await self.sleep(1.0)``."""
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def install_changelog_fast_path(app: Any) -> ChangelogFastPath:
    """Apply changelog records a fetch at a time in this app's worker, from its first fetch."""
    fast_path = ChangelogFastPath(app)

    def install(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        fast_path.install(app.consumer)

    app.on_worker_init.connect(install)
    return fast_path
