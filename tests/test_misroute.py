"""A user created on another partition than murmur2 gives its key is counted and logged.

The core says which records created their user's state in a partition group; the shell's
:class:`~streams.runtime.MisrouteWatch` compares that record's partition with murmur2's,
and :meth:`~streams.runtime.Runtime._ack` hands it the created ones (RELIABILITY.md, 49).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs

from risk.contract import Rejection
from risk.group import PartitionGroup, never_more
from risk.partition import Outcome
from risk.partitioner import partition_for
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, parse_records
from risk.state import UserState
from streams.runtime import MisrouteWatch, Runtime

from builders import NOW, PURCHASES, REPAYMENTS, application, purchase, repayment, ts

PARTITIONS = 6


def _user_on(partition: int, prefix: str = "u") -> str:
    """A user id murmur2 puts on ``partition`` of ``PARTITIONS``."""
    return next(
        user
        for n in range(1000)
        if partition_for((user := f"{prefix}-{n}").encode(), PARTITIONS) == partition
    )


def _watch(interval: float = 3600) -> tuple[MisrouteWatch, dict[str, Counter]]:
    registry = CollectorRegistry()
    family = Counter("misrouted", "users", ["topic"], registry=registry)
    counters = {topic: family.labels(topic) for topic in INPUT_TOPICS}
    return MisrouteWatch(counters, lambda _topic: PARTITIONS, interval), counters


def _value(counter: Counter) -> float:
    return counter._value.get()


def test_the_group_says_which_record_created_its_user() -> None:
    store: dict[str, UserState] = {}
    group: PartitionGroup[str] = PartitionGroup(load_policy(), store, len(INPUT_TOPICS))
    lines = [
        purchase("2026-03-01T00:00:00Z", 10_000, user="a", event_id="p-1"),
        purchase("2026-03-01T01:00:00Z", 10_000, user="a", event_id="p-1"),  # a duplicate
        purchase("2026-03-01T02:00:00Z", 10_000, user="a", event_id="p-2"),
        {"topic": REPAYMENTS, "key": "b", "value": "not json"},  # no state for b
        repayment("2026-03-01T03:00:00Z", 5_000, user="b", event_id="r-1"),
        application("2026-03-01T04:00:00Z", user="b", event_id="l-1"),
    ]
    for n, record in enumerate(parse_records([orjson.dumps(line) for line in lines])):
        group.push(INPUT_TOPICS.index(record.topic), record.key, record.value, f"record-{n}")
    applied = {a.record: a for a in group.drain(never_more, ts(NOW))}
    assert [(r, a.outcome, a.created) for r, a in sorted(applied.items())] == [
        ("record-0", Outcome.PROCESSED, True),
        ("record-1", Outcome.DUPLICATE, False),
        ("record-2", Outcome.PROCESSED, False),
        ("record-3", Outcome.DEAD_LETTERED, False),
        ("record-4", Outcome.PROCESSED, True),
        ("record-5", Outcome.PROCESSED, False),
    ]
    assert group.processor.created == 2
    assert isinstance(applied["record-3"].rejection, Rejection)


def test_a_user_created_on_its_own_partition_is_not_counted() -> None:
    watch, counters = _watch()
    with capture_logs() as logs:
        for partition in range(PARTITIONS):
            watch.created(PURCHASES, partition, _user_on(partition).encode())
    assert [_value(c) for c in counters.values()] == [0] * len(INPUT_TOPICS)
    assert logs == []


def test_a_user_created_on_another_partition_is_counted_once_and_logged_without_its_id() -> None:
    watch, counters = _watch()
    user = _user_on(2, prefix="secret")
    with capture_logs() as logs:
        watch.created(REPAYMENTS, 4, user.encode())
    assert _value(counters[REPAYMENTS]) == 1
    assert sum(_value(c) for c in counters.values()) == 1
    assert logs == [
        {
            "event": "input_misrouted",
            "log_level": "warning",
            "topic": REPAYMENTS,
            "partition": 4,
            "expected_partition": 2,
            "misrouted_users": 1,
        }
    ]
    assert "secret" not in repr(logs)


def test_the_warning_comes_once_per_interval_and_topic_partition_with_the_users_between() -> None:
    watch, counters = _watch(interval=3600)
    wrong = [_user_on(p) for p in (0, 1, 2)]  # all read from partition 5
    with capture_logs() as logs:
        for user in wrong:
            watch.created(PURCHASES, 5, user.encode())
        watch.created(PURCHASES, 3, wrong[0].encode())  # another partition warns on its own
        watch.created(REPAYMENTS, 5, wrong[0].encode())  # and so does another topic
    assert _value(counters[PURCHASES]) == 4
    assert _value(counters[REPAYMENTS]) == 1
    assert [(e["topic"], e["partition"], e["misrouted_users"]) for e in logs] == [
        (PURCHASES, 5, 1),
        (PURCHASES, 3, 1),
        (REPAYMENTS, 5, 1),
    ]
    always, _ = _watch(interval=0)
    with capture_logs() as logs:
        for user in wrong:
            always.created(PURCHASES, 5, user.encode())
    assert len(logs) == 3


def test_the_partition_count_is_the_topics_own_when_the_consumer_knows_it() -> None:
    counts = {PURCHASES: 12}
    consumer = SimpleNamespace(topic_partitions=counts.get)
    runtime: Any = SimpleNamespace(app=SimpleNamespace(consumer=consumer), partitions=6)
    assert Runtime._partition_count(runtime, PURCHASES) == 12
    assert Runtime._partition_count(runtime, REPAYMENTS) == 6  # not in its metadata yet
    runtime.app = SimpleNamespace()  # no consumer at all
    assert Runtime._partition_count(runtime, PURCHASES) == 6


def _applied(outcome: Outcome, partition: int, user: str, *, created: bool) -> Any:
    record = SimpleNamespace(topic=PURCHASES, partition=partition, key=user.encode())
    return SimpleNamespace(
        record=record, topic_index=0, outcome=outcome, occurred_at=1, created=created
    )


def test_acking_a_batch_checks_each_user_it_created() -> None:
    right, wrong = _user_on(1), _user_on(2)
    watch, counters = _watch()
    acked: list[Any] = []
    runtime: Any = SimpleNamespace(
        topics=INPUT_TOPICS,
        app=SimpleNamespace(consumer=None),
        delivery=SimpleNamespace(ack_applied=lambda _consumer, records: acked.extend(records)),
        metrics=SimpleNamespace(
            events=_Events(),
            last_event={PURCHASES: SimpleNamespace(set=lambda _value: None)},
        ),
        _misroutes=watch,
    )
    batch = SimpleNamespace(
        applied=[
            _applied(Outcome.PROCESSED, 1, right, created=True),  # on its own partition
            _applied(Outcome.PROCESSED, 1, wrong, created=True),  # murmur2 says 2
            _applied(Outcome.PROCESSED, 1, wrong, created=False),  # the same user again
            _applied(Outcome.DUPLICATE, 1, _user_on(3), created=False),
        ]
    )
    with capture_logs() as logs:
        Runtime._ack(runtime, batch)
    assert len(acked) == 4
    assert _value(counters[PURCHASES]) == 1
    assert [(e["event"], e["partition"], e["expected_partition"]) for e in logs] == [
        ("input_misrouted", 1, 2)
    ]


class _Events:
    """The bound ``lineguard_events_total`` children, which count nothing here."""

    def __getitem__(self, _key: tuple[str, str]) -> Any:
        return SimpleNamespace(inc=lambda _count=1: None)
