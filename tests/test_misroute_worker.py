"""A worker on the real broker shows a producer that did not partition with murmur2.

One user's records are produced to a partition murmur2 does not give its key, as a
librdkafka producer left at ``consistent_random`` would: they are applied there, the
decisions come out, and the worker counts the user in
``lineguard_input_misrouted_users_total`` and warns, naming the topic and the partitions
but not the user (RELIABILITY.md, defect 49).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from metric_labels import assert_no_label_can_hold_a_user_id
from worker_harness import LIMIT_TOPIC, Topics, Worker, consume_all, create_topics, wait_for

from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS

from builders import OVERRIDES, PURCHASES, override, purchase

pytestmark = pytest.mark.integration
PARTITIONS = 3
METRIC = "lineguard_input_misrouted_users_total"


async def _produce_to(
    bootstrap: str, topics: Topics, placed: list[tuple[dict[str, Any], int]]
) -> None:
    """Send each line to the partition given with it, as a producer that picks them would."""
    await create_topics(bootstrap, topics, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                topics.name(line["topic"]), orjson.dumps(line["value"]),
                key=line["key"].encode(), partition=partition,
            )
            for line, partition in placed
        ]  # fmt: skip
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _events(log: str) -> list[dict[str, Any]]:
    """The structured (JSON) events among Faust's plain log lines."""
    found = []
    for line in log.splitlines():
        start = line.find('{"')
        if start >= 0:
            try:
                found.append(orjson.loads(line[start:]))
            except orjson.JSONDecodeError:
                continue
    return found


def test_a_user_on_another_partition_than_murmur2s_is_counted_and_logged_and_still_decided(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    misrouted, placed_right = f"pii{tag}-misrouted", f"pii{tag}-placed-right"
    own = partition_for(misrouted.encode(), PARTITIONS)
    wrong = (own + 1) % PARTITIONS
    freeze = override("2026-03-01T00:00:00Z", "freeze", user=misrouted, event_id=f"o-{tag}")
    placed = [
        # the operator's freeze, and a later purchase, on a partition murmur2 does not pick
        (freeze, wrong),
        (purchase("2026-03-01T01:00:00Z", 10_000, user=misrouted, order="o-2"), wrong),
        # the same user's purchase where it belongs: a state there too, not counted
        (purchase("2026-03-01T00:30:00Z", 10_000, user=misrouted, order="o-1"), own),
        # another user, where murmur2 puts it
        (
            purchase("2026-03-01T00:00:00Z", 10_000, user=placed_right),
            partition_for(placed_right.encode(), PARTITIONS),
        ),
    ]
    topics = Topics(unique_prefix)
    asyncio.run(_produce_to(kafka_bootstrap, topics, placed))
    worker = Worker(kafka_bootstrap, topics, tmp_path, PARTITIONS)
    try:
        worker.start().wait_ready()
        wait_for(lambda: worker.metric("lineguard_events_total") >= len(placed), 60, "records")
        wait_for(lambda: worker.metric(METRIC) >= 1, 30, "the misrouted user counted")
        assert worker.metric("lineguard_events_total", outcome="processed") == len(placed)
        assert worker.metric(METRIC, topic=topics.name(OVERRIDES)) == 1
        assert worker.metric(METRIC, topic=topics.name(PURCHASES)) == 0
        assert worker.metric(METRIC) == 1
        assert_no_label_can_hold_a_user_id(
            worker.samples(), map(topics.name, INPUT_TOPICS), PARTITIONS
        )
        online = asyncio.run(
            consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=1, wait_seconds=30)
        )
    finally:
        worker.stop()
    decisions = [orjson.loads(m.value) for messages in online.values() for m in messages]
    assert [(d["type"], d["user_id"], d["caused_by"]) for d in decisions] == [
        ("limit.freeze", misrouted, f"o-{tag}")
    ]
    log = (tmp_path / f"worker-{worker.port}.log").read_text(errors="replace")
    warnings = [e for e in _events(log) if e.get("event") == "input_misrouted"]
    assert warnings == [
        {
            "event": "input_misrouted",
            "level": "warning",
            "topic": topics.name(OVERRIDES),
            "partition": wrong,
            "expected_partition": own,
            "misrouted_users": 1,
            "timestamp": warnings[0]["timestamp"],
        }
    ]
    assert f"pii{tag}" not in log
