"""Timestamp synchronisation across the input topics of one partition group (KIP-353).

The next record applied is the buffered head with the smallest (occurred_at,
topic index), once no empty topic may still deliver an earlier one. A record that
failed decoding has no trustworthy time, so it is dead-lettered as soon as it
reaches the head of its topic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from risk.contract import Event, Rejection

Record = TypeVar("Record")


class EventTimeMerger(Generic[Record]):
    """Per-topic FIFO buffers of decoded records, drained in event-time order."""

    def __init__(self, topics: int) -> None:
        self._queues: list[deque[tuple[Event | Rejection, Record]]] = [
            deque() for _ in range(topics)
        ]

    def push(self, topic_index: int, decoded: Event | Rejection, record: Record) -> None:
        """Buffer a record of one topic, in log order."""
        self._queues[topic_index].append((decoded, record))

    def pop(
        self, may_receive: Callable[[list[int], Record], bool]
    ) -> tuple[int, Event | Rejection, Record] | None:
        """The next record to apply, or None to wait.

        ``may_receive(topics, candidate)`` says whether any of these empty topics can still
        deliver a record that sorts before ``candidate``, the record that would be applied
        next (the broker may hold unread data for it); such a topic holds the merge back.
        The empty topics are asked together: one call a record, not one a topic.
        """
        best: tuple[int, int] | None = None
        empty: list[int] = []
        for index, queue in enumerate(self._queues):
            if not queue:
                empty.append(index)
                continue
            head = queue[0][0]
            if isinstance(head, Rejection):
                decoded, record = queue.popleft()
                return index, decoded, record
            if best is None or (head.at, index) < best:
                best = (head.at, index)
        if best is None:
            return None
        queue = self._queues[best[1]]
        candidate = queue[0][1]
        if empty and may_receive(empty, candidate):
            return None
        decoded, record = queue.popleft()
        return best[1], decoded, record

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues)
