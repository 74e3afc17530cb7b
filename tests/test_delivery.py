"""In-order delivery after a rebalance, and when an empty topic holds the event-time merge.

A fake consumer stands in for Faust's: it keeps one fetch position per partition, and
its ``seek_to_committed`` behaves as aiokafka's does, seeking only partitions with a
committed offset above 0 (RELIABILITY.md, defect 2).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP

from risk.replay import INPUT_TOPICS
from streams.delivery import InOrderDelivery, drain_state_writes_before_flush
from streams.progress import Marks, event_time_at
from streams.runtime import Runtime, StateNotPersistedError

OVERRIDES = "credit.limit-overrides.v1"
PURCHASES = "credit.purchases.v1"


@dataclass(frozen=True)
class Record:
    """The fields of a Faust message that delivery reads."""

    tp: TP
    offset: int
    generation_id: int = 3
    """The consumer generation it was fetched in: :class:`FakeApp`'s, unless said."""

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition


class FakeConsumer:
    """Fetch positions, committed offsets and seeks, as aiokafka keeps them."""

    def __init__(self, ends: Mapping[TP, int], committed: Mapping[TP, int | None]) -> None:
        self.ends = dict(ends)
        self.committed = dict(committed)
        self.position: dict[TP, int] = dict.fromkeys(ends, 0)
        self.seeks: list[dict[TP, int]] = []
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._unacked_messages: set[Any] = set()

    def fetch(self, tp: TP) -> Record | None:
        """The record at the fetch position, which moves past it (aiokafka's getmany)."""
        if self.position[tp] >= self.ends[tp]:
            return None
        record = Record(tp, self.position[tp])
        self.position[tp] += 1
        return record

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:  # aiokafka: `if offset and offset > 0: seek_to(...)`
                self.position[tp] = offset
        return dict(self.committed)

    async def earliest_offsets(self, *tps: TP) -> Mapping[TP, int]:
        return dict.fromkeys(tps, 0)

    async def seek_wait(self, offsets: Mapping[TP, int]) -> None:
        self.seeks.append(dict(offsets))
        self.position.update(offsets)

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def ack(self, message: Any) -> bool:
        return True

    accepts_commits = True
    """Whether the broker takes the next commit (False: it raced a rebalance)."""

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        if self.accepts_commits:
            self.committed.update(offsets)
        return self.accepts_commits


async def test_a_never_committed_partition_is_read_again_from_its_first_record() -> None:
    # The only record of a sparse topic was fetched after the assignment and dropped before
    # the seek (delivered while no offset was expected). Before the fix nothing read it again.
    sparse, busy = TP(OVERRIDES, 1), TP(PURCHASES, 1)
    consumer = FakeConsumer({sparse: 1, busy: 30}, {sparse: None, busy: 20})
    delivery = InOrderDelivery([OVERRIDES, PURCHASES])
    delivery.install(consumer)

    early = consumer.fetch(sparse)
    assert early is not None
    assert not await delivery.arrive(early)  # no offset expected yet: left to come again
    await consumer.seek_to_committed()  # Faust's perform_seek, through the wrapper

    assert delivery.position(sparse) == 0
    assert consumer.seeks == [{sparse: 0}]
    again = consumer.fetch(sparse)
    assert again == Record(sparse, 0)
    assert await delivery.arrive(again)
    assert delivery.position(sparse) == 1
    # A committed partition is left to aiokafka's own seek, to its committed offset.
    assert consumer.position[busy] == 20
    assert delivery.position(busy) == 20


async def test_a_partition_committed_at_zero_is_also_seeked_to_its_first_record() -> None:
    tp = TP(OVERRIDES, 0)
    consumer = FakeConsumer({tp: 3}, {tp: 0})
    delivery = InOrderDelivery([OVERRIDES])
    delivery.install(consumer)
    consumer.fetch(tp)
    consumer.fetch(tp)
    await consumer.seek_to_committed()
    assert consumer.position[tp] == 0
    assert delivery.position(tp) == 0


class FakeRecovery:
    """Faust's table recovery: each assignment signals the next recovery
    (``Recovery.on_rebalance``), which clears the signal as it starts."""

    def __init__(self) -> None:
        self.signal_recovery_start = asyncio.Event()

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        self.signal_recovery_start.set()

    def start(self) -> None:
        """``Recovery._restart_recovery`` takes the signal: the recovery is under way."""
        self.signal_recovery_start.clear()


