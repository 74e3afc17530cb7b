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

The record stays small, because it heads every record batch of its partition's flush
(:mod:`streams.changelog`). Marks pile up between accepted commits, one per batch that
touches the partition: with small batches every few milliseconds and a commit every 2.8 s,
hundreds. So the worker asks the consumer to commit once a partition holds
:data:`COMMIT_AT` marks (:meth:`Marks.wants_commit`), and the record is capped at
:data:`MAX_MARKS_BYTES`. The cap never drops the mark of the last confirmed commit, the
position a successor resumes from if nothing later was committed (without it the
successor logs ``partition_mark_missing`` and takes its watermark from the states, defect
8's failure); it drops the oldest marks after it, positions a commit could only have taken if
one was sent well over :data:`COMMIT_AT` batches ago and neither confirmed nor refused since.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

_PREFIX: Final = b"\xffprogress/"
COMMIT_AT: Final = 32
"""Marks after the last confirmed commit at which the worker asks for a commit at once
rather than at Faust's next ``broker_commit_interval``. At a batch every few milliseconds
that is a commit about every 100 ms, Kafka Streams' default commit interval with
exactly-once; a mark costs about 36 bytes with five input topics, so the marks record
usually stays near 1 KB."""

MAX_MARKS_BYTES: Final = 4096
"""The most the marks record takes when commits do not come through (a rebalance, a
broker that refuses them): a quarter of the producer's 16 KB record batch, which the record
heads, so states still share batches with it. About 110 marks of five offsets below 2**32;
at least the committed position's and the latest are always kept."""


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

    def __len__(self) -> int:
        """Marks held: the committed position's (or an older one), then one a batch since."""
        return len(self._marks)

    def wants_commit(self) -> bool:
        """Whether enough batches went by since the last confirmed commit to ask for one."""
        return len(self._marks) > COMMIT_AT

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
        del self._marks[:first]
        record = _ENCODER.encode(_Record(self._marks))
        if len(record) > MAX_MARKS_BYTES:
            record = self._trim(len(record) - MAX_MARKS_BYTES)
        return record

    def _trim(self, excess: int) -> bytes:
        """Drop the oldest marks after the committed position's until ``excess`` bytes went.

        The first mark is the committed position's, the one a successor resumes from if no
        later commit went through: it stays, and so does the latest.
        """
        dropped, end = 0, 1
        while dropped < excess and end < len(self._marks) - 1:
            dropped += len(_ENCODER.encode(self._marks[end]))
            end += 1
        del self._marks[1:end]
        return _ENCODER.encode(_Record(self._marks))
