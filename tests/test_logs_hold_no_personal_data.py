"""At INFO, a worker's log carries no user id, no amount and no raw payload.

One worker runs over processed records, decisions and every kind of dead letter, and its
whole log is searched. Every personal string of the run (user ids, order and merchant ids,
the operator and the note of an override, markers inside malformed records) carries one
random tag, so a single search finds any of them, and the amounts are numbers that nothing
else in a log would print.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_worker import PARTITIONS, records_of
from worker_harness import Topics, Worker, produce, wait_for

from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS

from builders import application, override, purchase, repayment

pytestmark = pytest.mark.integration

AMOUNTS = (7_310_417, 93_417, 4_718_293)
"""A purchase and its repayment, a small loan application, a declared income."""
FORBIDDEN_FIELDS = {"user_id", "key", "value", "amount", "requested_amount", "features", "note"}


@dataclass(frozen=True)
class Run:
    """What one worker logged, and the tags its personal data carried."""

    log: str
    tag: str
    embedded_tag: str
    records: int


def _id() -> str:
    return f"evt-{uuid.uuid4().hex}"


def _lines(tag: str, embedded_tag: str) -> list[dict[str, Any]]:
    purchase_amount, small_loan, income = AMOUNTS
    late, burst, ops = f"pii{tag}-late", f"pii{tag}-burst", f"pii{tag}-ops"
    embedded = f"pii{embedded_tag}-embedded"
    good = {
        "event_id": _id(),
        "user_id": late,
        "occurred_at": "2026-03-10T00:00:00Z",
        "amount": purchase_amount,
    }
    repayments = INPUT_TOPICS[1]
    lines = [
        # a freeze by an overdue timer, and a restore caused by the repayment's event id
        purchase(
            "2026-02-01T00:00:00Z",
            purchase_amount,
            user=late,
            order=f"pii{tag}-order",
            first_due="2026-03-01T00:00:00Z",
            event_id=_id(),
        ),
        repayment("2026-03-06T00:00:00Z", purchase_amount, user=late, event_id=_id()),
        # a burst of small applications, with a declared income
        *[
            application(
                f"2026-05-01T1{h}:00:00Z",
                small_loan,
                user=burst,
                income=income,
                channel=f"pii{tag}-channel",
                event_id=_id(),
            )
            for h in range(3)
        ],
        # an operator's freeze: the operator and the note are personal too
        override(
            "2026-02-10T00:00:00Z",
            "freeze",
            user=ops,
            operator=f"pii{tag}-operator",
            note=f"pii{tag}-note: customer disputes",
            event_id=_id(),
        ),
        # a producer whose event ids carry the user id, as the contract allows
        *[
            application(
                f"2026-05-01T1{h}:00:00Z",
                small_loan,
                user=embedded,
                event_id=f"{embedded}:application:{h}",
            )
            for h in range(3)
        ],
        # one dead letter of every reason, each with personal data in it
        {"topic": repayments, "key": late, "value": good},
        {"topic": repayments, "key": late, "value": f'{{"user_id": "{late}", not json'},
        {
            "topic": repayments,
            "key": late,
            "value": {**good, "event_id": _id(), "amount": float(purchase_amount)},
        },
        {"topic": repayments, "key": f"pii{tag}-other", "value": {**good, "event_id": _id()}},
        {
            "topic": repayments,
            "key": late,
            "value": {**good, "event_id": _id(), "occurred_at": "2026-02-01T00:00:00Z"},
        },
        {
            "topic": repayments,
            "key": late,
            "value": {**good, "event_id": _id(), "pad": f"pii{tag}-" * 6000},
        },
        {
            "topic": repayments,
            "key": late,
            "value": {**good, "event_id": _id(), "occurred_at": "2099-01-01T00:00:00Z"},
        },
    ]
    # One late application per partition moves every watermark past the timers above.
    for partition in range(PARTITIONS):
        user = next(
            user
            for n in range(1000)
            if partition_for((user := f"pii{tag}-tail-{n}").encode(), PARTITIONS) == partition
        )
        lines.append(application("2026-09-01T00:00:00Z", 500_000, user=user, event_id=_id()))
    return lines


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tag, embedded_tag = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    records = records_of(_lines(tag, embedded_tag))
    topics = Topics(f"t{uuid.uuid4().hex[:8]}")
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    workdir = tmp_path_factory.mktemp("logs")
    worker = Worker(kafka_bootstrap, topics, workdir, PARTITIONS)
    try:
        worker.start().wait_ready()
        wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 60, "records")
        wait_for(lambda: worker.metric("lineguard_dead_letters_total") >= 6, 30, "dead letters")
        wait_for(lambda: worker.metric("lineguard_decisions_total") >= 5, 30, "decisions")
    finally:
        worker.stop()
    log = Path(workdir / f"worker-{worker.port}.log").read_text(errors="replace")
    yield Run(log, tag, embedded_tag, len(records))


def _events(log: str) -> list[dict[str, Any]]:
    """The structured (JSON) log events among Faust's plain log lines."""
    events = []
    for line in log.splitlines():
        start = line.find('{"')
        if start >= 0:
            try:
                events.append(orjson.loads(line[start:]))
            except orjson.JSONDecodeError:
                continue
    return events


def test_the_log_saw_decisions_and_every_dead_letter_at_info(run: Run) -> None:
    names = [event.get("event") for event in _events(run.log)]
    assert names.count("limit_decision") >= 5
    assert names.count("dead_letter") == 6
    assert {e["reason"] for e in _events(run.log) if e.get("event") == "dead_letter"} == {
        "invalid_json",
        "schema_violation",
        "key_mismatch",
        "too_late",
        "too_large",
        "in_future",
    }


def test_no_user_id_raw_payload_or_personal_field_reaches_the_log(run: Run) -> None:
    assert f"pii{run.tag}" not in run.log
    assert '"user_id"' not in run.log
    for event in _events(run.log):
        assert not FORBIDDEN_FIELDS & event.keys(), event


def test_no_amount_reaches_the_log(run: Run) -> None:
    for amount in AMOUNTS:
        assert not re.search(rf"(?<!\d){amount}(?!\d)", run.log), amount


def test_an_event_id_built_from_the_user_id_does_not_bring_it_into_the_log(run: Run) -> None:
    assert f"pii{run.embedded_tag}" not in run.log
