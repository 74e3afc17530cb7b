"""Input records straight from each fetch, a batch at a time.

Faust hands every fetched record to its agents one by one: a task pair per record in
the fetch loop, a queue hop, an ``Event``, stream processors and sensors. Measured on
the development broker that machinery alone caps a worker at about 4,500 records/s,
with no processing at all (BENCHMARKS.md). :class:`BatchDiversion` takes the records
of the topics it is given out of each fetch before that dispatch and hands them to the
runtime as one batch; records of other topics go through Faust as before.

It replaces the consumer's ``getmany`` rather than filtering what it yields: Faust's
``getmany`` asks for the high watermark, updates the monitor and checks flow control and
the generation once per record, through a round-robin generator. None of that can change
between two records of one fetch when nothing awaits in between, so the diverted records
are checked once per fetch and turned into messages in one pass (py-spy put the
per-record path at about a tenth of the worker's CPU).

The records are handled inside Faust's fetch loop, so no further fetch is dispatched
until the batch is applied, emitted, persisted and acked: back-pressure comes for
free. A batch abandoned halfway (the worker stops, or a rebalance cancels the loop) is
never acked, and is read again from the committed offsets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import structlog
from faust.types import TP, Message

log = structlog.get_logger(__name__)

BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchDiversion:
    """Diverts the records of ``topics`` from Faust's per-record dispatch to ``handle``.

    A fetch can return everything buffered for every partition, tens of thousands of
    records after a restart; ``handle`` gets them in batches of at most ``batch_size``,
    each acked before the next is applied, so progress is committed as it is made.
    """

    def __init__(self, topics: Collection[str], handle: BatchHandler, batch_size: int) -> None:
        self._topics = frozenset(topics)
        self._handle = handle
        self._batch_size = batch_size
        self._consumer: Any = None

    def install(self, consumer: Any) -> None:
        """Replace the consumer's ``getmany``; call before the first fetch."""
        if consumer is self._consumer:
            return
        handle, size = self._handle, self._batch_size

        async def getmany_diverting(timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 - Faust's signature
            # Faust's Consumer.getmany up to its loop, which is the same for both parts.
            records, active = await consumer._wait_next_records(timeout)
            if records is None or consumer.should_stop:
                return
            if not consumer.flow_active:
                # Faust drops a fetch made without flow, and seeks back to the committed
                # offsets: the consumer's position is past the dropped records, and without
                # the seek nothing would fetch them again if no later record came.
                await _seek_back(consumer)
                return
            generation = consumer.app.consumer_generation_id
            taken, others = self.split(consumer, records, active)
            if others:
                async for tp, message in _faust_iteration(consumer, others):
                    yield tp, message
                if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
                    return  # Faust's loop would stop before them too: they are read again
            for start in range(0, len(taken), size):
                await handle(taken[start : start + size])

        consumer.getmany = getmany_diverting
        self._consumer = consumer

    def split(
        self, consumer: Any, records: Mapping[TP, Sequence[Any]], active: Collection[TP] | None
    ) -> tuple[list[Message], dict[TP, Sequence[Any]]]:
        """The diverted records as messages, a partition's topics together; and the others.

        A partition's topics in one batch let its event-time merge release records
        without waiting for the next batch. Only active partitions count, as in Faust.
        """
        buffered = consumer._buffered_partitions
        to_message = consumer._to_message
        track_end_offset = consumer.app.monitor.track_tp_end_offset
        taken: list[Message] = []
        others: dict[TP, Sequence[Any]] = {}
        for tp in sorted(records, key=_partition):
            if active is not None and tp not in active and tp not in buffered:
                continue
            if tp.topic not in self._topics:
                others[tp] = records[tp]
                continue
            track_end_offset(tp, consumer.highwater(tp))
            taken += [to_message(tp, record) for record in records[tp]]
        return taken, others


async def _seek_back(consumer: Any) -> None:
    """Faust's ``getmany`` without flow: seek to the committed offsets, a failure logged."""
    try:
        await consumer.perform_seek()
    except Exception as error:  # Faust logs it and goes on too
        log.warning("seek_back_failed", error=str(error))


def _partition(tp: TP) -> int:
    return tp.partition


async def _faust_iteration(
    consumer: Any, records: Mapping[TP, Sequence[Any]]
) -> AsyncIterator[tuple[TP, Message]]:
    """Faust's ``Consumer.getmany`` loop (faust-streaming 0.15.3) over the other topics."""
    generation_id = consumer.app.consumer_generation_id
    to_message = consumer._to_message
    for tp, record in consumer.scheduler.iterate(records):
        if not consumer.flow_active or consumer.app.consumer_generation_id != generation_id:
            break
        consumer.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
        yield tp, to_message(tp, record)
