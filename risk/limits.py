"""Graduated limits: the status machine behind every limit event.

A user's status is the strictest that applies: ``frozen`` (limit 0), then
``probation`` (half the limit after a severe freeze), then ``reduced`` (half the
limit on risk below the freeze bar), then ``active``. A limit event comes out only
when the status changes: ``limit.freeze`` into ``frozen``, ``limit.reduce`` from
``active`` into ``reduced``, and ``limit.restore`` into any less strict status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from risk.clock import DAY, format_timestamp
from risk.contract import MAX_MONEY, IncomeVerification, LimitOverride
from risk.decision import FREEZE, REDUCE, RESTORE, Decision, ReasonCode
from risk.ledger import current_max_dpd, max_dpd_since, overdue_amount
from risk.policy import Policy
from risk.rules import (
    CLEARED_CODES,
    FREEZE_CODES,
    REDUCE_CODES,
    Measures,
    cleared,
    freeze_blocked,
    freeze_hits,
    freeze_path,
    ratio,
    reduce_cleared,
    reduce_hits,
    reduce_path,
)
from risk.state import LastDecision, UserState

STATUSES: Final = ("active", "reduced", "probation", "frozen")
"""From the least to the most strict."""
MANUAL: Final = "MANUAL_OVERRIDE"
MANUAL_REVIEW: Final = "MANUAL_REVIEW_REQUIRED"
DECISION_REASONS: Final = {
    FREEZE: (*FREEZE_CODES, MANUAL),
    REDUCE: REDUCE_CODES,
    RESTORE: (*CLEARED_CODES.values(), "INCOME_VERIFIED", "PROBATION_COMPLETED", MANUAL),
}
"""Every reason code each decision type can carry: the metrics bind one series each."""


def status(state: UserState) -> str:
    """The strictest status that applies, one of :data:`STATUSES`."""
    if state.frozen:
        return "frozen"
    if state.probation:
        return "probation"
    if state.reduce_reasons:
        return "reduced"
    return "active"


def evaluate(
    state: UserState, policy: Policy, caused_by: str | Callable[[], str]
) -> Decision | None:
    """Apply the automatic rules at the user's clock; a decision comes out on a status change.

    ``caused_by`` may be a function that makes it, called only when a decision comes out.
    """
    before = status(state)
    m = Measures(state, policy)
    freeze = freeze_hits(state, m, policy)
    reduce = reduce_hits(state, m, policy)
    if state.waived:
        holding = {hit.code: hit.value for hit in freeze + reduce}
        state.waived = {
            code: kept
            for code, value in state.waived.items()
            if code in holding
            and (kept := _waiver(state, m, code, value, holding[code])) is not None
        }
        if "SPEND_INCOME_MISMATCH" not in state.waived:
            state.waived_spend = None
        freeze = [hit for hit in freeze if hit.code not in state.waived]
        reduce = [hit for hit in reduce if hit.code not in state.waived]
    if before == "active" and not freeze and not reduce:
        return None  # the common case: nothing holds, nothing to clear
    restored = _update_freeze(state, m, policy, freeze)
    restored += _update_probation(state, policy)
    restored += _update_reduction(state, m, policy, reduce)
    after = status(state)
    if after == before:
        return None
    if not isinstance(caused_by, str):
        caused_by = caused_by()
    if after == "frozen":
        return decide(state, m, policy, FREEZE, caused_by, freeze)
    if before == "active":
        return decide(state, m, policy, REDUCE, caused_by, reduce)
    # A code cleared for the freeze and the reduction at once is listed once, as the freeze's.
    unique = list({reason.code: reason for reason in reversed(restored)}.values())[::-1]
    return decide(state, m, policy, RESTORE, caused_by, unique)


def _waiver(state: UserState, m: Measures, code: str, waived: float, now: float) -> float | None:
    """The measure a waiver keeps once its rule measures ``now``; ``None`` once it is worse.

    A count, or the spend, keeps the best measure seen since the operator's restore: evidence
    that left (a repaid instalment, an application out of the window) is not set aside again
    when new evidence of the same amount comes in, and they rise only on evidence. The score
    rises and falls with time alone, so it keeps the score the operator set aside: a dip
    back from a peak that time brought is no new evidence.
    """
    if code == "SCORE_LOW":
        return None if now < waived else waived
    if code == "SPEND_INCOME_MISMATCH":
        return _spend_waiver(state, m, waived, now)
    return None if now > waived else float(min(now, waived))


def _spend_waiver(state: UserState, m: Measures, waived: float, now: float) -> float | None:
    """:func:`_waiver` of the spend, compared exactly with ``state.waived_spend``.

    The reason's value is rounded, up near its bar, so it would call a rise of less than
    0.0001 × income no worse, and a waiver an earlier version stored rounded to the nearest
    worse at once: such a waiver (no ``waived_spend``) is compared as that version did until
    the first evaluation. ``waived`` keeps the reason's value of the best spend, which every
    earlier version, reading it back in a rolling deploy or a rollback, finds no better than
    its own measure of that spend.
    """
    income = state.effective_income
    assert income is not None  # noqa: S101 - the rule holds
    best = state.waived_spend
    if best is None:
        if ratio(m.spend, income) > waived:
            return None
    elif m.spend * best[1] > best[0] * income:
        return None
    if best is None or m.spend * best[1] < best[0] * income:
        improved = best is not None
        state.waived_spend = (m.spend, income)
        return float(now) if improved else waived
    return waived


def _update_freeze(
    state: UserState, m: Measures, policy: Policy, hits: list[ReasonCode]
) -> list[ReasonCode]:
    """Freeze on a hit; restore once every automatic reason has cleared. The restore reasons."""
    if not state.frozen:
        if hits:
            _start_freeze(state, [hit.code for hit in hits])
        return []
    state.freeze_peak_dpd = max(state.freeze_peak_dpd, max_dpd_since(state, state.frozen_since))
    codes = {hit.code for hit in hits} | set(state.freeze_reasons)
    state.freeze_reasons = [code for code in (*FREEZE_CODES, MANUAL) if code in codes]
    automatic = [code for code in state.freeze_reasons if code != MANUAL]
    if not automatic:
        return []  # an operator's freeze alone: only an operator lifts it
    still_overdue = (
        m.overdue_count
        and policy.source.rules.overdue_active.enabled
        and "OVERDUE_ACTIVE" not in state.waived
    )
    if still_overdue or freeze_blocked(state, m, policy):
        return []
    manual = MANUAL in state.freeze_reasons
    if manual and not policy.source.overrides.automatic_may_undo_manual_freeze:
        state.freeze_reasons = [MANUAL]
        return []
    state.automatic_restores = _recent_restores(state, policy)
    if len(state.automatic_restores) >= policy.source.restore.automatic_per_window:
        return []
    reasons = cleared(automatic, state, m, policy)
    if state.cure_shortened_by and "OVERDUE_ACTIVE" in automatic:
        days = state.cure_shortened_by // DAY
        reasons.append(ReasonCode(
            "INCOME_VERIFIED", days, 0,
            f"a verified income shortened the cure period by {days} days",
        ))  # fmt: skip
    state.frozen = False
    state.freeze_reasons = []
    state.cure_shortened_by = 0
    state.automatic_restores.append(state.clock)
    probation = policy.source.probation
    if probation.enabled and state.freeze_peak_dpd > probation.after_dpd_above:
        state.probation = True
        state.probation_streak = 0
    return reasons


def _start_freeze(state: UserState, codes: list[str]) -> None:
    state.frozen = True
    state.freeze_reasons = codes
    state.frozen_since = state.clock
    state.freeze_peak_dpd = current_max_dpd(state)
    state.probation = False
    state.cure_shortened_by = 0


def _recent_restores(state: UserState, policy: Policy) -> list[int]:
    """Anti-flapping: the automatic restores from a freeze still inside the rolling window."""
    start = state.clock - policy.restore_window
    return [at for at in state.automatic_restores if at > start]


def _update_probation(state: UserState, policy: Policy) -> list[ReasonCode]:
    needed = policy.source.probation.on_time_instalments
    if state.frozen or not state.probation or state.probation_streak < needed:
        return []
    state.probation = False
    return [ReasonCode(
        "PROBATION_COMPLETED", state.probation_streak, needed,
        f"{state.probation_streak} instalments in a row paid on time",
    )]  # fmt: skip


def _update_reduction(
    state: UserState, m: Measures, policy: Policy, hits: list[ReasonCode]
) -> list[ReasonCode]:
    """Add reduce reasons that hold, drop those whose restore condition holds."""
    if not hits and not state.reduce_reasons:
        return []
    codes = {hit.code for hit in hits} | set(state.reduce_reasons)
    held = [code for code in REDUCE_CODES if code in codes]
    gone = [code for code in held if code not in {hit.code for hit in hits}]
    gone = [code for code in gone if reduce_cleared(code, state, m, policy)]
    state.reduce_reasons = [code for code in held if code not in gone]
    return cleared(gone, state, m, policy, reduced=True)


def apply_override(state: UserState, override: LimitOverride, policy: Policy) -> Decision | None:
    """An operator's freeze or restore, audited with ``MANUAL_OVERRIDE`` in the decision.

    A manual restore sets aside the rules that hold at that moment; each comes back
    into force once it has stopped holding or its measure gets worse (another overdue
    instalment, another application), so new evidence freezes again.
    """
    before = status(state)
    m = Measures(state, policy)
    reason = ReasonCode(
        MANUAL, 1, 1, f"{override.action} by operator {override.operator}: {override.note}"
    )
    if override.action == "freeze":
        state.waived, state.waived_spend = {}, None
        # The rules that hold now are frozen alongside, and the reduce rules reduce, as an
        # evaluation would add them: left out, whether they could undo the freeze, or what
        # its automatic restore came back to, depended on an evaluation before they cleared.
        frozen_for = [hit.code for hit in freeze_hits(state, m, policy)]
        if not state.frozen:
            _start_freeze(state, [])
        codes = {*state.freeze_reasons, *frozen_for, MANUAL}
        state.freeze_reasons = [code for code in (*FREEZE_CODES, MANUAL) if code in codes]
        _update_reduction(state, m, policy, reduce_hits(state, m, policy))
        kind = FREEZE
    else:
        holding = freeze_hits(state, m, policy) + reduce_hits(state, m, policy)
        # As floats, as the state's type has them: an int would come back from the
        # changelog as a float, and a state read again would differ from one kept.
        state.waived = {hit.code: float(hit.value) for hit in holding}
        state.waived_spend = None
        if "SPEND_INCOME_MISMATCH" in state.waived:
            income = state.effective_income
            assert income is not None  # noqa: S101 - the rule holds
            state.waived_spend = (m.spend, income)
        state.frozen = state.probation = False
        state.freeze_reasons, state.reduce_reasons = [], []
        state.cure_shortened_by = 0
        kind = RESTORE
    if status(state) == before:
        return None
    return decide(state, m, policy, kind, override.event_id, [reason])


def verify_income(state: UserState, verification: IncomeVerification, policy: Policy) -> None:
    """Verified income supersedes the declared one; a running cure period is shortened."""
    if verification.at >= state.verified_income_at:
        state.verified_income = verification.verified_monthly_income
        state.verified_income_at = verification.at
    remaining = state.cure_until - state.clock
    if remaining > 0:
        factor = policy.cure_remaining_factor
        kept = remaining * factor.numerator // factor.denominator
        state.cure_until = state.clock + kept
        state.cure_shortened_by += remaining - kept


def restore_path(state: UserState, m: Measures, policy: Policy) -> list[str]:
    """What still stands between the user and their next restore, in words and numbers."""
    if state.frozen:
        path = freeze_path(state, m, policy)
        if MANUAL in state.freeze_reasons and not (
            policy.source.overrides.automatic_may_undo_manual_freeze
            and len(state.freeze_reasons) > 1
        ):
            path.append(f"{MANUAL_REVIEW}: frozen by an operator; an operator's restore lifts it")
        elif len(recent := _recent_restores(state, policy)) >= (
            policy.source.restore.automatic_per_window
        ):
            oldest = recent[0]
            path.append(
                f"{MANUAL_REVIEW}: the automatic restore of {format_timestamp(oldest)} is the"
                f" last allowed in {policy.source.restore.window}; an operator's restore lifts"
                f" the freeze, or it lifts by itself from"
                f" {format_timestamp(oldest + policy.restore_window)}"
            )
        return path
    if state.probation:
        needed = policy.source.probation.on_time_instalments
        return [
            f"pay {needed - state.probation_streak} more instalments on time in a row"
            f" ({state.probation_streak} of {needed} so far)"
        ]
    return reduce_path(state, m, policy)


def decide(
    state: UserState,
    m: Measures,
    policy: Policy,
    kind: str,
    caused_by: str,
    reasons: list[ReasonCode],
) -> Decision:
    """The limit event for the user's new status, remembered in the state."""
    decision = Decision(
        type=kind,
        status=status(state),
        user_id=state.user_id,
        occurred_at=state.clock,
        caused_by=caused_by,
        reasons=tuple(reasons),
        features=features(state, policy, m),
        # Empty on a restore, as in the first contract; /users/{id} shows the way further.
        restore_path=() if kind == RESTORE else tuple(restore_path(state, m, policy)),
        policy_version=policy.version,
    )
    state.last_decision = LastDecision(kind, decision.event_id, state.clock, caused_by)
    return decision


