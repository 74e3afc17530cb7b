"""The behaviour score: a points scorecard on the PDO scale.

``score = base_points + Σ points``, one term per characteristic. With the default
scaling, 600 points stand for good:bad odds of 50:1, and every 20 points double
the odds (the "points to double the odds", PDO). A user about whom nothing is
known yet scores every characteristic at 0 points, so a thin file sits at exactly
600: it is neither rewarded nor punished for missing history. The points table is
in the policy file, and the README explains each entry.
"""

from __future__ import annotations

import math
from fractions import Fraction

import msgspec

from risk.clock import DAY
from risk.ledger import episodes_since, max_dpd_since
from risk.policy import MAX_ODDS_DOUBLINGS, Policy
from risk.state import UserState

Value = int | Fraction | None
"""A characteristic's value: a count, an exact ratio, or None when it cannot be measured."""


class Scorecard(msgspec.Struct, frozen=True):
    """A user's score with the value and points of each characteristic."""

    score: int
    values: dict[str, Value]
    points: dict[str, int]

    def odds(self, policy: Policy) -> float:
        """The good:bad odds the score stands for on the policy's PDO scale."""
        scale = policy.source.score
        doublings = (self.score - scale.base_points) / scale.points_to_double_odds
        # The policy keeps every reachable score within this at load; the clamp keeps the
        # odds a finite float (JSON has no inf) whatever the policy object holds.
        doublings = min(max(doublings, -MAX_ODDS_DOUBLINGS), MAX_ODDS_DOUBLINGS)
        return scale.base_odds * math.pow(2.0, doublings)


def characteristics(state: UserState, policy: Policy) -> dict[str, Value]:
    """The scorecard's inputs at the user's clock."""
    clock = state.clock
    settled = state.paid_on_time + state.paid_late
    income = state.effective_income
    spend = state.spend.total(clock - policy.spend_window)
    return {
        "on_time_instalments": state.paid_on_time,
        "late_share": Fraction(state.paid_late, settled) if settled else None,
        "overdue_episodes_180d": episodes_since(state, clock - policy.episode_window),
        # Spells running in the window (t - W, t]: at or after its first microsecond.
        "max_dpd_180d": max_dpd_since(state, clock - policy.episode_window + 1),
        "active_days_90d": active_days(state, policy),
        "account_age_days": (clock - state.first_seen) // DAY,
        "other_lender_applications_30d": state.other_lender_applications.total(
            clock - policy.other_lender_window
        ),
        "spend_to_income_30d": Fraction(spend, income) if income else None,
    }


def active_days(state: UserState, policy: Policy) -> int:
    """Distinct days with a purchase or repayment in the last ``active_days_window`` days."""
    first = state.clock // DAY - policy.source.score.active_days_window
    return sum(1 for day in state.active_days if day > first)


def scorecard(state: UserState, policy: Policy) -> Scorecard:
    """Score the user at the clock."""
    values = characteristics(state, policy)
    points = {name: _points(name, value, policy) for name, value in values.items()}
    return Scorecard(policy.source.score.base_points + sum(points.values()), values, points)


def _points(name: str, value: Value, policy: Policy) -> int:
    if value is None:
        return int(getattr(policy.source.score.points, name).missing)
    # value <= up_to, compared exactly in integers: Fraction's own comparisons are slow.
    # Both denominators are positive, as a Fraction's always is.
    if isinstance(value, int):
        numerator, denominator = value, 1
    else:
        numerator, denominator = value.numerator, value.denominator
    for up_to, points in policy.score_bins[name]:
        if up_to is None or numerator * up_to.denominator <= up_to.numerator * denominator:
            return points
    raise AssertionError("the last bin has no bound")  # pragma: no cover - checked at load


def next_change(state: UserState, policy: Policy) -> int | None:
    """The next time after the clock at which passing time alone may change the score.

    Windows lose entries, the running DPD and the account's age grow. Only the
    ``SCORE_LOW`` rule needs this, to re-evaluate users without traffic.
    """
    clock = state.clock
    window = policy.episode_window
    times = [e.start + window for e in state.episodes if e.start + window > clock]
    times += [
        e.end + window for e in state.episodes if e.end is not None and e.end + window > clock
    ]
    if state.overdue_count:
        due = state.instalments[0].due_at
        days = (clock - due) // DAY
        bound = _next_bound(days, policy.score_bins["max_dpd_180d"])
        if bound is not None:
            times.append(due + (bound + 1) * DAY)
    first_day = clock // DAY - policy.source.score.active_days_window
    in_window = [day for day in state.active_days if day > first_day]
    if in_window:
        times.append((in_window[0] + policy.source.score.active_days_window) * DAY)
    age_bound = _next_bound(
        (clock - state.first_seen) // DAY, policy.score_bins["account_age_days"]
    )
    if age_bound is not None:
        times.append(state.first_seen + (age_bound + 1) * DAY)
    for entries, length in (
        (state.other_lender_applications, policy.other_lender_window),
        (state.spend, policy.spend_window),
    ):
        oldest = entries.oldest_after(clock - length)
        if oldest is not None:
            times.append(oldest + length)
    later = [t for t in times if t > clock]
    return min(later) if later else None


def _next_bound(value: int, bins: tuple[tuple[Fraction | None, int], ...]) -> int | None:
    """The upper bound of ``value``'s bin: past it, the points change."""
    for up_to, _ in bins:
        if up_to is not None and value <= up_to:
            return int(up_to)
    return None
