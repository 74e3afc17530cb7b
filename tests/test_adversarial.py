"""Adversarial load on the core path: one very busy user, very many users, clocks a century ahead.

The records go through a :class:`~risk.group.PartitionGroup`, as in the worker and replay.
``make test`` runs 100,000 events per case; ``LINEGUARD_FULL_ADVERSARIAL=1`` runs 1,000,000
(several minutes). The tests check that the state and the timer index stay within their
bounds whatever the flood; the CPU time per event along the same floods is measured by
``python -m bench.adversarial``, not asserted here.
"""

from __future__ import annotations

import os

import pytest

from bench.adversarial import busy_user_record, feed, new_user_record
from risk.clock import DAY, MINUTE, format_timestamp
from risk.contract import Reason
from risk.group import PartitionGroup, never_more
from risk.partition import Outcome
from risk.policy import EPISODES_CAP, EXACT_TIMESTAMPS_CAP, load_policy
from risk.state import DEDUP_CAP, INSTALMENTS_CAP, STATE_ENCODER, UserState

from builders import ts

POLICY = load_policy()
EVENTS = 1_000_000 if os.environ.get("LINEGUARD_FULL_ADVERSARIAL") == "1" else 100_000
TENTH = EVENTS // 10
STATE_BYTES_AT_THE_CAPS = 256 * 1024
"""An upper bound on one user's encoded state with every structure at its cap: about 215 KB
measured with 128-character order ids (the README's figure)."""
BYTES_PER_USER = 512
"""An upper bound on the encoded state of a user after one purchase: about 300 bytes (about
520 once its instalment is overdue and the line frozen)."""


def test_one_user_with_a_flood_of_events_stays_within_the_caps() -> None:
    store: dict[str, UserState] = {}
    group: PartitionGroup[int] = PartitionGroup(POLICY, store, 5)
    encoded = []
    for tenth in range(10):
        feed(group, busy_user_record, tenth * TENTH, (tenth + 1) * TENTH)
        encoded.append(len(STATE_ENCODER.encode(store["u-1"])))
    state = store["u-1"]
    assert len(state.instalments) == INSTALMENTS_CAP
    assert len(state.seen) <= DEDUP_CAP
    assert len(state.episodes) <= EPISODES_CAP
    for window in (state.applications, state.small_applications, state.spend):
        assert len(window.times) <= EXACT_TIMESTAMPS_CAP
        assert len(window.bucket_hours) <= 30 * 24 + 1
    # The 30-day windows fill within the first half (a minute apart, 43,200 events); from
    # then on the state does not grow.
    assert max(encoded) <= STATE_BYTES_AT_THE_CAPS
    assert encoded[-1] <= max(encoded[:5]) * 1.05, encoded
    assert group.processor.pending_timers <= 1


def test_a_flood_of_new_users_keeps_each_state_and_the_index_bounded() -> None:
    store: dict[str, UserState] = {}
    group: PartitionGroup[int] = PartitionGroup(POLICY, store, 5)
    feed(group, new_user_record, 0, EVENTS)
    assert len(store) == EVENTS

    # Each user's state depends on what happened to that user, never on how many others there are.
    sizes = [len(STATE_ENCODER.encode(state)) for state in store.values()]
    assert max(sizes) <= BYTES_PER_USER
    print(f"state bytes per user: mean {sum(sizes) / len(sizes):.0f}, max {max(sizes)}")
    # The index holds one live entry per user with a timer, and lazily deleted ones are
    # compacted: its size follows the users, never the events.
    processor = group.processor
    assert processor.pending_timers == EVENTS
    assert len(processor._heap) <= 2 * processor.pending_timers + 1024
    assert sum(processor.users.values()) == EVENTS


CENTURY = 100 * 365 * DAY
WALL = ts("2026-03-01T00:00:00Z")


def _scenario_group() -> tuple[PartitionGroup[int], dict[str, UserState]]:
    """A partition with one user whose instalment falls overdue at 2026-03-05."""
    store: dict[str, UserState] = {}
    group: PartitionGroup[int] = PartitionGroup(POLICY, store, 5)
    group.push(0, b"u-1", (
        b'{"event_id":"p-1","user_id":"u-1","occurred_at":"2026-02-27T00:00:00Z",'
        b'"order_id":"o-1","amount":5000,"first_due_at":"2026-03-02T00:00:00Z"}'
    ), 0)  # fmt: skip
    assert [a.outcome for a in group.drain(never_more, WALL)] == [Outcome.PROCESSED]
    return group, store


def _event(topic: int, user: str, at: int, event_id: str) -> bytes:
    fields = (
        b'"order_id":"o-9","amount":100',
        b'"amount":100',
        b'"requested_amount":100',
        b'"verified_monthly_income":100,"source":"payslip"',
        b'"action":"freeze","operator":"op","note":"n"',
    )[topic]
    return b'{"event_id":"%s","user_id":"%s","occurred_at":"%s",%s}' % (
        event_id.encode(), user.encode(), format_timestamp(at).encode(), fields,
    )  # fmt: skip


@pytest.mark.parametrize("topic", range(5))
@pytest.mark.parametrize("user", ["u-1", "stranger"])
def test_a_century_ahead_is_rejected_and_moves_no_clock(topic: int, user: str) -> None:
    group, store = _scenario_group()
    watermark, before = group.processor.watermark, STATE_ENCODER.encode(store["u-1"])
    group.push(topic, user.encode(), _event(topic, user, WALL + CENTURY, "f-1"), 1)
    (applied,) = group.drain(never_more, WALL)
    assert applied.outcome is Outcome.DEAD_LETTERED
    assert applied.rejection is not None
    assert applied.rejection.reason is Reason.IN_FUTURE
    assert applied.decisions == []
    assert group.processor.watermark == watermark
    assert STATE_ENCODER.encode(store["u-1"]) == before
    assert set(store) == {"u-1"}  # a stranger's future record creates no state
    # The overdue timer (2026-03-05) fires when real traffic reaches it, not before.
    group.push(1, b"other", _event(1, "other", WALL + DAY, "r-1"), 2)
    (applied,) = group.drain(never_more, WALL + DAY)
    assert applied.outcome is Outcome.PROCESSED
    assert applied.decisions == []
    group.push(1, b"other", _event(1, "other", WALL + 5 * DAY, "r-2"), 3)
    (applied,) = group.drain(never_more, WALL + 5 * DAY)
    assert [d.caused_by for d in applied.decisions] == ["timer:overdue:2026-03-05T00:00:00Z"]


def test_the_future_bound_is_max_future_skew_and_caps_the_watermark() -> None:
    group, _ = _scenario_group()
    edge = WALL + POLICY.max_future_skew
    group.push(1, b"late-clock", _event(1, "late-clock", edge + 1, "r-over"), 1)
    group.push(1, b"late-clock", _event(1, "late-clock", edge, "r-edge"), 2)
    over, at_edge = group.drain(never_more, WALL)
    assert over.rejection is not None
    assert over.rejection.reason is Reason.IN_FUTURE
    assert at_edge.outcome is Outcome.PROCESSED
    # The worst one bad clock can do: the watermark a skew (minus the delay) ahead of now.
    assert group.processor.watermark == edge - POLICY.watermark_delay
    assert POLICY.max_future_skew == DAY
    assert POLICY.watermark_delay == MINUTE
    assert at_edge.decisions == []  # the overdue timer (2026-03-05) is beyond that
