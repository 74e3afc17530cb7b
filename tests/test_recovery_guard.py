"""A rebalance during Faust's table recovery: no crash, and no timer index built too early.

RELIABILITY.md, defect 4: faust-streaming 0.15.3 swallows the ``RebalanceAgain`` of a
rebalance that comes while active changelogs are read, then seeks the new standby
partitions to the offset ``None``. The same missed rebalance (or one that has not
reached Faust's callbacks yet) makes it signal the completion of a recovery whose
assignment is gone.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.types import TP

from streams.delivery import guard_recovery_seeks
from streams.runtime import Runtime

CHANGELOG = "lineguard-users-changelog"


class FakeRecovery:
    """The two attributes of Faust's ``Recovery`` the guard touches."""

    def __init__(self) -> None:
        self.signal_recovery_start = asyncio.Event()
        self.seeks: list[dict[TP, int | None]] = []

    async def _seek_offsets(
        self, consumer: Any, tps: set[TP], offsets: Counter[TP], title: str
    ) -> None:
        self.seeks.append({tp: offsets[tp] for tp in tps})


async def test_seeks_of_a_prepared_assignment_are_fausts_own() -> None:
    recovery = FakeRecovery()
    guard_recovery_seeks(recovery)
    guard_recovery_seeks(recovery)  # idempotent: one guard
    offsets: Counter[TP] = Counter({TP(CHANGELOG, 0): -1, TP(CHANGELOG, 3): 41})
    await recovery._seek_offsets(None, set(offsets), offsets, "standby")
    assert recovery.seeks == [dict(offsets)]


async def test_standby_offsets_that_were_never_built_restart_the_recovery() -> None:
    # What Recovery._add leaves for a partition a missed rebalance made a standby.
    recovery = FakeRecovery()
    guard_recovery_seeks(recovery)
    offsets: Counter[TP] = Counter({TP(CHANGELOG, 0): 12})
    offsets[TP(CHANGELOG, 4)] = None  # type: ignore[assignment]  # as Faust stores it
    with pytest.raises(RebalanceAgain):
        await recovery._seek_offsets(None, set(offsets), offsets, "standby")
    assert recovery.seeks == []


async def test_a_pending_rebalance_restarts_the_recovery_before_any_seek() -> None:
    recovery = FakeRecovery()
    guard_recovery_seeks(recovery)
    recovery.signal_recovery_start.set()
    offsets: Counter[TP] = Counter({TP(CHANGELOG, 2): 5})
    with pytest.raises(RebalanceAgain):
        await recovery._seek_offsets(None, set(offsets), offsets, "standby")
    assert recovery.seeks == []


def test_aiokafka_refuses_the_offset_faust_would_seek_to() -> None:
    # The crash the guard prevents, as the worker logged it.
    consumer = AIOKafkaConsumer.__new__(AIOKafkaConsumer)
    with pytest.raises(ValueError, match="Offset must be a positive integer"):
        consumer.seek(TopicPartition(CHANGELOG, 4), None)  # type: ignore[arg-type]


def test_faust_still_swallows_a_rebalance_during_active_recovery() -> None:
    # The bug the guard works around. If a Faust upgrade fixes it, this fails: the guard
    # may then go (it is harmless either way).
    source = inspect.getsource(Recovery._restart_recovery.fun)  # a mode ServiceTask
    waited = source.index("await self._wait(self.signal_recovery_end.wait())")
    assert "except Exception as exc:" in source[waited : waited + 200]
    assert issubclass(RebalanceAgain, Exception)
    assert "offsets.setdefault(tp, None)" in inspect.getsource(Recovery._add)


def _runtime(*, pending: bool, recovered_generation: int, generation: int) -> Any:
    signal = asyncio.Event()
    if pending:
        signal.set()
    recovery = SimpleNamespace(signal_recovery_start=signal, _generation_id=recovered_generation)
    built: list[set[int]] = []
    return SimpleNamespace(
        app=SimpleNamespace(tables=SimpleNamespace(recovery=recovery),
                            consumer_generation_id=generation),
        assignment=lambda: {TP("credit.purchases.v1", 1), TP("credit.purchases.v1", 4)},
        groups={},
        _recover=built.append,
        built=built,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pending", "recovered_generation", "generation", "built"),
    [
        (False, 3, 3, [{1, 4}]),  # the recovery of this assignment ended
        (True, 3, 3, []),  # the next recovery is pending: the table is not ready for it
        (False, 3, 4, []),  # the consumer has a newer assignment, Faust not yet told
    ],
)
def test_the_timer_index_is_built_only_from_a_table_recovered_for_this_assignment(
    pending: bool, recovered_generation: int, generation: int, built: list[set[int]]
) -> None:
    runtime = _runtime(
        pending=pending, recovered_generation=recovered_generation, generation=generation
    )
    Runtime.recover(runtime)
    assert runtime.built == built
