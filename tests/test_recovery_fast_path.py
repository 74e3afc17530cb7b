"""Table recovery a fetch at a time (streams/recovery.py): nothing lost, nothing reordered.

The worker tests recover a changelog in which every user was written many times, with
tombstones among the writes, and compare every user's state to the last write of its
key; RocksDB also recovers only the tail after a restart. The unit tests pin the
per-record bookkeeping of Faust's ``Recovery._slurp_changelogs`` that the fast path does
per fetch, and the Faust internals it relies on, so an upgrade that changes them fails here.
"""

from __future__ import annotations

import asyncio
import inspect
import random
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
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.types import TP
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import (
    Topics,
    Worker,
    create_changelog,
    create_topics,
    produce_to_changelog,
)

from risk.clock import format_timestamp
from risk.partitioner import partition_for
from risk.state import STATE_DECODER, STATE_ENCODER, UserState
from streams.recovery import (
    ChangelogFastPath,
    ChangelogRecord,
    PromptTableManager,
    apply_records,
    clear_stale_recovery_end,
)

__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

TOKEN = "token-of-the-recovery-tests"  # noqa: S105 - a test token for a loopback worker
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in epoch microseconds


# --- unit: the bookkeeping of _slurp_changelogs, per fetch -------------------------------


class RecordingTable:
    """A table that keeps every batch it is given, and the resulting last write per key."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, bytes | None]]] = []
        self.data: dict[bytes, bytes] = {}

    def apply_changelog_batch(self, batch: list[ChangelogRecord]) -> None:
        self.batches.append([(e.message.offset, e.value) for e in batch])
        for event in batch:
            assert event.key is not None
            if event.message.value is None:
                self.data.pop(event.key, None)
            else:
                self.data[event.key] = event.value  # type: ignore[assignment]


def fake_recovery(table: RecordingTable, topic: str) -> Any:
    active, standby = TP(topic, 0), TP(topic, 1)
    return SimpleNamespace(
        active_tps={active},
        standby_tps={standby},
        tp_to_table={active: table, standby: table},
        active_offsets=Counter({active: 4}),
        standby_offsets=Counter({standby: -1}),
        active_highwaters=Counter({active: 9}),
        standby_highwaters=Counter({standby: 1}),
        _active_events_received_at={},
        _standby_events_received_at={},
        _last_flush_at=None,
        _standbys_span=None,
        in_recovery=True,
        signal_recovery_end=asyncio.Event(),
        flushed=0,
    )


def recovery_methods(recovery: Any) -> None:
    """Faust's own ``need_recovery`` and friends, bound to the fake."""
    for name in ("need_recovery", "active_remaining", "standby_remaining",
                 "standby_remaining_total"):  # fmt: skip
        setattr(recovery, name, getattr(Recovery, name).__get__(recovery))

    def flush_buffers() -> None:
        recovery.flushed += 1

    def set_recovery_ended() -> None:
        recovery.in_recovery = False

    recovery.flush_buffers = flush_buffers
    recovery._set_recovery_ended = set_recovery_ended


def fast_path_over(recovery: Any, topic: str) -> tuple[ChangelogFastPath, list[str]]:
    ready: list[str] = []
    tables = SimpleNamespace(recovery=recovery, standbys_ready=False,
                             on_standbys_ready=lambda: ready.append("standbys"))  # fmt: skip
    fast_path = ChangelogFastPath(SimpleNamespace(tables=tables))
    fast_path._topics = frozenset({topic})
    return fast_path, ready