def features(state: UserState, policy: Policy, m: Measures | None = None) -> dict[str, Any]:
    """The features snapshot of a decision, or of the user endpoint, at the user's clock.

    Money features are sums and saturate at :data:`MAX_MONEY`, so every one stays an exact
    JSON number within the schema's ``maximum``.
    """
    m = m or Measures(state, policy)
    card = m.scorecard
    return {
        "overdue_active": m.overdue_count,
        "overdue_amount": min(overdue_amount(state), MAX_MONEY),
        "max_dpd": current_max_dpd(state),
        "overdue_episodes_180d": m.episodes,
        "loan_applications_7d": m.applications,
        "loan_applications_30d": state.applications.total(state.clock - policy.loan_long_window),
        "small_loan_applications_24h": m.small_applications,
        "spend_30d": min(m.spend, MAX_MONEY),
        "declared_monthly_income": state.income,
        "outstanding": min(sum(i.amount - i.paid for i in state.instalments), MAX_MONEY),
        "credit": min(state.credit, MAX_MONEY),
        "cure_ends_at": (
            format_timestamp(state.cure_until) if state.cure_until > state.clock else None
        ),
        "verified_monthly_income": state.verified_income,
        "other_lender_applications_30d": card.values["other_lender_applications_30d"],
        "active_days_90d": card.values["active_days_90d"],
        "score": card.score,
    }
