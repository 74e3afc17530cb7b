"""The worker at scale, across restarts and with two workers sharing the partitions."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from history import synthetic_history
from test_worker import PARTITIONS, records_of, replay_by_partition, start_worker, topics
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    limit_events_by_partition,
    produce,
    read_back,
    wait_for,
)

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

USERS, EVENTS = 2000, 20_000


def _caught_up(workers: list[Worker], total: int) -> Callable[[], bool]:
    return lambda: sum(w.metric("lineguard_events_total") for w in workers) >= total


def test_online_equals_offline_for_twenty_thousand_events(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    produced = records_of(synthetic_history(USERS, EVENTS, seed=11, graduated=True))
    asyncio.run(produce(kafka_bootstrap, topics, produced, PARTITIONS))
    worker = start_worker()
    worker.wait_ready()
    wait_for(_caught_up([worker], EVENTS), 300, "the worker to catch up")
    stored = asyncio.run(read_back(kafka_bootstrap, topics))
    assert len(stored) == EVENTS
    expected = replay_by_partition(stored)
    total = sum(map(len, expected.values()))
    assert total > 1000
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=120)
    )
    assert limit_events_by_partition(online) == expected


@pytest.mark.parametrize(
    ("stop_signal", "store"),
    [(signal.SIGTERM, "memory://"), (signal.SIGKILL, "memory://"), (signal.SIGKILL, "rocksdb://")],
    ids=["term", "kill", "kill-rocksdb"],
)
def test_a_worker_stopped_mid_stream_loses_no_decision(
    kafka_bootstrap: str,
    topics: Topics,
    start_worker: Callable[..., Worker],
    stop_signal: signal.Signals,
    store: str,
) -> None:
    produced = records_of(synthetic_history(USERS, EVENTS, seed=12, graduated=True))
    asyncio.run(produce(kafka_bootstrap, topics, produced, PARTITIONS))
    first = start_worker(extra_env={"LINEGUARD_STORE": store})
    first.wait_ready()
    wait_for(lambda: first.metric("lineguard_events_total") >= EVENTS // 3, 300, "progress")
    first.stop(stop_signal)
    second = start_worker(extra_env={"LINEGUARD_STORE": store})
    second.wait_ready()
    wait_for(_caught_up([second], 1), 120, "the restarted worker to resume")
    stored = asyncio.run(read_back(kafka_bootstrap, topics))
    expected = replay_by_partition(stored)
    by_id = {d["event_id"]: d for docs in expected.values() for d in docs}
    online: list[dict[str, Any]] = []

    def everything_decided() -> bool:
        messages = asyncio.run(
            consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), settle=1.0, wait_seconds=30)
        )
        online[:] = [d for docs in limit_events_by_partition(messages).values() for d in docs]
        return {d["event_id"] for d in online} >= set(by_id)

    try:
        wait_for(everything_decided, 60, "every replayed decision online")
    except AssertionError:
        missing = [by_id[i] for i in set(by_id) - {d["event_id"] for d in online}]
        raise AssertionError(f"{len(missing)} decisions missing online: {missing[:5]}") from None
    assert {d["event_id"] for d in online} == set(by_id)
    # A decision repeated after the stop is the same decision, field for field.
    for decision in online:
        assert decision == by_id[decision["event_id"]]


def test_two_workers_split_the_partitions_and_both_answer_for_any_user(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    token = "s3cret-token-of-the-two-workers"  # noqa: S105 - a test token for a loopback worker
    one = start_worker(extra_env={"LINEGUARD_API_TOKEN": token})
    one.wait_ready()
    two = start_worker(extra_env={"LINEGUARD_API_TOKEN": token})
    two.wait_ready()

    def split() -> bool:
        (status_one, ready_one), (status_two, ready_two) = one.get("/readyz"), two.get("/readyz")
        mine, theirs = set(ready_one["partitions"]), set(ready_two["partitions"])
        return (
            (status_one, status_two) == (200, 200)
            and mine.isdisjoint(theirs)
            and (mine | theirs == set(range(PARTITIONS)))
            and bool(mine)
            and bool(theirs)
        )

    wait_for(split, 60, "the partitions to be split between the two workers")
    produced = records_of(synthetic_history(200, 3000, seed=13))
    asyncio.run(produce(kafka_bootstrap, topics, produced, PARTITIONS))
    wait_for(_caught_up([one, two], 3000), 180, "both workers to catch up")
    assert one.metric("lineguard_events_total") > 0
    assert two.metric("lineguard_events_total") > 0
    every_user = sorted({r.key.decode() for r in produced if r.key})
    users = every_user[:12]
    for user in users:
        status_one, body_one = one.get(f"/users/{user}/", token)
        status_two, body_two = two.get(f"/users/{user}/", token)
        assert (status_one, status_two) == (200, 200), (body_one, body_two)
        assert body_one == body_two
        assert body_one["user_id"] == user
    _forwarded_once_and_marked(one, two, every_user, token)
    assert one.get(f"/users/{users[0]}/")[0] == 401
    assert one.get(f"/users/{users[0]}/", "wrong")[0] == 401
    assert orjson.dumps(one.get("/healthz")[1]) == b'{"status":"ok"}'


def _forwarded_once_and_marked(one: Worker, two: Worker, users: list[str], token: str) -> None:
    """A request marked as forwarded is answered by the owner, never sent on again.

    Two workers that disagree on a partition's owner during a rebalance would otherwise
    bounce it between them. Each worker answers its own users with the mark, and 503 with
    ``Retry-After`` for the other's; the owner's 404 and ``Retry-After`` survive forwarding.
    """
    auth = {"Authorization": f"Bearer {token}"}
    marked = {**auth, "X-Lineguard-Forwarded-By": "http://127.0.0.1:1"}
    answered = {0: 0, 1: 0}
    for user in users:
        for index, worker in enumerate((one, two)):
            status, body, headers = worker.request(f"/users/{user}/", marked)
            if status == 200:
                assert body["user_id"] == user
                answered[index] += 1
            else:
                assert (status, headers["Retry-After"]) == (503, "1"), body
    assert answered[0] + answered[1] == len(users), "each user answered by its owner alone"
    assert answered[0] > 0 and answered[1] > 0, answered
    content_types = set()
    for worker in (one, two):  # one answers itself, the other forwards the owner's answer
        status, body, headers = worker.request("/users/nobody-at-all/", auth)
        assert (status, body["error"], body["user_id"]) == (404, "unknown user", "nobody-at-all")
        content_types.add(headers["Content-Type"])
        # the forwarding URL takes nothing from the Host header, which the caller chose
        status, body, _ = worker.request(f"/users/{users[0]}/", {**auth, "Host": "a:b:c"})
        assert (status, body["user_id"]) == (200, users[0])
    assert content_types == {"application/json; charset=utf-8"}


def test_a_worker_without_a_partition_says_so_and_sends_the_client_elsewhere(
    start_worker: Callable[..., Worker],
) -> None:
    """A worker beyond the partition count answers 503 saying it holds none, not "rebalancing".

    It stays so until another worker leaves; "rebalancing or recovering" sent its clients
    back to it for as long as it ran. /readyz says the same, and the owner still answers.
    """
    token = "s3cret-token-of-the-idle-worker"  # noqa: S105 - a test token for a loopback worker
    env = {"LINEGUARD_API_TOKEN": token, "LINEGUARD_TOPIC_PARTITIONS": "1"}
    owner = start_worker(extra_env=env)
    owner.wait_ready()
    spare = start_worker(extra_env=env)

    def settled() -> bool:
        try:
            owner_status, mine = owner.get("/readyz")
            spare_status, theirs = spare.get("/readyz")
        except OSError:  # the spare's web server is not up yet
            return False
        return (
            (owner_status, mine["partitions"]) == (200, [0])
            and (spare_status, theirs["partitions"]) == (503, [])
            and theirs["recovery_done"]
            and not theirs["rebalancing"]
        )

    wait_for(settled, 90, "the first worker to keep the partition and the second to settle idle")
    auth = {"Authorization": f"Bearer {token}"}
    status, body, headers = spare.request("/users/u-idle", auth)
    assert (status, headers["Retry-After"], body["error"]) == (503, "1", "not ready"), body
    assert "holds no partition" in body["detail"] and "ask another worker" in body["detail"]
    _, ready = spare.get("/readyz")
    assert (ready["ready"], ready.get("detail")) == (False, body["detail"])
    assert "detail" not in owner.get("/readyz")[1]
    status, body, _ = owner.request("/users/u-idle", auth)
    assert (status, body["error"]) == (404, "unknown user")
