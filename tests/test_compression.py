"""Compressed record batches: producers in any language may compress what they send.

Java, Go and librdkafka producers often set ``compression.type``; aiokafka reads snappy,
lz4 and zstd batches only with ``cramjam`` installed, and without it the worker stopped on
the first such batch, again after every restart.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    limit_events_by_partition,
    produce,
    wait_for,
)

from risk.partitioner import partition_for
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, InputRecord, parse_records, replay

from builders import application, override, purchase, repayment, verification

CODECS = ["gzip", "snappy", "lz4", "zstd"]
"""Every codec Kafka has; the development broker, Tansu 0.6.0, stores and serves each."""
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
"""The codec's number in a record batch's attributes."""
REPAYMENTS = "credit.repayments.v1"

__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker


def scenario() -> list[InputRecord]:
    """Records on all five input topics that each lead to decisions, and one dead letter."""
    due = "2026-03-01T00:00:00Z"
    lines = [
        purchase("2026-02-01T00:00:00Z", 35000, user="od", first_due=due),
        repayment("2026-03-04T00:00:00Z", 35000, user="od"),
        purchase("2026-02-01T00:00:00Z", 35000, user="ver", order="v0", first_due=due),
        repayment("2026-03-11T00:00:00Z", 35000, user="ver"),
        verification("2026-03-21T00:00:00Z", 900_000, user="ver", source="employer"),
        override("2026-02-10T00:00:00Z", "freeze", user="ops", note="identity check"),
        override("2026-02-20T00:00:00Z", "restore", user="ops", note="identity confirmed"),
        *[application(f"2026-05-0{d}T10:00:00Z", 500_000, user="vel") for d in range(1, 6)],
        # Three of the five applications that freeze a line within a week, in each test.
        *[application(f"2026-08-{d}T10:00:00Z", 500_000, user="vel-2") for d in (28, 29, 30)],
        {
            "topic": REPAYMENTS,
            "key": "bad",
            "value": {"event_id": "f", "user_id": "bad", "occurred_at": due, "amount": 1.0},
        },
    ]
    # One late event per partition, so that every partition's watermark passes the timers.
    for partition in range(PARTITIONS):
        user = next(
            f"tail-{n}" for n in range(1000) if partition_for(f"tail-{n}".encode(), PARTITIONS) == partition
        )  # fmt: skip
        lines.append(application("2026-09-01T00:00:00Z", 500_000, user=user))
    return list(parse_records([orjson.dumps(line) for line in lines]))


def replayed(records: list[InputRecord]) -> dict[int, list[dict[str, Any]]]:
    """The limit events `lineguard replay` gives for ``records``, by partition."""
    result = replay(records, load_policy(), partitions=PARTITIONS, now=time.time_ns() // 1000)
    out: dict[int, list[dict[str, Any]]] = {}
    for decision in result.decisions:
        doc = orjson.loads(decision.to_json(0))
        doc.pop("decided_at")
        out.setdefault(partition_for(decision.user_id.encode(), PARTITIONS), []).append(doc)
    return out


def bad_record(records: list[InputRecord]) -> InputRecord:
    """The scenario's one record that goes to a dead-letter topic."""
    return next(record for record in records if record.key == b"bad")


