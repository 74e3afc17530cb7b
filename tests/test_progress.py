"""The marks a worker writes with each batch, for a successor's watermark (streams.progress)."""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from streams.changelog import PartitionWrites
from streams.progress import (
    COMMIT_AT,
    MAX_MARKS_BYTES,
    Marks,
    event_time_at,
    is_progress_key,
    progress_key,
)
from streams.runtime import Runtime

Batch = tuple[list[int], int, bool]
batches = st.lists(
    st.tuples(
        st.lists(st.integers(0, 4), min_size=3, max_size=3),  # records applied per topic
        st.integers(0, 3),  # how far the latest event time moved
        st.booleans(),  # whether a commit of this batch's position is confirmed afterwards
    ),
    max_size=60,
)


@given(st.lists(st.integers(0, 2**40), min_size=3, max_size=3), batches)
def test_every_position_a_successor_may_start_from_has_its_mark(
    start: list[int], steps: list[Batch]
) -> None:
    """From the last confirmed commit on, any later position may be the next committed one."""
    marks = Marks(start, None)
    offsets, max_event_at = list(start), None
    written: bytes | None = None
    positions = [(tuple(start), None)]
    confirmed: list[int | None] = [None, None, None]
    confirmed_when_written = 0
    for moved, later, commit in steps:
        offsets = [offset + step for offset, step in zip(offsets, moved, strict=True)]
        if later and any(moved):  # only applied records move the event time
            max_event_at = (max_event_at or 0) + later
        record = marks.advance(offsets, max_event_at, confirmed)
        if record is None:
            assert positions[-1] == (tuple(offsets), max_event_at)
            continue
        written = record
        positions.append((tuple(offsets), max_event_at))
        confirmed_when_written = max(
            (i for i, (at, _) in enumerate(positions) if list(at) == confirmed), default=0
        )
        if commit:
            confirmed = list(offsets)
    if written is None:
        assert positions == [(tuple(start), None)]
        return
    for at, expected in positions[confirmed_when_written:]:
        assert event_time_at(written, at) == (True, expected)
    beyond = [offset + 1 for offset in offsets]
    assert event_time_at(written, beyond) == (False, None)


def test_marks_before_the_committed_position_are_dropped() -> None:
    marks = Marks([0, 0], None)
    marks.advance([5, 0], 100, [None, None])
    marks.advance([9, 2], 200, [None, None])
    record = marks.advance([12, 2], 300, [9, 2])
    assert event_time_at(record, [0, 0]) == (False, None)
    assert event_time_at(record, [5, 0]) == (False, None)
    assert event_time_at(record, [9, 2]) == (True, 200)
    assert event_time_at(record, [12, 2]) == (True, 300)
    assert marks.advance([12, 2], 300, [9, 2]) is None  # nothing moved: nothing to write


COMMITTED = (1_000_000_000, 500_000_000, 20_000_000, 3_000_000, 700_000)
"""A position far into five input topics: each offset takes five bytes in a mark."""
AT = 1_764_000_000_000_000


def _uncommitted_batches(marks: Marks, count: int, confirmed: list[int | None]) -> bytes:
    """``count`` batches of a few records each, with no commit confirmed meanwhile."""
    record = None
    for n in range(1, count + 1):
        position = [COMMITTED[0] + 3 * n, COMMITTED[1] + n, *COMMITTED[2:]]
        record = marks.advance(position, AT + n * 1_000, confirmed)
    assert record is not None
    return record


def test_the_committed_positions_mark_outlives_any_number_of_uncommitted_batches() -> None:
    """A successor resuming at the committed offsets finds their mark, however many batches
    followed without a confirmed commit, and the record stays within its size cap.

    Before, marks past the 1,000th since the last confirmed commit went oldest first, the
    committed position's with them: the successor logged ``partition_mark_missing`` and took
    its watermark from the states (RELIABILITY.md, defect 8's failure).
    """
    for confirmed in ([None] * 5, list(COMMITTED)):
        marks = Marks(COMMITTED, AT)
        record = _uncommitted_batches(marks, 5_000, confirmed)
        assert event_time_at(record, COMMITTED) == (True, AT)
        latest = [COMMITTED[0] + 15_000, COMMITTED[1] + 5_000, *COMMITTED[2:]]
        assert event_time_at(record, latest) == (True, AT + 5_000_000)
        assert len(record) <= MAX_MARKS_BYTES
        assert len(marks) >= 2


