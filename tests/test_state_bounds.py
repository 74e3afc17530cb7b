"""One user's state stays bounded whatever the traffic."""

from __future__ import annotations

from risk.clock import DAY, HOUR, MINUTE
from risk.contract import Event, LoanApplication, Purchase, Reason, Rejection, Repayment
from risk.engine import admit, apply, new_state
from risk.policy import EPISODES_CAP, EXACT_TIMESTAMPS_CAP, load_policy
from risk.state import DEDUP_CAP, INSTALMENTS_CAP, STATE_ENCODER, UserState
from risk.window import Window

from builders import ts

POLICY = load_policy()
START = ts("2026-01-01T00:00:00Z")
NOW = ts("2030-01-01T00:00:00Z")


def _event(index: int) -> Event:
    at = START + index * MINUTE
    kind = index % 10
    if kind < 5:
        # never repaid in full: every instalment eventually goes overdue
        return Purchase(f"p-{index}", "u-1", at, f"o-{index}", 10_000 + index, 24, at)
    if kind < 8:
        return LoanApplication(f"a-{index}", "u-1", at, 50_000, 900_000 + index)
    return Repayment(f"r-{index}", "u-1", at, 1, None)


def test_a_hundred_thousand_events_to_one_user_keep_its_state_bounded() -> None:
    first = _event(0)
    state: UserState = new_state(first)
    largest = 0
    for index in range(100_000):
        event = _event(index)
        assert admit(state, event, POLICY, NOW) is None
        apply(state, event, POLICY)
        if index % 5_000 == 0:
            largest = max(largest, len(STATE_ENCODER.encode(state)))
    assert len(state.instalments) <= INSTALMENTS_CAP
    assert len(state.seen) <= DEDUP_CAP
    assert len(state.episodes) <= EPISODES_CAP
    for window in (state.applications, state.small_applications, state.spend):
        assert len(window.times) <= EXACT_TIMESTAMPS_CAP
        assert len(window.bucket_hours) <= 30 * 24 + 1
    assert state.dedup_floor is not None
    assert largest < 256 * 1024
    # The money is still all there: nothing was dropped by the caps.
    assert sum(i.unpaid for i in state.instalments) == sum(
        10_000 + i for i in range(100_000) if i % 10 < 5
    ) - sum(1 for i in range(100_000) if i % 10 >= 8)


def test_an_unseen_id_at_exactly_the_dedup_floor_is_too_late() -> None:
    # Pins `<=`: an id at the floor's instant may be one forgotten, so it cannot be admitted.
    clock = ts("2026-03-10T00:00:00Z")
    floor = clock - DAY  # well inside allowed_lateness: only the floor can reject it
    state = UserState("u-1", first_seen=clock - 30 * DAY, clock=clock, last_activity=clock,
                      dedup_floor=floor)  # fmt: skip
    at_floor = admit(state, Repayment("r-new", "u-1", floor, 1, None), POLICY, clock)
    assert isinstance(at_floor, Rejection)
    assert at_floor.reason is Reason.TOO_LATE
    assert admit(state, Repayment("r-new", "u-1", floor + 1, 1, None), POLICY, clock) is None


def test_a_bucketed_entry_leaves_the_window_at_exactly_its_time_plus_the_length() -> None:
    # Pins the window's open start for entries folded past the cap, as for the exact ones.
    window = Window()
    for at in (10 * HOUR, 20 * HOUR, 30 * HOUR):
        window.add(at, 1, exact_cap=2)  # the oldest folds into its hour's bucket
    assert window.bucket_latest == [10 * HOUR]
    assert window.total(10 * HOUR - 1) == 3
    assert window.total(10 * HOUR) == 2  # only entries after the start: the bucket is out
