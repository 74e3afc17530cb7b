"""Applying events and timers to one user's state, and evaluating the policy.

The functions here are the whole decision logic: the Faust agent, ``lineguard
replay`` and backtests call them with an event or a time and get decisions back.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from typing import Any, Final

from risk.clock import DAY, format_timestamp, format_timestamp_seconds
from risk.contract import Event, LoanApplication, Purchase, Reason, Rejection, Repayment
from risk.decision import FREEZE, RESTORE, Decision, ReasonCode
from risk.ledger import (
    add_purchase,
    close_episode_if_cured,
    current_max_dpd,
    episodes_since,
    mark_overdue,
    next_overdue_at,
    overdue_amount,
    prune_episodes,
    repay,
)
from risk.policy import EXACT_TIMESTAMPS_CAP, Policy
from risk.state import DEDUP_CAP, LastDecision, UserState

OVERDUE, CURE, WINDOW = 0, 1, 2
TIMER_KINDS: Final = ("overdue", "cure", "window")
"""Timer kinds in firing order when several of one user fall at the same instant."""

FREEZE_CODES: Final = (
    "OVERDUE_ACTIVE",
    "OVERDUE_REPEATED",
    "LOAN_VELOCITY",
    "SMALL_LOAN_BURST",
    "SPEND_INCOME_MISMATCH",
)
CLEARED_CODES: Final = {
    "OVERDUE_ACTIVE": "REPAID_AND_CURED",
    "OVERDUE_REPEATED": "OVERDUE_REPEATED_CLEARED",
    "LOAN_VELOCITY": "LOAN_VELOCITY_CLEARED",
    "SMALL_LOAN_BURST": "SMALL_LOAN_BURST_CLEARED",
    "SPEND_INCOME_MISMATCH": "SPEND_INCOME_MISMATCH_CLEARED",
}
"""The restore reason that clears each freeze reason."""
DECISION_REASONS: Final = {FREEZE: FREEZE_CODES, RESTORE: tuple(CLEARED_CODES.values())}
"""Every reason code each decision type can carry: the metrics bind one series each."""
STATUSES: Final = ("active", "frozen")
DUPLICATE: Final = "duplicate"


def status(state: UserState) -> str:
    """The user's limit status, one of :data:`STATUSES`."""
    return "frozen" if state.frozen else "active"


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
    if event.at > now + policy.max_future_skew:
        return Rejection(
            Reason.IN_FUTURE,
            f"occurred_at {format_timestamp(event.at)} is more than"
            f" {policy.source.time.max_future_skew} ahead of the wall clock",
        )
    if state is None:
        return None
    if event_key(event.event_id) in state.seen:
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
    decisions = fire_timers(state, event.at, policy)
    state.clock = max(state.clock, event.at)
    state.last_activity = max(state.last_activity, event.at)
    if isinstance(event, Purchase):
        add_purchase(state, event, policy)
        if event.at > state.clock - policy.spend_window:
            state.spend.add(event.at, event.amount, EXACT_TIMESTAMPS_CAP)
    elif isinstance(event, Repayment):
        repay(state, event.amount, event.order_id)
        close_episode_if_cured(state, policy)
    else:
        _add_application(state, event, policy)
    _remember(state, event, policy)
    _prune(state, policy)
    decision = evaluate(state, policy, event.event_id)
    if decision is not None:
        decisions.append(decision)
    return decisions


def _add_application(state: UserState, event: LoanApplication, policy: Policy) -> None:
    if event.at > state.clock - policy.loan_long_window:
        state.applications.add(event.at, 1, EXACT_TIMESTAMPS_CAP)
    small_max = policy.source.rules.small_loan_burst.small_max_amount
    if event.requested_amount <= small_max and event.at > state.clock - policy.small_window:
        state.small_applications.add(event.at, 1, EXACT_TIMESTAMPS_CAP)
    income = event.declared_monthly_income
    if income and event.at >= state.income_at:
        state.income, state.income_at = income, event.at


