"""What a consumer in any language reads off a real worker's output topics.

A plain aiokafka consumer reads every limit event and dead letter a worker wrote for input
on all five topics, good and bad, and checks each against what the consumer codes against:
the JSON Schemas (integers as integer tokens, formats asserted), the AsyncAPI document's
keys and headers, and the README's word on partitions, ids and times.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator
from test_decisions_match_the_schema import VALIDATORS
from test_worker import (
    PARTITIONS,
    graduated_policy,
    graduated_scenarios,
    records_of,
    replay_by_partition,
    rule_scenarios,
    start_worker,
    topics,
    watermark_tail,
)
from worker_harness import LIMIT_TOPIC, Topics, Worker, consume_all, create_topics, wait_for

from risk.partitioner import partition_for
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS

__all__ = ["start_worker", "topics"]
pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
WRITTEN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,5}[1-9])?Z")
"""A time as the limit-event schema says lineguard writes it (``$defs/utc_timestamp``)."""
TRACE = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


def _bad_records() -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, reason): a record of every kind a worker dead-letters."""
    purchases, repayments, applications, verifications, overrides = INPUT_TOPICS
    common = {"user_id": "dl-1", "occurred_at": "2026-03-10T00:00:00Z"}

    def value(event_id: str, **fields: Any) -> bytes:
        return orjson.dumps({"event_id": event_id, **common, **fields})

    return [
        (purchases, b"dl-1", b"{not json", "invalid_json"),
        (repayments, b"dl-1", b"\xff\xfe\x00 not UTF-8", "invalid_json"),
        (repayments, b"dl-1", None, "invalid_json"),
        (applications, b"dl-1", value("b-0", requested_amount=1.0), "schema_violation"),
        (verifications, b"dl-2", value("b-1", verified_monthly_income=5, source="payslip"),
         "key_mismatch"),
        (overrides, b"\xffdl-1", value("b-2", action="freeze", operator="o", note="n"),
         "key_mismatch"),
        (repayments, b"dl-1", value("b-3", amount=2**53), "schema_violation"),
        (repayments, b"dl-1", value("b-4", amount=1, pad="x" * 70_000), "too_large"),
        (repayments, b"dl-1", value("b-5", amount=1, occurred_at="2099-01-01T00:00:00Z"),
         "in_future"),
    ]  # fmt: skip


async def _produce(bootstrap: str, topics: Topics,
                   records: list[tuple[str, bytes | None, bytes | None]]) -> None:  # fmt: skip
    """Send in order, each record with a trace header as producers add them."""
    await create_topics(bootstrap, topics, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topics.name(topic), value, key=key, headers=TRACE)
                for topic, key, value in records]  # fmt: skip
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_every_output_record_is_what_the_contract_says(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    policy_file = graduated_policy(tmp_path)
    good = records_of(
        rule_scenarios() + graduated_scenarios() + watermark_tail("2026-09-01T00:00:00Z")
    )
    bad = _bad_records()
    # The bad records go after the good ones: dead-lettered, they move no watermark.
    inputs = [(r.topic, r.key, r.value) for r in good] + [(t, k, v) for t, k, v, _ in bad]
    asyncio.run(_produce(kafka_bootstrap, topics, inputs))
    worker = start_worker(extra_env={"LINEGUARD_POLICY_FILE": str(policy_file)})
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(inputs), 60, "all records")

    expected = replay_by_partition(good, load_policy(policy_file))
    total = sum(map(len, expected.values()))
    online = asyncio.run(consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total))
    ids: list[str] = []
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for partition, messages in online.items():
        for message in messages:
            doc = orjson.loads(message.value)
            for validator in VALIDATORS:  # integer tokens, uuid and date-time asserted
                assert [e.message for e in validator.iter_errors(doc)] == [], doc
            assert message.key == doc["user_id"].encode()
            assert partition == partition_for(message.key, PARTITIONS)
            times = [doc["occurred_at"], doc["decided_at"], doc["features"]["cure_ends_at"]]
            assert all(WRITTEN_TIME.fullmatch(t) for t in times if t is not None), times
            ids.append(doc["event_id"])
            del doc["decided_at"]
            by_partition.setdefault(partition, []).append(doc)
    assert by_partition == expected  # each user's decisions on one partition, in replay's order
    assert len(set(ids)) == len(ids) == total > 20

    asyncapi = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text("utf-8"))
    headers_schema = asyncapi["components"]["messages"]["deadLetter"]["headers"]
    check_headers = Draft202012Validator(headers_schema)
    input_partitions = {(t, k, v): p for p, (t, k, v) in _partitions_of(kafka_bootstrap, topics)}
    letters = {
        topic: [m for messages in asyncio.run(consume_all(
            kafka_bootstrap, topics.name(topic) + ".dlt", settle=1.5)).values() for m in messages]
        for topic in {topic for topic, *_ in bad}
    }  # fmt: skip
    for topic, key, value, reason in bad:
        (letter,) = [m for m in letters[topic] if (m.key, m.value) == (key, value)]
        dlt = {name: v.decode() for name, v in letter.headers if name.startswith("dlt.")}
        assert [e.message for e in check_headers.iter_errors(dlt)] == []
        assert dlt["dlt.reason"] == reason
        assert dlt["dlt.original.topic"] == topics.name(topic)
        assert int(dlt["dlt.original.partition"]) == letter.partition
        assert letter.partition == input_partitions[topic, key, value]
        assert [h for h in letter.headers if not h[0].startswith("dlt.")] == TRACE


def _partitions_of(
    bootstrap: str, topics: Topics
) -> list[tuple[int, tuple[str, bytes | None, bytes | None]]]:
    """Where each input record landed (a record without a key anywhere)."""
    stored = []
    for topic in INPUT_TOPICS:
        for partition, messages in asyncio.run(
            consume_all(bootstrap, topics.name(topic), settle=1.5)
        ).items():
            stored += [(partition, (topic, m.key, m.value)) for m in messages]
    return stored
