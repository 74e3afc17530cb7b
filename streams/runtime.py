"""The worker's imperative shell around the pure core.

It owns one :class:`~risk.group.PartitionGroup` per assigned partition, decides
when an empty input partition may still hold back the event-time merge, writes
state to the Faust table only after the decisions it caused are delivered, and
acks each record only once it is applied. Offsets are therefore committed only
for applied events, and a crash re-emits a decision (same ``event_id``) rather
than losing one.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import prometheus_client
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from faust.exceptions import ConsumerNotStarted
from faust.streams import _current_event
from faust.types import TP, Message

from risk.clock import SECOND, format_timestamp
from risk.contract import Rejection
from risk.decision import Decision
from risk.group import Applied, PartitionGroup
from risk.limits import DECISION_REASONS, STATUSES
from risk.partition import Outcome
from risk.partitioner import partition_for
from risk.policy import Policy
from risk.state import STATE_DECODER, STATE_ENCODER, UserState
from streams import metrics
from streams.changelog import ChangelogWriter, PartitionWrites
from streams.delivery import InOrderDelivery, guard_recovery_seeks
from streams.fetch import BatchDiversion
from streams.header_keys import tolerate_header_keys
from streams.progress import Marks, event_time_at, is_progress_key, progress_key
from streams.stored import stored_state_getter, stored_states

log = structlog.get_logger(__name__)

TOO_LARGE: Final = (MessageSizeTooLargeError, RecordListTooLargeError)
"""What aiokafka raises for a record the producer or the broker will not take for its size."""

TRUNCATED_HEADER: Final = "dlt.value.truncated"
"""On a dead letter sent without its value: the original value's size in bytes."""

NEVER_HELD: Final = sys.maxsize
""":meth:`Runtime._held_from` for an empty topic-partition that holds no record back."""


MISROUTE_LOG_INTERVAL: Final = 60.0
"""Seconds between two ``input_misrouted`` warnings of one topic-partition."""


def wall_micros() -> int:
    """The wall clock in epoch microseconds."""
    return time.time_ns() // 1000


class TableStore(MutableMapping[str, UserState]):
    """One partition's users over the Faust table, with writes held back until ``take``.

    Held back, a user changed by several records of a batch is written once, and only
    after the decisions those records caused have been delivered.
    """

    def __init__(self, table: Any, partition: int) -> None:
        self._table = table
        self._stored_state = stored_state_getter(table)
        self.partition = partition
        self._pending: dict[str, UserState] = {}
        self._read: dict[str, UserState] = {}
        """States decoded during this batch: a dict store's identity, as in replay."""

    def get(self, user_id: str, default: UserState | None = None) -> UserState | None:  # type: ignore[override]
        """The user's state, or ``default``.

        The core asks for the user of every event; ``Mapping.get`` would raise and catch a
        ``KeyError`` for each new one.
        """
        state = self._pending.get(user_id)
        if state is None:
            state = self._read.get(user_id)
        if state is not None:
            return state
        raw = self._stored_state(user_id.encode())
        if raw is None:
            return default
        state = self._read[user_id] = STATE_DECODER.decode(raw)
        return state

    def __getitem__(self, user_id: str) -> UserState:
        state = self.get(user_id)
        if state is None:
            raise KeyError(user_id)
        return state

    def __setitem__(self, user_id: str, state: UserState) -> None:
        self._pending[user_id] = state

    def __delitem__(self, user_id: str) -> None:
        raise NotImplementedError("states are never deleted by the core")

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self._table if not is_progress_key(key))

    def __len__(self) -> int:
        return len(self._table)

    def take(self, marks: bytes | None) -> PartitionWrites:
        """The partition's marks and held-back states, encoded: one changelog record each.

        The marks open every record batch of the flush (:mod:`streams.changelog`). A
        partition's changelog records are delivered in order, often in several record
        batches, and a worker stopped mid-flush, or a batch that fails for good, leaves
        some of them. With the marks after the states, a partition's first flush could
        leave states without any marks, and its successor resumed the watermark from those
        states, ahead of the committed offsets (RELIABILITY.md, defect 10). Now every state
        that arrives has the marks of its position, and of the committed one, before it.
        """
        self._read.clear()
        opening = None if marks is None else (progress_key(self.partition), marks)
        states = [(user_id.encode(), STATE_ENCODER.encode(state))
                  for user_id, state in self._pending.items()]  # fmt: skip
        self._pending.clear()
        return PartitionWrites(opening, states)

    def discard(self) -> None:
        """Forget held-back states: their records will be redelivered and applied again."""
        self._pending.clear()
        self._read.clear()


