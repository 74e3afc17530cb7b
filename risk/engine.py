"""Applying events and timers to one user's state, and evaluating the policy.

The functions here are the whole decision logic: the Faust agent, ``lineguard
replay`` and backtests call them with an event or a time and get decisions back.
"""

from __future__ import annotations

import hashlib
from bisect import insort
from functools import partial
from typing import Final

from risk.clock import DAY, SECOND, format_timestamp, format_timestamp_seconds
from risk.contract import (
    Event,
    IncomeVerification,
    LimitOverride,
    LoanApplication,
    Purchase,
    Reason,
    Rejection,
    Repayment,
)
from risk.decision import Decision
from risk.ledger import (
    add_purchase,
    close_episode_if_cured,
    mark_overdue,
    prune_episodes,
    repay,
)
from risk.limits import apply_override, evaluate, verify_income
from risk.policy import EXACT_TIMESTAMPS_CAP, Policy
from risk.rules import next_expiry
from risk.score import next_change
from risk.state import DEDUP_CAP, UserState

OVERDUE, CURE, WINDOW = 0, 1, 2
TIMER_KINDS: Final = ("overdue", "cure", "window")
"""Timer kinds in firing order when several of one user fall at the same instant."""

DUPLICATE: Final = "duplicate"


def event_key(event_id: str) -> int:
    """A stable 64-bit hash of an event id (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def new_state(event: Event) -> UserState:
    """The state of a user first seen with ``event``."""
    return UserState(
        user_id=event.user_id, first_seen=event.at, clock=event.at, last_activity=event.at
    )


def admit(
    state: UserState | None, event: Event, policy: Policy, now: int
) -> Rejection | str | None:
    """Check an event against the clocks and the dedup memory before it is applied.

    Returns a rejection, :data:`DUPLICATE`, or None when the event is to be applied.
    The duplicate check runs before the lateness check, so a late redelivery is a
    duplicate, not a dead letter.
    """
    return admit_keyed(state, event, policy, now, event_key(event.event_id))


def admit_keyed(
    state: UserState | None, event: Event, policy: Policy, now: int, key: int
) -> Rejection | str | None:
    """:func:`admit` with the event's :func:`event_key` already computed."""
    if event.at > now + policy.max_future_skew:
        return Rejection(
            Reason.IN_FUTURE,
            f"occurred_at {format_timestamp(event.at)} is more than"
            f" {policy.source.time.max_future_skew} ahead of the wall clock",
        )
    if state is None:
        return None
    if key in state.seen:
        return DUPLICATE
    if state.dedup_floor is not None and event.at <= state.dedup_floor:
        return Rejection(
            Reason.TOO_LATE,
            "older than this user's deduplication memory, so it cannot be told from a duplicate",
        )
    if state.clock - event.at > policy.allowed_lateness:
        return Rejection(
            Reason.TOO_LATE,
            f"occurred_at {format_timestamp(event.at)} is more than"
            f" {policy.source.time.allowed_lateness} before the user's clock",
        )
    return None


def apply(state: UserState, event: Event, policy: Policy) -> list[Decision]:
    """Fire the user's timers up to the event, apply it at the clock and evaluate."""
    return apply_keyed(state, event, policy, event_key(event.event_id), timers_due=True)


def apply_keyed(
    state: UserState, event: Event, policy: Policy, key: int, *, timers_due: bool
) -> list[Decision]:
    """:func:`apply` with the :func:`event_key`; ``timers_due`` False when none is due by the event.

    :class:`~risk.partition.PartitionProcessor` knows each user's next timer from its
    index, so it can skip the search for one that cannot be due.
    """
    at = event.at
    decisions = fire_timers(state, at, policy) if timers_due else []
    if at > state.clock:
        state.clock = at
    if at > state.last_activity:
        state.last_activity = at
    on_time, late = state.paid_on_time, state.paid_late
    if isinstance(event, Purchase):
        add_purchase(state, event, policy)
        if at > state.clock - policy.spend_window:
            state.spend.add(at, event.amount, EXACT_TIMESTAMPS_CAP)
        _add_active_day(state, at, policy)
    elif isinstance(event, Repayment):
        repay(state, event.amount, event.order_id)
        close_episode_if_cured(state, policy)
        _add_active_day(state, at, policy)
    elif isinstance(event, LoanApplication):
        _add_application(state, event, policy)
    elif isinstance(event, IncomeVerification):
        verify_income(state, event, policy)
    if state.probation:
        # Late instalments are settled first (earliest due), so on-time ones follow them.
        settled_on_time = state.paid_on_time - on_time
        streak = 0 if state.paid_late > late else state.probation_streak
        state.probation_streak = streak + settled_on_time
    _remember(state, key, at, policy)
    _prune(state, policy)
    if isinstance(event, LimitOverride):
        decision = apply_override(state, event, policy)
    else:
        decision = evaluate(state, policy, event.event_id)
    if decision is not None:
        decisions.append(decision)
    return decisions


def _add_active_day(state: UserState, at: int, policy: Policy) -> None:
    day = at // DAY
    in_window = day > state.clock // DAY - policy.source.score.active_days_window
    if in_window and day not in state.active_days:
        insort(state.active_days, day)


def _add_application(state: UserState, event: LoanApplication, policy: Policy) -> None:
    if event.at > state.clock - policy.loan_long_window:
        state.applications.add(event.at, 1, EXACT_TIMESTAMPS_CAP)
    small_max = policy.source.rules.small_loan_burst.small_max_amount
    if event.requested_amount <= small_max and event.at > state.clock - policy.small_window:
        state.small_applications.add(event.at, 1, EXACT_TIMESTAMPS_CAP)
    income = event.declared_monthly_income
    if income and event.at >= state.income_at:
        state.income, state.income_at = income, event.at
    other_lender = event.channel not in (None, policy.source.score.own_channel)
    if other_lender and event.at > state.clock - policy.other_lender_window:
        state.other_lender_applications.add(event.at, 1, EXACT_TIMESTAMPS_CAP)


