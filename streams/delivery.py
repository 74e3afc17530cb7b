"""In-order delivery of input records: every offset once, none skipped.

Faust's consumer keeps its own view of what has been read and acked, and under
rebalances and shutdowns that view lets records go missing:

- **Skipped records are acked.** During a rebalance or a shutdown, Faust skips the
  records still queued for the agent and acks them "so the lag does not grow"
  (``Stream._py_aiter``). Its commit then takes the first run of consecutive acked
  offsets and checks the head gap off by one, so such an ack commits past a record
  that was never applied.
- **Records dropped by the fetch loop.** After an assignment, the fetch loop
  (``Consumer._drain_messages``) may still be delivering a batch fetched before the
  seek to the committed offsets. Each such record moves Faust's read offset forward
  again, the records fetched anew from the committed offset then look old and are
  dropped, and the jump to the next one is recorded as a "gap" that counts as acked
  at the next commit. A restarted worker then commits records it never saw.

:class:`InOrderDelivery` takes the input topics out of that bookkeeping. It hides
their read offsets from the fetch loop (so it neither drops nor gap-fills them),
counts an ack only for a record the runtime applied, and checks each delivered
record against the next offset it expects, starting from the committed offset the
consumer seeked to. A record past that offset means some were lost in delivery:
the partition is seeked back and they are read again; if the seek brings a record past
that offset first, the offsets before it hold no record to deliver (a transaction's
commit marker, an aborted record) and it is taken. Partitions without a committed
offset are seeked to their earliest offset too, which aiokafka does not do.

:func:`guard_recovery_seeks` keeps Faust's table recovery from seeking changelog
partitions of an assignment it has not prepared, after a rebalance it missed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from faust.tables.recovery import RebalanceAgain
from faust.types import TP

log = structlog.get_logger(__name__)

_GUARD_MARKER = "__lineguard_recovery_guard__"


class _HiddenReadOffsets(defaultdict[TP, int | None]):
    """Faust's read offsets, reading as unknown for the input topics.

    The fetch loop drops a record below the read offset and gap-fills above it. With
    no read offset it does neither, and :class:`InOrderDelivery` orders the records.
    """

    def __init__(self, topics: Collection[str], offsets: Mapping[TP, int | None]) -> None:
        super().__init__(lambda: None, offsets)
        self._topics = frozenset(topics)

    def __getitem__(self, tp: TP) -> int | None:
        if tp.topic in self._topics:
            return None
        return super().__getitem__(tp)


class InOrderDelivery:
    """Admits input records strictly in log order per topic-partition."""

    def __init__(self, topics: Collection[str]) -> None:
        self._topics = frozenset(topics)
        self._consumer: Any = None
        self._expected: dict[TP, int] = {}
        self._resumed_from: dict[TP, int] = {}
        self._seeked_back_to: dict[TP, int] = {}
        self._gap_shown_by: dict[TP, int] = {}
        """For a partition in ``_seeked_back_to``: the offset delivered past the one expected
        that made :meth:`_seek_back` seek (none for the seek at a rebalance's end)."""
        self._handed_to: dict[TP, int] = {}
        """Past the last record the consumer handed over since the last seek, per partition."""
        self._fetched_to: dict[TP, int] = {}
        """aiokafka's fetch position when it last handed over records: past the records it
        handed over and past the offsets it skipped (control records, aborted ones)."""
        self._committed: dict[TP, int] = {}
        """Offsets the broker holds as committed: read at the assignment, then each commit
        Faust made that the broker accepted."""
        self._applied: set[tuple[TP, int]] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._app: Any = None
        self._revocations = 0
        """How many rebalances started (Faust's ``on_rebalance_start``, at each revocation)."""
        self._revocations_recovering = 0
        """How many had started when Faust last signalled a recovery of an assignment."""
        self._recovery: Any = None
        """Faust's table recovery, whose end ends a rebalance (None: not a Faust app)."""
        self._ack: Any = None
        """The consumer's own ``ack``, under :meth:`install`'s wrapper."""

    def install(self, consumer: Any) -> None:
        """Take over the input topics' offsets; call before the first fetch."""
        if consumer is self._consumer:
            return
        consumer._read_offset = _HiddenReadOffsets(self._topics, consumer._read_offset)
        seek_to_committed = consumer.seek_to_committed
        ack = consumer.ack
        commit_offsets = consumer._commit_offsets
        getmany: Any = getattr(consumer, "_getmany", None)  # None: not Faust's consumer

        async def seek_to_committed_and_expect() -> Mapping[TP, int]:
            committed: Mapping[TP, int] = await seek_to_committed()
            inputs = [tp for tp in committed if tp.topic in self._topics]
            uncommitted = [tp for tp in inputs if not committed[tp] or committed[tp] < 0]
            starts = await consumer.earliest_offsets(*uncommitted) if uncommitted else {}
            for tp in inputs:
                if tp in uncommitted:
                    self._expected[tp] = max(starts.get(tp) or 0, 0)
                    self._committed.pop(tp, None)
                else:
                    self._expected[tp] = self._committed[tp] = committed[tp]
                self._resumed_from[tp] = self._expected[tp]
            self._seeked_back_to.clear()
            self._gap_shown_by.clear()
            await self._seek_uncommitted(uncommitted)
            self._forget_fetches(inputs)
            return committed

        async def getmany_noting_positions(
            active_partitions: Any,
            timeout: float,  # noqa: ASYNC109 - Faust's signature
        ) -> Mapping[Any, Any]:
            records: Mapping[Any, Any] = await getmany(active_partitions, timeout)
            self._note_fetch(records)
            return records

        def ack_if_applied(message: Any) -> bool:
            if message.topic in self._topics:
                key = (message.tp, message.offset)
                applied = key in self._applied
                self._applied.discard(key)
                if not applied or self.stale(message):
                    _pass_over(consumer, message)
                    return False
            return bool(ack(message))

        async def commit_offsets_and_confirm(
            offsets: Mapping[TP, int], start_new_transaction: bool = True
        ) -> bool:
            # Faust counts offsets as committed even when the broker refused them (a
            # commit that raced a rebalance returns False): only an accepted one counts here.
            did_commit = await commit_offsets(offsets, start_new_transaction=start_new_transaction)
            if did_commit:
                self._committed.update(
                    (tp, offset) for tp, offset in offsets.items() if tp.topic in self._topics
                )
            return bool(did_commit)

        consumer.seek_to_committed = seek_to_committed_and_expect
        consumer.ack = ack_if_applied
        consumer._commit_offsets = commit_offsets_and_confirm
        if getmany is not None:
            consumer._getmany = getmany_noting_positions
        self._consumer = consumer
        self._ack = ack
        app = getattr(consumer, "app", None)
        if app is not None and hasattr(app, "on_rebalance_end"):
            self._app = app
            end_rebalance = app.on_rebalance_end
            tracked = self._track_rebalances(app)

            def end_rebalance_and_read_again() -> None:
                if tracked and self._recovery_superseded():
                    # A rebalance started after the recovery that ends now did (a member
                    # joined while it was ending). Ended, the worker would be ready, and
                    # take records, all through the next join and recovery; the next
                    # assignment's recovery ends it (RELIABILITY.md, defect 21).
                    log.info("rebalance_end_deferred")
                    return
                end_rebalance()  # records are taken again from here on (see arrive)
                if self._expected:
                    task = asyncio.ensure_future(self._read_cleared_records_again())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

            app.on_rebalance_end = end_rebalance_and_read_again
            buffer = getattr(getattr(app, "producer", None), "buffer", None)
            if buffer is not None:
                drain_state_writes_before_flush(buffer)

    def _track_rebalances(self, app: Any) -> bool:
        """Note each rebalance's start, and each recovery Faust signals; False if no start.

        Faust sets ``rebalancing`` when partitions are revoked, but its recovery checks the
        generation only before its final seek (``Recovery.on_recovery_completed``), and the
        generation changes at the next assignment, not at the revocation: a recovery that a
        rebalance overtakes during that seek, or after it, still ends the rebalance.
        """
        start_rebalance = getattr(app, "on_rebalance_start", None)
        if start_rebalance is None:
            return False

        def start_rebalance_and_note() -> None:
            self._revocations += 1  # in the consumer's thread, before Faust's own handling
            start_rebalance()

        app.on_rebalance_start = start_rebalance_and_note
        recovery = getattr(getattr(app, "tables", None), "recovery", None)
        if recovery is not None:
            self._recovery = recovery
            signal_recovery = recovery.on_rebalance

            async def signal_recovery_and_note(*args: Any, **kwargs: Any) -> None:
                revocations = self._revocations
                await signal_recovery(*args, **kwargs)  # no await inside: Faust's own comment
                if recovery.signal_recovery_start.is_set():
                    # The recovery of this assignment is pending: it follows every rebalance
                    # that started before it was signalled.
                    self._revocations_recovering = revocations

            recovery.on_rebalance = signal_recovery_and_note
        return True

    def _recovery_superseded(self) -> bool:
        """Whether a recovery ending now belongs to an assignment a rebalance has replaced.

        Faust signals each assignment's recovery (``Recovery.on_rebalance``, after the
        revocation and the assignment), and the recovery clears the signal as it starts,
        after the one before it has returned. So while a recovery ends: a rebalance that
        started after the latest signal has no recovery yet (between the revocation and
        Faust's signal), and a signal still set is a recovery pending behind this one.
        Either way a later recovery ends the rebalance. Generations are not compared: the
        development broker's first one is 0, Faust's value before any assignment. Without
        a recovery to watch (not Faust's app), none is known to follow a revocation.
        """
        if self._revocations != self._revocations_recovering:
            return True
        recovery = self._recovery
        return recovery is not None and bool(recovery.signal_recovery_start.is_set())

    def stale(self, message: Any) -> bool:
        """Whether ``message`` comes during a rebalance, or was fetched in an older generation.

        Such a record belongs to no assignment that is settled: it is not taken
        (:meth:`arrive`), and one applied all the same is not committed. The agent goes on
        draining the records already in a partition group's merge after a revocation; the
        recovery that follows may then replay the changelog over their state changes (a
        partition this worker keeps is recovered again), so their offsets must not be
        committed: they are read again after the seek and applied again, or counted as
        duplicates where the state kept them.
        """
        app = self._app
        if app is None:
            return False
        generation = getattr(message, "generation_id", None)
        return bool(app.rebalancing) or (
            generation is not None and generation != app.consumer_generation_id
        )

    async def _seek_uncommitted(self, partitions: list[TP]) -> None:
        """Seek never-committed input partitions to the earliest offset, as expected.

        aiokafka's ``seek_to_committed`` seeks only partitions with a committed offset
        above 0. The fetch position of the others can already be past records that were
        fetched after the assignment and dropped before this seek (delivered before any
        offset was expected, or cut off by Faust's ``getmany`` when the generation
        changed). Nothing would read them again until a later record on the same
        partition showed the gap, and on a sparse topic none may come: the record stays
        unapplied and the partition holds its merge back.
        """
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        offsets = {tp: self._expected[tp] for tp in partitions if tp in assigned}
        if offsets:
            # In the consumer's own thread, as in _read_again: a seek from this one once
            # broke aiokafka's fetcher mid-fetch (KeyError in fetched_records).
            await self._consumer.seek_wait(offsets)

    async def _read_cleared_records_again(self) -> None:
        """Seek every input partition back to the next offset expected, once a rebalance ends.

        Records delivered during the rebalance were not taken (:meth:`arrive`), and
        Faust's ``FlowControlEvent.resume``, which the recovery calls right after its seek
        to the committed offsets (``Recovery.on_recovery_completed``), empties the queue of
        every stream. Either way the fetch position is past records never taken: a later
        record shows the gap (``records_missing_in_delivery``), but on a sparse topic none
        may come, and the record stays unread with the merge held behind it. Every such
        record is at or past the next offset expected, so a seek there reads them all
        again; records taken meanwhile come again as old ones and are dropped.
        """
        consumer = self._consumer
        try:
            assigned = consumer.assignment()
            offsets = {tp: offset for tp, offset in self._expected.items() if tp in assigned}
            if offsets:
                log.info("cleared_records_read_again", partitions=len(offsets))
                await consumer.seek_wait(offsets)  # in the consumer's own thread
                self._forget_fetches(offsets)
                for tp, offset in offsets.items():  # records fetched before it still drain
                    if self._expected.get(tp) == offset:
                        self._seeked_back_to[tp] = offset
                        self._gap_shown_by.pop(tp, None)
        except Exception as error:  # a task: log it, never lose it (a rebalance seeks anew)
            log.warning("cleared_records_not_read_again", error=repr(error))

    def forget(self) -> None:
        """On a rebalance: the consumer seeks to the committed offsets again."""
        self._expected.clear()
        self._resumed_from.clear()
        self._seeked_back_to.clear()
        self._gap_shown_by.clear()
        self._handed_to.clear()
        self._fetched_to.clear()
        self._committed.clear()

    def committed(self, tp: TP) -> int | None:
        """The offset the broker holds as committed for ``tp``, as far as this worker knows.

        Not Faust's ``_committed_offset``, which also counts a commit the broker refused:
        marks trimmed to that would lack the position a successor resumes from.
        """
        return self._committed.get(tp)

    def position(self, tp: TP) -> int | None:
        """The next offset to apply from ``tp``, once the consumer has seeked."""
        return self._expected.get(tp)

    def deliverable_from(self, tp: TP) -> int | None:
        """The first offset ``tp`` may still deliver a record at, once the consumer has seeked.

        :meth:`position`, or past it the consumer's fetch position when the consumer has
        handed over no record of ``tp`` that is not taken yet: aiokafka moves its position
        past offsets that hold no record to deliver (a transaction's commit marker, an
        aborted record under ``read_committed``), so a high watermark past the next offset
        expected does not always mean a record is still to come.
        """
        expected = self._expected.get(tp)
        fetched_to = self._fetched_to.get(tp)
        if expected is None or fetched_to is None or fetched_to <= expected:
            return expected
        if self._handed_to.get(tp, expected) > expected:
            return expected  # handed over and not taken yet (a later chunk), or lost
        return fetched_to

    def _note_fetch(self, records: Mapping[Any, Any]) -> None:
        """After each fetch the consumer hands over: its records, and aiokafka's positions.

        Read in this thread before any record of the fetch is taken, and before the next
        fetch can move the positions again (Faust fetches one batch at a time).
        """
        for fetched_tp, batch in records.items():
            if fetched_tp.topic in self._topics and batch:
                tp = TP(fetched_tp.topic, fetched_tp.partition)
                self._handed_to[tp] = max(self._handed_to.get(tp, 0), batch[-1].offset + 1)
        client = getattr(getattr(self._consumer, "_thread", None), "_consumer", None)
        subscription = getattr(getattr(client, "_subscription", None), "subscription", None)
        assignment = getattr(subscription, "assignment", None)
        if assignment is None:
            return
        for tp in self._expected:
            state = assignment.state_value(tp)
            if state is not None and state.has_valid_position:
                self._fetched_to[tp] = state.position

    def _forget_fetches(self, partitions: Iterable[TP]) -> None:
        """After a seek of ``partitions``: what was fetched before it tells nothing."""
        for tp in partitions:
            self._handed_to.pop(tp, None)
            self._fetched_to.pop(tp, None)

    def resumed_from(self, tp: TP) -> int | None:
        """The offset ``tp`` was seeked to at the assignment: committed, or the earliest."""
        return self._resumed_from.get(tp)

    async def arrive(self, message: Any) -> bool:
        """Whether ``message`` is the next record of its partition; if so, expect the one after.

        Any other record is left unacked and comes again: a copy of one already taken,
        one delivered before the consumer seeked, or one past records that went missing
        in delivery, in which case the partition is seeked back to read them again. If
        the first record fetched from that seek is past the one expected too, Kafka has
        no record to deliver in between (see :meth:`_read_again`): it is taken.
        """
        tp = message.tp
        expected = self._expected.get(tp)
        if expected is None or message.offset < expected:
            return False
        if self.stale(message):
            # Until the rebalance has ended (the table recovered, the timer index rebuilt and
            # the final seek made), a record would be applied to a partition group built too
            # early. It is read again once the rebalance ends. A record fetched before it
            # ended (the rest of a batch that waited in a seek meanwhile) must not move the
            # next offset expected past the one the consumer seeked to: the copy read again
            # from there would be dropped as old, and the record lost.
            return False
        if message.offset > expected:
            expected = await self._read_again(message, expected)
            if self.stale(message) or self._expected.get(tp) != expected:
                # A rebalance started, or ran, during the seek: the next offset expected is
                # the one the consumer seeked to since, or is about to.
                return False
        if message.offset != expected:
            return False
        self._expected[tp] = expected + 1
        return True

    def applied(self, message: Any) -> None:
        """Let the next ack of ``message`` count: the runtime has applied it."""
        self._applied.add((message.tp, message.offset))

    def ack_applied(self, consumer: Any, messages: Iterable[Any]) -> None:
        """Ack input records the runtime has applied: :meth:`applied`, then ``consumer.ack``.

        With this delivery installed on ``consumer``, the same outcome a batch at a time:
        a stale record is marked acked without counting, any other goes to the consumer's
        own ``ack``, with no round trip through the set of applied records.
        """
        ack = self._ack
        if ack is None or consumer is not self._consumer:
            for message in messages:
                self.applied(message)
                consumer.ack(message)
            return
        for message in messages:
            if self.stale(message):
                _pass_over(consumer, message)
            else:
                ack(message)

    async def _read_again(self, message: Any, expected: int) -> int:
        """Seek ``tp`` back to ``expected``, unless retention removed it: the next offset.

        Not every offset holds a record the consumer delivers: a transaction's commit or
        abort marker never does (aiokafka skips control batches at every isolation level),
        nor does an aborted record under ``read_committed``, nor one compaction removed.
        After the seek back, records fetched before it may still drain; they all follow
        ``delivered`` in the log. So a record at or before ``delivered`` is the first one
        fetched from ``expected``, and the offsets before it hold nothing to deliver: the
        next offset expected moves to it (log event ``offsets_never_delivered``). Records
        lost in delivery (fetched before a rebalance, then cleared) are read again from the
        seek, the first of them at ``expected`` itself.
        """
        tp, delivered = message.tp, message.offset
        if self._seeked_back_to.get(tp) == expected:
            shown_by = self._gap_shown_by.get(tp)
            if shown_by is not None and delivered <= shown_by:
                return self._skip_gap(tp, expected, delivered)
            if shown_by is not None:
                return expected  # fetched before the seek; those fetched from it follow
            # Seeked back when the rebalance ended, before this record showed the gap: it
            # may have been fetched before that seek, or from it. Seeking again tells.
        try:
            return await self._seek_back(message, expected)
        except (KafkaError, TimeoutError) as error:
            # The partition was revoked between the check and the seek, or the broker did
            # not answer: the record is not taken, and the next one past the gap (or the
            # rebalance's own seek) tries again. Raised, it would stop the worker.
            self._seeked_back_to.pop(tp, None)
            self._gap_shown_by.pop(tp, None)
            log.warning("records_not_read_again", topic=tp.topic, partition=tp.partition,
                        expected=expected, error=repr(error))  # fmt: skip
            return expected

    async def _seek_back(self, message: Any, expected: int) -> int:
        """:meth:`_read_again`'s seek, which the consumer may refuse."""
        tp, delivered = message.tp, message.offset
        start = (await self._consumer.earliest_offsets(tp)).get(tp) or 0
        if self.stale(message) or self._expected.get(tp) != expected:
            return expected  # a rebalance meanwhile: its own seek counts, not this one
        if start > expected:
            log.warning("records_expired_before_read", topic=tp.topic, partition=tp.partition,
                        expected=expected, log_start=start)  # fmt: skip
            self._expected[tp] = expected = start
            if delivered == start:
                return expected
        log.info("records_missing_in_delivery", topic=tp.topic, partition=tp.partition,
                 expected=expected, delivered=delivered)  # fmt: skip
        if tp in self._consumer.assignment():  # else a rebalance is on, and seeks anew
            self._seeked_back_to[tp] = expected
            self._gap_shown_by[tp] = delivered
            # In the consumer's own thread: aiokafka's fetcher is not thread-safe, and a
            # seek from this one can break a fetch that is under way.
            await self._consumer.seek_wait({tp: expected})
            self._forget_fetches([tp])
        return expected

    def _skip_gap(self, tp: TP, expected: int, delivered: int) -> int:
        """Expect ``delivered`` next: Kafka has nothing to deliver from ``expected`` up to it.

        Without this, every later record of the partition was left to come again, for good
        and across restarts (the committed offset stays at ``expected``).
        """
        log.info("offsets_never_delivered", topic=tp.topic, partition=tp.partition,
                 first=expected, last=delivered - 1)  # fmt: skip
        self._seeked_back_to.pop(tp, None)
        self._gap_shown_by.pop(tp, None)
        self._expected[tp] = delivered
        return delivered


def guard_recovery_seeks(recovery: Any) -> None:
    """Make Faust's table recovery start again, not crash, after a rebalance it missed.

    In faust-streaming 0.15.3, ``Recovery._restart_recovery`` waits for the active
    changelogs to be read inside ``try: ... except Exception``, and the ``RebalanceAgain``
    that a rebalance raises there is an ``Exception``: it is swallowed, and the loop
    goes on as if the recovery of the old assignment had finished. The rebalance has
    meanwhile replaced the standby partitions, with the offset ``None`` for each new one
    (``Recovery._add``) because their offsets are built only at the start of a recovery.
    "Starting standby partitions..." then seeks them to ``None``, and aiokafka raises
    ``ValueError('Offset must be a positive integer')``, which stops the worker
    (RELIABILITY.md, defect 4). Nothing in this is particular to Tansu.

    The guard raises ``RebalanceAgain`` from ``_seek_offsets`` when a rebalance is
    pending (``signal_recovery_start`` is set, as Faust's own ``_wait`` would see a moment
    later) or an offset was never built: the loop then starts the recovery of the new
    assignment, which is what Faust means to do. Otherwise the seek is Faust's.
    Idempotent.
    """
    seek_offsets = recovery._seek_offsets
    if getattr(seek_offsets, _GUARD_MARKER, False):
        return

    async def seek_offsets_of_this_assignment(
        consumer: Any, tps: Collection[TP], offsets: Mapping[TP, int | None], title: str
    ) -> None:
        unprepared = sorted(str(tp) for tp in tps if offsets.get(tp, 0) is None)
        if recovery.signal_recovery_start.is_set() or unprepared:
            log.warning("recovery_superseded", seek=title, unprepared=len(unprepared))
            raise RebalanceAgain()
        await seek_offsets(consumer, tps, offsets, title)

    setattr(seek_offsets_of_this_assignment, _GUARD_MARKER, True)
    recovery._seek_offsets = seek_offsets_of_this_assignment


_FLUSH_LIMIT_SECONDS = 10.0


def drain_state_writes_before_flush(buffer: Any) -> None:
    """Make Faust's producer flush wait until its buffer is empty (RELIABILITY.md, defect 6).

    faust-streaming 0.15.3, ``ProducerBuffer.flush_atmost``: the flush returns as soon as
    one message takes more than 0.1 s to be handed to aiokafka, with the rest still in
    the buffer. Table writes wait there (``send_soon``), and Faust flushes before it
    commits offsets and before a recovery reads the changelog's high watermarks. So an
    offset could be committed, or a partition this worker keeps could be recovered from
    its changelog, without the latest state of a user: a SIGKILL, or the recovery itself,
    then rolled the state back. The flush now waits until the buffer is empty, for at
    most 10 s (a broker that does not answer), and then leaves the rest as before.
    """
    flush_atmost = buffer.flush_atmost
    if getattr(buffer.flush, _GUARD_MARKER, False):
        return

    async def flush_until_empty() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FLUSH_LIMIT_SECONDS
        await flush_atmost(None)
        while buffer.size and loop.time() < deadline:
            await flush_atmost(None)
        if buffer.size:
            log.warning("producer_buffer_not_drained", messages=buffer.size)

    setattr(flush_until_empty, _GUARD_MARKER, True)
    buffer.flush = flush_until_empty


def _pass_over(consumer: Any, message: Any) -> None:
    """Mark ``message`` acked without counting it: its offset is not committed."""
    message.acked = True
    consumer._unacked_messages.discard(message)