def write_through_table(table: Any, message: Message, writes: PartitionWrites) -> None:
    """Write through Faust's table, which sends each changelog record itself (exactly-once).

    Faust finds a write's changelog partition (and RocksDB its database) from the event
    being processed. Batches are handled outside Faust's streams, so the writes name one of
    the partition's records as that event.
    """
    processing = _RecordEvent(message)  # held: Faust keeps only a weak reference
    token = _current_event.set(weakref.ref(processing))  # type: ignore[arg-type]  # duck-typed
    try:
        for key, value in writes.in_order():
            table[key] = value
    finally:
        _current_event.reset(token)


class _RecordEvent:
    """What Faust's table reads of the event being processed: its record."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Message) -> None:
        self.message = message


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while a batch is applied and encoded.

    Applying a batch decodes the state of each user it touches, tens of container objects
    apiece, which live until the batch is encoded and then die by reference counting. With
    the collector on, young-generation collections traversed them again and again and
    promoted them to the oldest generation, whose full collections then took about 40% of
    the worker's CPU (measured on the 100,000-record backlog). The stretch paused here has
    no await, so nothing else runs meanwhile; the collector resumes between batches, once
    the batch's objects are gone.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


COLLECTOR_THRESHOLDS: Final = (10_000, 10, 100)
"""CPython's defaults are (700, 10, 10). See :func:`tune_collector`."""


def tune_collector() -> None:
    """Make the cyclic garbage collector run less often in the worker process.

    The worker's long-lived heap (the partitions' timer indexes, Faust, aiokafka) grows
    with its users, and with the default thresholds a full collection, which traverses all
    of it, came about every 25,000 records: 19 of them, about 190 ms each, in the 500,000-
    record e2e bench, and with the young collections about 15% of the worker's CPU for
    almost nothing collected (everything the hot path drops dies by reference counting).
    With these thresholds the same run made no full collection and spent about 1.3 s in
    the collector, the longest pause about 70 ms. A full collection still comes once the
    old generation has grown by a quarter and enough young collections have passed.
    """
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


class MisrouteWatch:
    """Counts and logs users created on another partition than murmur2 gives their key.

    Producers must partition with murmur2 (DESIGN.md); one that does not (librdkafka's
    default, ``consistent_random``) splits a user's state between partitions, and its
    records are applied where they lie: dead-letter reasons are a fixed list (RELIABILITY.md,
    defect 49). Such a user shows up when its state is created on the wrong partition, once
    per user and partition, so murmur2 runs that often and not once per record. The warning
    names the topic and both partitions, never the user or the key, and comes at most once
    per ``interval`` seconds for a topic-partition, however many users it has.
    """

    def __init__(
        self,
        counters: Mapping[str, prometheus_client.Counter],
        partition_count: Callable[[str], int],
        interval: float = MISROUTE_LOG_INTERVAL,
    ) -> None:
        self._counters = counters
        self._partition_count = partition_count
        self._interval = interval
        self._logged: dict[tuple[str, int], float] = {}
        self._unlogged: Counter[tuple[str, int]] = Counter()
        """Misrouted users of each topic-partition since its last warning."""

    def created(self, topic: str, partition: int, key: bytes | None) -> None:
        """A user's state was created by a record of ``topic`` read from ``partition``.

        ``key`` is the record's key: an accepted record's is its ``user_id``, never None.
        """
        expected = partition_for(key, self._partition_count(topic))
        if expected == partition:
            return
        self._counters[topic].inc()
        where = (topic, partition)
        self._unlogged[where] += 1
        now = time.monotonic()
        logged = self._logged.get(where)
        if logged is not None and now - logged < self._interval:
            return
        self._logged[where] = now
        log.warning(
            "input_misrouted", topic=topic, partition=partition, expected_partition=expected,
            misrouted_users=self._unlogged.pop(where),
        )  # fmt: skip


class StateNotPersistedError(RuntimeError):
    """A batch's table writes did not leave the producer: its records must not be acked."""