def _remember(state: UserState, key: int, at: int, policy: Policy) -> None:
    """Record the event id's key; past the cap forget expired ids, then the oldest ones."""
    seen = state.seen
    seen[key] = at
    if len(seen) <= DEDUP_CAP:
        return
    horizon = state.clock - policy.dedup_horizon
    # An event exactly ``allowed_lateness`` old is still applied, and the horizon may equal
    # it: an id at the horizon is kept, or its redelivery would be applied again.
    kept = sorted((at, key) for key, at in seen.items() if at >= horizon)
    if len(kept) > DEDUP_CAP:
        forget = len(kept) - DEDUP_CAP * 3 // 4
        state.dedup_floor = max(state.dedup_floor or kept[forget - 1][0], kept[forget - 1][0])
        kept = kept[forget:]
    state.seen = {key: at for at, key in kept}


def _prune(state: UserState, policy: Policy) -> None:
    clock = state.clock
    # Window.prune's own first checks, inlined: most windows have nothing to forget.
    window, start = state.applications, clock - policy.loan_long_window
    if (window.times and window.times[0] <= start) or (
        window.bucket_latest and window.bucket_latest[0] <= start
    ):
        window.prune(start)
    window, start = state.small_applications, clock - policy.small_window
    if (window.times and window.times[0] <= start) or (
        window.bucket_latest and window.bucket_latest[0] <= start
    ):
        window.prune(start)
    window, start = state.spend, clock - policy.spend_window
    if (window.times and window.times[0] <= start) or (
        window.bucket_latest and window.bucket_latest[0] <= start
    ):
        window.prune(start)
    window, start = state.other_lender_applications, clock - policy.other_lender_window
    if (window.times and window.times[0] <= start) or (
        window.bucket_latest and window.bucket_latest[0] <= start
    ):
        window.prune(start)
    active_days = state.active_days
    if active_days:
        first_day = clock // DAY - policy.source.score.active_days_window
        if active_days[0] <= first_day:
            state.active_days = [day for day in active_days if day > first_day]
    if state.episodes:
        prune_episodes(state, policy)


def next_timer(state: UserState, policy: Policy) -> tuple[int, int] | None:
    """The user's next timer as (time, kind), or None. Derived from state, never stored.

    The earliest of the candidates below, the lowest kind first at the same time.
    """
    best: tuple[int, int] | None = None
    instalments, overdue_count = state.instalments, state.overdue_count
    if overdue_count < len(instalments):  # next_overdue_at, inlined
        best = (instalments[overdue_count].due_at + policy.grace, OVERDUE)
    frozen = state.frozen
    if frozen:
        clock = state.clock
        if state.cure_until > clock and policy.source.rules.overdue_active.enabled:
            candidate = (state.cure_until, CURE)
            if best is None or candidate < best:
                best = candidate
        restores = state.automatic_restores
        if len(restores) >= policy.source.restore.automatic_per_window:
            allowed_again = restores[0] + policy.restore_window
            if allowed_again > clock:  # anti-flapping ends; pruned once evaluated
                candidate = (allowed_again, WINDOW)
                if best is None or candidate < best:
                    best = candidate
    if frozen or state.reduce_reasons or state.waived:
        window_at = next_expiry(state, policy)
        if window_at is not None and (best is None or (window_at, WINDOW) < best):
            best = (window_at, WINDOW)
    if policy.source.rules.score_low.enabled:
        score_at = next_change(state, policy)
        if score_at is not None and (best is None or (score_at, WINDOW) < best):
            best = (score_at, WINDOW)
    return best


def fire_timers(state: UserState, until: int, policy: Policy) -> list[Decision]:
    """Fire the user's timers due at or before ``until``, in (time, kind) order."""
    return fire_timers_and_next(state, until, policy)[0]


def fire_timers_and_next(
    state: UserState, until: int, policy: Policy
) -> tuple[list[Decision], tuple[int, int] | None]:
    """:func:`fire_timers`, and the user's next timer after them (the last one looked up)."""
    decisions: list[Decision] = []
    while (timer := next_timer(state, policy)) is not None and timer[0] <= until:
        at, kind = timer
        if at > state.clock:
            state.clock = at
        if kind == OVERDUE:
            mark_overdue(state, policy)
            if state.probation:
                state.probation_streak = 0  # an instalment missed its due date
        _prune(state, policy)
        decision = evaluate(state, policy, partial(timer_cause, at, kind, state))
        if decision is not None:
            decisions.append(decision)
    return decisions, timer


def timer_cause(at: int, kind: int, state: UserState) -> str:
    """The ``caused_by`` of a decision a timer made: ``timer:<kind>:<time>``.

    The time is ``YYYY-MM-DDTHH:MM:SSZ``, as DESIGN.md gives it, unless the user's previous
    decision fell within the same second: then it keeps its fraction. Truncated there, two
    same-kind timers of one user within a second, with a decision between them, gave two
    decisions of one type the same ``event_id``, and a consumer deduplicating by it dropped
    the second (RELIABILITY.md, defect 32). Any such pair has a decision between them in
    that second, so the second of them is always told apart, and no other id changes.
    """
    last = state.last_decision
    if last is not None and last.occurred_at // SECOND == at // SECOND:
        return f"timer:{TIMER_KINDS[kind]}:{format_timestamp(at)}"
    return f"timer:{TIMER_KINDS[kind]}:{format_timestamp_seconds(at)}"
