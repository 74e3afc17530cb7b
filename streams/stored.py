"""The table's stored user states, read below Faust's table and serializers.

Each batch reads the state of each user it touches (:func:`stored_state_getter`).
Rebuilding the timer index after a recovery reads every stored state once. Through the
table (``table.items()``) each key and value passes Faust's serializer registry, and the
partition of each state had to be recomputed with the pure-Python murmur2 partitioner. The
stores already know the partition: ``RocksDBStore`` keeps one database per partition, and
``MemoryStore`` maps each key that came from the changelog to its partition. Both hold the
raw bytes the changelog carries (the table's keys and values are raw bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore

from risk.partitioner import partition_for
from streams.progress import is_progress_key


def stored_state_getter(table: Any) -> Callable[[bytes], bytes | None]:
    """A user's stored state by key, or None, read below the table (once per user a batch).

    The table's own ``get`` adds a sensor call, and the store's (``Mapping.get``) raises
    and catches a ``KeyError`` for each new user, then passes the serializer registry. The
    memory store's dict answers directly, and RocksDB's ``_get`` gives the raw bytes; any
    other store is asked through its ``get``.
    """
    store = table.data
    if isinstance(store, MemoryStore):
        in_memory: Callable[[bytes], bytes | None] = store.data.get
        return in_memory
    if isinstance(store, RocksDBStore):
        return store._get
    return store.get  # type: ignore[no-any-return]


def stored_states(
    table: Any, partitions: Collection[int], partition_count: int
) -> Mapping[int, Iterable[bytes]]:
    """The stored states of each of ``partitions``, encoded (recovery only: it scans).

    A key is in the partition it was written to: the partition of the input records that
    changed the user, which is ``partition_for(user_id)`` (inputs and changelog are
    co-partitioned). RocksDB's are read lazily, from the partition's own database. The
    memory store's are sorted out in one pass over its keys; a key it holds without a
    partition (written through the table, as exactly-once does) falls back to the
    partitioner, as does any other store's.
    """
    store = table.data
    if isinstance(store, RocksDBStore):
        return {partition: _rocksdb_states(store, partition) for partition in partitions}
    if isinstance(store, MemoryStore):
        located: dict[bytes, int] = store._key_partition  # type: ignore[assignment]  # bytes keys
        items = store.data.items()
    else:
        located, items = {}, table.items()
    runs: dict[int, list[bytes]] = {partition: [] for partition in partitions}
    for key, value in items:
        if value is None or is_progress_key(key):
            continue
        known = located.get(key)
        run = runs.get(partition_for(key, partition_count) if known is None else known)
        if run is not None:
            run.append(value)
    return runs


def _rocksdb_states(store: RocksDBStore, partition: int) -> Iterator[bytes]:
    """Every state of the partition, read once without filling the block cache.

    A scan that filled the cache would pull the whole table into memory at each rebalance,
    which a store chosen for state larger than memory must not do.
    """
    from rocksdict import ReadOptions  # the rocksdb extra, there whenever this store is

    db = store._dbs.get(partition)
    if db is None:  # never opened: nothing stored, as table.items() would find
        return
    offset_key = store.offset_key
    once = ReadOptions()
    once.fill_cache(False)  # type: ignore[call-arg]  # rocksdict's stub leaves out the flag
    for key, value in db.items(read_opt=once):
        if key != offset_key and not is_progress_key(key):
            yield value