class Runtime:
    """Per-worker processing state; used only from the single agent coroutine."""

    def __init__(
        self,
        *,
        app: Any,
        settings: Any,
        policy: Policy,
        table: Any,
        limit_topic: Any,
        dead_letter_topics: dict[str, Any],
        tick_topic: str,
    ) -> None:
        self.app = app
        self.settings = settings
        self.policy = policy
        self.table = table
        self.limit_topic = limit_topic
        self.dead_letter_topics = dead_letter_topics
        self.tick_topic = tick_topic
        self.topics: tuple[str, ...] = settings.input_topics
        self.partitions: int = settings.topic_partitions
        self.groups: dict[int, PartitionGroup[Message]] = {}
        self._stores: dict[int, TableStore] = {}
        self._marks: dict[int, Marks] = {}
        """Each partition's positions since its last commit (:mod:`streams.progress`)."""
        self._committing: asyncio.Future[None] | None = None
        """The commit asked for when a partition's marks piled up (:meth:`_commit_soon`)."""
        self._batch_lock = asyncio.Lock()
        self._generation = 0
        """Counts resets, so that a batch read across a rebalance is dropped."""
        self.delivery = InOrderDelivery(self.topics)
        self._direct = settings.processing_guarantee == "at_least_once"
        """Whether the shell writes states straight to aiokafka (:mod:`streams.changelog`);
        with exactly-once, Faust's table writes them, inside its transactions. Limit events,
        dead letters and ticks always go with Faust's plain aiokafka producer."""
        self._changelog = ChangelogWriter(table)
        self._topic_names: dict[Any, str] = {}
        self.diversion = BatchDiversion(
            (*self.topics, tick_topic), self.on_fetched, settings.batch_max_records
        )
        tolerate_header_keys()  # a header key that is not UTF-8 stopped the fetch for good
        self._hold_since: dict[TP, float] = {}
        self._fetched: dict[tuple[TP, int], int] = {}
        """When the fetch response that brought each record waiting in a merge came, in
        epoch milliseconds (a later one of its partition, if the consumer fetched again
        before the record was taken)."""
        self.metrics = metrics.bind(self.topics, DECISION_REASONS)
        self._misroutes = MisrouteWatch(self.metrics.misrouted, self._partition_count)
        self._export_gauges()

    def _export_gauges(self) -> None:
        """Gauges read at scrape time from this worker's partitions and consumer."""
        metrics.REGISTRY.register(metrics.PartitionCounts(self._counts))
        metrics.RECOVERY_IN_PROGRESS.set_function(lambda: float(not self.ready()))
        lag = metrics.ConsumerLag(lambda: sorted(self.assignment()), self._input_partition)
        metrics.REGISTRY.register(lag)

    def _counts(self) -> metrics.Counts | None:
        """Users and timers of the assigned partitions; None until each one's group is built."""
        partitions = {tp.partition for tp in self.assignment()}
        if not self.ready() or not partitions <= self.groups.keys():
            return None
        groups = [self.groups[partition] for partition in partitions]
        return metrics.Counts(
            users={name: sum(g.processor.users[name] for g in groups) for name in STATUSES},
            timers=sum(g.processor.pending_timers for g in groups),
        )

    def ready(self) -> bool:
        """Partitions are assigned, and the table and timer index are recovered."""
        recovery = self.app.tables.recovery
        return bool(self.assignment() and not self.app.rebalancing and recovery.completed.is_set())

    def assignment(self) -> set[TP]:
        """This worker's input topic-partitions (empty before the consumer starts)."""
        try:
            assigned = self.app.consumer.assignment()
        except ConsumerNotStarted:
            return set()
        return {tp for tp in assigned if tp.topic in self.topics}

    def _partition_count(self, topic: str) -> int:
        """An input topic's partition count in the consumer's metadata, else the setting's.

        Producers partition by the topic's own count. The preflight makes it equal to
        ``LINEGUARD_TOPIC_PARTITIONS`` at start-up, but partitions can be added while the
        worker runs.
        """
        try:
            count = self.app.consumer.topic_partitions(topic)
        except (AttributeError, ConsumerNotStarted):  # no metadata yet
            count = None
        return int(count) if count else self.partitions

    def _input_partition(self, tp: TP) -> metrics.Partition:
        """One assigned input partition's offsets, for the consumer lag collector."""
        return metrics.Partition(
            tp.topic,
            tp.partition,
            self.app.consumer.highwater(tp),
            self.delivery.committed(tp),
            self.delivery.resumed_from(tp),
        )

    def recover(self) -> None:
        """Rebuild the timer index and user counts of the assigned partitions, in one scan.

        Called once the table is recovered, so that timers, gauges and ``/users`` are
        complete before the first record arrives. Faust also sends the signal for a
        recovery that a newer rebalance has superseded (the generation changed, or the
        next recovery is pending): the table is not recovered for the new assignment
        then, and groups built from it would lack timers. Those calls build nothing.
        """
        recovery = self.app.tables.recovery
        generation = getattr(recovery, "_generation_id", None)  # of the recovery that ended
        if recovery.signal_recovery_start.is_set() or generation not in (
            None,
            self.app.consumer_generation_id,
        ):
            log.info("partition_recovery_deferred")
            return
        # Every assigned partition, also one whose group was built during the rebalance:
        # it was built from a table not yet recovered. Nothing is lost with its merge
        # buffer: no input record is taken before the rebalance ends (InOrderDelivery).
        # A group of a partition no longer assigned goes.
        partitions = {tp.partition for tp in self.assignment()}
        for partition in set(self.groups) - partitions:
            self._forget(partition)
        if partitions:
            self._recover(partitions)

    def reset(self) -> None:
        """Forget buffers and groups on a rebalance: Faust re-seeks to committed offsets."""
        guard_recovery_seeks(self.app.tables.recovery)  # before the first recovery
        self._generation += 1
        self.groups.clear()
        self._stores.clear()
        self._marks.clear()
        self.delivery.forget()
        self._hold_since.clear()
        self._fetched.clear()

    def state(self, user_id: str) -> UserState:
        """A user's state as last written to the table; KeyError if unknown here."""
        raw = self.table.get(user_id.encode())
        if raw is None:
            raise KeyError(user_id)
        return STATE_DECODER.decode(raw)

    def holding(self) -> list[int]:
        """Partitions whose merge waits for more input: they need ticks to make progress."""
        return [partition for partition, group in self.groups.items() if len(group)]

    async def on_fetched(self, messages: Sequence[Message]) -> None:
        """Handle a batch taken straight from a fetch (:mod:`streams.fetch`).

        Faust never tracked these records as in flight, so none is released.
        """
        await self.on_records(messages, tracked=False)

    async def on_records(self, messages: Sequence[Message], *, tracked: bool = True) -> None:
        """Handle a batch of records of the input topics and the tick topic.

        Every record is merged and applied first; then the batch's limit events and dead
        letters are sent together, each changed user is written once, and only then are
        the applied records acked. A crash anywhere before the acks repeats decisions
        (same ``event_id``), never loses one. ``tracked`` records came through Faust's
        stream, which counts them in flight until released (:meth:`_release`).
        """
        if self.app.should_stop:
            return  # see _apply: nothing more is applied or acked once the worker stops
        started = time.perf_counter()
        generation = self._generation
        touched, ticked = await self._admit(messages, tracked=tracked)
        async with self._batch_lock:
            if generation != self._generation:
                # Partitions were revoked while the batch was read (admitting may wait on a
                # seek): what it pushed may belong to another worker now. Its records are
                # not acked, and come again from the committed offsets.
                for partition in touched:
                    self._forget(partition)
                return
            with collector_paused():
                batch = self._apply(touched, ticked)
                writes = self._take(batch) if batch is not None else {}
            if batch is not None:
                await self._complete(batch, writes)
                metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def settled(self) -> None:
        """Wait for the batch being emitted and written, so partitions move with its state."""
        async with self._batch_lock:
            pass

    async def _admit(
        self, messages: Sequence[Message], *, tracked: bool
    ) -> tuple[dict[int, Message], set[int]]:
        """Push each next-in-order record into its partition's merge.

        Returns one record per partition the batch touched, for :func:`write_through_table`,
        and the partitions that got a tick.
        """
        touched: dict[int, Message] = {}
        ticked: set[int] = set()
        fetched_ms: dict[TP, int] = {}
        for message in messages:
            if message.topic == self.tick_topic:
                self.app.consumer.ack(message)
                if self.delivery.stale(message):
                    # Its partition may be revoked: a group built for it now would stay
                    # (and with the wall clock fire timers another worker owns).
                    continue
                self._group(message.partition)
                ticked.add(message.partition)
                touched[message.partition] = message
                continue
            if not await self.delivery.arrive(message):
                # Not the next record of its partition: acking it could let Faust commit past
                # an earlier record still waiting in the merge. It is delivered again.
                if tracked:
                    self._release(message)
                continue
            self._hold_since.pop(message.tp, None)
            group = self._group(message.partition)
            group.push(self.topics.index(message.topic), message.key, message.value, message)
            fetched = fetched_ms.get(message.tp)
            if fetched is None:
                fetched = self._last_fetched_ms(message.tp) or int(time.time() * 1000)
                fetched_ms[message.tp] = fetched
            self._fetched[message.tp, message.offset] = fetched
            if tracked:
                self._release(message)
            touched[message.partition] = message
        return touched, ticked

    def _apply(self, touched: dict[int, Message], ticked: set[int]) -> _Batch | None:
        """Apply what each touched partition's merge releases; None when the worker stops.

        A ticked partition sweeps its timers after the batch's records, as if the tick came
        last, then drains again, since a hold may have run out meanwhile.
        """
        batch = _Batch(flush_with=touched)
        now = wall_micros()
        for partition in touched:
            group = self.groups[partition]
            self._drain(partition, batch, now)
            if partition in ticked:
                batch.decisions += [(d, None) for d in group.processor.tick(wall_micros())]
                self._drain(partition, batch, now)
        if self.app.should_stop:
            # Stopping: the fetcher is gone, so idle holds would run out and the merge
            # would go on in another order than the log's. Drop the batch's changes.
            self._discard()
            return None
        return batch

    def _drain(self, partition: int, batch: _Batch, now: int) -> None:
        """Apply what the partition's merge releases now.

        The merge asks about the empty topics before each record it releases; what the
        consumer says about a topic (:meth:`_held_from`) is read once per drain, and only
        the candidate's fetch time is compared each time. The drain does not await, so no
        record is taken meanwhile and the position asked about does not move; a fetch that
        comes meanwhile counts from the next batch on.
        """
        if partition not in self._marks:
            self._resume(partition)
        may_receive = partial(self._may_receive, partition, held_from={})
        clock, fetched, decisions = time.perf_counter, self._fetched, batch.decisions
        seconds: list[float] = []  # each record's, observed together at the end
        started = clock()
        for applied in self.groups[partition].drain(may_receive, now):
            seconds.append(clock() - started)
            record = applied.record
            fetched.pop((record.tp, record.offset), None)
            batch.applied.append(applied)
            if applied.decisions:
                decisions += [(decision, applied) for decision in applied.decisions]
            started = clock()
        metrics.observe_all(metrics.PROCESSING_SECONDS, seconds)

    def _take(self, batch: _Batch) -> dict[int, PartitionWrites]:
        """Each touched partition's changed states and marks, encoded for the changelog."""
        positions = self._positions(batch)
        writes: dict[int, PartitionWrites] = {}
        for partition in batch.flush_with:
            taken = self._stores[partition].take(self._mark(partition, positions.get(partition)))
            if taken:
                writes[partition] = taken
        return writes

    async def _complete(self, batch: _Batch, writes: dict[int, PartitionWrites]) -> None:
        """Emit, then persist, then ack: the order that makes a crash repeat, never lose."""
        now = wall_micros()
        # Never through Faust's topics: under exactly-once they route a record of a topic
        # the consumer has no metadata for outside the transaction anyway, drop its
        # partition on the way, and wrap a MessageSizeTooLargeError so that
        # _dead_letter_without_value never sees it.
        producer = self.app.producer._ensure_producer()
        sent = [await self._dead_letter(producer, a.record, a.topic_index, a.rejection)
                for a in batch.applied if a.rejection is not None]  # fmt: skip
        for decision, _ in batch.decisions:
            key = decision.user_id.encode()
            sent.append(await self._send(producer, self.limit_topic, key, decision.to_json(now)))
        await asyncio.gather(*sent)  # delivered before the states that remember them
        for applied in batch.applied:
            if applied.rejection is not None:
                self._count_dead_letter(applied, applied.rejection)
        for decision, cause in batch.decisions:
            self._count_decision(decision, cause, now)
        if self.app.should_stop:
            # Faust stops the table before the agent, then commits what was acked. A record
            # acked now would be committed without its state: leave it to be redelivered.
            return
        # Written before acked: Faust commits acked offsets without waiting for the table's
        # changelog records, and a crash in between would lose state whose input is done.
        if self._direct:
            await self._changelog.write(producer, writes)
        else:
            for partition, taken in writes.items():
                write_through_table(self.table, batch.flush_with[partition], taken)
            await self.app.producer.flush()
            unsent = self.app.producer.buffer.size
            if unsent:
                # The flush gives up after a while (drain_state_writes_before_flush). Acked
                # now, the records' offsets would be committed in a transaction without
                # their states: stop instead, and read them again from the committed offsets.
                raise StateNotPersistedError(f"{unsent} table writes still buffered")
        self._ack(batch)
        if any(self._marks[p].wants_commit() for p in writes if p in self._marks):
            self._commit_soon()

    def _commit_soon(self) -> None:
        """Ask the consumer to commit the acked offsets now, without waiting for it.

        A partition's marks pile up, one a batch, until a commit is confirmed, and the
        record of them heads every record batch of its flush (:mod:`streams.progress`).
        Faust commits every ``broker_commit_interval`` on its own; with small batches every
        few milliseconds that left hundreds of marks. This is the commit Faust's timer makes
        (``Consumer.commit``: acked offsets only, one commit at a time), made sooner.
        """
        if self._committing is not None and not self._committing.done():
            return
        if self.app.should_stop or self.app.rebalancing:
            return  # the rebalance or the stop commits, and the marks start again after it
        self._committing = asyncio.ensure_future(self._commit())

    async def _commit(self) -> None:
        try:
            await self.app.consumer.commit()
        except Exception as error:  # the timer's next commit tries again
            log.warning("commit_failed", error=type(error).__name__)

    def _ack(self, batch: _Batch) -> None:
        """Ack the batch's records; its metrics are counted once per topic and outcome.

        Each user a record created is checked for the record's partition, once its state
        is written (:class:`MisrouteWatch`).
        """
        outcomes: Counter[tuple[int, Outcome]] = Counter()
        latest: dict[int, int] = {}
        for applied in batch.applied:
            outcomes[applied.topic_index, applied.outcome] += 1
            if applied.outcome is Outcome.PROCESSED and applied.occurred_at is not None:
                latest[applied.topic_index] = applied.occurred_at
                if applied.created:
                    record = applied.record
                    topic = self.topics[applied.topic_index]
                    self._misroutes.created(topic, record.partition, record.key)
        self.delivery.ack_applied(self.app.consumer, [a.record for a in batch.applied])
        for (topic_index, outcome), count in outcomes.items():
            self.metrics.events[self.topics[topic_index], outcome].inc(count)
        for topic_index, occurred_at in latest.items():
            self.metrics.last_event[self.topics[topic_index]].set(occurred_at / SECOND)

    async def send_tick(self, partition: int, value: bytes) -> None:
        """Wake ``partition`` with a record on the tick topic.

        With the plain producer: under exactly-once, a tick sent in the partition's
        transaction would stay invisible to a ``read_committed`` consumer until that
        transaction commits, which a partition with nothing to ack never does, and between
        an assignment and the start of its transactional producer it would stop the worker.
        """
        producer = self.app.producer._ensure_producer()
        await producer.send(self.tick_topic, value, key=b"", partition=partition)

    async def _send(
        self,
        producer: AIOKafkaProducer,
        topic: Any,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> Awaitable[Any]:
        """Send one record with aiokafka's producer; the key picks the partition when none is given."""
        name = self._topic_names.get(topic)
        if name is None:
            name = self._topic_names[topic] = topic.get_topic_name()
        delivered: Awaitable[Any] = await producer.send(
            name, value, key=key, partition=partition, headers=headers
        )
        return delivered

    def _discard(self) -> None:
        for store in self._stores.values():
            store.discard()

    def _count_decision(
        self, decision: Decision, applied: Applied[Message] | None, now: int
    ) -> None:
        for reason in decision.reasons:
            self.metrics.decisions[decision.type, reason.code].inc()
        metrics.DECISION_LAG_SECONDS.observe(max(0, now - decision.occurred_at) / SECOND)
        log.info(
            "limit_decision", type=decision.type, status=decision.status,
            decision_id=decision.event_id, cause=self._cause(decision, applied),
            occurred_at=format_timestamp(decision.occurred_at),
            reasons=[r.code for r in decision.reasons],
        )  # fmt: skip

    def _release(self, message: Any) -> None:
        """Take a delivered record out of Faust's in-flight set without acking it.

        A buffered record has not started processing. Faust's rebalance waits for every
        delivered, unacked message (``Consumer.wait_empty``), so one waiting in the merge
        would stall the rebalance. Untracking commits nothing: offsets advance only through
        acks, which follow log order per topic-partition, and an unacked record is
        redelivered from the committed offset.
        """
        self.app.consumer._unacked_messages.discard(message)

    def _group(self, partition: int) -> PartitionGroup[Message]:
        group = self.groups.get(partition)
        if group is None:
            self._recover({partition})
            group = self.groups[partition]
        return group

    def _forget(self, partition: int) -> None:
        """Drop a partition's group, its view of the table and its marks."""
        self.groups.pop(partition, None)
        self._stores.pop(partition, None)
        self._marks.pop(partition, None)

    def _recover(self, partitions: set[int]) -> None:
        """Build the groups of ``partitions`` from one scan of the table's stored states.

        Each state is decoded, indexed and dropped: holding a million decoded states at
        once would leave the process that much larger for good. The states come by
        partition from the store itself (:mod:`streams.stored`), each partition's to its
        processor in one call.
        """
        groups: dict[int, PartitionGroup[Message]] = {}
        for partition in partitions:
            self._marks.pop(partition, None)
            store = self._stores[partition] = TableStore(self.table, partition)
            groups[partition] = PartitionGroup(
                self.policy, store, len(self.topics), self.settings.clock
            )
        stored = stored_states(self.table, partitions, self.partitions)
        for partition, states in stored.items():
            groups[partition].processor.recover(map(STATE_DECODER.decode, states))
        for partition, group in groups.items():
            self.groups[partition] = group
            processor = group.processor
            log.info("partition_recovered", partition=partition, users=processor.users.total(),
                     timers=processor.pending_timers)  # fmt: skip

    def _resume(self, partition: int) -> None:
        """Start the partition's watermark from its committed offsets' mark, once they are known.

        Without a mark of that position (no batch was written from it yet, or a worker
        older than the marks wrote the states), the watermark stays where the states put it.
        """
        offsets = [self.delivery.resumed_from(TP(topic, partition)) for topic in self.topics]
        if any(offset is None for offset in offsets):
            return  # not seeked yet, so no input record of the partition has arrived
        processor = self.groups[partition].processor
        raw = self.table.get(progress_key(partition))
        found, max_event_at = event_time_at(raw, offsets)  # type: ignore[arg-type]  # no None
        if found:
            processor.resume(max_event_at)
        elif raw is not None:
            log.warning("partition_mark_missing", partition=partition, offsets=offsets)
        self._marks[partition] = Marks(offsets, processor.max_event_at)  # type: ignore[arg-type]

    def _positions(self, batch: _Batch) -> dict[int, dict[int, int]]:
        """The next offset of each input topic a batch moved, by partition."""
        positions: dict[int, dict[int, int]] = {}
        for applied in batch.applied:
            record = applied.record
            positions.setdefault(record.partition, {})[applied.topic_index] = record.offset + 1
        return positions

    def _mark(self, partition: int, moved: dict[int, int] | None) -> bytes | None:
        """The partition's marks to write with this batch's states; None if unchanged."""
        marks = self._marks.get(partition)
        if marks is None:
            return None
        offsets = list(marks.offsets)
        for topic_index, offset in (moved or {}).items():
            offsets[topic_index] = offset
        committed = self.delivery.committed
        return marks.advance(
            offsets,
            self.groups[partition].processor.max_event_at,
            [committed(TP(topic, partition)) for topic in self.topics],
        )

    def _may_receive(
        self,
        partition: int,
        topic_indexes: list[int],
        candidate: Message,
        held_from: dict[int, int] | None = None,
    ) -> bool:
        """Whether one of these empty topic-partitions holds back ``candidate``.

        ``held_from`` caches :meth:`_held_from` by topic for the length of one drain.
        """
        fetched = self._fetched.get((candidate.tp, candidate.offset), 0)
        for topic_index in topic_indexes:
            since = None if held_from is None else held_from.get(topic_index)
            if since is None:
                since = self._held_from(partition, topic_index)
                if held_from is not None:
                    held_from[topic_index] = since
            if fetched >= since:
                return True
        return False

    def _held_from(self, partition: int, topic_index: int) -> int:
        """From when (epoch ms) a record fetched holds back for an empty topic-partition.

        A record's time is that of the fetch response that brought it (``_fetched``). 0
        holds every record back, ``NEVER_HELD`` none; a record not taken by :meth:`_admit`
        counts as fetched at 0, so only a hold of every record holds it.

        - Its lag is known and positive (the high watermark of the last fetch response is
          past the next offset to apply): it holds, without a time limit, as Kafka Streams
          does since KIP-695. The record is on the broker and will be delivered; applying
          later records of other topics first would make it late, and under a backlog
          ``too_late``.
        - Its lag was 0 at the fetch response that brought ``candidate``, or a later one:
          it does not hold. That response was made with ``candidate`` on the broker, so
          any record of it that reached the broker first was in it. This is Kafka
          Streams' rule (``max.task.idle.ms`` 0), and it saves a fetch round a record.
        - Its lag was 0 at an earlier fetch response: a record that reached the broker
          before ``candidate`` may not have been fetched yet (the consumer fetches a
          partition again only once the records fetched before have been handed over, so
          it may have been left out of the request that brought ``candidate``, and a
          backlog delays that). It holds until a newer response says; the consumer fetches
          every partition at least every ``consumer_fetch_max_wait`` seconds, and ticks
          (``end_idle_holds``) look again.
        - Its lag is unknown (no fetch response yet since the assignment, or no offset
          expected yet): it holds for at most ``max_idle`` seconds.

        The next offset to apply is :meth:`InOrderDelivery.position`: the committed (or
        earliest) offset the consumer seeked to, moved on by each record taken, and moved
        back by a seek after records went missing. The lag counts from
        :meth:`InOrderDelivery.deliverable_from`: with every record the consumer handed over
        taken, its fetch position, which is past offsets that hold no record to deliver (a
        transaction's commit marker): from the next offset to apply, a partition whose last
        record is followed by a marker held the merge for good. The high watermark only
        grows, so a stale one can only understate the lag.
        """
        tp = TP(self.topics[topic_index], partition)
        position = self.delivery.deliverable_from(tp)
        try:
            highwater = self.app.consumer.highwater(tp)
        except (AssertionError, ConsumerNotStarted):  # no longer assigned: a rebalance is on
            highwater = None
        if highwater is not None and position is not None:
            if highwater > position:
                return 0
            fetched_ms = self._last_fetched_ms(tp)
            if fetched_ms is None:
                return NEVER_HELD  # not an aiokafka consumer
            return fetched_ms + 1  # fetched after this response: it may have missed a record
        if highwater == 0:
            return NEVER_HELD
        since = self._hold_since.setdefault(tp, time.monotonic())
        return 0 if time.monotonic() - since < self.settings.max_idle else NEVER_HELD

    def _last_fetched_ms(self, tp: TP) -> int | None:
        """When aiokafka's last fetch response for ``tp`` came (epoch ms); None if unknown."""
        client = getattr(getattr(self.app.consumer, "_thread", None), "_consumer", None)
        try:
            fetched_ms = client.last_poll_timestamp(tp) if client is not None else None
        except AssertionError:  # no longer assigned
            return None
        return None if fetched_ms is None else int(fetched_ms)

    def _cause(self, decision: Decision, applied: Applied[Message] | None) -> str:
        """What caused a decision, for the log: a timer, or the input record's coordinates.

        Not the input's ``event_id``: a producer may build it from the user id.
        """
        if decision.caused_by.startswith("timer:") or applied is None:
            return decision.caused_by if decision.caused_by.startswith("timer:") else "input"
        message = applied.record
        return f"{message.topic}[{message.partition}]@{message.offset}"

    async def _dead_letter(
        self,
        producer: AIOKafkaProducer,
        message: Message,
        topic_index: int,
        rejection: Rejection,
    ) -> Awaitable[Any]:
        """Send a rejected record's original bytes and headers to its topic's dead-letter topic.

        A dead letter the producer or the broker refuses as too large is sent again with a
        note for its value (:meth:`_dead_letter_without_value`).
        """
        topic = self.topics[topic_index]
        headers = [
            ("dlt.original.topic", topic.encode()),
            ("dlt.original.partition", str(message.partition).encode()),
            ("dlt.original.offset", str(message.offset).encode()),
            ("dlt.reason", str(rejection.reason).encode()),
            ("dlt.error", rejection.error[:500].encode()),
        ]
        send = partial(
            self._send, producer, self.dead_letter_topics[topic], message.key,
            partition=message.partition,
        )  # fmt: skip
        try:
            sent = await send(message.value, headers=[*headers, *_own_headers(message)])
        except TOO_LARGE:  # aiokafka checks the producer's max_request_size before queueing
            return asyncio.ensure_future(self._dead_letter_without_value(send, message, headers))
        return asyncio.ensure_future(self._delivered_or_without_value(sent, send, message, headers))

    async def _delivered_or_without_value(
        self,
        sent: Awaitable[Any],
        send: Any,
        message: Message,
        headers: list[tuple[str, bytes]],
    ) -> Any:
        try:
            return await sent
        except TOO_LARGE:  # the broker's max.message.bytes for the dead-letter topic
            return await self._dead_letter_without_value(send, message, headers)

    async def _dead_letter_without_value(
        self, send: Any, message: Message, headers: list[tuple[str, bytes]]
    ) -> Any:
        """The dead letter of a record too large to send whole: a note for its value.

        The one exception to "the value is the original bytes" (README.md, "Dead letters";
        DESIGN.md §1). The dead letter carries the record's bytes plus about 150 bytes of
        headers, so a record the input topic took may be more than the producer or the
        dead-letter topic take: preflight gives the ``.dlt`` topics room, and the producer's
        ``max_request_size`` is far above Kafka's default record limit, but an input topic
        may allow more, or take a compressed batch whose record is larger once
        uncompressed. Sending the same dead letter again would fail the same way, and the
        worker would stop, restart, read the record again and stop again: its partition
        stalled for good. So the dead letter goes with the key and the ``dlt.*`` headers
        unchanged, the original size in ``dlt.value.truncated``, and ``dlt.original.*``
        pointing at the record, which stays in its input topic for its retention. The
        record's own headers are left out too: they count in its size. It is sent after the
        batch's other dead letters, so it may follow later ones on the dead-letter
        partition.
        """
        size = len(message.value or b"")
        log.warning(
            "dead_letter_value_dropped", topic=message.topic, partition=message.partition,
            offset=message.offset, value_bytes=size,
        )  # fmt: skip
        note = f"value of {size} bytes not kept: too large for the dead-letter topic".encode()
        sent = await send(note, headers=[*headers, (TRUNCATED_HEADER, str(size).encode())])
        return await sent

    def _count_dead_letter(self, applied: Applied[Message], rejection: Rejection) -> None:
        message = applied.record
        topic = self.topics[applied.topic_index]
        self.metrics.dead_letters[topic, rejection.reason].inc()
        log.info("dead_letter", topic=topic, partition=message.partition, offset=message.offset,
                 reason=str(rejection.reason))  # fmt: skip


def _own_headers(message: Message) -> list[tuple[str, bytes | None]]:
    """A rejected record's headers, for whoever replays its dead letter.

    Not its ``dlt.*`` ones: a record re-published from a dead-letter topic brings its
    earlier rejection's, which would stand beside this one's.
    """
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in pairs if not name.startswith("dlt.")]


@dataclass(slots=True)
class _Batch:
    """What one batch applied, and what it must emit, persist and ack."""

    flush_with: dict[int, Message]
    """One record per touched partition, whose partition the table writes take."""
    decisions: list[tuple[Decision, Applied[Message] | None]] = field(default_factory=list)
    """Each decision with the record that caused it; None for a tick's timers."""
    applied: list[Applied[Message]] = field(default_factory=list)
