"""Properties of the core over generated histories (hypothesis)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import orjson
from history import synthetic_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk.clock import DAY, HOUR, format_timestamp
from risk.contract import Event, Rejection, decode
from risk.decision import LIMIT_FRACTIONS, Decision
from risk.group import PartitionGroup
from risk.limits import DECISION_REASONS, STATUSES, status
from risk.partition import PartitionProcessor
from risk.policy import Policy, load_policy
from risk.replay import INPUT_TOPICS, parse_records
from risk.score import scorecard
from risk.state import STATE_DECODER, STATE_ENCODER, Episode, UserState

from builders import (
    NOW,
    application,
    decisions,
    override,
    policy_with,
    purchase,
    repayment,
    run,
    ts,
    verification,
)

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
        kind = draw(st.sampled_from(
            ["purchase", "purchase", "repayment", "repayment", "application", "verification",
             "override"]
        ))  # fmt: skip
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
        elif kind == "application":
            income = draw(st.one_of(st.none(), st.sampled_from([0, 200_000, 900_000])))
            requested = draw(st.sampled_from([5_000, 100_000, 100_001, 2_000_000]))
            channel = draw(st.sampled_from([None, "line", "other-bank"]))
            lines.append(application(stamp, requested, user=user, income=income,
                                     channel=channel, event_id=event_id))  # fmt: skip
        elif kind == "verification":
            income = draw(st.sampled_from([1, 100_000, 900_000]))
            lines.append(verification(stamp, income, user=user, event_id=event_id))
        else:
            action = draw(st.sampled_from(["freeze", "restore"]))
            lines.append(override(stamp, action, user=user, event_id=event_id))
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


@_settings
@given(histories(ordered=False), st.data())
def test_a_partition_resumed_at_its_committed_offset_decides_as_one_pass_did(
    lines: list[dict[str, Any]], data: st.DataObject
) -> None:
    _stop_while_writing_then_resume(_decoded(lines), data)


@_settings
@given(st.integers(0, 2**32), st.integers(20, 300), st.data())
def test_a_busy_partition_resumed_at_its_committed_offset_decides_as_one_pass_did(
    seed: int, users: int, data: st.DataObject
) -> None:
    _stop_while_writing_then_resume(
        _decoded(synthetic_history(users, 800, seed, graduated=True)), data
    )


def _decoded(lines: list[dict[str, Any]]) -> list[Event]:
    records = parse_records([orjson.dumps(line) for line in lines])
    decoded = [decode(INPUT_TOPICS.index(r.topic), r.key, r.value, 65536) for r in records]
    return [event for event in decoded if not isinstance(event, Rejection)]


def _stop_while_writing_then_resume(events: list[Event], data: st.DataObject) -> None:
    """A worker stopped while writing a batch's states, before committing it, loses nothing.

    States are written per batch, then offsets are committed. A stop in between leaves some
    users' states ahead of the committed offset and others behind; the resumed partition
    reads the records from the committed offset again.
    """
    cuts = data.draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=12))
    bounds = sorted({0, len(events), *(cut for cut in cuts if cut < len(events))})
    store: dict[str, UserState] = {}
    once = PartitionProcessor(POLICY, store)
    by_batch: list[list[Decision]] = []
    written_at: list[tuple[dict[str, bytes], int | None]] = [({}, None)]
    for start, end in itertools.pairwise(bounds):
        by_batch.append(_handle_all(once, events[start:end]))
        written_at.append(
            (
                {user: STATE_ENCODER.encode(state) for user, state in store.items()},
                once.max_event_at,
            )
        )
    expected = {d.event_id: d.to_json(0) for batch in by_batch for d in batch}
    stopped_in = data.draw(st.integers(0, len(by_batch) - 1))
    committed = data.draw(st.integers(0, stopped_in))
    before, after = written_at[stopped_in][0], written_at[stopped_in + 1][0]
    changed = sorted(user for user in after if after[user] != before.get(user))
    written = set(data.draw(st.lists(st.sampled_from(changed), unique=True))) if changed else set()
    durable = {user: STATE_DECODER.decode(after[user] if user in written else before[user])
               for user in set(before) | written}  # fmt: skip
    delivered = by_batch[:stopped_in] + (by_batch[stopped_in : stopped_in + 1] if written else [])
    resumed = PartitionProcessor(POLICY, durable)
    resumed.recover(list(durable.values()))
    resumed.resume(written_at[committed][1])
    got = _handle_all(resumed, events[bounds[committed] :])
    for decision in got:
        assert decision.to_json(0) == expected[decision.event_id]
    online = {d.event_id for d in got} | {d.event_id for batch in delivered for d in batch}
    assert online == set(expected)


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

        def may_receive(empty: list[int], _candidate: object) -> bool:
            return any(unfed[INPUT_TOPICS[index]] for index in empty)

        for applied in group.drain(may_receive, ts(NOW)):
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


GRADUATED = policy_with({
    "rules.reduce_spend_income": {"enabled": True},
    "rules.score_low": {"enabled": True, "freeze_below": 560},
})  # fmt: skip


def _states(lines: list[dict[str, Any]], policy: Policy) -> list[UserState]:
    store: dict[str, UserState] = {}
    processor = PartitionProcessor(policy, store)
    for record in parse_records([orjson.dumps(line) for line in lines]):
        event = decode(INPUT_TOPICS.index(record.topic), record.key, record.value, 65536)
        if not isinstance(event, Rejection):
            processor.handle(event, ts(NOW))
    return list(store.values())


@_settings
@given(histories(ordered=False), st.integers(1, 5))
def test_the_score_never_falls_with_more_instalments_paid_on_time(
    lines: list[dict[str, Any]], more: int
) -> None:
    for state in _states(lines, POLICY):
        before = scorecard(state, POLICY).score
        state.paid_on_time += more
        assert scorecard(state, POLICY).score >= before


@_settings
@given(histories(ordered=False), st.integers(1, 179), st.integers(0, 120))
def test_the_score_never_rises_with_one_more_overdue_episode(
    lines: list[dict[str, Any]], days_before: int, dpd: int
) -> None:
    for state in _states(lines, POLICY):
        before = scorecard(state, POLICY).score
        # An ended spell before every recorded one, as a longer history would have had:
        # spells never overlap, and only the last may still run.
        first = min([e.start for e in state.episodes], default=state.clock)
        episode = Episode(start=first - days_before * DAY, end=first - DAY, max_dpd=dpd)
        state.episodes = [episode, *state.episodes]
        assert scorecard(state, POLICY).score <= before


@_settings
@given(histories(ordered=False), st.sampled_from(["default", "graduated"]))
def test_every_limit_event_carries_its_status_and_a_documented_fraction(
    lines: list[dict[str, Any]], which: str
) -> None:
    policy = POLICY if which == "default" else GRADUATED
    status_now: dict[str, str] = {}
    for doc in decisions(run(lines, until="2028-01-01T00:00:00Z", policy=policy)):
        assert doc["limit_fraction"] in (1.0, 0.5, 0.0)
        assert doc["limit_fraction"] == LIMIT_FRACTIONS[doc["status"]]
        before = status_now.get(doc["user_id"], "active")
        assert doc["status"] != before  # a limit event is a change of status
        rank = STATUSES.index
        if doc["type"] == "limit.freeze":
            assert doc["status"] == "frozen"
        elif doc["type"] == "limit.reduce":
            assert (before, doc["status"]) == ("active", "reduced")
        else:
            assert rank(doc["status"]) < rank(before)
        status_now[doc["user_id"]] = doc["status"]
