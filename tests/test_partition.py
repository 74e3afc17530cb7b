"""The partition watermark and its timer index."""

from __future__ import annotations

from typing import Any

from risk.clock import DAY
from risk.contract import Purchase
from risk.engine import OVERDUE, next_timer
from risk.partition import Outcome, PartitionProcessor
from risk.policy import load_policy
from risk.state import STATE_DECODER, STATE_ENCODER, UserState

from builders import application, decoded, purchase, repayment, run, summary, ts, verification

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


def test_two_timers_within_one_second_give_their_decisions_distinct_ids() -> None:
    # Both instalments go overdue within 04T00:00:00, either side of a repayment that restores.
    # Truncated to the second, both freezes were caused by timer:overdue:2026-03-04T00:00:00Z
    # and had one event_id: a consumer deduplicating by it lost the second freeze. The first
    # keeps DESIGN's form; the second, with a decision before it in that second, its fraction.
    lines = [
        purchase("2026-02-01T00:00:00Z", 1000, order="o-A", first_due="2026-03-01T00:00:00.1Z"),
        purchase("2026-02-01T00:00:01Z", 2000, order="o-B", first_due="2026-03-01T00:00:00.9Z"),
        repayment("2026-03-04T00:00:00.5Z", 1000, order="o-A"),
    ]
    decisions = run(lines, until="2026-03-05T00:00:00Z").decisions
    assert [(d.type, d.caused_by) for d in decisions] == [
        ("limit.freeze", "timer:overdue:2026-03-04T00:00:00Z"),
        ("limit.restore", lines[2]["value"]["event_id"]),
        ("limit.freeze", "timer:overdue:2026-03-04T00:00:00.9Z"),
    ]
    assert len({d.event_id for d in decisions}) == 3


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


def _resumed_as_one_pass(first: list[dict[str, Any]], then: list[dict[str, Any]]) -> None:
    """A worker stopped in ``then``'s flush, with H's state written and V's not, and offsets
    committed after ``first``, reads ``then`` again: V's decisions and state as in one pass.
    """
    policy, now = load_policy(), NOW
    store: dict[str, UserState] = {}
    once = PartitionProcessor(policy, store)
    for event in decoded(first):
        once.handle(event, now)
    committed, v_before = once.max_event_at, STATE_ENCODER.encode(store["V"])
    in_one_pass = [d for event in decoded(then) for d in once.handle(event, now)[2]]
    written = {"H": store["H"], "V": STATE_DECODER.decode(v_before)}
    resumed = PartitionProcessor(policy, written)
    resumed.recover(list(written.values()))
    resumed.resume(committed)
    read_again = [d for event in decoded(then) for d in resumed.handle(event, now)[2]]
    assert [d.to_json(0) for d in read_again if d.user_id == "V"] == [
        d.to_json(0) for d in in_one_pass if d.user_id == "V"
    ]
    assert STATE_ENCODER.encode(written["V"]) == STATE_ENCODER.encode(store["V"])


def test_a_record_rejected_at_first_and_read_again_as_a_duplicate_of_its_retry_moves_nothing() -> (
    None
):
    # h-x is too late at first; its corrected retry brings the id in. Read again, the first
    # h-x is a duplicate of the retry, and counted at the retry's time it fired V's overdue
    # timer (01-13T00:00Z) before V's on-time repayment (RELIABILITY.md, defect 33).
    first = [
        purchase("2026-01-03T00:00:00Z", 100_000, user="V", first_due="2026-01-10T00:00:00Z"),
        verification("2026-01-12T12:00:00Z", 500_000, user="H"),
    ]
    then = [
        verification("2026-01-01T00:00:00Z", 500_000, user="H", event_id="h-x"),
        repayment("2026-01-12T23:00:00Z", 100_000, user="V"),
        verification("2026-01-13T01:00:00Z", 500_000, user="H", event_id="h-x"),
    ]
    _resumed_as_one_pass(first, then)