def _remember(state: UserState, event: Event, policy: Policy) -> None:
    """Record the event id; past the cap forget expired ids, then the oldest ones."""
    state.seen[event_key(event.event_id)] = event.at
    if len(state.seen) <= DEDUP_CAP:
        return
    horizon = state.clock - policy.dedup_horizon
    kept = sorted((at, key) for key, at in state.seen.items() if at > horizon)
    if len(kept) > DEDUP_CAP:
        forget = len(kept) - DEDUP_CAP * 3 // 4
        state.dedup_floor = max(state.dedup_floor or kept[forget - 1][0], kept[forget - 1][0])
        kept = kept[forget:]
    state.seen = {key: at for at, key in kept}


def _prune(state: UserState, policy: Policy) -> None:
    state.applications.prune(state.clock - policy.loan_long_window)
    state.small_applications.prune(state.clock - policy.small_window)
    state.spend.prune(state.clock - policy.spend_window)
    prune_episodes(state, policy)


def next_timer(state: UserState, policy: Policy) -> tuple[int, int] | None:
    """The user's next timer as (time, kind), or None. Derived from state, never stored."""
    candidates: list[tuple[int, int]] = []
    overdue_at = next_overdue_at(state, policy)
    if overdue_at is not None:
        candidates.append((overdue_at, OVERDUE))
    if state.frozen:
        if policy.source.rules.overdue_active.enabled and state.cure_until > state.clock:
            candidates.append((state.cure_until, CURE))
        window_at = _next_window_expiry(state, policy)
        if window_at is not None:
            candidates.append((window_at, WINDOW))
    return min(candidates) if candidates else None


def fire_timers(state: UserState, until: int, policy: Policy) -> list[Decision]:
    """Fire the user's timers due at or before ``until``, in (time, kind) order."""
    decisions: list[Decision] = []
    while (timer := next_timer(state, policy)) is not None and timer[0] <= until:
        at, kind = timer
        state.clock = max(state.clock, at)
        if kind == OVERDUE:
            mark_overdue(state, policy)
        _prune(state, policy)
        decision = evaluate(
            state, policy, f"timer:{TIMER_KINDS[kind]}:{format_timestamp_seconds(at)}"
        )
        if decision is not None:
            decisions.append(decision)
    return decisions


class _Measures:
    """The quantities the rules compare, at the user's clock."""

    __slots__ = ("applications", "episodes", "overdue_count", "small_applications", "spend")

    def __init__(self, state: UserState, policy: Policy) -> None:
        clock = state.clock
        self.overdue_count = state.overdue_count
        self.episodes = episodes_since(state, clock - policy.episode_window)
        self.applications = state.applications.total(clock - policy.loan_window)
        self.small_applications = state.small_applications.total(clock - policy.small_window)
        self.spend = state.spend.total(clock - policy.spend_window)


def _spend_above(spend: int, income: int | None, ratio: Fraction) -> bool:
    """``spend > ratio × income``, exactly; unknown income never counts as a mismatch."""
    return income is not None and spend * ratio.denominator > ratio.numerator * income


def _freeze_hits(state: UserState, m: _Measures, policy: Policy) -> list[ReasonCode]:
    rules = policy.source.rules
    hits: list[ReasonCode] = []
    if rules.overdue_active.enabled and m.overdue_count:
        oldest = state.instalments[0]
        more = f" ({m.overdue_count - 1} more overdue)" if m.overdue_count > 1 else ""
        hits.append(ReasonCode(
            "OVERDUE_ACTIVE", m.overdue_count, 1,
            f"instalment {oldest.number} of order {oldest.order_id} is"
            f" {current_days_past_due(state)} days past due{more}",
        ))  # fmt: skip
    repeated = rules.overdue_repeated
    if repeated.enabled and m.episodes >= repeated.freeze_min_episodes:
        hits.append(ReasonCode(
            "OVERDUE_REPEATED", m.episodes, repeated.freeze_min_episodes,
            f"{m.episodes} overdue episodes started in the last {policy.source.overdue.episode_window}",
        ))  # fmt: skip
    velocity = rules.loan_velocity
    if velocity.enabled and m.applications >= velocity.freeze_min_applications:
        hits.append(ReasonCode(
            "LOAN_VELOCITY", m.applications, velocity.freeze_min_applications,
            f"{m.applications} loan applications in the last {velocity.window}",
        ))  # fmt: skip
    burst = rules.small_loan_burst
    if burst.enabled and m.small_applications >= burst.freeze_min_applications:
        hits.append(ReasonCode(
            "SMALL_LOAN_BURST", m.small_applications, burst.freeze_min_applications,
            f"{m.small_applications} applications of at most {burst.small_max_amount}"
            f" in the last {burst.window}",
        ))  # fmt: skip
    spend = rules.spend_income
    if spend.enabled and _spend_above(m.spend, state.income, policy.freeze_above_ratio):
        assert state.income is not None  # noqa: S101 - implied by _spend_above
        hits.append(ReasonCode(
            "SPEND_INCOME_MISMATCH", _ratio(m.spend, state.income),
            _number(policy.freeze_above_ratio),
            f"spend {m.spend} over the last {spend.window} is above"
            f" {spend.freeze_above_ratio} × the declared monthly income {state.income}",
        ))  # fmt: skip
    return hits