async def stored_codecs(bootstrap: str, topic: str) -> set[int]:
    """The codec numbers of the record batches the broker serves for ``topic``.

    Read from the batches' headers, as fetched, without decompressing them: a consumer
    decompresses transparently, so only this shows that the batches are compressed.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        client: Any = consumer._client
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        leader = client.cluster.leader_for_partition
        codecs: set[int] = set()
        for partition in partitions:
            request = FetchRequest(100, 1, 1 << 20, 0, [(topic, [(partition, 0, 1 << 20)])])
            response = await client.send(leader(TopicPartition(topic, partition)), request)
            for _, answers in response.topics:
                for _, error_code, *_, raw in answers:
                    assert error_code == 0, error_code
                    records = MemoryRecords(raw)
                    while records.has_next():
                        codecs.add(records.next_batch().compression_type)
        return codecs
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.parametrize("codec", CODECS)
def test_the_worker_applies_every_record_of_compressed_input_batches(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker], codec: str
) -> None:
    records = scenario()
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS, codec))
    for contract_topic in INPUT_TOPICS:
        stored = asyncio.run(stored_codecs(kafka_bootstrap, topics.name(contract_topic)))
        assert stored == {CODEC_IDS[codec]}, contract_topic
    worker = start_worker()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "all records")
    expected = replayed(records)
    total = sum(map(len, expected.values()))
    codes = {r["code"] for docs in expected.values() for d in docs for r in d["reasons"]}
    # A decision that a record of each input topic caused or changed.
    assert codes >= {
        "OVERDUE_ACTIVE", "REPAID_AND_CURED", "LOAN_VELOCITY", "INCOME_VERIFIED", "MANUAL_OVERRIDE",
    }  # fmt: skip
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=30)
    )
    assert limit_events_by_partition(online) == expected
    dlt = asyncio.run(consume_all(kafka_bootstrap, topics.name(REPAYMENTS) + ".dlt", expected=1))
    (letter,) = [m for messages in dlt.values() for m in messages]
    assert letter.value == bad_record(records).value
    assert dict(letter.headers)["dlt.reason"] == b"schema_violation"
    assert worker.process is not None and worker.process.poll() is None, worker.log()


@pytest.mark.integration
@pytest.mark.parametrize("codec", CODECS)
def test_producer_compression_compresses_what_the_worker_writes_and_it_is_read_back(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker], codec: str
) -> None:
    records = scenario()
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    setting = {"LINEGUARD_PRODUCER_COMPRESSION": codec}
    worker = start_worker(extra_env=setting)
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "all records")
    expected = replayed(records)
    total = sum(map(len, expected.values()))
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=30)
    )
    assert limit_events_by_partition(online) == expected
    dlt = asyncio.run(consume_all(kafka_bootstrap, topics.name(REPAYMENTS) + ".dlt", expected=1))
    (letter,) = [m for messages in dlt.values() for m in messages]
    assert letter.value == bad_record(records).value
    changelog = f"{topics.prefix}-users-changelog"
    for topic in (topics.name(LIMIT_TOPIC), topics.name(REPAYMENTS) + ".dlt", changelog):
        assert asyncio.run(stored_codecs(kafka_bootstrap, topic)) == {CODEC_IDS[codec]}, topic
    worker.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log()

    # A new worker recovers the states from the compressed changelog: two more applications
    # freeze the line only if it knows the three before them.
    lines = [application(f"2026-09-0{d}T10:00:00Z", 500_000, user="vel-2") for d in (2, 3)]
    later = list(parse_records([orjson.dumps(line) for line in lines]))
    asyncio.run(produce(kafka_bootstrap, topics, later, PARTITIONS))
    expected = replayed([*records, *later])
    caused = {d["caused_by"]: d["type"] for docs in expected.values() for d in docs}
    assert caused[lines[-1]["value"]["event_id"]] == "limit.freeze"
    successor = start_worker(extra_env=setting)
    successor.wait_ready()
    wait_for(lambda: successor.metric("lineguard_events_total") >= 2, 60, "the later records")
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total + 1, wait_seconds=30)
    )
    assert limit_events_by_partition(online) == expected


def fausts_compression(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The compression type the worker's app gives Faust's producer, with ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    return subprocess.run(
        [sys.executable, "-c", "from streams.app import app; print(app.conf.producer_compression_type)"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_worker_compresses_nothing_unless_told() -> None:
    done = fausts_compression({})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


def test_a_codec_kafka_does_not_have_stops_start_up_naming_the_variable() -> None:
    done = fausts_compression({"LINEGUARD_PRODUCER_COMPRESSION": "brotli"})
    assert done.returncode == 2
    assert "LINEGUARD_PRODUCER_COMPRESSION" in done.stderr
    assert "'none', 'gzip', 'snappy', 'lz4' or 'zstd'" in done.stderr
    assert "Traceback" not in done.stderr
