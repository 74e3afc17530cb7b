"""``LINEGUARD_TOPIC_PARTITIONS`` against the topics a deployment already has, on the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import Topics, Worker, create_topics

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