def _restore_path(state: UserState, m: _Measures, policy: Policy) -> list[str]:
    """What still stands between a frozen user and a restore, in words and numbers."""
    rules = policy.source.rules
    path: list[str] = []
    if rules.overdue_active.enabled:
        if m.overdue_count:
            path.append(f"repay {overdue_amount(state)} overdue")
        elif state.cure_until > state.clock:
            path.append(f"wait for the cure period to end at {format_timestamp(state.cure_until)}")
    repeated = rules.overdue_repeated
    if repeated.enabled and m.episodes > repeated.restore_max_episodes:
        path.append(
            f"wait until overdue episodes in {policy.source.overdue.episode_window} fall from"
            f" {m.episodes} to {repeated.restore_max_episodes}"
        )
    velocity = rules.loan_velocity
    if velocity.enabled and m.applications > velocity.restore_max_applications:
        path.append(
            f"wait until loan applications in {velocity.window} fall from {m.applications}"
            f" to {velocity.restore_max_applications}"
        )
    burst = rules.small_loan_burst
    if burst.enabled and m.small_applications > burst.restore_max_applications:
        path.append(
            f"wait until small loan applications in {burst.window} fall from"
            f" {m.small_applications} to {burst.restore_max_applications}"
        )
    spend = rules.spend_income
    if spend.enabled and _spend_above(m.spend, state.income, policy.restore_max_ratio):
        path.append(
            f"wait until spend over {spend.window} falls from {m.spend} to"
            f" {spend.restore_max_ratio} × the declared monthly income {state.income}"
        )
    return path


def _cleared(state: UserState, m: _Measures, policy: Policy) -> list[ReasonCode]:
    """Restore reasons: one per reason of the freeze."""
    rules = policy.source.rules
    reasons: list[ReasonCode] = []
    for code in state.freeze_reasons:
        if code == "OVERDUE_ACTIVE":
            reasons.append(ReasonCode(
                CLEARED_CODES[code], 0, 0, "every overdue instalment is repaid and the cure period is over"
            ))  # fmt: skip
        elif code == "OVERDUE_REPEATED":
            reasons.append(ReasonCode(
                CLEARED_CODES[code], m.episodes, rules.overdue_repeated.restore_max_episodes,
                f"{m.episodes} overdue episodes in the last {policy.source.overdue.episode_window}",
            ))  # fmt: skip
        elif code == "LOAN_VELOCITY":
            reasons.append(ReasonCode(
                CLEARED_CODES[code], m.applications,
                rules.loan_velocity.restore_max_applications,
                f"{m.applications} loan applications in the last {rules.loan_velocity.window}",
            ))  # fmt: skip
        elif code == "SMALL_LOAN_BURST":
            reasons.append(ReasonCode(
                CLEARED_CODES[code], m.small_applications,
                rules.small_loan_burst.restore_max_applications,
                f"{m.small_applications} small loan applications in the last"
                f" {rules.small_loan_burst.window}",
            ))  # fmt: skip
        else:
            ratio = _ratio(m.spend, state.income) if state.income else 0
            reasons.append(ReasonCode(
                CLEARED_CODES[code], ratio, _number(policy.restore_max_ratio),
                f"spend {m.spend} over the last {rules.spend_income.window} is within"
                f" {rules.spend_income.restore_max_ratio} × the declared monthly income",
            ))  # fmt: skip
    return reasons


