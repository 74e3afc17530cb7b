"""Workers added one at a time each get a share of the partitions, standbys and all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from history import synthetic_history
from test_worker import records_of, topics
from worker_harness import Topics, Worker, create_topics, produce, started_workers, wait_for

pytestmark = pytest.mark.integration
__all__ = ["topics"]  # fixture shared with test_worker

PARTITIONS = 6
"""``LINEGUARD_TOPIC_PARTITIONS``'s default, where three workers held two each."""


@pytest.fixture
def start_worker(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    with started_workers(kafka_bootstrap, topics, tmp_path, PARTITIONS) as start:
        yield start


def _settled(workers: list[Worker]) -> Callable[[], bool]:
    """Every worker ready, the partitions split between them, ⌊P ÷ N⌋ or ⌈P ÷ N⌉ each."""
    low, high = PARTITIONS // len(workers), -(-PARTITIONS // len(workers))

    def settled() -> bool:
        try:
            answers = [worker.get("/readyz") for worker in workers]
        except OSError:  # the new worker's web server is not up yet
            return False
        held = [body["partitions"] for _, body in answers]
        return (
            all(status == 200 for status, _ in answers)
            and sorted(p for partitions in held for p in partitions) == list(range(PARTITIONS))
            and all(low <= len(partitions) <= high for partitions in held)
        )

    return settled


def test_each_worker_that_joins_gets_a_share_of_the_partitions(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    """With ``rocksdb://``, whose workers keep standby copies, under which Faust's own
    assignor left the newcomer nothing (RELIABILITY.md, defect 102)."""
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    workers: list[Worker] = []
    for _ in range(5):  # the fourth and the fifth joined workers holding ⌈6 ÷ N⌉ each
        workers.append(start_worker(extra_env={"LINEGUARD_STORE": "rocksdb://"}))
        try:
            wait_for(_settled(workers), 90, f"{len(workers)} workers to share the partitions")
        except AssertionError as error:
            held = [worker.get("/readyz") for worker in workers]
            raise AssertionError(f"{error}; /readyz of each: {held}") from None
    counts = sorted(len(worker.get("/readyz")[1]["partitions"]) for worker in workers)
    assert counts == [1, 1, 1, 1, 2]
    produced = records_of(synthetic_history(300, 3000, seed=21))
    asyncio.run(produce(kafka_bootstrap, topics, produced, PARTITIONS))
    wait_for(
        lambda: sum(w.metric("lineguard_events_total") for w in workers) >= len(produced),
        180,
        "the five workers to apply every record",
    )
    assert all(worker.metric("lineguard_events_total") > 0 for worker in workers)


STANDBY_LOG = "Highwater - Standby"
"""Faust's recovery logs this table when it starts reading the worker's standby partitions."""


@pytest.mark.parametrize(("store", "standbys"), [("memory://", False), ("rocksdb://", True)])
def test_only_rocksdb_workers_keep_standby_copies(
    kafka_bootstrap: str,
    topics: Topics,
    start_worker: Callable[..., Worker],
    store: str,
    standbys: bool,
) -> None:
    """A ``memory://`` worker reads a partition it takes over whole anyway (RELIABILITY.md, defect 116).

    Faust's recovery of the last rebalance has logged the standbys it reads by the time
    ``/readyz`` answers 200.
    """
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    workers = [start_worker(extra_env={"LINEGUARD_STORE": store}) for _ in range(2)]
    wait_for(_settled(workers), 90, "two workers to share the partitions")
    logs = [(w.workdir / f"worker-{w.port}.log").read_text(errors="replace") for w in workers]
    assert [STANDBY_LOG in log for log in logs] == [standbys, standbys]
