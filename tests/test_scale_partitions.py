"""``LINEGUARD_TOPIC_PARTITIONS`` against the topics a deployment already has, on the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import Topics, Worker, consume_all, create_topics, produce, wait_for

from risk.partitioner import partition_for
from risk.replay import InputRecord

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker


async def _topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _refused(worker: Worker) -> str:
    assert worker.process is not None
    assert worker.process.wait(60) == 3
    return worker.log()


def test_a_partition_count_other_than_the_topics_stops_the_worker_naming_both(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    """Inputs of 3 partitions, the setting at 6: refused naming the topics, their count and the
    setting, and nothing created, so the corrected setting starts. A deployment that ran at 3
    (ticks and changelog too) is refused at 6 as well: it ran on before, on the old count."""
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    before = asyncio.run(_topic_names(kafka_bootstrap))
    log = _refused(start_worker(extra_env={"LINEGUARD_TOPIC_PARTITIONS": "6"}))
    line = next(line for line in log.splitlines() if line.startswith("lineguard: "))
    assert line.startswith("lineguard: LINEGUARD_TOPIC_PARTITIONS is 6, but the existing topics")
    assert f"{topics.name('credit.purchases.v1')}: 3" in line
    assert "set LINEGUARD_TOPIC_PARTITIONS=3" in line
    assert asyncio.run(_topic_names(kafka_bootstrap)) == before
    worker = start_worker()
    worker.wait_ready()
    worker.stop()
    log = _refused(start_worker(extra_env={"LINEGUARD_TOPIC_PARTITIONS": "6"}))
    assert f"{topics.prefix}-ticks: 3, {topics.prefix}-users-changelog: 3)" in log


def test_a_dead_letter_topic_of_fewer_partitions_than_its_input_stops_the_worker_naming_it(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    """``purchases.dlt`` of 1 partition beside inputs of 3: the first rejected record of
    partition 1 or 2 stopped the worker with ``AssertionError: Unrecognized partition`` (status
    1), again after each restart. Now start-up refuses it, naming it."""
    purchases = topics.name("credit.purchases.v1")
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    asyncio.run(_create_topic(kafka_bootstrap, f"{purchases}.dlt", 1))
    worker = start_worker()
    # Before the fix the worker started: its first dead letter of partition 2 stopped it.
    asyncio.run(produce(kafka_bootstrap, topics, [_rejected_on_partition(2)]))
    line = next(line for line in _refused(worker).splitlines() if line.startswith("lineguard: "))
    assert line.startswith("lineguard: a dead-letter topic has fewer partitions than its input")
    assert f"{purchases}.dlt has 1 partitions and needs at least {PARTITIONS}" in line


def test_a_dead_letter_topic_of_more_partitions_than_its_input_takes_each_on_its_own(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    """Extra partitions of a ``.dlt`` topic stay empty: a rejected record of partition 2 goes
    to partition 2 there, and the worker goes on."""
    purchases = topics.name("credit.purchases.v1")
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    asyncio.run(_create_topic(kafka_bootstrap, f"{purchases}.dlt", PARTITIONS + 2))
    worker = start_worker()
    worker.wait_ready()
    record = _rejected_on_partition(2)
    asyncio.run(produce(kafka_bootstrap, topics, [record]))
    letters = asyncio.run(consume_all(kafka_bootstrap, f"{purchases}.dlt", expected=1))
    assert {p: [(m.key, m.value) for m in ms] for p, ms in letters.items()} == {
        2: [(record.key, record.value)]
    }
    wait_for(
        lambda: worker.metric("lineguard_dead_letters_total", reason="invalid_json") == 1,
        30, "the dead letter counted",
    )  # fmt: skip
    assert worker.process is not None and worker.process.poll() is None


def _rejected_on_partition(partition: int) -> InputRecord:
    """A purchase that is not JSON, of a user murmur2 puts on ``partition``."""
    user = next(
        f"u{n}" for n in range(100) if partition_for(f"u{n}".encode(), PARTITIONS) == partition
    )
    return InputRecord(1, "credit.purchases.v1", user.encode(), b"{not json")


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
