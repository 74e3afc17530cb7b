"""A worker resumes at its committed offsets with the watermark those offsets had.

The broker is left exactly as a worker stopped mid-batch leaves it: states written for
some users of the batch (ahead of the committed offsets) and not for others, offsets
committed before the batch, and the partition's mark of that position in the changelog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from test_worker import PARTITIONS, records_of, replay_by_partition, start_worker, topics
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    create_changelog,
    limit_events_by_partition,
    produce,
    produce_to_changelog,
    wait_for,
)

from risk.group import PartitionGroup, never_more
from risk.partitioner import partition_for
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, InputRecord
from risk.state import STATE_ENCODER, UserState
from streams.progress import Marks, progress_key

from builders import purchase, repayment

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

PURCHASES, REPAYMENTS = INPUT_TOPICS[0], INPUT_TOPICS[1]


def _users_of_partition(partition: int, count: int) -> list[str]:
    users = (f"resume-{index}" for index in range(10_000))
    return [u for u in users if partition_for(u.encode(), PARTITIONS) == partition][:count]


def _scenario() -> list[dict[str, Any]]:
    """Three users of one partition; offsets are committed after the first two records.

    ``due`` has a timer that fires in one pass. ``payer``'s repayment comes before its
    overdue timer, but after the latest activity of ``busy``, whose state was written.
    Resumed at that activity, ``payer`` would be frozen, then restored.
    """
    due, payer, busy = _users_of_partition(0, 3)
    return [
        purchase("2026-01-01T00:00:00Z", 100_000, user=due, first_due="2026-01-03T00:00:00Z"),
        purchase("2026-01-01T00:00:00Z", 100_000, user=payer, first_due="2026-01-06T00:00:00Z"),
        purchase("2026-01-02T00:00:00Z", 1_000, user=busy),
        repayment("2026-01-08T00:00:00Z", 100_000, user=payer),
        purchase("2026-01-11T00:00:00Z", 1_000, user=busy),
    ]


def _states_after(records: list[InputRecord]) -> tuple[dict[str, UserState], int | None]:
    """Every user's state and the latest event time after one pass over ``records``."""
    policy = load_policy()
    store: dict[str, UserState] = {}
    group: PartitionGroup[InputRecord] = PartitionGroup(policy, store, len(INPUT_TOPICS))
    for record in records:
        group.push(INPUT_TOPICS.index(record.topic), record.key, record.value, record)
    for _ in group.drain(never_more, time.time_ns() // 1000):
        pass
    return store, group.processor.max_event_at


async def _leave_as_a_stopped_worker_would(
    bootstrap: str, topics: Topics, changelog: dict[bytes, bytes], committed: dict[str, int]
) -> None:
    name = await create_changelog(bootstrap, topics, PARTITIONS)
    await produce_to_changelog(bootstrap, name, changelog.items(), lambda key: 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.prefix,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        offsets = {TopicPartition(topic, 0): offset for topic, offset in committed.items()}
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def test_a_worker_resumed_at_its_committed_offsets_decides_as_one_pass_did(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    records = records_of(_scenario())
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    committed_through = 2  # the first two purchases: offsets 0 and 1 of purchases[0]
    before, event_time = _states_after(records[:committed_through])
    after, _ = _states_after(records)
    due, payer, busy = (r.key.decode() for r in records[:3] if r.key)
    durable = {due: before[due], payer: before[payer], busy: after[busy]}  # busy's was written
    position = [committed_through if topic == PURCHASES else 0 for topic in INPUT_TOPICS]
    marks = Marks([0] * len(INPUT_TOPICS), None).advance(position, event_time, [None] * 5)
    assert marks is not None
    changelog = {user.encode(): STATE_ENCODER.encode(state) for user, state in durable.items()}
    changelog[progress_key(0)] = marks
    committed = {topics.name(PURCHASES): committed_through}
    asyncio.run(_leave_as_a_stopped_worker_would(kafka_bootstrap, topics, changelog,
                                                 committed))  # fmt: skip

    expected = replay_by_partition(records)
    assert [(d["user_id"], d["type"]) for d in expected[0]] == [(due, "limit.freeze")]
    worker = start_worker()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= 3, 60, "the 3 records resumed")
    online = asyncio.run(consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), settle=2.0))
    assert limit_events_by_partition(online) == expected
    assert worker.metric("lineguard_events_total", outcome="duplicate") == 2  # busy's two
