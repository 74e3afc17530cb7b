"""The batch diversion: input records taken from each fetch, other topics left to Faust."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.fetch import BatchDiversion

INPUTS = ("purchases", "repayments")


@dataclass(frozen=True)
class Record:
    """An aiokafka record as far as the fake consumer's ``_to_message`` reads it."""

    offset: int


@dataclass(frozen=True)
class Message:
    tp: TP
    offset: int
    generation_id: int


@dataclass
class FakeConsumer:
    """What the diversion uses of Faust's consumer: one fetch, then nothing."""

    fetches: list[tuple[Mapping[TP, Sequence[Record]] | None, set[TP] | None]]
    flow_active: bool = True
    should_stop: bool = False
    _buffered_partitions: set[TP] = field(default_factory=set)
    end_offsets: dict[TP, int] = field(default_factory=dict)
    seeks: int = 0

    def __post_init__(self) -> None:
        self.app = SimpleNamespace(
            consumer_generation_id=7,
            monitor=SimpleNamespace(track_tp_end_offset=self.end_offsets.__setitem__),
        )
        self.scheduler = SimpleNamespace(iterate=_in_order)

    async def _wait_next_records(
        self,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> tuple[Mapping[TP, Sequence[Record]] | None, set[TP] | None]:
        return self.fetches.pop(0) if self.fetches else ({}, None)

    def _to_message(self, tp: TP, record: Record) -> Message:
        return Message(tp, record.offset, self.app.consumer_generation_id)

    def highwater(self, tp: TP) -> int:
        return 100 + tp.partition

    async def perform_seek(self) -> None:
        self.seeks += 1


def _in_order(records: Mapping[TP, Sequence[Record]]) -> Any:
    return ((tp, record) for tp, batch in records.items() for record in batch)


def _records(tp: TP, *offsets: int) -> list[Record]:
    return [Record(offset) for offset in offsets]


async def _fetch_once(consumer: FakeConsumer, batch_size: int = 10) -> tuple[list[Any], list[Any]]:
    batches: list[list[Message]] = []

    async def handle(messages: list[Message]) -> None:
        batches.append(messages)

    BatchDiversion(INPUTS, handle, batch_size).install(consumer)
    yielded = [item async for item in consumer.getmany(1.0)]
    return batches, yielded


async def test_input_records_go_to_the_handler_a_partition_s_topics_together() -> None:
    p0, p1 = TP("purchases", 0), TP("purchases", 1)
    r0, r1 = TP("repayments", 0), TP("repayments", 1)
    fetch = {p0: _records(p0, 3, 4), p1: _records(p1, 0), r0: _records(r0, 9), r1: []}
    consumer = FakeConsumer([(fetch, None)])
    batches, yielded = await _fetch_once(consumer)
    assert yielded == []
    assert [(m.tp, m.offset, m.generation_id) for m in batches[0]] == [
        (p0, 3, 7), (p0, 4, 7), (r0, 9, 7), (p1, 0, 7)
    ]  # fmt: skip
    assert consumer.end_offsets == {p0: 100, p1: 101, r0: 100, r1: 101}


async def test_a_large_fetch_is_handled_in_batches_in_order() -> None:
    tp = TP("purchases", 2)
    consumer = FakeConsumer([({tp: _records(tp, *range(25))}, None)])
    batches, _ = await _fetch_once(consumer, batch_size=10)
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert [m.offset for batch in batches for m in batch] == list(range(25))


async def test_other_topics_are_yielded_to_faust_and_inactive_partitions_skipped() -> None:
    changelog, inactive = TP("users-changelog", 0), TP("purchases", 3)
    buffered, active = TP("repayments", 3), TP("purchases", 0)
    fetch = {
        changelog: _records(changelog, 5, 6),
        inactive: _records(inactive, 1),
        buffered: _records(buffered, 2),
        active: _records(active, 0),
    }
    consumer = FakeConsumer([(fetch, {changelog, active})], _buffered_partitions={buffered})
    batches, yielded = await _fetch_once(consumer)
    assert [(tp, m.offset) for tp, m in yielded] == [(changelog, 5), (changelog, 6)]
    assert [(m.tp, m.offset) for m in batches[0]] == [(active, 0), (buffered, 2)]


async def test_a_fetch_without_flow_or_while_stopping_is_dropped() -> None:
    tp = TP("purchases", 0)
    # Without flow the consumer seeks back to the committed offsets, as Faust's getmany
    # does: its position is past the dropped records, which nothing else would read again.
    for flow_active, should_stop, seeks in ((False, False, 1), (True, True, 0)):
        consumer = FakeConsumer(
            [({tp: _records(tp, 0)}, None)], flow_active=flow_active, should_stop=should_stop
        )
        batches, yielded = await _fetch_once(consumer)
        assert batches == [] and yielded == []
        assert consumer.seeks == seeks


async def test_faust_s_iteration_stops_when_the_generation_changes() -> None:
    tp = TP("users-changelog", 0)
    consumer = FakeConsumer([({tp: _records(tp, 0, 1, 2)}, None)])
    BatchDiversion(INPUTS, _no_batches, 10).install(consumer)
    seen = []
    async for _, message in consumer.getmany(1.0):
        seen.append(message.offset)
        consumer.app.consumer_generation_id = 8
    assert seen == [0]


async def _no_batches(messages: list[Message]) -> None:
    raise AssertionError("no input records in this fetch")


async def test_input_records_are_dropped_when_flow_stops_while_faust_takes_the_others() -> None:
    changelog, purchases = TP("users-changelog", 0), TP("purchases", 0)
    fetch = {changelog: _records(changelog, 0), purchases: _records(purchases, 0)}
    for stop in ("flow", "generation"):
        consumer = FakeConsumer([(fetch, None)])
        BatchDiversion(INPUTS, _no_batches, 10).install(consumer)
        seen = []
        async for tp, message in consumer.getmany(1.0):
            seen.append((tp, message.offset))
            if stop == "flow":
                consumer.flow_active = False  # a rebalance began meanwhile
            else:
                consumer.app.consumer_generation_id = 8
        # Faust still took the changelog record; the purchase reached neither it nor a batch.
        assert seen == [(changelog, 0)], stop
