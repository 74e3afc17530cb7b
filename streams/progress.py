"""Where each partition's input stood after each batch, written to the changelog with its states.

A batch's states are written before its offsets are committed, and a worker may stop in
between. Its successor then finds some states ahead of the committed offsets, reads the
records from those offsets again, and needs the partition's event time *at those offsets*:
the states' latest activity would put the watermark ahead, and timers would fire in another
order than in one uninterrupted pass (:meth:`risk.partition.PartitionProcessor.resume`).

Kafka Streams keeps its partition time in the metadata of the offset commit. The
development broker drops that metadata, so lineguard keeps the marks in the table itself:
one record per partition, written in the same flush as the batch's states and ahead of
them (a flush cut short leaves no state without it), under a key no user id can have (user
ids are UTF-8, and ``0xff`` never occurs in UTF-8). Offsets are committed only after that
flush, so the mark of any committed position is durable. The record keeps the marks from
the last committed position on, since Faust commits acked offsets on its own schedule and
any of them may be the one a successor starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

_PREFIX: Final = b"\xffprogress/"
MAX_MARKS: Final = 1_000
"""Marks kept while no commit is confirmed (Faust commits every few seconds, batches come a
few times a second); the oldest go first, and a successor starting from one of those falls
back to the states' latest activity."""


class Mark(msgspec.Struct, array_like=True, frozen=True):
    """After a batch: the next offset of each input topic, and the latest event time."""

    offsets: tuple[int, ...]
    max_event_at: int | None


class _Record(msgspec.Struct, array_like=True):
    marks: list[Mark]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Record)


def progress_key(partition: int) -> bytes:
    """The table key of a partition's marks."""
    return _PREFIX + str(partition).encode()


def is_progress_key(key: bytes) -> bool:
    """Whether a table key holds marks rather than a user's state."""
    return key.startswith(_PREFIX)


def event_time_at(raw: bytes | None, offsets: Sequence[int]) -> tuple[bool, int | None]:
    """The latest event time at ``offsets``, if a mark of that position was written.

    Returns ``(found, max_event_at)``; ``max_event_at`` is None for a position before any
    accepted event.
    """
    if raw is None:
        return False, None
    wanted = tuple(offsets)
    for mark in _DECODER.decode(raw).marks:
        if mark.offsets == wanted:
            return True, mark.max_event_at
    return False, None


class Marks:
    """One partition's marks since its last committed position."""

    def __init__(self, offsets: Sequence[int], max_event_at: int | None) -> None:
        self._marks = [Mark(tuple(offsets), max_event_at)]
        self._start = tuple(offsets)

    @property
    def offsets(self) -> tuple[int, ...]:
        """The position after the latest batch."""
        return self._marks[-1].offsets

    def advance(
        self,
        offsets: Sequence[int],
        max_event_at: int | None,
        committed: Sequence[int | None],
    ) -> bytes | None:
        """Add the mark after a batch; the record to write, or None if nothing moved.

        ``committed`` is the last committed offset of each input topic (None or negative
        where none is, which is the offset resumed from): marks before it can no longer be
        a successor's starting point.
        """
        mark = Mark(tuple(offsets), max_event_at)
        if mark == self._marks[-1]:
            return None
        self._marks.append(mark)
        floor = [
            start if at is None or at < 0 else at
            for start, at in zip(self._start, committed, strict=True)
        ]
        first = 0
        for index, kept in enumerate(self._marks):
            if all(offset <= at for offset, at in zip(kept.offsets, floor, strict=True)):
                first = index  # the latest mark at or before the committed position
        first = max(first, len(self._marks) - MAX_MARKS)
        del self._marks[:first]
        return _ENCODER.encode(_Record(self._marks))
