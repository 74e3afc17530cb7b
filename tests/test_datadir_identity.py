"""A RocksDB data directory is trusted only as far as the changelog it is read against.

Faust resumes each table partition from the changelog offset stored in the data
directory. A directory kept across a new cluster or a re-created changelog topic stored
offsets that the new changelog does not have: the worker read the new changelog from
there, or stopped its recovery with ``ConsistencyError``, and served states the
changelog no longer held. A partition whose stored offset lies outside the changelog
is now dropped and rebuilt from it (``streams.recovery.changelog_mismatch``).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.types import TP
from structlog.testing import capture_logs
from test_recovery_fast_path import (
    TOKEN,
    assert_recovered,
    last_writes,
    partition_of,
    rocksdb_store,
    writes,
)
from test_worker import PARTITIONS, records_of, topics
from worker_harness import (
    Topics,
    Worker,
    create_changelog,
    create_topics,
    produce,
    produce_to_changelog,
    wait_for,
)

from streams.devbroker import TansuBroker, free_port
from streams.metrics import STORE_PARTITIONS_DROPPED
from streams.recovery import CheckedRecovery, PromptTableManager, changelog_mismatch

from builders import application

__all__ = ["topics"]  # the fixture shared with test_worker

DROPPED = "changelog_store_dropped"
DROPPED_METRIC = "lineguard_store_partitions_dropped_total"


@pytest.mark.parametrize(
    ("applied", "earliest", "end", "reason"),
    [
        (None, 0, 0, None),  # nothing stored, nothing in the changelog
        (None, 0, 40, None),  # nothing stored: Faust reads from the start
        (-1, 5, 40, None),  # Faust's "nothing applied", whatever the changelog kept
        (39, 0, 40, None),  # the last record applied is the changelog's last
        (12, 0, 40, None),  # the tail 13..39 is still to be applied
        (40, 0, 40, "ahead_of_changelog"),  # the store applied a record the log never had
        (0, 0, 0, "ahead_of_changelog"),  # an empty changelog, a store that applied one
        (500, 0, 40, "ahead_of_changelog"),
        (9, 10, 40, None),  # the next record to apply, 10, is the earliest kept
        (8, 10, 40, "behind_changelog_start"),  # record 9 is gone: the store missed it
        (39, 40, 40, None),  # everything deleted after the store applied it all
        (5, None, None, None),  # the broker did not say: Faust's own path
    ],
)
def test_a_stored_offset_is_checked_against_the_changelog_partition(
    applied: int | None, earliest: int | None, end: int | None, reason: str | None
) -> None:
    assert changelog_mismatch(applied, earliest, end) == reason


class Consumer:
    """The two offset queries of Faust's consumer that recovery makes, for fixed offsets."""

    def __init__(self, earliest: dict[TP, int], ends: dict[TP, int]) -> None:
        self.earliest, self.ends = earliest, ends

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}


async def test_recovery_drops_the_rocksdb_partitions_their_changelog_rejects(
    tmp_path: Path,
) -> None:
    app = faust.App("datadir-identity-test", TableManager=PromptTableManager)
    recovery = app.tables.recovery
    assert isinstance(recovery, CheckedRecovery)
    store = rocksdb_store(tmp_path, "users")
    memory = MemoryStore("memory://", app, table=SimpleNamespace(name="other"))  # type: ignore[arg-type]
    ahead, kept, behind = (TP("users-changelog", p) for p in range(3))
    in_memory = TP("other-changelog", 0)
    for tp, offset in ((ahead, 50), (kept, 8), (behind, 3)):
        store._db_for_partition(tp.partition).put(b"user", b"state")
        store.set_persisted_offset(tp, offset)
    recovery.tp_to_table.update({tp: SimpleNamespace(data=store) for tp in (ahead, kept, behind)})
    recovery.tp_to_table[in_memory] = SimpleNamespace(data=memory)
    offsets: Counter[TP] = Counter({ahead: 50, kept: 8, behind: 3, in_memory: 99})
    consumer = Consumer(
        earliest={ahead: 0, kept: 0, behind: 10, in_memory: 0},
        ends={ahead: 10, kept: 40, behind: 40, in_memory: 10},
    )
    recovery.records_at = AsyncMock(return_value={})  # type: ignore[method-assign]
    dropped = STORE_PARTITIONS_DROPPED._value.get()
    await recovery._build_offsets(consumer, set(offsets), offsets, "active")
    assert STORE_PARTITIONS_DROPPED._value.get() == dropped + 2
    # Faust reads a dropped partition from its earliest offset (its "applied" is that - 1).
    assert offsets == {ahead: -1, kept: 8, behind: 9, in_memory: 99}
    for tp in (ahead, behind):
        assert store.persisted_offset(tp) is None
        assert dict(store._db_for_partition(tp.partition).items()) == {}
    assert store.persisted_offset(kept) == 8
    assert store._db_for_partition(kept.partition)[b"user"] == b"state"


