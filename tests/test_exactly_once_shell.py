"""What the worker sends under exactly-once, with fakes: no broker here has transactions.

faust-streaming routes a record of a topic its consumer has no metadata for (the limit
events, the dead letters) outside the transaction, dropping the partition it was asked for,
and a record of a subscribed topic (the ticks) into the partition's transaction, which a
``read_committed`` consumer sees only once the partition commits. The worker therefore sends
all three with Faust's plain aiokafka producer, whatever the guarantee. The states are the
one output that differs: at-least-once writes their changelog records itself, exactly-once
writes them through the table, whose records Faust's producer sends in the transaction.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from risk.contract import Reason, Rejection
from streams.runtime import TRUNCATED_HEADER, Runtime

INPUT, DEAD_LETTERS, LIMITS, TICKS = (
    "credit.purchases.v1",
    "credit.purchases.v1.dlt",
    "limits",
    "ticks",
)


class _Topic:
    """A Faust topic with no ``send``: the worker must not send through Faust's topics."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Producer:
    """aiokafka's producer, recording what it is given; it refuses values over ``limit``."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.sent: list[tuple[str, bytes | None, int | None]] = []
        self.headers: list[Any] = []
        self.limit = limit

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None = None,
        partition: int | None = None, headers: Any = None,
    ) -> asyncio.Future[None]:  # fmt: skip
        if len(value or b"") > self.limit:
            raise MessageSizeTooLargeError  # as aiokafka checks before queueing
        self.sent.append((topic, key, partition))
        self.headers.append(dict(headers or []))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _runtime(guarantee: str, limit: int = 1 << 20) -> tuple[Any, _Producer]:
    producer = _Producer(limit)
    runtime = SimpleNamespace(
        app=SimpleNamespace(
            producer=SimpleNamespace(_ensure_producer=lambda: producer),
            should_stop=True,  # the batch ends once its outputs are delivered
        ),
        topics=(INPUT,),
        dead_letter_topics={INPUT: _Topic(DEAD_LETTERS)},
        limit_topic=_Topic(LIMITS),
        tick_topic=TICKS,
        _topic_names={},
        _direct=guarantee == "at_least_once",
        _count_dead_letter=lambda *args: None,
        _count_decision=lambda *args: None,
    )
    for name in (
        "_complete", "_send", "_dead_letter", "_delivered_or_without_value",
        "_dead_letter_without_value", "send_tick",
    ):  # fmt: skip
        setattr(runtime, name, partial(getattr(Runtime, name), runtime))
    return runtime, producer


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_limit_events_and_dead_letters_go_with_the_plain_producer_to_their_partition(
    guarantee: str,
) -> None:
    runtime, producer = _runtime(guarantee)
    record = SimpleNamespace(
        topic=INPUT, partition=4, offset=17, key=b"u-9", value=b"{", headers=[("trace", b"t-1")]
    )
    rejected = SimpleNamespace(
        record=record, topic_index=0, rejection=Rejection(Reason.INVALID_JSON, "not JSON")
    )
    decision = SimpleNamespace(user_id="u-1", to_json=lambda now: b"{}")
    batch = SimpleNamespace(applied=[rejected], decisions=[(decision, None)])
    asyncio.run(runtime._complete(batch, {}))
    assert producer.sent == [(DEAD_LETTERS, b"u-9", 4), (LIMITS, b"u-1", None)]
    assert producer.headers[0]["trace"] == b"t-1"  # the record's own, after the dlt.* ones


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_ticks_go_with_the_plain_producer_never_in_a_transaction(guarantee: str) -> None:
    runtime, producer = _runtime(guarantee)
    asyncio.run(runtime.send_tick(3, b"wall"))
    assert producer.sent == [(TICKS, b"", 3)]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_dead_letter_the_producer_refuses_goes_with_a_note_in_either_mode(guarantee: str) -> None:
    # Through Faust's topics, exactly-once wrapped the refusal in ProducerSendError, which the
    # fallback never saw: the worker stopped at every restart on the same record.
    runtime, producer = _runtime(guarantee, limit=1000)
    record = SimpleNamespace(
        topic=INPUT, partition=2, offset=5, key=b"u-9", value=b"x" * 5000, headers=[("t", b"1")]
    )
    rejected = SimpleNamespace(
        record=record, topic_index=0, rejection=Rejection(Reason.TOO_LARGE, "too large")
    )
    asyncio.run(runtime._complete(SimpleNamespace(applied=[rejected], decisions=[]), {}))
    assert producer.sent == [(DEAD_LETTERS, b"u-9", 2)]
    assert producer.headers[0][TRUNCATED_HEADER] == b"5000"
    assert "t" not in producer.headers[0]  # a note stands for the record: its headers stay out


def _persisting(
    guarantee: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, _Producer, AsyncMock, Mock]:
    """A runtime that goes on past the sends to persist and ack; its two ways to persist."""
    runtime, producer = _runtime(guarantee)
    runtime.app.should_stop = False
    runtime.app.producer.flush = AsyncMock()
    runtime.app.producer.buffer = SimpleNamespace(size=0)
    runtime.table = SimpleNamespace()
    runtime._changelog = SimpleNamespace(write=AsyncMock())
    runtime._ack = Mock()
    runtime._marks = {}  # no partition's marks ask for a commit
    through_table = Mock()
    monkeypatch.setattr("streams.runtime.write_through_table", through_table)
    return runtime, producer, runtime._changelog.write, through_table


def test_at_least_once_writes_the_states_to_the_changelog_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, producer, changelog_write, through_table = _persisting("at_least_once", monkeypatch)
    writes = {3: SimpleNamespace()}
    batch = SimpleNamespace(applied=[], decisions=[], flush_with={3: SimpleNamespace()})
    asyncio.run(runtime._complete(batch, writes))
    changelog_write.assert_awaited_once_with(producer, writes)
    through_table.assert_not_called()
    runtime._ack.assert_called_once_with(batch)


def test_exactly_once_writes_the_states_through_the_table_not_to_the_changelog_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, _, changelog_write, through_table = _persisting("exactly_once", monkeypatch)
    taken, message = SimpleNamespace(), SimpleNamespace()
    batch = SimpleNamespace(applied=[], decisions=[], flush_with={3: message})
    asyncio.run(runtime._complete(batch, {3: taken}))
    changelog_write.assert_not_awaited()
    through_table.assert_called_once_with(runtime.table, message, taken)
    runtime.app.producer.flush.assert_awaited_once_with()
    runtime._ack.assert_called_once_with(batch)
