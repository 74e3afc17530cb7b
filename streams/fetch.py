"""Input records straight from each fetch, a batch at a time.

Faust hands every fetched record to its agents one by one: a task pair per record in
the fetch loop, a queue hop, an ``Event``, stream processors and sensors. Measured on
the development broker that machinery alone caps a worker at about 4,500 records/s,
with no processing at all (BENCHMARKS.md). :class:`BatchDiversion` takes the records
of the topics it is given out of each fetch before that dispatch and hands them to the
runtime as one batch; records of other topics go through Faust as before.

The records are handled inside Faust's fetch loop, so no further fetch is dispatched
until the batch is applied, emitted, persisted and acked: back-pressure comes for
free. A batch abandoned halfway (the worker stops, or a rebalance cancels the loop) is
never acked, and is read again from the committed offsets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from faust.types import TP, Message

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
        """Wrap the consumer's ``getmany``; call before the first fetch."""
        if consumer is self._consumer:
            return
        getmany = consumer.getmany
        topics, handle, size = self._topics, self._handle, self._batch_size

        async def getmany_diverting(timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 - Faust's signature
            taken: list[Message] = []
            async for tp, message in getmany(timeout):
                if tp.topic in topics:
                    taken.append(message)
                else:
                    yield tp, message
            for start in range(0, len(taken), size):
                await handle(taken[start : start + size])

        consumer.getmany = getmany_diverting
        self._consumer = consumer
