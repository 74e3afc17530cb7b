"""Properties of the core over generated histories (hypothesis)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk.clock import DAY, HOUR, format_timestamp
from risk.contract import Rejection, decode
from risk.decision import Decision
from risk.group import PartitionGroup
from risk.limits import DECISION_REASONS, status
from risk.partition import PartitionProcessor
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, parse_records
from risk.state import UserState

from builders import NOW, application, decisions, purchase, repayment, run, ts

POLICY = load_policy()
START = ts("2026-01-01T00:00:00Z")
_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def histories(draw: st.DrawFn, *, ordered: bool = True) -> list[dict[str, Any]]:
    """Records of a few users over a few months; time-ordered unless ``ordered`` is False."""
    users = draw(st.lists(st.sampled_from(["u-1", "u-2", "u-3", "u-4", "u-5"]), min_size=1,
                          max_size=4, unique=True))  # fmt: skip
    count = draw(st.integers(min_value=1, max_value=40))
    at = START
    lines = []
    for index in range(count):
        at += draw(st.sampled_from([0, 1, HOUR, 6 * HOUR, DAY, 3 * DAY, 9 * DAY]))
        when = at if ordered else at - draw(st.sampled_from([0, 0, HOUR, 2 * DAY, 9 * DAY]))
        stamp = format_timestamp(when)
        user = draw(st.sampled_from(users))
        kind = draw(st.sampled_from(["purchase", "repayment", "application"]))
        event_id = f"e-{index}"
        if kind == "purchase":
            due = format_timestamp(when + draw(st.sampled_from([0, DAY, 5 * DAY, 30 * DAY])))
            lines.append(purchase(
                stamp, draw(st.integers(1, 3_000_000)), user=user, event_id=event_id,
                order=f"o-{draw(st.integers(0, 3))}", installments=draw(st.sampled_from([1, 3])),
                first_due=due,
            ))  # fmt: skip
        elif kind == "repayment":
            order = draw(st.one_of(st.none(), st.sampled_from(["o-0", "o-1"])))
            amount = draw(st.integers(1, 2_000_000))
            lines.append(repayment(stamp, amount, user=user, order=order, event_id=event_id))
        else:
            income = draw(st.one_of(st.none(), st.sampled_from([0, 200_000, 900_000])))
            requested = draw(st.sampled_from([5_000, 100_000, 100_001, 2_000_000]))
            lines.append(application(stamp, requested, user=user, income=income, event_id=event_id))
    return lines


def _by_user(result_decisions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for decision in result_decisions:
        grouped[decision["user_id"]].append(decision)
    return dict(grouped)


@_settings
@given(histories(), st.data())
def test_a_redelivered_duplicate_never_changes_the_decisions(
    lines: list[dict[str, Any]], data: st.DataObject
) -> None:
    again = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    with_retries = list(
        itertools.chain.from_iterable(
            [line, line] if index in again else [line] for index, line in enumerate(lines)
        )
    )
    original, retried = run(lines), run(with_retries)
    assert decisions(retried) == decisions(original)
    assert retried.duplicates == original.duplicates + len(again)


@_settings
@given(histories(), st.data())
def test_redelivering_an_applied_stretch_after_a_crash_changes_nothing(
    lines: list[dict[str, Any]], data: st.DataObject
) -> None:
    events = [
        decode(INPUT_TOPICS.index(r.topic), r.key, r.value, 65536)
        for r in parse_records([orjson.dumps(line) for line in lines])
    ]
    crash = data.draw(st.integers(0, len(events)))
    resume = data.draw(st.integers(0, crash))
    once, twice = PartitionProcessor(POLICY, {}), PartitionProcessor(POLICY, {})
    expected = _handle_all(once, events)
    got = _handle_all(twice, events[:crash]) + _handle_all(twice, events[resume:])
    assert [d.to_json(0) for d in got] == [d.to_json(0) for d in expected]


def _handle_all(processor: PartitionProcessor, events: list[Any]) -> list[Decision]:
    out: list[Decision] = []
    for event in events:
        assert not isinstance(event, Rejection)
        out += processor.handle(event, ts(NOW))[2]
    return out


@_settings
@given(histories(), st.sampled_from([2, 3, 8]))
def test_time_ordered_decisions_do_not_depend_on_the_partition_count(
    lines: list[dict[str, Any]], partitions: int
) -> None:
    until = "2028-01-01T00:00:00Z"
    one = _by_user(decisions(run(lines, until=until)))
    many = _by_user(decisions(run(lines, until=until, partitions=partitions)))
    assert many == one


@_settings
@given(histories(ordered=False), st.data())
def test_records_arriving_one_by_one_or_in_batches_merge_the_same(
    lines: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = list(parse_records([orjson.dumps(line) for line in lines]))
    expected = [d.to_json(0) for d in run(lines).decisions]
    # Each topic-partition is fetched in chunks of random size, topics in random turns.
    unfed = {topic: [r for r in records if r.topic == topic] for topic in INPUT_TOPICS}
    group: PartitionGroup[object] = PartitionGroup(POLICY, {}, len(INPUT_TOPICS))
    got: list[bytes] = []
    while any(unfed.values()) or len(group):
        waiting = [topic for topic, rest in unfed.items() if rest]
        if waiting:
            topic = data.draw(st.sampled_from(waiting))
            size = data.draw(st.integers(1, 4))
            for record in unfed[topic][:size]:
                group.push(INPUT_TOPICS.index(topic), record.key, record.value, record)
            del unfed[topic][:size]
        for applied in group.drain(lambda i: bool(unfed[INPUT_TOPICS[i]]), ts(NOW)):
            got += [d.to_json(0) for d in applied.decisions]
    assert got == expected


@_settings
@given(histories(ordered=False), st.sampled_from([None, "2026-06-01T00:00:00Z"]))
def test_user_counts_by_status_follow_every_change_and_reasons_are_the_known_ones(
    lines: list[dict[str, Any]], until: str | None
) -> None:
    store: dict[str, UserState] = {}
    processor = PartitionProcessor(POLICY, store)
    out: list[Decision] = []
    for record in parse_records([orjson.dumps(line) for line in lines]):
        event = decode(INPUT_TOPICS.index(record.topic), record.key, record.value, 65536)
        if not isinstance(event, Rejection):
            out += processor.handle(event, ts(NOW))[2]
    if until is not None:
        out += processor.advance_watermark(ts(until))
    assert +processor.users == Counter(status(state) for state in store.values())
    recovered = PartitionProcessor(POLICY, store)
    recovered.recover(store.values())
    assert recovered.users == processor.users
    for decision in out:
        assert {reason.code for reason in decision.reasons} <= set(DECISION_REASONS[decision.type])
