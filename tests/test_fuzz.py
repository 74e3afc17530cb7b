"""Fuzzed input through the decoder and the core path: no crash, and every record accounted for.

A seeded corpus of 100,000 hostile and valid records (``hostile.Forge``) goes through
:func:`risk.contract.decode` and through a :class:`~risk.group.PartitionGroup`, the path
both the worker and replay take. Hypothesis adds shrinkable examples of the same forge and
arbitrary bytes and JSON. Every record must be processed, a duplicate, or dead-lettered with
a known reason, and each kind only in the ways the contract allows.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import pytest
from hostile import ANY_DECODE, EVENT, NOW, POLICY, Forge, Fuzzed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

from risk.contract import Event, Reason, Rejection, decode
from risk.group import PartitionGroup, never_more
from risk.partition import Outcome
from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS, InputRecord
from risk.state import UserState

from builders import application

__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

CORPUS_SIZE = 100_000
CHUNK = 1_000
"""Records pushed between drains: the merge then sees several topics' records at a time."""


def _decoded_label(result: Event | Rejection) -> str:
    return str(result.reason) if isinstance(result, Rejection) else EVENT


def _run_core(records: list[Fuzzed]) -> tuple[Counter[str], dict[str, UserState]]:
    """Push the records through one partition group in chunks; check each outcome."""
    store: dict[str, UserState] = {}
    group: PartitionGroup[int] = PartitionGroup(POLICY, store, 5)
    outcomes: Counter[str] = Counter()
    seen: set[int] = set()
    for start in range(0, len(records), CHUNK):
        for index in range(start, min(start + CHUNK, len(records))):
            record = records[index]
            group.push(record.topic, record.key, record.value, index)
        for applied in group.drain(never_more, NOW):
            record = records[applied.record]
            assert applied.record not in seen, "a record was applied twice"
            seen.add(applied.record)
            if applied.outcome is Outcome.DEAD_LETTERED:
                assert applied.rejection is not None
                assert applied.rejection.reason in Reason
                label = str(applied.rejection.reason)
            else:
                assert applied.rejection is None
                label = str(applied.outcome)
            assert label in record.outcome, (record.kind, label, record.value)
            outcomes[str(applied.outcome)] += 1
            for decision in applied.decisions:
                orjson.loads(decision.to_json(NOW))  # what the worker sends must serialise
        watermark = group.processor.watermark
        assert watermark is None or watermark <= NOW + POLICY.max_future_skew
    assert len(group) == 0
    assert len(seen) == len(records), "a record was neither processed nor dead-lettered"
    return outcomes, store


@pytest.fixture(scope="module")
def corpus() -> list[Fuzzed]:
    return list(Forge(random.Random(20261128)).corpus(CORPUS_SIZE))


def test_the_corpus_covers_every_kind_of_hostile_record(corpus: list[Fuzzed]) -> None:
    kinds = Counter(record.kind for record in corpus)
    assert len(corpus) >= 100_000
    assert set(kinds) == {
        "valid", "redelivery", "random_bytes", "truncated", "mutated", "wrong_type",
        "huge_number", "deep_unknown", "deep_required", "non_utf8", "bad_timestamp",
        "far_past", "pre_epoch", "far_future", "odd_due_date", "key_mismatch", "tombstone",
        "too_large", "wrong_shape",
    }  # fmt: skip
    assert min(kinds.values()) > 500
    assert {record.topic for record in corpus} == set(range(5))


def test_the_decoder_never_raises_and_rejects_each_kind_for_its_reason(
    corpus: list[Fuzzed],
) -> None:
    labels: Counter[str] = Counter()
    for record in corpus:
        label = _decoded_label(decode(record.topic, record.key, record.value, 65536))
        assert label in record.decoded, (record.kind, label, record.value)
        labels[label] += 1
    # Every reason the decoder owns occurs, and so do events.
    assert set(labels) == {EVENT, "too_large", "invalid_json", "schema_violation", "key_mismatch"}


def test_the_core_path_accounts_for_every_record(corpus: list[Fuzzed]) -> None:
    outcomes, store = _run_core(corpus)
    assert sum(outcomes.values()) == len(corpus)
    assert outcomes["processed"] + outcomes["duplicate"] + outcomes["dead_lettered"] == len(corpus)
    assert min(outcomes.values()) > 1000
    # Valid users' states exist, and none of them was moved past the future bound.
    assert {f"s-{n}" for n in range(200)} <= set(store)
    assert all(state.clock <= NOW + POLICY.max_future_skew for state in store.values())


