"""The marks a worker writes with each batch, for a successor's watermark (streams.progress)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.progress import MAX_MARKS, Marks, event_time_at, is_progress_key, progress_key

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


def test_without_a_confirmed_commit_the_oldest_marks_go_past_the_cap() -> None:
    marks = Marks([0], None)
    record = None
    for offset in range(1, MAX_MARKS + 10):
        record = marks.advance([offset], offset, [None])
    assert record is not None
    assert event_time_at(record, [0]) == (False, None)
    assert event_time_at(record, [MAX_MARKS + 9]) == (True, MAX_MARKS + 9)
    assert event_time_at(record, [10]) == (True, 10)
    assert event_time_at(record, [9]) == (False, None)


def test_no_record_means_no_mark() -> None:
    assert event_time_at(None, [0, 0, 0]) == (False, None)


@given(st.text(min_size=1, max_size=64))
def test_no_user_id_is_a_progress_key(user_id: str) -> None:
    assert not is_progress_key(user_id.encode())


def test_each_partition_has_its_own_progress_key() -> None:
    keys = {progress_key(partition) for partition in range(64)}
    assert len(keys) == 64
    assert all(is_progress_key(key) for key in keys)