def test_a_later_confirmed_commit_is_kept_and_the_oldest_after_it_go_first() -> None:
    marks = Marks(COMMITTED, AT)
    _uncommitted_batches(marks, 10, [None] * 5)
    tenth = [COMMITTED[0] + 30, COMMITTED[1] + 10, *COMMITTED[2:]]
    record = _uncommitted_batches(marks, 3_000, tenth)  # restarts the count past the tenth
    assert event_time_at(record, tenth) == (True, AT + 10_000)
    assert event_time_at(record, COMMITTED) == (False, None)  # before the committed position
    eleventh = [COMMITTED[0] + 33, COMMITTED[1] + 11, *COMMITTED[2:]]
    assert event_time_at(record, eleventh) == (False, None)  # the oldest after it went
    assert len(record) <= MAX_MARKS_BYTES


def test_the_marks_ask_for_a_commit_once_they_pile_up() -> None:
    marks = Marks([0], None)
    for offset in range(1, COMMIT_AT):
        marks.advance([offset], offset, [None])
    assert len(marks) == COMMIT_AT and not marks.wants_commit()
    marks.advance([COMMIT_AT], COMMIT_AT, [None])
    assert marks.wants_commit()
    marks.advance([COMMIT_AT + 1], COMMIT_AT + 1, [COMMIT_AT])  # the commit confirmed
    assert len(marks) == 2 and not marks.wants_commit()


async def test_a_batch_that_piles_the_marks_up_asks_the_consumer_to_commit() -> None:
    """Faust commits every ``broker_commit_interval``; the marks ask for one sooner."""
    commits: list[None] = []

    async def commit() -> bool:
        commits.append(None)
        return True

    piled, few = Marks([0], None), Marks([0], None)
    for offset in range(1, COMMIT_AT + 1):
        piled.advance([offset], offset, [None])
    few.advance([1], 1, [None])
    app = SimpleNamespace(
        should_stop=False, rebalancing=False, consumer=SimpleNamespace(commit=commit)
    )

    async def write(producer: object, writes: object) -> None:
        return None

    runtime = SimpleNamespace(
        _direct=True, _ack=lambda batch: None, _committing=None, app=app,
        _changelog=SimpleNamespace(write=write), _marks={0: few, 1: piled},
    )  # fmt: skip
    runtime._commit_soon = partial(Runtime._commit_soon, runtime)
    runtime._commit = partial(Runtime._commit, runtime)
    app.producer = SimpleNamespace(_ensure_producer=object)
    batch = SimpleNamespace(applied=[], decisions=[], flush_with={})
    await Runtime._complete(runtime, batch, {0: PartitionWrites(None, [])})  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert commits == []
    await Runtime._complete(runtime, batch, {1: PartitionWrites(None, [])})  # type: ignore[arg-type]
    await Runtime._complete(runtime, batch, {1: PartitionWrites(None, [])})  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert commits == [None]  # one commit at a time
    await Runtime._complete(runtime, batch, {1: PartitionWrites(None, [])})  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert commits == [None, None]


def test_no_record_means_no_mark() -> None:
    assert event_time_at(None, [0, 0, 0]) == (False, None)


@given(st.text(min_size=1, max_size=64))
def test_no_user_id_is_a_progress_key(user_id: str) -> None:
    assert not is_progress_key(user_id.encode())


def test_each_partition_has_its_own_progress_key() -> None:
    keys = {progress_key(partition) for partition in range(64)}
    assert len(keys) == 64
    assert all(is_progress_key(key) for key in keys)
