"""Timestamp synchronisation across the input topics of one partition group (KIP-353).

The next record applied is the buffered head with the smallest (occurred_at,
topic index), once no empty topic may still deliver an earlier one. A record that
failed decoding has no trustworthy time, so it is dead-lettered as soon as it
reaches the head of its topic; so is one stamped too far in the future, which will be
dead-lettered as ``in_future``: ordered by its time, it would hold back the rest of its
topic until every other topic had passed that time, and timers would fire for users
whose records wait behind it.
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
        self, may_receive: Callable[[list[int], Record], bool], in_future_after: int
    ) -> tuple[int, Event | Rejection, Record] | None:
        """The next record to apply, or None to wait.

        ``may_receive(topics, candidate)`` says whether any of these empty topics can still
        deliver a record that sorts before ``candidate``, the record that would be applied
        next (the broker may hold unread data for it); such a topic holds the merge back.
        The empty topics are asked together: one call a record, not one a topic.

        A head that failed decoding, or that occurred after ``in_future_after`` (the wall
        clock plus the allowed skew, as the processor will check it), is taken at once.
        """
        best: tuple[int, int] | None = None
        empty: list[int] = []
        for index, queue in enumerate(self._queues):
            if not queue:
                empty.append(index)
                continue
            head = queue[0][0]
            if isinstance(head, Rejection) or head.at > in_future_after:
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