def record(offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(offset=offset, key=key, value=value)


async def test_a_first_recovery_drops_a_store_that_does_not_hold_the_changelogs_last_writes(
    tmp_path: Path,
) -> None:
    app = faust.App("datadir-identity-compare", TableManager=PromptTableManager)
    recovery = app.tables.recovery
    assert isinstance(recovery, CheckedRecovery)
    store = rocksdb_store(tmp_path, "users")
    read = {
        # another state where the store's last write is: another changelog
        TP("users-changelog", 0): [record(5, b"user", b"state"), record(7, b"user", b"other")],
        # the key's last write up to the offset is what the store holds
        TP("users-changelog", 1): [record(3, b"user", b"old"), record(7, b"user", b"state")],
        # a delete of a key the store holds
        TP("users-changelog", 2): [record(7, b"user", None)],
        # a delete of a key it does not hold
        TP("users-changelog", 3): [record(2, b"gone", None)],
    }
    unread = TP("users-changelog", 4)  # not read up to its offset (say, a slow broker)
    for tp in [*read, unread]:
        store._db_for_partition(tp.partition).put(b"user", b"state")
        store.set_persisted_offset(tp, 40)
        recovery.tp_to_table[tp] = SimpleNamespace(data=store)
    recovery.records_at = AsyncMock(return_value=read)  # type: ignore[method-assign]
    offsets: Counter[TP] = Counter(dict.fromkeys([*read, unread], 40))
    consumer = Consumer(earliest=dict.fromkeys(offsets, 2), ends=dict.fromkeys(offsets, 41))
    await recovery._build_offsets(consumer, set(offsets), offsets, "active")
    # The last 32 records up to the stored offset, from no earlier than the earliest.
    recovery.records_at.assert_awaited_once_with(dict.fromkeys(offsets, (9, 40)))
    kept = {tp: 40 for tp in offsets if tp.partition in (1, 3, 4)}
    assert offsets == {tp: 1 for tp in offsets} | kept  # Faust reads a dropped one from 2
    # A later recovery of the same partitions compares nothing: the worker wrote them since.
    recovery.records_at.return_value = {}
    await recovery._build_offsets(consumer, set(offsets), Counter(offsets), "active")
    recovery.records_at.assert_awaited_with({})


async def test_a_store_first_recovered_empty_is_not_compared_later(tmp_path: Path) -> None:
    # The worker writes the store itself after its first recovery; the store may then be
    # newer than the offset a later recovery reads, and is not from another changelog.
    app = faust.App("datadir-identity-empty", TableManager=PromptTableManager)
    recovery = app.tables.recovery
    assert isinstance(recovery, CheckedRecovery)
    tp = TP("users-changelog", 0)
    recovery.tp_to_table[tp] = SimpleNamespace(data=rocksdb_store(tmp_path, "users"))
    recovery.records_at = AsyncMock(return_value={})  # type: ignore[method-assign]
    await recovery._build_offsets(Consumer({tp: 0}, {tp: 0}), {tp}, Counter({tp: None}), "active")
    await recovery._build_offsets(Consumer({tp: 0}, {tp: 10}), {tp}, Counter({tp: 9}), "active")
    assert [call.args for call in recovery.records_at.await_args_list] == [({},)]  # nothing read


async def test_changelog_records_that_cannot_be_read_are_not_compared() -> None:
    # Nothing listens there: the stores are then trusted, as Faust trusts them.
    app = faust.App(
        "datadir-identity-unread", broker=f"kafka://127.0.0.1:{free_port()}",
        TableManager=PromptTableManager,
    )  # fmt: skip
    recovery = app.tables.recovery
    assert isinstance(recovery, CheckedRecovery)
    tp = TP("users-changelog", 0)
    with capture_logs() as logs:
        assert await recovery.records_at({tp: (0, 7)}) == {}
    assert [entry["event"] for entry in logs] == ["changelog_not_compared"]


@pytest.mark.integration
async def test_only_the_partitions_read_up_to_the_stored_offset_are_compared(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """A read cut short is not compared: a prefix of the window is not the last writes.

    Partition 1's read cannot reach offset 39: the broker has 30 records there, as a slow
    broker has brought only those when the reads stop. Returned, they showed ``user-1``
    last written as ``v29`` where a store at offset 39 rightly holds a later write, and
    the healthy store was dropped.
    """
    changelog = await create_changelog(kafka_bootstrap, topics, 2)
    full, short = TP(changelog, 0), TP(changelog, 1)
    sent = [(b"user-%d" % (n % 2), b"v%d" % (n // 2)) for n in range(60)]
    await produce_to_changelog(kafka_bootstrap, changelog, sent, lambda key: key[-1] - ord("0"))
    app = faust.App("datadir-identity-short", broker=f"kafka://{kafka_bootstrap}",
                    TableManager=PromptTableManager)  # fmt: skip
    recovery = app.tables.recovery
    assert isinstance(recovery, CheckedRecovery)
    with capture_logs() as logs:
        read = await recovery.records_at({full: (8, 25), short: (0, 39)})
    assert list(read) == [full]
    assert [(r.offset, r.key, r.value) for r in read[full]] == [
        (n, b"user-0", b"v%d" % n) for n in range(8, 26)
    ]
    assert [(entry["event"], entry["partitions"]) for entry in logs] == [
        ("changelog_not_compared", 1)
    ]


# --- integration: one data directory, two brokers ------------------------------------------


@pytest.fixture
def run_worker(topics: Topics, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a RocksDB worker on a given broker, always with the same data directory."""
    started: list[Worker] = []
    env = {"LINEGUARD_STORE": "rocksdb://", "LINEGUARD_API_TOKEN": TOKEN,
           "LINEGUARD_DATADIR": str(tmp_path / "data")}  # fmt: skip

    def start(bootstrap: str, **extra: str) -> Worker:
        worker = Worker(bootstrap, topics, tmp_path, PARTITIONS, extra_env=env | extra).start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def broker_b() -> Iterator[str]:
    """A second, empty broker: the cluster that replaced the first one."""
    with TansuBroker() as broker:
        yield broker.bootstrap


def fill_changelog(bootstrap: str, topics: Topics, records: list[Any]) -> None:
    asyncio.run(create_topics(bootstrap, topics, PARTITIONS))
    changelog = asyncio.run(create_changelog(bootstrap, topics, PARTITIONS))
    asyncio.run(produce_to_changelog(bootstrap, changelog, records, partition_of))


def full_log(worker: Worker) -> str:
    return (worker.workdir / f"worker-{worker.port}.log").read_text(errors="replace")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("old_size", "new_size", "reason"),
    [
        # The new changelog is empty: the worker is the first to own its partitions.
        ((300, 8), (0, 0), "ahead_of_changelog"),
        # It holds fewer records a partition than the store applied, some of the same keys.
        ((300, 8), (40, 2), "ahead_of_changelog"),
        # It holds more: the stored offsets are in it, but another record is at each.
        ((40, 2), (300, 8), "other_changelog"),
    ],
)
def test_a_store_kept_from_another_cluster_is_rebuilt_from_the_new_changelog(
    kafka_bootstrap: str,
    broker_b: str,
    topics: Topics,
    run_worker: Callable[..., Worker],
    old_size: tuple[int, int],
    new_size: tuple[int, int],
    reason: str,
) -> None:
    old = list(writes(*old_size, seed=41))
    fill_changelog(kafka_bootstrap, topics, old)
    first = run_worker(kafka_bootstrap)
    first.wait_ready()
    assert_recovered(first, last_writes(old))
    # The worker writes the changelog and its store itself too.
    live = sum(value is not None for value in last_writes(old).values())
    events = [application("2026-03-01T00:00:00Z", user=f"input-{n}") for n in range(6)]
    asyncio.run(produce(kafka_bootstrap, topics, records_of(events), PARTITIONS))
    wait_for(lambda: first.metric("lineguard_users") == live + 6, 60, "the input's users")
    first.stop(signal.SIGTERM)
    # A restart against the same changelog keeps the store.
    again = run_worker(kafka_bootstrap)
    again.wait_ready()
    assert again.metric("lineguard_users") == live + 6
    assert again.metric(DROPPED_METRIC) == 0
    again.stop(signal.SIGTERM)
    assert DROPPED not in full_log(again)
    new = list(writes(*new_size, seed=42))
    fill_changelog(broker_b, topics, new)
    moved = run_worker(broker_b, LINEGUARD_DEV_BROKER="tansu")
    moved.wait_ready()
    expected = dict.fromkeys(last_writes(old)) | last_writes(new)  # the old users: 404
    assert_recovered(moved, expected)
    assert full_log(moved).count(f'"reason": "{reason}"') == PARTITIONS, moved.log()
    assert moved.metric(DROPPED_METRIC) == PARTITIONS
