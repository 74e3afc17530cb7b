"""The persona simulator: contract-valid, deterministic traffic whose personas behave as documented."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from risk.contract import Reason, Rejection, decode
from risk.decision import FREEZE, RESTORE, Decision
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, InputRecord, ReplayResult, replay
from streams.simulate import (
    Persona,
    SimRecord,
    SimulatedClock,
    SimulationStats,
    Simulator,
    run_simulation,
)

from builders import ts

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = (
    "purchase.v1.schema.json",
    "repayment.v1.schema.json",
    "loan-application.v1.schema.json",
    "income-verification.v1.schema.json",
    "limit-override.v1.schema.json",
)
START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_RECORD_BYTES = 65536
PARTITIONS = 3


def generate(
    count: int,
    *,
    users: int = 40,
    seed: int = 7,
    step: timedelta = timedelta(minutes=30),
    invalid_fraction: float = 0.005,
) -> list[SimRecord]:
    simulator = Simulator(users, seed, invalid_fraction=invalid_fraction)
    return [simulator.next_record(START + index * step) for index in range(count)]


def occurred_at(record: SimRecord) -> int:
    return ts(orjson.loads(record.value)["occurred_at"])


# --- the pure generator -------------------------------------------------------------------


def test_the_same_seed_gives_the_same_records() -> None:
    assert generate(2000) == generate(2000)
    assert generate(200) != generate(200, seed=8)


def test_valid_records_decode_and_follow_the_published_schemas() -> None:
    validators = [
        jsonschema.Draft202012Validator(
            json.loads((SCHEMAS / name).read_text()),
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        for name in SCHEMA_FILES
    ]
    records = [record for record in generate(3000) if record.valid]
    event_ids = set()
    for record in records:
        index = INPUT_TOPICS.index(record.topic)
        assert not isinstance(decode(index, record.key, record.value, MAX_RECORD_BYTES), Rejection)
        value = orjson.loads(record.value)
        validators[index].validate(value)
        assert value["user_id"].encode() == record.key
        assert value["occurred_at"].endswith("Z")
        assert "." not in value["occurred_at"]  # planned in whole seconds
        if index == 0:
            assert value["installments"] in {1, 3, 6, 12}
            assert occurred_at(record) < ts(value["first_due_at"])
        event_ids.add(value["event_id"])
    assert len(event_ids) == len(records)


def test_good_payers_repay_a_first_instalment_after_the_purchase_and_before_it_is_due() -> None:
    purchases: dict[str, tuple[int, int]] = {}
    first_repayments: dict[str, int] = {}
    for record in generate(3000, invalid_fraction=0):
        if record.persona is not Persona.GOOD_PAYER:
            continue
        value = orjson.loads(record.value)
        if record.topic == INPUT_TOPICS[0]:
            purchases[value["order_id"]] = (occurred_at(record), ts(value["first_due_at"]))
        else:
            first_repayments.setdefault(value["order_id"], occurred_at(record))
    assert len(first_repayments) > 100
    for order, paid_at in first_repayments.items():
        bought_at, first_due = purchases[order]
        assert bought_at < paid_at < first_due


def test_invalid_records_are_rejected_for_each_planted_reason() -> None:
    records = generate(4000, invalid_fraction=0.05)
    invalid = [record for record in records if not record.valid]
    assert 100 < len(invalid) < 300
    reasons: Counter[Reason] = Counter()
    for record in invalid:
        decoded = decode(
            INPUT_TOPICS.index(record.topic), record.key, record.value, MAX_RECORD_BYTES
        )
        assert isinstance(decoded, Rejection)
        reasons[decoded.reason] += 1
    assert set(reasons) == {Reason.INVALID_JSON, Reason.SCHEMA_VIOLATION, Reason.KEY_MISMATCH}


def test_the_default_fraction_of_invalid_records_is_about_half_a_percent() -> None:
    invalid = sum(not record.valid for record in generate(20_000))
    assert 60 < invalid < 140
    assert all(record.valid for record in generate(2000, invalid_fraction=0))


def test_invalid_records_go_to_topics_in_proportion_to_their_valid_traffic() -> None:
    """So that no topic is mostly dead letters: LineguardDeadLetterRateHigh stays quiet."""
    records = generate(20_000, invalid_fraction=0.05)
    valid = Counter(record.topic for record in records if record.valid)
    invalid = Counter(record.topic for record in records if not record.valid)
    assert set(invalid) <= set(valid)
    assert INPUT_TOPICS[4] not in valid  # no limit override, so none invalid either
    for topic, count in valid.items():
        if count >= 1000:
            assert 0.03 < invalid[topic] / count < 0.07, (topic, invalid[topic], count)
    # the compose stack's own traffic at its default fraction: under 1% on every topic
    compose = generate(20_000, users=2000, seed=1)
    shares = Counter(record.topic for record in compose if not record.valid)
    totals = Counter(record.topic for record in compose)
    assert all(shares[topic] / totals[topic] < 0.01 for topic in shares), (shares, totals)


def test_every_persona_is_present_from_five_users() -> None:
    simulator = Simulator(5, 1)
    assert sorted(simulator.users.values()) == sorted(Persona)
    records = [simulator.next_record(START + index * timedelta(hours=1)) for index in range(2000)]
    assert {record.persona for record in records} == set(Persona)


def test_timestamps_never_pass_the_clock_and_never_go_back() -> None:
    simulator = Simulator(100, 3, invalid_fraction=0)
    previous = 0
    for index in range(3000):
        now = START + index * timedelta(minutes=3)
        at = occurred_at(simulator.next_record(now))
        assert previous <= at <= ts(now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        previous = at


def test_the_simulated_clock_ends_at_the_wall_time_the_run_starts() -> None:
    clock = SimulatedClock.ending_at(START, duration=60, time_scale=14_400)
    assert clock.at(0) == START - timedelta(days=10)
    assert clock.at(30) == START - timedelta(days=5)
    assert clock.at(60) == START


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Simulator(5, 1).next_record(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_stats_summarise_a_run() -> None:
    stats = SimulationStats(START, START)
    for record in generate(50, invalid_fraction=0):
        stats.count(record)
    line = stats.summary()
    assert stats.records == 50
    assert stats.invalid == 0
    assert sum(stats.by_topic.values()) == sum(stats.by_persona.values()) == 50
    assert line.startswith("records=50 invalid=0")


# --- the personas under the default policy ------------------------------------------------


@pytest.fixture(scope="module")
def history() -> tuple[dict[str, Persona], list[SimRecord], ReplayResult]:
    """About 125 simulated days of 40 users, through the same core as the worker."""
    simulator = Simulator(40, 7)
    records = [
        simulator.next_record(START + index * timedelta(minutes=30)) for index in range(6000)
    ]
    inputs = [InputRecord(n, r.topic, r.key, r.value) for n, r in enumerate(records, start=1)]
    last = max(occurred_at(record) for record in records if record.valid)
    result = replay(inputs, load_policy(), partitions=3, until=last, now=ts("2030-01-01T00:00:00Z"))
    return simulator.users, records, result


def by_persona(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult], persona: Persona
) -> dict[str, list[Decision]]:
    users, _, result = history
    decisions: dict[str, list[Decision]] = defaultdict(list)
    for decision in result.decisions:
        decisions[decision.user_id].append(decision)
    chosen = {user: decisions[user] for user, p in users.items() if p is persona}
    assert chosen
    return chosen


def codes(decision: Decision) -> set[str]:
    return {reason.code for reason in decision.reasons}


def alternates(decisions: list[Decision]) -> bool:
    return all(d.type == (FREEZE if i % 2 == 0 else RESTORE) for i, d in enumerate(decisions))


def test_every_record_is_accounted_for(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    _, records, result = history
    assert result.duplicates == 0
    assert result.processed == sum(record.valid for record in records)
    assert result.dead_lettered == sum(not record.valid for record in records) > 0


def test_good_payers_are_never_frozen(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    assert all(not decisions for decisions in by_persona(history, Persona.GOOD_PAYER).values())


def test_occasional_late_payers_get_a_short_freeze_and_a_restore_without_cure(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    for decisions in by_persona(history, Persona.OCCASIONAL_LATE).values():
        assert decisions
        assert alternates(decisions)
        assert decisions[-1].type == RESTORE
        for freeze, restore in zip(decisions[::2], decisions[1::2], strict=True):
            assert codes(freeze) == {"OVERDUE_ACTIVE"}
            assert freeze.caused_by.startswith("timer:overdue:")
            assert codes(restore) == {"REPAID_AND_CURED"}
            assert not restore.caused_by.startswith("timer:")  # restored by the repayment itself
            assert restore.features["max_dpd"] == 0
            assert timedelta(days=0) < _span(freeze, restore) < timedelta(days=1)


def test_chronic_defaulters_are_cured_once_then_stay_frozen(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    for decisions in by_persona(history, Persona.CHRONIC_DEFAULTER).values():
        assert [d.type for d in decisions] == [FREEZE, RESTORE, FREEZE]
        assert all(codes(d) == {"OVERDUE_ACTIVE"} for d in decisions[::2])
        assert decisions[1].caused_by.startswith("timer:cure:")
        assert codes(decisions[1]) == {"REPAID_AND_CURED", "INCOME_VERIFIED"}
        # The one automatic restore of the year is spent: only an operator restores now.
        assert any("MANUAL_REVIEW_REQUIRED" in step for step in decisions[2].restore_path)


def test_loan_stackers_are_frozen_for_bursts_and_restored_when_the_windows_pass(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    for decisions in by_persona(history, Persona.LOAN_STACKER).values():
        assert len(decisions) >= 2
        assert alternates(decisions)
        for freeze in decisions[::2]:
            assert codes(freeze) & {"SMALL_LOAN_BURST", "LOAN_VELOCITY"}
        for restore in decisions[1::2]:
            assert restore.caused_by.startswith("timer:window:")
            assert codes(restore) <= {"SMALL_LOAN_BURST_CLEARED", "LOAN_VELOCITY_CLEARED"}


def test_overspenders_are_frozen_for_spend_against_income(
    history: tuple[dict[str, Persona], list[SimRecord], ReplayResult],
) -> None:
    for decisions in by_persona(history, Persona.OVERSPENDER).values():
        assert len(decisions) >= 2
        assert alternates(decisions)
        assert all(codes(d) == {"SPEND_INCOME_MISMATCH"} for d in decisions[::2])
        for restore in decisions[1::2]:
            assert codes(restore) == {"SPEND_INCOME_MISMATCH_CLEARED"}
            assert restore.caused_by.startswith("timer:window:")


def _span(first: Decision, second: Decision) -> timedelta:
    return timedelta(microseconds=second.occurred_at - first.occurred_at)


# --- against a broker ---------------------------------------------------------------------


@pytest.mark.integration
async def test_run_simulation_produces_every_record_at_the_rate(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topics = tuple(f"{unique_prefix}.{name}" for name in INPUT_TOPICS)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()
    reports: list[int] = []

    stats = await run_simulation(
        kafka_bootstrap,
        users=50,
        rate=200,
        duration=2.0,
        seed=11,
        topics=topics,
        progress=lambda s: reports.append(s.records),
    )

    assert stats.records == 400
    assert reports[-1] == 400
    assert stats.simulated_now <= datetime.now(UTC)
    assert set(stats.by_topic) <= set(topics)
    read = await _read_back(kafka_bootstrap, topics, stats.records)
    assert read == stats.by_topic


async def _read_back(bootstrap: str, topics: tuple[str, ...], expected: int) -> Counter[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts: Counter[str] = Counter()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(20):
            while counts.total() < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    counts[tp.topic] += len(messages)
    finally:
        await consumer.stop()
    return counts


LINEGUARD = [sys.executable, "-c", "from streams.entry import main; main()"]


def _lineguard(*args: str, broker_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    if broker_url:
        env["LINEGUARD_BROKER_URL"] = broker_url
    return subprocess.run(
        [*LINEGUARD, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("simulate", "--rate", "0"), "'--rate': 0.0 is not in the range 0<x<=100000.0."),
        (("simulate", "--rate", "inf"), "'--rate': inf is not in the range 0<x<=100000.0."),
        (("simulate", "--rate", "nan"), "Invalid value for '--rate': 'nan' is not a number."),
        (("simulate", "--users", "0"), "'--users': 0 is not in the range 1<=x<=1000000."),
        (
            ("simulate", "--users", "1000001"),
            "'--users': 1000001 is not in the range 1<=x<=1000000.",
        ),
        (("simulate", "--duration", "-5"), "'--duration': -5.0 is not in the range 0<x<=86400.0."),
        (("simulate", "--duration", "inf"), "'--duration': inf is not in the range 0<x<=86400.0."),
        (
            ("simulate", "--duration", "1e7"),
            "'--duration': 10000000.0 is not in the range 0<x<=86400.0.",
        ),
        (
            ("simulate", "--duration", "nan"),
            "Invalid value for '--duration': 'nan' is not a number.",
        ),
        (("demo", "--duration", "0"), "'--duration': 0.0 is not in the range 0<x<=86400.0."),
        (("demo", "--duration", "inf"), "'--duration': inf is not in the range 0<x<=86400.0."),
        (("demo", "--duration", "nan"), "Invalid value for '--duration': 'nan' is not a number."),
        (("demo", "--users", "0"), "'--users': 0 is not in the range 1<=x<=1000000."),
        (("demo", "--users", "2000000"), "'--users': 2000000 is not in the range 1<=x<=1000000."),
        (("demo", "--rate", "-1"), "'--rate': -1.0 is not in the range 0<x<=100000.0."),
        (("demo", "--rate", "nan"), "Invalid value for '--rate': 'nan' is not a number."),
    ],
)
def test_bad_numbers_stop_with_a_usage_message_before_anything_starts(
    args: tuple[str, ...], problem: str
) -> None:
    # An unreachable broker: had the command started, it would fail differently.
    done = _lineguard(*args, broker_url="kafka://127.0.0.1:1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Usage: ")  # click's usage message
    assert f" {args[0]} [OPTIONS]" in done.stderr.splitlines()[0]
    assert problem in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("number", ["rate", "duration", "time_scale"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0])
async def test_run_simulation_refuses_a_number_that_is_not_positive_and_finite(
    number: str, value: float
) -> None:
    numbers = {"rate": 10.0, "duration": 1.0, "time_scale": 1.0} | {number: value}
    with pytest.raises(ValueError, match="must be positive and finite"):
        await run_simulation("127.0.0.1:1", users=1, seed=1, **numbers)


def test_a_rate_and_duration_that_give_no_record_are_refused_before_anything_starts() -> None:
    done = _lineguard(
        "simulate", "--rate", "0.01", "--duration", "60", broker_url="kafka://127.0.0.1:1"
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == "lineguard: --rate 0.01 for --duration 60 s is less than one record\n"


def test_simulate_against_an_unreachable_broker_says_so_in_one_line() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"kafka://127.0.0.1:{probe.getsockname()[1]}"
        done = _lineguard("simulate", "--duration", "2", broker_url=url)
    assert done.returncode == 4, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("lineguard: ")]
    assert ours == [f"lineguard: cannot reach Kafka at {url}: {ours[0].split(': ', 2)[2]}"]
    assert "KafkaConnectionError" in ours[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
