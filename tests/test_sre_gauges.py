"""A worker that does not know its partitions' counts exports none, rather than a 0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from history import synthetic_history
from test_worker import records_of
from worker_harness import Topics, Worker, produce, wait_for

pytestmark = pytest.mark.integration

COUNTS = {"lineguard_users", "lineguard_timers_pending"}


@pytest.fixture
def workers(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> Iterator[list[Worker]]:
    """Two workers of one group over one partition: the second has nothing to serve."""
    topics = Topics(unique_prefix)
    started = [Worker(kafka_bootstrap, topics, tmp_path, partitions=1) for _ in range(2)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def _revocations(worker: Worker) -> int:
    return (worker.workdir / f"worker-{worker.port}.log").read_text().count("partitions_revoked")


def test_a_worker_without_partitions_exports_no_user_or_timer_counts(
    kafka_bootstrap: str, workers: list[Worker]
) -> None:
    one, two = workers
    one.start().wait_ready()
    asyncio.run(produce(kafka_bootstrap, one.topics, records_of(synthetic_history(30, 300, 5)), 1))
    wait_for(lambda: one.metric("lineguard_events_total") >= 300, 120, "the records applied")
    users = one.metric("lineguard_users")
    assert users > 0
    assert one.metric("lineguard_timers_pending") > 0

    before = _revocations(one)
    two.start()
    wait_for(
        lambda: _revocations(one) > before and one.get("/readyz")[0] == 200,
        120,
        "the first worker to keep the partition through the second one's joining",
    )
    wait_for(lambda: two.get("/metrics")[0] == 200, 60, "the second worker's /metrics")
    assert two.metric("lineguard_recovery_in_progress") == 1
    assert not {s.name for s in two.samples()} & COUNTS  # no 0 to sum with the first's
    assert one.metric("lineguard_users") == users
