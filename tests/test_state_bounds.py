"""One user's state stays bounded whatever the traffic."""

from __future__ import annotations

from risk.clock import MINUTE
from risk.contract import Event, LoanApplication, Purchase, Repayment
from risk.engine import admit, apply, new_state
from risk.policy import EPISODES_CAP, EXACT_TIMESTAMPS_CAP, load_policy
from risk.state import DEDUP_CAP, INSTALMENTS_CAP, STATE_ENCODER, UserState

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
