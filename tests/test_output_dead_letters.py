"""Dead letters as an SRE reads them off ``<input>.dlt`` with a plain consumer, to replay them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from test_dead_letter_size import REJECTION, RefusingProducer, _record, _runtime
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import Topics, Worker, consume_all, create_topics, wait_for

from risk.policy import load_policy
from risk.replay import InputRecord, replay
from streams.runtime import TRUNCATED_HEADER, Runtime

__all__ = ["start_worker", "topics"]
pytestmark = pytest.mark.integration

REPAYMENTS = "credit.repayments.v1"
OVERRIDES = "credit.limit-overrides.v1"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
GOOD = {"event_id": "r-ok", "user_id": "u-1", "occurred_at": "2026-03-10T00:00:00Z", "amount": 1}
DLT_HEADERS = ["dlt.original.topic", "dlt.original.partition", "dlt.original.offset",
               "dlt.reason", "dlt.error"]  # fmt: skip

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]


async def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key, headers=headers)
                for key, value, headers in records]  # fmt: skip
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _run(kafka_bootstrap: str, topics: Topics, start: Callable[..., Worker],
         records: list[Record], topic: str = REPAYMENTS) -> list[object]:  # fmt: skip
    """Produce ``records`` to ``topic``, run a worker, read the dead letters: all but the first."""
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    asyncio.run(_produce(kafka_bootstrap, topics.name(topic), records))
    worker = start()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "all records")
    dlt = asyncio.run(consume_all(kafka_bootstrap, topics.name(topic) + ".dlt",
                                  expected=len(records) - 1))  # fmt: skip
    return sorted((m for messages in dlt.values() for m in messages),
                  key=lambda m: int(dict(m.headers)["dlt.original.offset"]))  # fmt: skip


def test_a_dead_letter_keeps_the_original_records_headers(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    trace = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
             ("producer", b"core-banking"), ("binary", b"\xff\x00\xfe"), ("empty", None)]  # fmt: skip
    # A record an SRE re-published from a .dlt topic with its headers: its old dlt.* headers
    # say why it failed before, not now, and must not stand beside the new ones.
    replayed = [*trace, ("dlt.reason", b"too_late"), ("dlt.error", b"old"),
                ("dlt.original.offset", b"7")]  # fmt: skip
    records: list[Record] = [
        (b"u-1", orjson.dumps(GOOD), trace),
        (b"u-1", b"{not json", trace),
        (b"u-1", b"\xff\xfe binary", trace[:1]),
        (b"u-2", orjson.dumps({**GOOD, "event_id": "k"}), trace),
        (b"u-1", orjson.dumps({**GOOD, "event_id": "s", "amount": 0}), replayed),
    ]
    letters = _run(kafka_bootstrap, topics, start_worker, records)
    assert len(letters) == len(records) - 1
    for letter, (key, value, headers) in zip(letters, records[1:], strict=True):
        assert (letter.key, letter.value) == (key, value)  # type: ignore[attr-defined]
        names = [name for name, _ in letter.headers]  # type: ignore[attr-defined]
        assert names[: len(DLT_HEADERS)] == DLT_HEADERS
        kept = [h for h in headers if not h[0].startswith("dlt.")]
        assert list(letter.headers)[len(DLT_HEADERS) :] == kept  # type: ignore[attr-defined]
    last = dict(letters[-1].headers)  # type: ignore[attr-defined]
    assert last["dlt.reason"] == b"schema_violation"


def test_dlt_error_is_the_replay_error_cut_where_the_contract_says(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    asyncapi = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text("utf-8"))
    header = asyncapi["components"]["messages"]["deadLetter"]["headers"]["properties"]["dlt.error"]
    limit = header["maxLength"]
    schema = orjson.loads((SCHEMAS / "dead-letter.v1.schema.json").read_bytes())
    assert f"first {limit} characters" in schema["properties"]["error"]["description"]
    override = {"event_id": "o-1", "user_id": "u-1", "occurred_at": "2026-03-10T00:00:00Z",
                "operator": "op-7", "note": "n"}  # fmt: skip
    records: list[Record] = [
        (b"u-1", orjson.dumps({**override, "action": "freeze"}), []),
        # msgspec quotes an enum's value in its error: here 2,000 characters of it
        (b"u-1", orjson.dumps({**override, "event_id": "o-2", "action": "é" * 2_000}), []),
        (b"u-1", orjson.dumps({**override, "event_id": "o-3", "action": "thaw"}), []),
    ]
    letters = _run(kafka_bootstrap, topics, start_worker, records, OVERRIDES)
    offline = replay([InputRecord(n, OVERRIDES, k, v) for n, (k, v, _) in enumerate(records, 1)],
                     load_policy(), partitions=PARTITIONS, now=time.time_ns() // 1000)  # fmt: skip
    errors = [letter["error"] for letter in offline.dead_letters]
    assert len(errors[0]) > limit >= len(errors[1])
    online = [dict(m.headers)["dlt.error"].decode() for m in letters]  # type: ignore[attr-defined]
    assert online == [error[:limit] for error in errors]


async def test_a_dead_letter_sent_with_a_note_leaves_the_records_own_headers_out() -> None:
    """The note stands in for a dead letter too large to send: it must fit whatever came.

    The record's own headers count in its size, and may be what made it too large.
    """
    producer = RefusingProducer(MessageSizeTooLargeError())
    record = _record(b"{}")
    record.headers = [("blob", b"x" * 2_000_000)]
    sent = await Runtime._dead_letter(_runtime("dlt"), producer, record, 0, REJECTION)  # type: ignore[arg-type]
    assert await sent == "dlt"
    (_, first), (note, headers) = producer.sent
    assert first[len(DLT_HEADERS) :] == record.headers
    assert note.startswith(b"value of 2 bytes not kept")  # type: ignore[union-attr]
    assert headers == [*first[: len(DLT_HEADERS)], (TRUNCATED_HEADER, b"2")]