def evaluate(state: UserState, policy: Policy, caused_by: str) -> Decision | None:
    """Decide at the user's clock; a decision comes out only on a transition."""
    m = _Measures(state, policy)
    hits = _freeze_hits(state, m, policy)
    if not state.frozen:
        if not hits:
            return None
        state.frozen = True
        state.freeze_reasons = [hit.code for hit in hits]
        return _decide(state, m, policy, FREEZE, caused_by, hits, _restore_path(state, m, policy))
    new_codes = {hit.code for hit in hits} - set(state.freeze_reasons)
    if new_codes:
        state.freeze_reasons = [
            code for code in FREEZE_CODES if code in new_codes or code in state.freeze_reasons
        ]
    still_overdue = m.overdue_count and policy.source.rules.overdue_active.enabled
    if still_overdue or _restore_path(state, m, policy):  # the common case, without the words
        return None
    reasons = _cleared(state, m, policy)
    state.frozen = False
    state.freeze_reasons = []
    return _decide(state, m, policy, RESTORE, caused_by, reasons, [])


def _decide(
    state: UserState,
    m: _Measures,
    policy: Policy,
    kind: str,
    caused_by: str,
    reasons: list[ReasonCode],
    restore_path: list[str],
) -> Decision:
    decision = Decision(
        type=kind,
        user_id=state.user_id,
        occurred_at=state.clock,
        caused_by=caused_by,
        reasons=tuple(reasons),
        features=features(state, policy, m),
        restore_path=tuple(restore_path),
        policy_version=policy.version,
    )
    state.last_decision = LastDecision(kind, decision.event_id, state.clock, caused_by)
    return decision


def features(state: UserState, policy: Policy, m: _Measures | None = None) -> dict[str, Any]:
    """The features snapshot of a decision, or of the user endpoint, at the user's clock."""
    m = m or _Measures(state, policy)
    return {
        "overdue_active": m.overdue_count,
        "overdue_amount": overdue_amount(state),
        "max_dpd": current_max_dpd(state),
        "overdue_episodes_180d": m.episodes,
        "loan_applications_7d": m.applications,
        "loan_applications_30d": state.applications.total(state.clock - policy.loan_long_window),
        "small_loan_applications_24h": m.small_applications,
        "spend_30d": m.spend,
        "declared_monthly_income": state.income,
        "outstanding": sum(i.amount - i.paid for i in state.instalments),
        "credit": state.credit,
        "cure_ends_at": (
            format_timestamp(state.cure_until) if state.cure_until > state.clock else None
        ),
    }


def current_days_past_due(state: UserState) -> int:
    """DPD of the oldest overdue instalment at the clock."""
    return (state.clock - state.instalments[0].due_at) // DAY


def _next_window_expiry(state: UserState, policy: Policy) -> int | None:
    """Next time an entry leaves a window whose restore condition currently fails."""
    rules = policy.source.rules
    clock = state.clock
    expiries: list[int] = []
    counted = (
        (rules.loan_velocity.enabled, state.applications, policy.loan_window,
         rules.loan_velocity.restore_max_applications),
        (rules.small_loan_burst.enabled, state.small_applications, policy.small_window,
         rules.small_loan_burst.restore_max_applications),
    )  # fmt: skip
    for enabled, window, length, restore_max in counted:
        if enabled and window.total(clock - length) > restore_max:
            oldest = window.oldest_after(clock - length)
            if oldest is not None:
                expiries.append(oldest + length)
    spend = state.spend.total(clock - policy.spend_window)
    if rules.spend_income.enabled and _spend_above(spend, state.income, policy.restore_max_ratio):
        oldest = state.spend.oldest_after(clock - policy.spend_window)
        if oldest is not None:
            expiries.append(oldest + policy.spend_window)
    repeated = rules.overdue_repeated
    start = clock - policy.episode_window
    if repeated.enabled and episodes_since(state, start) > repeated.restore_max_episodes:
        expiries.append(
            min(e.start for e in state.episodes if e.start > start) + policy.episode_window
        )
    return min(expiries) if expiries else None


def _ratio(spend: int, income: int) -> float:
    return round(spend / income, 4)


def _number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)
