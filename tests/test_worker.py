"""The worker on a real Kafka-protocol broker: its decisions equal `lineguard replay`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from metric_labels import assert_no_label_can_hold_a_user_id
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    create_topics,
    limit_events_by_partition,
    produce,
    started_workers,
    wait_for,
)

from risk.partitioner import partition_for
from risk.policy import Policy, load_policy
from risk.replay import INPUT_TOPICS, InputRecord, parse_records, replay

from builders import application, override, purchase, repayment, verification

pytestmark = pytest.mark.integration
PARTITIONS = 3


@pytest.fixture
def topics(unique_prefix: str) -> Topics:
    return Topics(unique_prefix)


@pytest.fixture
def start_worker(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    with started_workers(kafka_bootstrap, topics, tmp_path, PARTITIONS) as start:
        yield start


def records_of(lines: list[dict[str, Any]]) -> list[InputRecord]:
    return list(parse_records([orjson.dumps(line) for line in lines]))


def watermark_tail(at: str) -> list[dict[str, Any]]:
    """One late event per partition, so every partition's watermark passes earlier timers."""
    tail = []
    for partition in range(PARTITIONS):
        user = next(
            f"tail-{n}"
            for n in range(1000)
            if partition_for(f"tail-{n}".encode(), PARTITIONS) == partition
        )
        tail.append(application(at, 500_000, user=user))
    return tail


