"""The partition watermark and its timer index."""

from __future__ import annotations

from risk.clock import DAY
from risk.contract import Purchase
from risk.engine import OVERDUE, next_timer
from risk.partition import Outcome, PartitionProcessor
from risk.policy import load_policy
from risk.state import STATE_DECODER, STATE_ENCODER, UserState

from builders import application, purchase, repayment, run, summary, ts

POLICY = load_policy()
NOW = ts("2030-01-01T00:00:00Z")


def _buy(user: str, at: int, due: int) -> Purchase:
    return Purchase(f"p-{user}-{at}", user, at, "o-1", 1000, 1, due)


def test_the_watermark_fires_a_quiet_users_timer_and_touches_no_one_else() -> None:
    start = ts("2026-01-01T00:00:00Z")
    store: dict[str, UserState] = {}
    processor = PartitionProcessor(POLICY, store)
    processor.handle(_buy("quiet", start, start + 5 * DAY), NOW)
    processor.handle(_buy("busy", start, start + 60 * DAY), NOW)
    # busy's traffic moves the watermark past quiet's due + grace (day 8).
    outcome, _, decisions = processor.handle(_buy("busy", start + 9 * DAY, start + 90 * DAY), NOW)
    assert outcome is Outcome.PROCESSED
    assert [(d.user_id, d.caused_by) for d in decisions] == [
        ("quiet", "timer:overdue:2026-01-09T00:00:00Z")
    ]
    assert store["quiet"].clock == start + 8 * DAY  # the timer's time, not the watermark
    assert store["busy"].clock == start + 9 * DAY


def test_the_watermark_lags_the_latest_event_by_the_delay() -> None:
    lines = [
        purchase("2026-01-01T00:00:00Z", 1000, user="a", first_due="2026-01-02T00:00:00Z"),
        purchase("2026-01-05T00:00:59Z", 1000, user="b"),  # watermark 2026-01-04T23:59:59Z
    ]
    assert run(lines).decisions == []
    lines.append(purchase("2026-01-05T00:01:00Z", 1000, user="b"))
    assert [d.caused_by for d in run(lines).decisions] == ["timer:overdue:2026-01-05T00:00:00Z"]


def test_firing_costs_follow_due_timers_not_users() -> None:
    start = ts("2026-01-01T00:00:00Z")
    store = _CountingStore()
    processor = PartitionProcessor(POLICY, store)
    for index in range(2000):
        processor.handle(_buy(f"u-{index}", start, start + 300 * DAY), NOW)
    processor.handle(_buy("due-soon", start, start + DAY), NOW)
    store.reads = 0
    decisions = processor.advance_watermark(start + 10 * DAY)
    assert [d.user_id for d in decisions] == ["due-soon"]
    assert store.reads == 1
    assert processor.pending_timers == 2000  # due-soon is frozen now and has no timer left


def test_rebuilt_index_fires_the_same_timers() -> None:
    start = ts("2026-01-01T00:00:00Z")
    first = PartitionProcessor(POLICY, {})
    for index in range(20):
        first.handle(_buy(f"u-{index}", start, start + index * DAY), NOW)
    # Through the table's serialised form, as after a rebalance.
    restored = {
        user: STATE_DECODER.decode(STATE_ENCODER.encode(state))
        for user, state in first.store.items()
    }
    recovered = PartitionProcessor(POLICY, restored)
    recovered.recover(recovered.store.values())
    assert recovered.watermark == first.watermark
    assert [d.to_json(0) for d in recovered.advance_watermark(start + 30 * DAY)] == [
        d.to_json(0) for d in first.advance_watermark(start + 30 * DAY)
    ]


def test_the_next_timer_is_derived_from_state() -> None:
    start = ts("2026-01-01T00:00:00Z")
    processor = PartitionProcessor(POLICY, {})
    processor.handle(_buy("u", start, start + DAY), NOW)
    assert next_timer(processor.store["u"], POLICY) == (start + 4 * DAY, OVERDUE)


def test_an_instalment_going_overdue_as_the_cure_ends_keeps_the_line_frozen() -> None:
    # Pins the timer kind order: at one instant a user's overdue timer fires before the cure's.
    lines = [
        purchase("2026-02-01T00:00:00Z", 35000, order="o-1", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-06T00:00:00Z", 35000, order="o-1"),  # 5 DPD: cured on 04-05
        # overdue at its due date plus 3 days' grace: 04-05T00:00Z, the cure's very end
        purchase("2026-03-10T00:00:00Z", 100, order="o-2", first_due="2026-04-02T00:00:00Z"),
    ]
    # no restore at 04-05 followed by a second freeze in the same microsecond
    assert summary(run(lines, until="2026-05-01T00:00:00Z")) == [
        ("limit.freeze", "2026-03-04T00:00:00Z", "timer:overdue:2026-03-04T00:00:00Z",
         ["OVERDUE_ACTIVE"]),
    ]  # fmt: skip


def test_records_at_the_same_instant_apply_in_topic_order_not_log_order() -> None:
    # Pins the KIP-353 tie-break: purchases (topic 0) before loan applications (topic 2).
    lines = [
        application("2026-04-01T00:00:00Z", 200_000, income=800_000, event_id="a-0"),
        # listed first, but its topic comes after the purchases'
        application("2026-04-02T00:00:00Z", 200_000, income=2_000_000, event_id="a-raise"),
        purchase("2026-04-02T00:00:00Z", 2_500_000, order="o-1", event_id="p-1"),
    ]
    assert summary(run(lines)) == [
        ("limit.freeze", "2026-04-02T00:00:00Z", "p-1", ["SPEND_INCOME_MISMATCH"]),
        ("limit.restore", "2026-04-02T00:00:00Z", "a-raise", ["SPEND_INCOME_MISMATCH_CLEARED"]),
    ]


class _CountingStore(dict[str, UserState]):
    reads = 0

    def __getitem__(self, key: str) -> UserState:
        self.reads += 1
        return super().__getitem__(key)


def test_the_wall_clock_sweep_fires_timers_on_a_quiet_partition_only_in_wall_mode() -> None:
    start = ts("2026-01-01T00:00:00Z")
    later = start + 10 * DAY
    stream = PartitionProcessor(POLICY, {}, clock="stream")
    wall = PartitionProcessor(POLICY, {}, clock="wall")
    for processor in (stream, wall):
        processor.handle(_buy("quiet", start, start + DAY), NOW)
    assert stream.tick(later) == []
    assert [d.caused_by for d in wall.tick(later)] == ["timer:overdue:2026-01-05T00:00:00Z"]
    assert wall.watermark == later - POLICY.watermark_delay
    # The sweep never moves the watermark back.
    assert wall.tick(start) == []
    assert wall.watermark == later - POLICY.watermark_delay
