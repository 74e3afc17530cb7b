"""`lineguard replay` of a file applies records as it reads them: same decisions, less held."""

from __future__ import annotations

import os
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from test_cli import LATE_BOOK, _lineguard

from risk.clock import format_timestamp
from risk.decision import FREEZE, RESTORE
from risk.partitioner import partition_for
from risk.policy import load_policy
from risk.replay import EarliestTimes, InputRecord, ReplayResult, earliest_times, replay
from streams.simulate import Simulator

from builders import OVERRIDES, override, ts

START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = ts("2027-01-01T00:00:00Z")
UNTIL = ts("2026-04-01T00:00:00Z")


def simulated(count: int = 20_000) -> Iterator[InputRecord]:
    """Persona traffic with its invalid records, made as it is taken, like lines of a file."""
    simulator = Simulator(200, 5, invalid_fraction=0.02)
    for line in range(1, count + 1):
        record = simulator.next_record(START + line * timedelta(minutes=5))
        yield InputRecord(line, record.topic, record.key, record.value)


def with_late_overrides(records: Iterator[InputRecord]) -> Iterator[InputRecord]:
    """``records``, then an operator's freeze on each of three partitions, later in time too.

    Overrides are rare in a real book: the topic is empty nearly all the time.
    """
    users: dict[int, bytes] = {}
    line = 0
    for record in records:
        line = record.line
        if record.key is not None and b"-u" in record.key:  # not an invalid record's order id
            users.setdefault(partition_for(record.key, 3), record.key)
        yield record
    for partition, user in sorted(users.items()):
        line += 1
        at = format_timestamp(UNTIL)
        value = override(at, "freeze", user=user.decode(), event_id=f"override-{partition}")[
            "value"
        ]
        yield InputRecord(line, OVERRIDES, user, orjson.dumps(value))


def _run(
    earliest: EarliestTimes | None, records: Callable[[], Iterator[InputRecord]] = simulated
) -> tuple[ReplayResult, int]:
    tracemalloc.start()
    try:
        result = replay(
            records(), load_policy(), partitions=3, until=UNTIL, now=NOW, earliest=earliest
        )
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_replay_as_read_decides_alike_and_holds_far_less_than_the_input() -> None:
    earliest = earliest_times(simulated(), 3)
    held, held_peak = _run(None)
    as_read, as_read_peak = _run(earliest)
    assert held.dead_lettered > 100
    assert len(held.decisions) > 100
    assert [d.to_json(0) for d in as_read.decisions] == [d.to_json(0) for d in held.decisions]
    # Rejected records are taken at once, so two on different topics may swap places.
    by_line = sorted(held.dead_letters, key=lambda letter: letter["line"])
    assert sorted(as_read.dead_letters, key=lambda letter: letter["line"]) == by_line
    assert held.records == 20_000
    assert (as_read.records, as_read.processed, as_read.duplicates) == (
        held.records,
        held.processed,
        held.duplicates,
    )
    assert as_read_peak < held_peak / 3, (as_read_peak, held_peak)


def test_a_rare_topic_holds_back_only_the_records_its_next_one_may_come_before() -> None:
    """Waiting whenever it had a record further on held each partition up to its override."""

    def book() -> Iterator[InputRecord]:
        return with_late_overrides(simulated())

    held, held_peak = _run(None, book)
    as_read, as_read_peak = _run(earliest_times(book(), 3), book)
    assert [d.to_json(0) for d in as_read.decisions] == [d.to_json(0) for d in held.decisions]
    assert (as_read.records, as_read.processed) == (held.records, held.processed)
    assert held.records == 20_003
    assert not any(letter["topic"] == OVERRIDES for letter in held.dead_letters)  # applied
    assert as_read_peak < held_peak / 3, (as_read_peak, held_peak)


def test_a_pipe_is_read_once_and_held(tmp_path: Path) -> None:
    """A pipe, as ``replay <(zcat export.gz)`` gives, has nothing left for a second pass."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    lines = b"".join(orjson.dumps(record) + b"\n" for record in LATE_BOOK)
    writer = threading.Thread(target=fifo.write_bytes, args=(lines,))
    writer.start()
    try:
        done = _lineguard("replay", fifo, "--until", "2026-06-01T00:00:00Z", cwd=tmp_path)
    finally:
        writer.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "records=2 processed=2 duplicates=0 dead_lettered=0 decisions=2" in done.stderr
    assert [orjson.loads(line)["type"] for line in done.stdout.splitlines()] == [FREEZE, RESTORE]