def rule_scenarios() -> list[dict[str, Any]]:
    """A freeze and a restore for every rule of the default policy, one user each.

    Each topic-partition keeps list order, so within a topic the list runs in time order.
    """
    return [
        # OVERDUE_ACTIVE, 0-day cure at the repayment itself
        purchase("2026-02-01T00:00:00Z", 35000, user="od-0", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-04T00:00:00Z", 35000, user="od-0"),
        # OVERDUE_ACTIVE, 30-day cure restored by a timer
        purchase("2026-02-01T00:00:00Z", 35000, user="od-30", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-06T00:00:00Z", 35000, user="od-30"),
        # OVERDUE_REPEATED
        *[
            line
            for buy, due, pay in (
                ("2026-01-01", "2026-01-10", "2026-01-13T12:00:00Z"),
                ("2026-01-20", "2026-02-10", "2026-02-14T00:00:00Z"),
                ("2026-03-20", "2026-04-10", "2026-04-14T00:00:00Z"),
            )
            for line in (
                purchase(
                    f"{buy}T00:00:00Z", 1000, user="rep", order=buy, first_due=f"{due}T00:00:00Z"
                ),
                repayment(pay, 1000, user="rep"),
            )
        ],
        # SPEND_INCOME_MISMATCH, with hysteresis
        application("2026-04-01T00:00:00Z", 200_000, user="spend", income=800_000),
        *[
            line
            for index, (at, amount) in enumerate(
                (("2026-04-02", 400_000), ("2026-04-12", 1_000_000), ("2026-04-22", 1_100_000))
            )
            for line in (
                purchase(f"{at}T00:00:00Z", amount, user="spend", order=f"s{index}"),
                repayment(f"{at}T01:00:00Z", amount, user="spend", order=f"s{index}"),
            )
        ],
        # LOAN_VELOCITY
        *[application(f"2026-05-0{d}T10:00:00Z", 500_000, user="vel") for d in range(1, 6)],
        # SMALL_LOAN_BURST
        *[application(f"2026-05-01T1{h}:00:00Z", 50_000, user="small") for h in range(3)],
    ]


def graduated_scenarios() -> list[dict[str, Any]]:
    """Probation, income proof, operators' overrides and the spend band, one user each."""
    due = "2026-03-01T00:00:00Z"
    return [
        # 35 days past due: the restore goes to probation, three on-time payments end it
        purchase("2026-02-01T00:00:00Z", 35000, user="prob", order="p0", first_due=due),
        repayment("2026-04-05T00:00:00Z", 35000, user="prob"),
        purchase(
            "2026-05-10T00:00:00Z",
            3000,
            user="prob",
            order="p1",
            installments=3,
            first_due="2026-06-01T00:00:00Z",
        ),
        *[repayment(f"2026-0{m}-28T00:00:00Z", 1000, user="prob") for m in (5, 6, 7)],
        # 10 days past due, then proof of income halves the cure left
        purchase("2026-02-01T00:00:00Z", 35000, user="ver", order="v0", first_due=due),
        repayment("2026-03-11T00:00:00Z", 35000, user="ver"),
        verification("2026-03-21T00:00:00Z", 900_000, user="ver", source="employer"),
        # an operator freezes and restores
        purchase("2026-02-01T00:00:00Z", 1000, user="ops", order="o0"),
        override("2026-02-10T00:00:00Z", "freeze", user="ops", note="identity check"),
        override("2026-02-20T00:00:00Z", "restore", user="ops", note="identity confirmed"),
        # the spend band (on in this test's policy): reduce, freeze, restore
        application("2026-04-01T00:00:00Z", 200_000, user="band", income=100_000),
        purchase("2026-04-02T00:00:00Z", 250_000, user="band", order="b1"),
        repayment("2026-04-02T01:00:00Z", 250_000, user="band", order="b1"),
        purchase("2026-04-10T00:00:00Z", 100_000, user="band", order="b2"),
        repayment("2026-04-10T01:00:00Z", 100_000, user="band", order="b2"),
    ]


def graduated_policy(tmp_path: Path) -> Path:
    """The default policy with the spend band on and anti-flapping relaxed to 12 a year."""
    text = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
    for old, new in (
        ("automatic_per_window = 1\n", "automatic_per_window = 12\n"),
        ("enabled = false\nreduce_above_ratio", "enabled = true\nreduce_above_ratio"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "graduated.toml"
    path.write_text(text, "utf-8")
    return path


def replay_by_partition(
    records: list[InputRecord], policy: Policy | None = None
) -> dict[int, list[dict[str, Any]]]:
    now = time.time_ns() // 1000
    result = replay(records, policy or load_policy(), partitions=PARTITIONS, now=now)
    out: dict[int, list[dict[str, Any]]] = {}
    for decision in result.decisions:
        doc = orjson.loads(decision.to_json(0))
        doc.pop("decided_at")
        out.setdefault(partition_for(decision.user_id.encode(), PARTITIONS), []).append(doc)
    return out


def test_a_backfill_of_every_rule_gives_exactly_the_replayed_decisions(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    lines = rule_scenarios() + graduated_scenarios() + watermark_tail("2026-09-01T00:00:00Z")
    records = records_of(lines)
    policy_file = graduated_policy(tmp_path)
    # Months of history are in the topics before the worker starts: fetches arrive topic by topic.
    asyncio.run(produce(kafka_bootstrap, topics, records))
    worker = start_worker(extra_env={"LINEGUARD_POLICY_FILE": str(policy_file)})
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "all records")
    expected = replay_by_partition(records, load_policy(policy_file))
    total = sum(map(len, expected.values()))
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=30)
    )
    assert limit_events_by_partition(online) == expected
    docs = [d for docs in expected.values() for d in docs]
    codes = {r["code"] for d in docs for r in d["reasons"]}
    assert codes >= {
        "OVERDUE_ACTIVE", "OVERDUE_REPEATED", "LOAN_VELOCITY", "SMALL_LOAN_BURST",
        "SPEND_INCOME_MISMATCH", "REPAID_AND_CURED", "OVERDUE_REPEATED_CLEARED",
        "LOAN_VELOCITY_CLEARED", "SMALL_LOAN_BURST_CLEARED", "SPEND_INCOME_MISMATCH_CLEARED",
        "INCOME_VERIFIED", "PROBATION_COMPLETED", "MANUAL_OVERRIDE",
    }  # fmt: skip
    assert {d["type"] for d in docs} == {"limit.freeze", "limit.reduce", "limit.restore"}
    assert {d["status"] for d in docs} == {"active", "reduced", "probation", "frozen"}


def test_every_dead_letter_reason_reaches_the_dlt_with_its_headers(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    good = {
        "event_id": "r-ok",
        "user_id": "u-1",
        "occurred_at": "2026-03-10T00:00:00Z",
        "amount": 1,
    }
    repayments = "credit.repayments.v1"
    bad = [
        ({"topic": repayments, "key": "u-1", "value": "{not json"}, "invalid_json"),
        ({"topic": repayments, "key": "u-1", "value": {**good, "event_id": "f", "amount": 1.0}}, "schema_violation"),
        ({"topic": repayments, "key": "u-2", "value": {**good, "event_id": "k"}}, "key_mismatch"),
        ({"topic": repayments, "key": "u-1", "value": {**good, "event_id": "l", "occurred_at": "2026-03-01T00:00:00Z"}}, "too_late"),
        ({"topic": repayments, "key": "u-1", "value": {**good, "event_id": "x", "pad": "x" * 70_000}}, "too_large"),
        ({"topic": repayments, "key": "u-1", "value": {**good, "event_id": "n", "occurred_at": "2099-01-01T00:00:00Z"}}, "in_future"),
    ]  # fmt: skip
    lines = [{"topic": repayments, "key": "u-1", "value": good}] + [line for line, _ in bad]
    records = records_of(lines)
    asyncio.run(produce(kafka_bootstrap, topics, records))
    worker = start_worker()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "all records")
    dlt = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(repayments) + ".dlt", expected=len(bad))
    )
    letters = [m for messages in dlt.values() for m in messages]
    by_reason = {dict(m.headers)["dlt.reason"].decode(): m for m in letters}
    assert sorted(by_reason) == sorted(reason for _, reason in bad)
    for record, (_, reason) in zip(records[1:], bad, strict=True):
        letter = by_reason[reason]
        headers = dict(letter.headers)
        assert letter.value == record.value  # the original bytes, unchanged
        assert letter.key == record.key
        assert headers["dlt.original.topic"] == topics.name(repayments).encode()
        assert int(headers["dlt.original.partition"]) == partition_for(record.key, PARTITIONS)
        assert headers["dlt.original.offset"].decode().isdigit()
        assert headers["dlt.error"]
    assert worker.metric("lineguard_dead_letters_total", reason="too_late") == 1
    assert_no_label_can_hold_a_user_id(worker.samples(), map(topics.name, INPUT_TOPICS))
    assert worker.metric("lineguard_dead_letters_total") == len(bad)


