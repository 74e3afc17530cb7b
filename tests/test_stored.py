"""The table's stored states by partition (streams/stored.py), read from Faust's own stores.

Each store is filled as recovery and the worker fill it, with changelog batches (rewrites,
a tombstone, each partition's marks and RocksDB's persisted offsets among them), and must
give back exactly the last write of each user of the partitions asked for, with the
partition the user's records go to.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from risk.partitioner import partition_for
from streams.progress import progress_key
from streams.recovery import ChangelogRecord
from streams.stored import stored_state_getter, stored_states

PARTITIONS = 6
TOPIC = "app-users-changelog"


def user(index: int) -> bytes:
    return f"user-{index:03d}".encode()


def changelog() -> Iterator[ChangelogRecord]:
    """Two writes of each of 60 users on its partition, one tombstone, and every mark."""
    offsets = dict.fromkeys(range(PARTITIONS), 0)

    def record(partition: int, key: bytes, value: bytes | None) -> ChangelogRecord:
        offsets[partition] += 1
        return ChangelogRecord(TP(TOPIC, partition), offsets[partition], key, value)

    for version in (b"first", b"last"):
        for index in range(60):
            key = user(index)
            yield record(partition_for(key, PARTITIONS), key, key + b":" + version)
    gone = user(7)
    yield record(partition_for(gone, PARTITIONS), gone, None)
    for partition in range(PARTITIONS):
        yield record(partition, progress_key(partition), b"marks")


def expected(partitions: set[int]) -> dict[int, list[bytes]]:
    """The last write of each live user of ``partitions``, by partition."""
    out: dict[int, list[bytes]] = {partition: [] for partition in partitions}
    for index in range(60):
        key = user(index)
        partition = partition_for(key, PARTITIONS)
        if index != 7 and partition in partitions:
            out[partition].append(key + b":last")
    return out


def read(table: Any, partitions: set[int]) -> dict[int, list[bytes]]:
    stored = stored_states(table, partitions, PARTITIONS)
    return {partition: sorted(states) for partition, states in stored.items()}


def filled(kind: str, tmp_path: Path) -> Any:
    """A Faust table of ``kind`` with the changelog applied as recovery applies it."""
    app = faust.App(f"stored-{kind}", store=f"{kind}://", datadir=str(tmp_path))
    store_type = RocksDBStore if kind == "rocksdb" else MemoryStore
    store = store_type(f"{kind}://", app, table=SimpleNamespace(name="users"))  # type: ignore[arg-type]
    store.apply_changelog_batch(list(changelog()), to_key=lambda k: k, to_value=lambda v: v)
    return SimpleNamespace(data=store)


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
@pytest.mark.parametrize("partitions", [{0}, {3}, {1, 4}, set(range(PARTITIONS))])
def test_each_partition_gives_exactly_its_users_last_states(
    kind: str, partitions: set[int], tmp_path: Path
) -> None:
    table = filled(kind, tmp_path)
    assert read(table, partitions) == expected(partitions)


def test_a_rocksdb_partition_never_opened_has_no_states(tmp_path: Path) -> None:
    table = filled("rocksdb", tmp_path)
    del table.data._dbs[2]  # as before its assignment
    assert read(table, {2, 5}) == {2: [], 5: expected({5})[5]}


def test_a_memory_key_written_through_the_table_goes_to_its_users_partition(
    tmp_path: Path,
) -> None:
    table = filled("memory", tmp_path)
    key = user(99)  # as exactly-once writes: through the table, no partition recorded
    table.data[key] = b"through the table"
    assert key not in table.data._key_partition
    partition = partition_for(key, PARTITIONS)
    everything = read(table, set(range(PARTITIONS)))
    assert [p for p, states in everything.items() if b"through the table" in states] == [partition]


def test_another_store_is_read_through_the_table() -> None:
    rows = {record.key: record.value for record in changelog()}
    table = SimpleNamespace(data=object(), items=rows.items)
    assert read(table, {2, 5}) == expected({2, 5})


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_a_users_state_is_its_last_write_and_none_once_gone_or_never_written(
    kind: str, tmp_path: Path
) -> None:
    stored_state = stored_state_getter(filled(kind, tmp_path))
    assert stored_state(user(3)) == user(3) + b":last"
    assert stored_state(user(7)) is None  # the tombstone
    assert stored_state(user(500)) is None