def record(offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(offset=offset, key=key, value=value)


def test_records_past_the_offset_reached_are_applied_in_order_in_one_batch() -> None:
    table, topic = RecordingTable(), "app-users-changelog"
    recovery = fake_recovery(table, topic)
    recovery_methods(recovery)
    fast_path, _ = fast_path_over(recovery, topic)
    fetched = [record(o, b"k%d" % (o % 2), b"v%d" % o) for o in range(3, 10)]
    other = TP("credit.purchases.v1", 0)
    rest = fast_path.apply({TP(topic, 0): fetched, other: ["input record"]})
    assert rest == {other: ["input record"]}  # Faust's records go on to Faust
    assert table.batches == [[(o, b"v%d" % o) for o in range(5, 10)]]  # 3 and 4 were seen
    assert table.data == {b"k0": b"v8", b"k1": b"v9"}
    assert recovery.active_offsets[TP(topic, 0)] == 9
    # Nothing remains up to the high watermark: the recovery is told, as Faust would.
    assert recovery.signal_recovery_end.is_set()
    assert not recovery.in_recovery
    assert recovery.flushed == 1


def test_the_recovery_goes_on_while_records_remain() -> None:
    table, topic = RecordingTable(), "app-users-changelog"
    recovery = fake_recovery(table, topic)
    recovery_methods(recovery)
    fast_path, _ = fast_path_over(recovery, topic)
    fast_path.apply({TP(topic, 0): [record(5, b"k", b"v5"), record(6, b"k", b"v6")]})
    assert recovery.active_offsets[TP(topic, 0)] == 6
    assert not recovery.signal_recovery_end.is_set()
    fast_path.apply({TP(topic, 0): [record(6, b"k", b"stale"), record(7, b"k", None)]})
    assert table.batches[-1] == [(7, None)]
    assert b"k" not in table.data  # the tombstone was the last write


def test_standbys_are_applied_and_reported_ready_once_caught_up() -> None:
    table, topic = RecordingTable(), "app-users-changelog"
    recovery = fake_recovery(table, topic)
    recovery_methods(recovery)
    recovery.in_recovery = False
    fast_path, ready = fast_path_over(recovery, topic)
    fast_path.apply({TP(topic, 1): [record(0, b"s", b"v0")]})
    assert ready == []
    fast_path.apply({TP(topic, 1): [record(1, b"s", b"v1")]})
    assert ready == ["standbys"]
    assert table.data == {b"s": b"v1"}
    assert recovery.standby_offsets[TP(topic, 1)] == 1


def test_a_partition_no_recovery_owns_yet_is_left_to_be_read_again() -> None:
    table, topic = RecordingTable(), "app-users-changelog"
    recovery = fake_recovery(table, topic)
    recovery_methods(recovery)
    fast_path, _ = fast_path_over(recovery, topic)
    assert fast_path.apply({TP(topic, 2): [record(0, b"x", b"v")]}) == {}
    assert table.batches == []
    assert TP(topic, 2) not in recovery.active_offsets


def test_the_stores_take_the_records_as_faust_events() -> None:
    store = MemoryStore("memory://", faust.App("fast-path-store-test", store="memory://"),
                        table=SimpleNamespace(name="users"))  # type: ignore[arg-type]  # fmt: skip
    tp = TP("app-users-changelog", 2)
    store.apply_changelog_batch(
        [ChangelogRecord(tp, 0, b"a", b"1"), ChangelogRecord(tp, 1, b"b", b"2"),
         ChangelogRecord(tp, 2, b"a", None), ChangelogRecord(tp, 3, b"b", b"3")],
        to_key=lambda k: k, to_value=lambda v: v,
    )  # fmt: skip
    assert dict(store.data) == {b"b": b"3"}
    assert store._key_partition == {b"b": 2}


def rocksdb_store(tmp_path: Path, name: str) -> RocksDBStore:
    app = faust.App(f"fast-path-{name}", store="rocksdb://", datadir=str(tmp_path / name))
    return RocksDBStore("rocksdb://", app, table=SimpleNamespace(name="users"))  # type: ignore[arg-type]


def test_rocksdb_gets_what_its_own_changelog_batch_writes(tmp_path: Path) -> None:
    tp = TP("app-users-changelog", 3)
    fetches = [
        [record(0, b"a", b"1"), record(1, b"b", b"2"), record(2, b"a", None)],
        [record(3, b"b", b"3"), record(4, b"c", b"4"), record(5, b"a", b"5")],
        [record(6, b"c", None)],
    ]
    fast = rocksdb_store(tmp_path, "fast")
    table = SimpleNamespace(data=fast, apply_changelog_batch=None)  # not called for RocksDB
    faust_own = rocksdb_store(tmp_path, "faust")
    for fetched in fetches:
        apply_records(table, tp, fetched)
        faust_own.apply_changelog_batch(
            [ChangelogRecord(tp, r.offset, r.key, r.value) for r in fetched],
            to_key=lambda k: k, to_value=lambda v: v,
        )  # fmt: skip
        assert fast.persisted_offset(tp) == faust_own.persisted_offset(tp) == fetched[-1].offset
    assert dict(fast._db_for_partition(3).items()) == dict(faust_own._db_for_partition(3).items())
    assert dict(fast._db_for_partition(3).items()) == {
        b"a": b"5",
        b"b": b"3",
        fast.offset_key: b"6",
    }
    assert fast._dbs.keys() == {3}  # the partition's own database, as Faust picks it


def test_other_stores_get_the_records_as_faust_events() -> None:
    tp = TP("app-users-changelog", 2)
    table = RecordingTable()
    apply_records(table, tp, [record(7, b"a", b"1"), record(8, b"a", None)])
    assert table.batches == [[(7, b"1"), (8, None)]]


def test_a_recovery_that_starts_does_not_inherit_the_last_ones_end() -> None:
    # The fast path set the end of the last recovery; nothing of Faust's cleared it since.
    started: list[bool] = []
    recovery = SimpleNamespace(signal_recovery_end=asyncio.Event(),
                               _set_recovery_started=lambda: started.append(True))  # fmt: skip
    recovery.signal_recovery_end.set()
    clear_stale_recovery_end(recovery)
    clear_stale_recovery_end(recovery)  # idempotent: one wrapper
    recovery._set_recovery_started()
    assert not recovery.signal_recovery_end.is_set()
    assert started == [True]


# --- the Faust internals the fast path stands in for ---------------------------------------


def test_faust_is_the_version_the_fast_path_mirrors() -> None:
    # The fast path repeats _slurp_changelogs' bookkeeping; review it on any upgrade.
    assert faust.__version__ == "0.15.3"


def test_faust_recovery_applies_records_as_the_fast_path_does() -> None:
    source = inspect.getsource(Recovery._slurp_changelogs.fun)  # a mode ServiceTask
    assert "changelog_queue.get()" in source
    assert "if seen_offset is None or offset > seen_offset:" in source
    assert "offsets[tp] = offset" in source
    assert "table.apply_changelog_batch(buf)" in source
    # The end of the active recovery, and standbys' readiness, decided as the fast path does.
    assert "if self.in_recovery and not self.need_recovery():" in source
    ending = source[source.index("if self.in_recovery and not self.need_recovery():") :]
    for step in ("self.flush_buffers()", "self._set_recovery_ended()",
                 "self.signal_recovery_end.set()"):  # fmt: skip
        assert step in ending[:600]
    assert "not standby_ready and not self.standby_remaining_total()" in source
    assert "self.tables.on_standbys_ready()" in source


def test_faust_clears_the_end_of_recovery_only_in_the_loop_the_fast_path_bypasses() -> None:
    slurp = inspect.getsource(Recovery._slurp_changelogs.fun)
    loop = slurp[slurp.index("while not self.should_stop:") :]
    assert loop.index("self.signal_recovery_end.clear()") < loop.index("changelog_queue.get()")
    restart = inspect.getsource(Recovery._restart_recovery.fun)
    assert "signal_recovery_end.clear()" not in restart
    # Its last start comes before the fetches resume and the wait for the end.
    last_start = restart.rindex("self._set_recovery_started()")
    assert last_start < restart.index("T(consumer.resume_flow)()", last_start)
    assert last_start < restart.index("await self._wait(self.signal_recovery_end.wait())")


def test_faust_fetches_through_the_wrapped_call_and_drops_a_fetch_without_flow() -> None:
    wait_next = inspect.getsource(Consumer._wait_next_records)
    assert "records = await self._getmany(" in wait_next
    getmany = inspect.getsource(Consumer.getmany)
    assert "records, active_partitions = await self._wait_next_records(timeout)" in getmany
    assert "if self.flow_active:" in getmany  # else: the fetch is dropped and seeked back


def test_faust_stores_read_only_what_a_changelog_record_carries() -> None:
    memory = inspect.getsource(MemoryStore._create_batch_iterator)
    assert "to_key(event.key)" in memory and "to_value(event.value)" in memory
    assert "event.message.value is None" in memory and "event.message.partition" in memory
    rocksdb = inspect.getsource(RocksDBStore.apply_changelog_batch)
    assert "event.message.tp, event.message.offset" in rocksdb
    assert "self.set_persisted_offset(tp, offset)" in rocksdb


def code_lines(function: Any) -> list[str]:
    """A function's statements, without its signature and one-line docstring."""
    lines = [line.strip() for line in inspect.getsource(function).splitlines()[1:]]
    return [line for line in lines if line and not line.startswith(('"""', "#"))]


def test_faust_table_manager_starts_as_the_prompt_one_after_a_second_of_sleep() -> None:
    faust_own = code_lines(TableManager.on_start)
    assert faust_own[0] == "await self.sleep(1.0)"
    assert faust_own[1:] == code_lines(PromptTableManager.on_start)


async def test_the_prompt_table_manager_starts_the_tables_without_sleeping() -> None:
    app = faust.App("prompt-table-manager-test", TableManager=PromptTableManager)
    manager = app.tables
    assert isinstance(manager, PromptTableManager)
    steps: list[str] = []
    manager.sleep = AsyncMock(side_effect=AssertionError("slept"))
    manager._update_channels = AsyncMock(side_effect=lambda: steps.append("channels"))
    manager._recovery = SimpleNamespace(
        start=AsyncMock(side_effect=lambda: steps.append("recovery"))
    )
    await manager.on_start()
    assert steps == ["channels", "recovery"]


# --- integration: a worker recovers the last write of every key -----------------------------


def writes(users: int, rounds: int, seed: int) -> Iterator[tuple[bytes, bytes | None]]:
    """``rounds`` writes per user in a shuffled order, about one in nine a tombstone."""
    rng = random.Random(seed)
    order = [(r, u) for r in range(rounds) for u in range(users)]
    rng.shuffle(order)
    for _, u in order:
        user = f"user-{u:05d}"
        if rng.random() < 0.11:
            yield user.encode(), None
            continue
        at = START + rng.randrange(10**12)  # not monotonic: the last write, not the largest
        state = UserState(user_id=user, first_seen=START, clock=at, last_activity=at)
        yield user.encode(), STATE_ENCODER.encode(state)


def partition_of(key: bytes) -> int:
    """The partition the worker itself would write the user to."""
    return partition_for(key, PARTITIONS)


def last_writes(records: list[tuple[bytes, bytes | None]]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for key, value in records:
        out[key.decode()] = value
    return out


def assert_recovered(worker: Worker, expected: dict[str, bytes | None]) -> None:
    """Every user, as the worker answers for it, is the last write of its key."""
    live = {user: value for user, value in expected.items() if value is not None}
    assert worker.metric("lineguard_users") == len(live)
    for user, value in sorted(expected.items()):
        status, body = worker.get(f"/users/{user}/", TOKEN)
        if value is None:
            assert status == 404, (user, body)
            continue
        assert status == 200, (user, body)
        state = STATE_DECODER.decode(value)
        assert body["clock"] == format_timestamp(state.clock), user


@pytest.mark.integration
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_restarted_worker_recovers_the_last_write_of_every_key(
    kafka_bootstrap: str,
    topics: Topics,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
    store: str,
) -> None:
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    changelog = asyncio.run(create_changelog(kafka_bootstrap, topics, PARTITIONS))
    # Over a MiB a partition, so that a partition takes several fetches.
    first_part = list(writes(users=600, rounds=60, seed=31))
    asyncio.run(produce_to_changelog(kafka_bootstrap, changelog, first_part, partition_of))
    env = {"LINEGUARD_STORE": store, "LINEGUARD_API_TOKEN": TOKEN,
           "LINEGUARD_DATADIR": str(tmp_path / "data")}  # fmt: skip
    first = start_worker(extra_env=env)
    first.wait_ready()
    assert_recovered(first, last_writes(first_part))
    first.stop(signal.SIGTERM)
    # More writes of the same keys; RocksDB reads only these, from its persisted offsets.
    second_part = list(writes(users=600, rounds=5, seed=32))
    asyncio.run(produce_to_changelog(kafka_bootstrap, changelog, second_part, partition_of))
    second = start_worker(extra_env=env)
    second.wait_ready()
    assert_recovered(second, last_writes(first_part + second_part))