def test_the_wall_clock_sweep_fires_a_quiet_users_timer(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    lines = [purchase("2026-02-01T00:00:00Z", 5000, user="quiet", first_due="2026-02-02T00:00:00Z")]
    asyncio.run(produce(kafka_bootstrap, topics, records_of(lines)))
    worker = start_worker(
        extra_env={"LINEGUARD_CLOCK": "wall", "LINEGUARD_WALL_SWEEP_INTERVAL": "0.5"}
    )
    worker.wait_ready()
    # No later event moves this partition's watermark: only the wall clock can fire the timer.
    online = asyncio.run(consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=1))
    (decision,) = limit_events_by_partition(online).popitem()[1]
    assert decision["caused_by"] == "timer:overdue:2026-02-05T00:00:00Z"
    assert decision["occurred_at"] == "2026-02-05T00:00:00Z"


def test_fausts_table_and_router_views_are_off(
    topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker()
    worker.wait_ready()
    assert worker.get("/table/")[0] == 404
    assert worker.get("/router/")[0] == 404
    assert worker.get("/healthz")[0] == 200


@pytest.mark.skipif(
    not os.environ.get("LINEGUARD_TEST_BOOTSTRAP"),
    reason="exactly-once needs transactions: Tansu rejects aiokafka's InitProducerId v0 and"
    " never lists aborted transactions (see the README's Development broker section)",
)
def test_exactly_once_gives_the_replayed_decisions_on_real_kafka(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    records = records_of(rule_scenarios() + watermark_tail("2026-09-01T00:00:00Z"))
    asyncio.run(produce(kafka_bootstrap, topics, records))
    worker = start_worker(extra_env={"LINEGUARD_PROCESSING_GUARANTEE": "exactly_once"})
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 120, "all records")
    expected = replay_by_partition(records)
    online = asyncio.run(consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=16))
    assert limit_events_by_partition(online) == expected


def test_the_worker_refuses_input_topics_that_are_not_co_partitioned(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS, {"credit.repayments.v1": 5}))
    worker = start_worker()
    assert worker.process is not None
    assert worker.process.wait(60) == 3
    assert "must have the same number of partitions" in worker.log()
    assert f"{topics.name('credit.repayments.v1')}: 5" in worker.log()