class FakeApp:
    """Faust's app: ``rebalancing`` from a revocation until ``on_rebalance_end``."""

    def __init__(self) -> None:
        self.rebalancing = True
        self.consumer_generation_id = 3
        self.tables = SimpleNamespace(recovery=FakeRecovery())

    async def assign(self, generation: int) -> None:
        """An assignment: the generation, then Faust's signal of its recovery."""
        self.consumer_generation_id = generation
        await self.tables.recovery.on_rebalance(set(), set(), set(), generation)

    def on_rebalance_end(self) -> None:
        self.rebalancing = False

    def on_rebalance_start(self) -> None:
        self.rebalancing = True


async def test_records_delivered_during_a_rebalance_are_read_again_when_it_ends() -> None:
    # Faust's recovery seeks to the committed offsets and then empties the agent's queue
    # (flow control's resume); before its end, records would go to partition groups built
    # from a table not yet recovered. Either way they are not taken, and the fetch position
    # is past them: the only record of a sparse topic was never read again.
    sparse, busy = TP(OVERRIDES, 5), TP(PURCHASES, 5)
    consumer = FakeConsumer({sparse: 1, busy: 510}, {sparse: None, busy: 505})
    consumer.app = FakeApp()  # type: ignore[attr-defined]
    delivery = InOrderDelivery([OVERRIDES, PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    for tp in (sparse, busy, busy):
        record = consumer.fetch(tp)
        assert record is not None
        assert not await delivery.arrive(record)  # the rebalance is on: not taken

    consumer.app.on_rebalance_end()  # type: ignore[attr-defined]
    await asyncio.sleep(0)  # the seek runs as a task
    assert consumer.seeks[-1] == {sparse: 0, busy: 505}
    for tp, offset in ((sparse, 0), (busy, 505), (busy, 506)):
        record = consumer.fetch(tp)
        assert record == Record(tp, offset)
        assert await delivery.arrive(record)


async def _installed_after_a_rebalance(consumer: FakeConsumer) -> InOrderDelivery:
    """Delivery of purchases on ``consumer``, sought to the committed offsets, its rebalance
    just ended (and the seek back that ending makes, done)."""
    consumer.app = FakeApp()  # type: ignore[attr-defined]
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    consumer.app.on_rebalance_end()  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    return delivery


async def test_a_record_fetched_before_a_rebalance_ended_does_not_move_the_next_offset() -> None:
    # The rest of a batch that waited in a seek while a rebalance ran: the consumer seeked to
    # the committed offset 4 meanwhile. Taken, the old copy of 4 would expect 5 next, and the
    # copy of 4 read again from the seek would be dropped as old: the record lost.
    tp = TP(PURCHASES, 2)
    consumer = FakeConsumer({tp: 10}, {tp: 4})
    delivery = await _installed_after_a_rebalance(consumer)
    assert not await delivery.arrive(Record(tp, 4, generation_id=2))
    assert delivery.position(tp) == 4
    assert await delivery.arrive(Record(tp, 4))
    assert delivery.position(tp) == 5


class _RevokedMidSeek(FakeConsumer):
    """aiokafka's consumer when the partition is revoked between the check and the seek."""

    refuse = True

    async def seek_wait(self, offsets: Mapping[TP, int]) -> None:
        if self.refuse:
            raise IllegalStateError("No current assignment for partition")
        await super().seek_wait(offsets)


async def test_a_seek_back_the_consumer_refuses_leaves_the_record_for_later() -> None:
    tp = TP(PURCHASES, 3)
    consumer = _RevokedMidSeek({tp: 10}, {tp: 2})
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    assert not await delivery.arrive(Record(tp, 5))  # 2 to 4 are missing: seek back, refused
    assert delivery.position(tp) == 2 and consumer.seeks == []
    consumer.refuse = False
    assert not await delivery.arrive(Record(tp, 6))  # the next one past the gap tries again
    assert consumer.seeks == [{tp: 2}]


class _MarkerConsumer(FakeConsumer):
    """Offsets in ``markers`` hold control records: the fetch skips them, as aiokafka does
    (a transaction's commit marker, at every isolation level)."""

    def __init__(self, *args: Any, markers: set[int]) -> None:
        super().__init__(*args)
        self.markers = markers

    def fetch(self, tp: TP) -> Record | None:
        while self.position[tp] in self.markers:
            self.position[tp] += 1
        return super().fetch(tp)


async def _take_all(consumer: FakeConsumer, delivery: InOrderDelivery, tp: TP) -> list[int]:
    """Fetch ``tp`` to its end, seeks included; the offsets taken."""
    taken = []
    for _ in range(50):
        record = consumer.fetch(tp)
        if record is None:
            break
        if await delivery.arrive(record):
            taken.append(record.offset)
    return taken


async def test_records_past_a_commit_marker_are_taken() -> None:
    # A transactional producer's commit marker (offset 1, and 3, 5 for the next ones) is
    # never delivered: the next offset expected stayed at the marker, and every later record
    # was left to come again, for good and across restarts.
    tp = TP(PURCHASES, 0)
    consumer = _MarkerConsumer({tp: 7}, {tp: None}, markers={1, 3, 5})
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    assert await _take_all(consumer, delivery, tp) == [0, 2, 4, 6]
    assert delivery.position(tp) == 7
    # Each gap is believed only once the seek back delivered the same record again (the
    # first seek is to the earliest offset of a partition never committed).
    assert consumer.seeks == [{tp: 0}, {tp: 1}, {tp: 3}, {tp: 5}]


async def test_records_lost_in_delivery_are_still_read_again() -> None:
    # Records fetched before a rebalance and cleared (4, 5): the partition is seeked back and
    # they are read again. Records of the batch fetched before that seek (7) still drain:
    # they follow the one that showed the gap, so they do not move the next offset expected.
    tp = TP(PURCHASES, 2)
    consumer = FakeConsumer({tp: 9}, {tp: 4})
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    for _ in range(2):
        consumer.fetch(tp)  # 4 and 5, cleared before they reach the runtime
    batch = [consumer.fetch(tp), consumer.fetch(tp)]
    assert [record.offset for record in batch if record] == [6, 7]
    for record in batch:
        assert record is not None
        assert not await delivery.arrive(record)
    assert consumer.seeks == [{tp: 4}]
    assert delivery.position(tp) == 4
    assert await _take_all(consumer, delivery, tp) == [4, 5, 6, 7, 8]


async def test_a_record_after_the_seek_at_a_rebalance_end_seeks_again_before_a_gap_counts() -> None:
    # The seek when a rebalance ends knows of no record past the gap: one delivered after it
    # may have been fetched before it. Only the same record fetched again proves the gap.
    tp = TP(PURCHASES, 2)
    consumer = _MarkerConsumer({tp: 10}, {tp: 4}, markers={4, 5})
    delivery = await _installed_after_a_rebalance(consumer)
    assert consumer.seeks == [{tp: 4}]
    assert not await delivery.arrive(Record(tp, 7))  # fetched before that seek, say
    assert consumer.seeks == [{tp: 4}, {tp: 4}] and delivery.position(tp) == 4
    assert await _take_all(consumer, delivery, tp) == [6, 7, 8, 9]


class _RebalancedWhileAsked(FakeConsumer):
    """A consumer whose partition is revoked and assigned again while ``earliest_offsets``
    waits for the broker: the next offset expected then comes from the new assignment."""

    def __init__(self, *args: Any, log_start: int, rebalance_ends: bool) -> None:
        super().__init__(*args)
        self.log_start = log_start
        self.rebalance_ends = rebalance_ends
        self.app = FakeApp()
        self.delivery: InOrderDelivery | None = None

    async def earliest_offsets(self, *tps: TP) -> Mapping[TP, int]:
        if self.delivery is not None:
            self.app.on_rebalance_start()
            self.delivery.forget()
            await self.app.assign(self.app.consumer_generation_id + 1)
            await self.seek_to_committed()
            if self.rebalance_ends:
                self.app.tables.recovery.start()
                self.app.on_rebalance_end()
                assert not self.app.rebalancing
        return dict.fromkeys(tps, self.log_start)


@pytest.mark.parametrize("rebalance_ends", [False, True])
@pytest.mark.parametrize("log_start", [0, 6])
async def test_a_rebalance_while_seeking_back_leaves_the_next_offset_to_it(
    rebalance_ends: bool, log_start: int
) -> None:
    # Record 6, fetched in generation 3, waits for the log start while a rebalance runs. With
    # records 4 and 5 expired (log start 6) it was taken afterwards, and moved the next offset
    # expected past the one the new assignment seeked to, from a generation whose records
    # must not be taken; with them still there, the old generation's seek back was made.
    tp = TP(PURCHASES, 2)
    consumer = _RebalancedWhileAsked(
        {tp: 10}, {tp: 4}, log_start=log_start, rebalance_ends=rebalance_ends
    )
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    consumer.app.on_rebalance_end()
    await asyncio.sleep(0)
    seeks = list(consumer.seeks)
    consumer.delivery = delivery
    assert not await delivery.arrive(Record(tp, 6, generation_id=3))
    assert delivery.position(tp) == 4
    assert consumer.seeks == seeks


class _Highwaters:
    """``app.consumer`` for ``Runtime._may_receive``: the high watermark of each partition,
    and aiokafka's consumer (``_thread._consumer``) with the time of its last fetch."""

    def __init__(self, highwaters: Mapping[TP, int | None], fetched_ago: float) -> None:
        self.highwaters = dict(highwaters)
        self.fetched_ago = fetched_ago
        self._thread = SimpleNamespace(_consumer=self)

    def highwater(self, tp: TP) -> int | None:
        if tp not in self.highwaters:
            raise AssertionError("Partition is not assigned")  # as aiokafka's
        return self.highwaters[tp]

    def last_poll_timestamp(self, tp: TP) -> int:
        return int((time.time() - self.fetched_ago) * 1000)


CANDIDATE = Record(TP(PURCHASES, 5), 41)
"""The record the merge would apply next, of the topic that is not empty."""


def _runtime(
    highwaters: Mapping[TP, int | None],
    positions: Mapping[TP, int],
    fetched_ago: float = 0.3,
    candidate_fetched_ago: float = 1.0,
) -> Any:
    """The attributes ``Runtime._may_receive`` reads, without a Faust app."""
    delivery = SimpleNamespace(position=positions.get, deliverable_from=positions.get)
    fetched_ms = int((time.time() - candidate_fetched_ago) * 1000)
    runtime = SimpleNamespace(
        topics=(PURCHASES, OVERRIDES),
        app=SimpleNamespace(consumer=_Highwaters(highwaters, fetched_ago)),
        delivery=delivery,
        settings=SimpleNamespace(max_idle=30.0),
        _hold_since={},
        _fetched={(CANDIDATE.tp, CANDIDATE.offset): fetched_ms},
    )
    runtime._held_from = partial(Runtime._held_from, runtime)
    runtime._last_fetched_ms = partial(Runtime._last_fetched_ms, runtime)
    return runtime


def _may_receive(runtime: Any, topic_index: int) -> bool:
    return Runtime._may_receive(runtime, 5, [topic_index], CANDIDATE)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.monotonic`` as seen by the runtime, moved by the test."""
    now = [1000.0]
    monkeypatch.setattr("streams.runtime.time.monotonic", lambda: now[0])
    return now


def test_a_partition_with_unread_records_holds_the_merge_however_long_it_takes(
    clock: list[float],
) -> None:
    # Defect 3: under a backlog the hold ran out after max_idle and the records behind it
    # were applied late, or dead-lettered too_late.
    runtime = _runtime({TP(PURCHASES, 5): 4200}, {TP(PURCHASES, 5): 120})
    assert _may_receive(runtime, 0)
    clock[0] += 10 * 60  # ten minutes, twenty times max_idle
    assert _may_receive(runtime, 0)


def test_a_caught_up_partition_does_not_hold_the_merge(clock: list[float]) -> None:
    runtime = _runtime({TP(OVERRIDES, 5): 7}, {TP(OVERRIDES, 5): 7})
    assert not _may_receive(runtime, 1)
    runtime = _runtime({TP(OVERRIDES, 5): 0}, {})
    assert not _may_receive(runtime, 1)


def test_a_partition_caught_up_before_the_candidate_came_holds_it_until_fetched_again(
    clock: list[float],
) -> None:
    # Under a backlog the consumer fetches a partition again only once it has handed over
    # what it fetched before: a high watermark about 4 s old let a worker apply a purchase
    # 36 simulated minutes ahead of a repayment that was already on the broker. And a
    # fetch 1.5 s old let one apply a repayment before its purchase, produced 1 s earlier
    # (defect 7): a response from before the one that brought the candidate may have
    # missed a record that reached the broker first.
    tp = TP(OVERRIDES, 5)
    assert _may_receive(_runtime({tp: 77}, {tp: 77}, fetched_ago=6.0), 1)
    assert _may_receive(_runtime({tp: 77}, {tp: 77}, fetched_ago=1.5, candidate_fetched_ago=1.0), 1)
    assert _may_receive(
        _runtime({tp: 77}, {tp: 77}, fetched_ago=1.05, candidate_fetched_ago=1.0), 1
    )
    assert not _may_receive(
        _runtime({tp: 77}, {tp: 77}, fetched_ago=0.5, candidate_fetched_ago=1.0), 1
    )
    assert not _may_receive(
        _runtime({tp: 77}, {tp: 77}, fetched_ago=30.0, candidate_fetched_ago=60.0), 1
    )


def test_a_partition_caught_up_in_the_response_that_brought_the_candidate_does_not_hold_it(
    clock: list[float],
) -> None:
    # One fetch request asks for every partition of a broker that has no records waiting;
    # the response was made with the candidate on the broker, so it shows every record
    # that came before. Waiting for the next response cost a fetch round a record: the
    # p50 decision lag at 5,000 events/s went from 46 to 28 ms (bench.lag, 2026-12-03).
    tp = TP(OVERRIDES, 5)
    assert not _may_receive(
        _runtime({tp: 77}, {tp: 77}, fetched_ago=1.0, candidate_fetched_ago=1.0), 1
    )


def test_a_partition_of_unknown_lag_holds_the_merge_for_max_idle_only(
    clock: list[float],
) -> None:
    # No fetch response yet since the assignment, or the partition was just revoked.
    for highwaters, positions in (
        ({TP(OVERRIDES, 5): None}, {TP(OVERRIDES, 5): 0}),
        ({TP(OVERRIDES, 5): 4}, {}),
        ({}, {TP(OVERRIDES, 5): 0}),
    ):
        runtime = _runtime(highwaters, positions)
        assert _may_receive(runtime, 1)
        clock[0] += 29
        assert _may_receive(runtime, 1)
        clock[0] += 2
        assert not _may_receive(runtime, 1)


class _FetchingConsumer(_MarkerConsumer):
    """Faust's ``_getmany`` over the fake fetch, and aiokafka's fetch positions beside it."""

    def __init__(self, *args: Any, markers: set[int]) -> None:
        super().__init__(*args, markers=markers)
        state = partial(SimpleNamespace, has_valid_position=True)
        assignment = SimpleNamespace(state_value=lambda tp: state(position=self.position[tp]))
        subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        self._thread = SimpleNamespace(_consumer=SimpleNamespace(_subscription=subscription))

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Record]]:  # noqa: ASYNC109 - Faust's signature
        fetched: dict[TP, list[Record]] = {}
        for tp in self.ends:
            while (record := self.fetch(tp)) is not None:
                fetched.setdefault(tp, []).append(record)
        return fetched


async def _behind_a_marker(tp: TP, *, end: int) -> tuple[_FetchingConsumer, InOrderDelivery, Any]:
    """A runtime reading ``tp`` up to ``end`` through in-order delivery, offset 1 a commit
    marker, sought to the committed (no) offset."""
    consumer = _FetchingConsumer({tp: end}, {tp: None}, markers={1})
    delivery = InOrderDelivery([OVERRIDES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    runtime = _runtime({tp: end}, {}, fetched_ago=0.5, candidate_fetched_ago=1.0)
    runtime.delivery = delivery
    return consumer, delivery, runtime


async def test_a_commit_marker_after_the_last_record_does_not_hold_the_merge(
    clock: list[float],
) -> None:
    # overrides[5]: record 0, then a transaction's commit marker at 1; the high watermark is
    # 2. Counted from the next offset expected (1), the lag stayed 1 and held the merge of
    # partition 5 for good. aiokafka's fetch position (2) is past the marker.
    tp = TP(OVERRIDES, 5)
    consumer, delivery, runtime = await _behind_a_marker(tp, end=2)
    assert _may_receive(runtime, 1)  # no fetch yet since the seek: the lag counts from 0
    records = await consumer._getmany(None, 0.0)
    assert consumer.position[tp] == 2
    assert _may_receive(runtime, 1)  # record 0 handed over, not taken yet: it holds
    assert await delivery.arrive(records[tp][0])
    assert delivery.position(tp) == 1 and delivery.deliverable_from(tp) == 2
    assert not _may_receive(runtime, 1)
    clock[0] += 3600
    assert not _may_receive(runtime, 1)


async def test_a_commit_marker_before_a_record_not_taken_yet_holds_the_merge(
    clock: list[float],
) -> None:
    # Records 0 and 2 of overrides[5] handed over, 1 a commit marker: until 2 is taken the
    # partition holds (a later chunk of the same fetch may bring it), and after a seek back
    # the fetch position says nothing until the consumer fetched again.
    tp = TP(OVERRIDES, 5)
    consumer, delivery, runtime = await _behind_a_marker(tp, end=3)
    first, second = (await consumer._getmany(None, 0.0))[tp]
    assert await delivery.arrive(first)
    assert _may_receive(runtime, 1)
    assert not await delivery.arrive(second)  # seeks back to the marker
    assert consumer.seeks[-1] == {tp: 1} and delivery.deliverable_from(tp) == 1
    assert _may_receive(runtime, 1)
    (again,) = (await consumer._getmany(None, 0.0))[tp]
    assert await delivery.arrive(again)  # the same record again: the gap is real
    assert delivery.position(tp) == 3
    assert not _may_receive(runtime, 1)


class SlowBuffer:
    """Faust's ProducerBuffer: ``flush_atmost`` gives up after one message takes 0.1 s."""

    def __init__(self, messages: int) -> None:
        self.size = messages
        self.calls = 0

    async def flush_atmost(self, max_messages: int | None) -> int:
        self.calls += 1
        self.size -= 1  # one sent, then the next one is slow: Faust returns
        return 1

    async def flush(self) -> None:
        await self.flush_atmost(None)


async def test_a_flush_before_a_commit_waits_for_every_buffered_state_write() -> None:
    # Defect 6: the flush returned with table writes still buffered, and the commit (or a
    # recovery of a partition this worker keeps) went ahead without them.
    buffer = SlowBuffer(messages=5)
    drain_state_writes_before_flush(buffer)
    drain_state_writes_before_flush(buffer)  # idempotent
    await buffer.flush()
    assert buffer.size == 0
    assert buffer.calls == 5


@dataclass(eq=False)
class Message:
    """A Faust message as the ack reads it."""

    tp: TP
    offset: int
    generation_id: int
    acked: bool = False

    @property
    def topic(self) -> str:
        return self.tp.topic


def delivery_in_a_rebalance() -> tuple[TP, FakeConsumer, InOrderDelivery, list[int]]:
    """A delivery installed on a consumer whose app is rebalancing; the acks that counted."""
    tp = TP(PURCHASES, 2)
    consumer = FakeConsumer({tp: 10}, {tp: 4})
    consumer.app = FakeApp()  # type: ignore[attr-defined]
    acks: list[int] = []
    consumer.ack = lambda message: acks.append(message.offset) or True  # type: ignore[method-assign]
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    return tp, consumer, delivery, acks


async def test_a_record_applied_during_a_rebalance_is_not_committed() -> None:
    # The agent drains what its merge already holds after a revocation; a recovery of the
    # partition may then replay the changelog over those state changes.
    tp, consumer, delivery, acks = delivery_in_a_rebalance()
    during = Message(tp, 4, generation_id=3)
    delivery.applied(during)
    assert not consumer.ack(during)  # the rebalance is on
    consumer.app.on_rebalance_end()  # type: ignore[attr-defined]
    older = Message(tp, 5, generation_id=2)
    delivery.applied(older)
    assert not consumer.ack(older)  # fetched in an older generation
    after = Message(tp, 4, generation_id=3)
    delivery.applied(after)
    assert consumer.ack(after)
    assert acks == [4]


async def test_a_batch_of_applied_records_is_acked_as_one_by_one_acks_would_be() -> None:
    tp, consumer, delivery, acks = delivery_in_a_rebalance()
    during = [Message(tp, 4, generation_id=3), Message(tp, 5, generation_id=3)]
    delivery.ack_applied(consumer, during)  # the rebalance is on
    assert all(message.acked for message in during) and acks == []
    consumer.app.on_rebalance_end()  # type: ignore[attr-defined]
    older, current = Message(tp, 4, generation_id=2), Message(tp, 5, generation_id=3)
    delivery.ack_applied(consumer, [older, current])
    assert older.acked and acks == [5]  # the older generation's record does not count
    assert not delivery._applied  # nothing left for a later ack to find


async def test_a_batch_ack_without_the_delivery_installed_goes_through_applied() -> None:
    tp = TP(PURCHASES, 0)
    consumer = FakeConsumer({tp: 10}, {tp: 0})
    seen: list[tuple[int, bool]] = []
    delivery = InOrderDelivery([PURCHASES])

    def ack(message: Message) -> bool:
        seen.append((message.offset, (message.tp, message.offset) in delivery._applied))
        return True

    consumer.ack = ack  # type: ignore[method-assign]
    delivery.ack_applied(consumer, [Message(tp, 0, generation_id=1)])
    assert seen == [(0, True)]


async def test_a_tick_of_a_rebalance_or_an_older_generation_builds_no_group() -> None:
    # During a rebalance, or fetched before it, a tick's partition may be revoked: a group
    # built for it would stay, and with the wall clock fire timers another worker owns.
    ticks = "lineguard-ticks"
    app = FakeApp()
    app.on_rebalance_end()
    delivery = InOrderDelivery([PURCHASES])
    delivery._app = app
    built: list[int] = []
    runtime = SimpleNamespace(
        tick_topic=ticks, delivery=delivery, app=SimpleNamespace(consumer=FakeConsumer({}, {})),
        _group=built.append,
    )  # fmt: skip
    old = Record(TP(ticks, 1), 7, generation_id=2)
    current = Record(TP(ticks, 2), 8)
    touched, ticked = await Runtime._admit(runtime, [old, current], tracked=False)  # type: ignore[arg-type]
    assert built == [2] and ticked == {2} and list(touched) == [2]
    app.rebalancing = True
    assert await Runtime._admit(runtime, [Record(TP(ticks, 3), 9)], tracked=False) == ({}, set())  # type: ignore[arg-type]
    assert built == [2]


def test_a_recovery_drops_the_groups_of_partitions_no_longer_assigned() -> None:
    recovery = SimpleNamespace(signal_recovery_start=asyncio.Event(), _generation_id=3)
    rebuilt: list[set[int]] = []
    runtime = SimpleNamespace(
        app=SimpleNamespace(tables=SimpleNamespace(recovery=recovery), consumer_generation_id=3),
        groups={0: "kept", 4: "revoked"}, _stores={0: "kept", 4: "revoked"},
        _marks={4: "revoked"}, assignment=lambda: {TP(PURCHASES, 0), TP(PURCHASES, 1)},
        _recover=rebuilt.append,
    )  # fmt: skip
    runtime._forget = partial(Runtime._forget, runtime)
    Runtime.recover(runtime)  # type: ignore[arg-type]
    assert rebuilt == [{0, 1}]
    assert runtime.groups == {0: "kept"} and runtime._stores == {0: "kept"} and not runtime._marks


async def test_with_exactly_once_a_batch_whose_table_writes_stay_buffered_is_not_acked() -> None:
    # Faust's flush gives up after 10 s with writes still buffered; its transaction would
    # then commit the records' offsets without their states.
    acked: list[object] = []
    buffer = SimpleNamespace(size=2)

    async def flush() -> None:
        return None

    runtime = SimpleNamespace(
        _direct=False, _ack=acked.append, table=None,
        app=SimpleNamespace(
            should_stop=False,
            producer=SimpleNamespace(flush=flush, buffer=buffer, _ensure_producer=lambda: None),
        ),
    )  # fmt: skip
    batch = SimpleNamespace(applied=[], decisions=[], flush_with={})
    with pytest.raises(StateNotPersistedError, match="2 table writes still buffered"):
        await Runtime._complete(runtime, batch, {})  # type: ignore[arg-type]
    assert acked == []
    buffer.size = 0
    await Runtime._complete(runtime, batch, {})  # type: ignore[arg-type]
    assert acked == [batch]


async def test_only_commits_the_broker_accepted_count_as_committed() -> None:
    # Faust records a commit that raced a rebalance as made; marks trimmed to it lacked the
    # position a successor resumes from (the offset the broker still held).
    tp, other = TP(PURCHASES, 1), TP("app-users-changelog", 1)
    consumer = FakeConsumer({tp: 30}, {tp: 4})
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    await consumer.seek_to_committed()
    assert delivery.committed(tp) == 4
    consumer.accepts_commits = False
    assert not await consumer._commit_offsets({tp: 9})
    assert delivery.committed(tp) == 4
    consumer.accepts_commits = True
    assert await consumer._commit_offsets({tp: 12, other: 5})
    assert delivery.committed(tp) == 12 and delivery.committed(other) is None
    delivery.forget()  # a rebalance: read from the broker again at the next seek
    assert delivery.committed(tp) is None


def test_a_batch_keeps_the_mark_of_the_offsets_the_broker_holds_as_committed() -> None:
    at = 1_770_000_000_000_000
    resumed = [4, 0, 0, 0, 0]
    runtime = SimpleNamespace(
        topics=INPUT_TOPICS,
        _marks={1: Marks(resumed, at)},
        groups={1: SimpleNamespace(processor=SimpleNamespace(max_event_at=at + 5))},
        delivery=SimpleNamespace(committed={TP(INPUT_TOPICS[0], 1): 4}.get),
        app=SimpleNamespace(consumer=SimpleNamespace(_committed_offset={TP(INPUT_TOPICS[0], 1): 9})),
    )  # fmt: skip
    raw = Runtime._mark(runtime, 1, {0: 9})  # type: ignore[arg-type]
    assert raw is not None
    # Faust's own count says 9 (a commit the broker refused); the successor resumes at 4.
    assert event_time_at(raw, resumed) == (True, at)


def _delivery_with_recovery() -> tuple[TP, FakeApp, FakeRecovery, InOrderDelivery]:
    tp = TP(PURCHASES, 2)
    consumer = FakeConsumer({tp: 10}, {tp: 4})
    app = consumer.app = FakeApp()  # type: ignore[attr-defined]
    recovery = app.tables.recovery
    delivery = InOrderDelivery([PURCHASES])
    delivery.install(consumer)
    return tp, app, recovery, delivery


async def test_a_recovery_ending_after_the_next_rebalance_started_does_not_end_it() -> None:
    # The recovery of one assignment ends while a member joins: its partitions were revoked
    # first (Faust's listener), but the generation changes only at the next assignment, so
    # Faust's check lets it end the rebalance, and the worker was ready through the next
    # join and recovery (RELIABILITY.md, defect 21).
    tp, app, recovery, delivery = _delivery_with_recovery()
    app.on_rebalance_start()  # the first join revokes nothing, then assigns
    await app.assign(0)  # the development broker's first generation: Faust's default
    recovery.start()
    app.on_rebalance_end()
    assert not app.rebalancing
    app.on_rebalance_start()  # a member joins
    app.on_rebalance_end()  # the last assignment's recovery, ending late
    assert app.rebalancing and delivery.stale(Record(tp, 4))
    await app.assign(1)  # the next assignment
    recovery.start()
    app.on_rebalance_end()  # its recovery
    assert not app.rebalancing


async def test_a_recovery_ending_after_the_next_assignment_does_not_end_the_rebalance() -> None:
    # Recovery N passed Faust's generation check and awaits its final seek; a whole revocation
    # and assignment N+1 run meanwhile. The assignment cleared what the revocation noted, so
    # recovery N's late end ended the rebalance before recovery N+1 had run: records passed
    # stale() and partition groups were built from a table not recovered.
    tp, app, recovery, delivery = _delivery_with_recovery()
    app.on_rebalance_start()
    await app.assign(3)
    recovery.start()  # recovery N, now in its final seek
    app.on_rebalance_start()  # a member joins: revoked
    app.consumer_generation_id = 4  # the listener's assignment N+1, before Faust's signal
    app.on_rebalance_end()  # recovery N's late end
    assert app.rebalancing
    await app.assign(4)  # Faust signals recovery N+1, which waits for recovery N
    app.on_rebalance_end()  # recovery N's late end
    assert app.rebalancing and delivery.stale(Record(tp, 4, generation_id=4))
    recovery.start()  # recovery N+1
    app.on_rebalance_end()
    assert not app.rebalancing and not delivery.stale(Record(tp, 4, generation_id=4))