_fuzz_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_fuzz_settings
@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=120))
def test_generated_batches_are_accounted_for(rng: random.Random, size: int) -> None:
    records = list(Forge(rng, steady_users=3, target_users=3).corpus(size))
    for record in records:
        label = _decoded_label(decode(record.topic, record.key, record.value, 65536))
        assert label in record.decoded
    _run_core(records)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
"""Arbitrary JSON, with the contract's field names more likely than chance would make them."""
field_names = st.sampled_from(
    ["event_id", "user_id", "occurred_at", "amount", "order_id", "installments", "first_due_at",
     "requested_amount", "declared_monthly_income", "verified_monthly_income", "source",
     "action", "operator", "note", "term_months", "channel"]
)  # fmt: skip


@_fuzz_settings
@given(
    st.integers(min_value=0, max_value=4),
    st.one_of(st.none(), st.binary(max_size=70)),
    st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=12),
)
def test_any_json_object_decodes_to_an_event_or_a_known_rejection(
    topic: int, key: bytes | None, doc: dict[str, Any]
) -> None:
    value = msgspec.json.encode(doc)
    result = decode(topic, key, value, 65536)
    assert _decoded_label(result) in ANY_DECODE
    if not isinstance(result, Rejection):
        assert key == result.user_id.encode()


@_fuzz_settings
@given(st.integers(min_value=0, max_value=4), st.binary(max_size=400))
def test_any_bytes_decode_to_a_known_rejection(topic: int, value: bytes) -> None:
    result = decode(topic, b"u-1", value, 65536)
    assert isinstance(result, Rejection)
    assert result.reason in {Reason.INVALID_JSON, Reason.SCHEMA_VIOLATION}


DEEP = 5_000
"""Nesting levels: 10 KB of brackets, well under the 64 KiB record limit."""


@pytest.mark.parametrize("topic", range(5))
def test_json_nested_deeper_than_the_stack_is_rejected(topic: int) -> None:
    nested = b"[" * DEEP + b"]" * DEEP
    for value in (
        nested,
        b'{"event_id":' + nested + b"}",
        b'{"event_id":"e-1","user_id":"u-1","occurred_at":"2026-01-01T00:00:00Z","x":'
        + nested + b"}",
    ):  # fmt: skip
        result = decode(topic, b"u-1", value, 65536)
        assert _decoded_label(result) in ANY_DECODE


def _burst_after(lines_at: str, partitions: int) -> list[dict[str, Any]]:
    """Three small applications by a new user on each partition: a freeze each, if not stalled."""
    burst = []
    for partition in range(partitions):
        user = next(
            f"burst-{n}"
            for n in range(1000)
            if partition_for(f"burst-{n}".encode(), partitions) == partition
        )
        burst += [application(f"{lines_at}T0{h}:00:00Z", 50_000, user=user) for h in range(3)]
    return burst


@pytest.mark.integration
def test_a_batch_of_malformed_records_does_not_stall_the_worker(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    hostile = [
        r for r in Forge(random.Random(7)).corpus(1500) if r.kind not in ("valid", "redelivery")
    ]
    records = [
        InputRecord(n, INPUT_TOPICS[r.topic], r.key, r.value) for n, r in enumerate(hostile[:400])
    ]
    records += records_of(_burst_after("2026-02-01", PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    worker = start_worker()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 120, "every record")
    stored = asyncio.run(read_back(kafka_bootstrap, topics))
    expected = replay_by_partition(stored)
    total = sum(map(len, expected.values()))
    online = asyncio.run(
        consume_all(kafka_bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=60)
    )
    assert limit_events_by_partition(online) == expected
    frozen = {
        d["user_id"] for docs in expected.values() for d in docs if d["type"] == "limit.freeze"
    }
    assert {f"burst-{n}" for n in range(1000)} & frozen == {
        r.key.decode() for r in records if r.key and r.key.startswith(b"burst-")
    }
    dead = worker.metric("lineguard_dead_letters_total")
    assert dead == worker.metric("lineguard_events_total", outcome="dead_lettered") > 300


@pytest.mark.integration
def test_the_worker_dead_letters_json_nested_deeper_than_the_stack(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    nested = b"[" * DEEP + b"]" * DEEP
    deep = (
        b'{"event_id":"r-deep","user_id":"u-1","occurred_at":"2026-05-01T00:00:00Z",'
        b'"amount":1,"x":' + nested + b"}"
    )  # fmt: skip
    records = [InputRecord(1, INPUT_TOPICS[1], b"u-1", deep)]
    records += records_of([application("2026-05-01T01:00:00Z", 50_000, user="u-1")])
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    worker = start_worker()
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total", outcome="processed") >= 1, 60,
             "the valid record")  # fmt: skip
    assert worker.metric("lineguard_dead_letters_total", reason="invalid_json") == 1
