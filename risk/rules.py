"""The policy's rules: what each one measures, when it holds, and what clears it.

Freeze rules hold the line at 0; reduce rules halve it below the freeze bar. Each
rule has hysteresis: it starts to hold at one threshold and clears only at a lower
one, so a user near a threshold does not flap.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Final

from risk.clock import DAY, format_timestamp
from risk.decision import ReasonCode
from risk.ledger import episodes_since, overdue_amount
from risk.policy import Policy
from risk.score import Scorecard, scorecard
from risk.state import UserState

FREEZE_CODES: Final = (
    "OVERDUE_ACTIVE",
    "OVERDUE_REPEATED",
    "LOAN_VELOCITY",
    "SMALL_LOAN_BURST",
    "SPEND_INCOME_MISMATCH",
    "SCORE_LOW",
)
"""Automatic freeze reasons, in the order a decision lists them."""
REDUCE_CODES: Final = ("OVERDUE_REPEATED", "SPEND_INCOME_MISMATCH")
CLEARED_CODES: Final = {
    "OVERDUE_ACTIVE": "REPAID_AND_CURED",
    "OVERDUE_REPEATED": "OVERDUE_REPEATED_CLEARED",
    "LOAN_VELOCITY": "LOAN_VELOCITY_CLEARED",
    "SMALL_LOAN_BURST": "SMALL_LOAN_BURST_CLEARED",
    "SPEND_INCOME_MISMATCH": "SPEND_INCOME_MISMATCH_CLEARED",
    "SCORE_LOW": "SCORE_LOW_CLEARED",
}
"""The restore reason that clears each freeze or reduce reason."""


class Measures:
    """The quantities the rules compare, at the user's clock; the score only when asked."""

    __slots__ = (
        "_policy", "_scorecard", "_state", "applications", "episodes", "overdue_count",
        "small_applications", "spend",
    )  # fmt: skip

    def __init__(self, state: UserState, policy: Policy) -> None:
        clock = state.clock
        self._state, self._policy = state, policy
        self._scorecard: Scorecard | None = None
        self.overdue_count = state.overdue_count
        self.episodes = episodes_since(state, clock - policy.episode_window)
        self.applications = state.applications.total(clock - policy.loan_window)
        self.small_applications = state.small_applications.total(clock - policy.small_window)
        self.spend = state.spend.total(clock - policy.spend_window)

    @property
    def scorecard(self) -> Scorecard:
        """The behaviour score, computed once per evaluation if a rule or a decision needs it."""
        if self._scorecard is None:
            self._scorecard = scorecard(self._state, self._policy)
        return self._scorecard


def spend_above(spend: int, income: int | None, ratio: Fraction) -> bool:
    """``spend > ratio × income``, exactly; unknown income never counts as a mismatch."""
    return income is not None and spend * ratio.denominator > ratio.numerator * income


def income_label(state: UserState) -> str:
    """Which income the spend rules compare against, for the messages."""
    if state.verified_income is not None:
        return f"the verified monthly income {state.verified_income}"
    return f"the declared monthly income {state.income}"


def freeze_hits(state: UserState, m: Measures, policy: Policy) -> list[ReasonCode]:
    """The automatic freeze rules that hold now."""
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
    income = state.effective_income
    if spend.enabled and spend_above(m.spend, income, policy.freeze_above_ratio):
        assert income is not None  # noqa: S101 - implied by spend_above
        hits.append(ReasonCode(
            "SPEND_INCOME_MISMATCH", ratio_above(m.spend, income, policy.freeze_above_ratio),
            number(policy.freeze_above_ratio),
            f"spend {m.spend} over the last {spend.window} is above"
            f" {spend.freeze_above_ratio} × {income_label(state)}",
        ))  # fmt: skip
    low = rules.score_low
    if low.enabled and m.scorecard.score < low.freeze_below:
        hits.append(ReasonCode(
            "SCORE_LOW", m.scorecard.score, low.freeze_below,
            f"behaviour score {m.scorecard.score} is below {low.freeze_below}",
        ))  # fmt: skip
    return hits


def reduce_hits(state: UserState, m: Measures, policy: Policy) -> list[ReasonCode]:
    """The reduce rules that hold now."""
    rules = policy.source.rules
    hits: list[ReasonCode] = []
    repeated = rules.reduce_overdue_repeated
    if repeated.enabled and m.episodes >= repeated.reduce_min_episodes:
        hits.append(ReasonCode(
            "OVERDUE_REPEATED", m.episodes, repeated.reduce_min_episodes,
            f"{m.episodes} overdue episodes started in the last {policy.source.overdue.episode_window}",
        ))  # fmt: skip
    spend = rules.reduce_spend_income
    income = state.effective_income
    if spend.enabled and spend_above(m.spend, income, policy.reduce_above_ratio):
        assert income is not None  # noqa: S101 - implied by spend_above
        hits.append(ReasonCode(
            "SPEND_INCOME_MISMATCH", ratio_above(m.spend, income, policy.reduce_above_ratio),
            number(policy.reduce_above_ratio),
            f"spend {m.spend} over the last {rules.spend_income.window} is above"
            f" {spend.reduce_above_ratio} × {income_label(state)}",
        ))  # fmt: skip
    return hits


def freeze_path(state: UserState, m: Measures, policy: Policy) -> list[str]:
    """What the automatic rules still need before a frozen user can be restored."""
    return _freeze_path(state, m, policy, words=True)


def freeze_blocked(state: UserState, m: Measures, policy: Policy) -> bool:
    """Whether :func:`freeze_path` is not empty, without putting the steps into words."""
    return bool(_freeze_path(state, m, policy, words=False))


def _freeze_path(state: UserState, m: Measures, policy: Policy, *, words: bool) -> list[str]:
    """The steps of :func:`freeze_path`, each an empty string unless ``words``.

    A rule an operator set aside is no step: it does not hold back the restore from a later
    freeze for another reason, just as it freezes nothing while set aside.
    """
    rules = policy.source.rules
    waived = state.waived
    path: list[str] = []
    if rules.overdue_active.enabled and "OVERDUE_ACTIVE" not in waived:
        if m.overdue_count:
            path.append(f"repay {overdue_amount(state)} overdue" if words else "")
        elif state.cure_until > state.clock:
            path.append(
                f"wait for the cure period to end at {format_timestamp(state.cure_until)}"
                if words
                else ""
            )
    repeated = rules.overdue_repeated
    if (
        repeated.enabled
        and "OVERDUE_REPEATED" not in waived
        and m.episodes > repeated.restore_max_episodes
    ):
        path.append(
            f"wait until overdue episodes in {policy.source.overdue.episode_window} fall from"
            f" {m.episodes} to {repeated.restore_max_episodes}"
            if words
            else ""
        )
    velocity = rules.loan_velocity
    if (
        velocity.enabled
        and "LOAN_VELOCITY" not in waived
        and m.applications > velocity.restore_max_applications
    ):
        path.append(
            f"wait until loan applications in {velocity.window} fall from {m.applications}"
            f" to {velocity.restore_max_applications}"
            if words
            else ""
        )
    burst = rules.small_loan_burst
    if (
        burst.enabled
        and "SMALL_LOAN_BURST" not in waived
        and m.small_applications > burst.restore_max_applications
    ):
        path.append(
            f"wait until small loan applications in {burst.window} fall from"
            f" {m.small_applications} to {burst.restore_max_applications}"
            if words
            else ""
        )
    spend = rules.spend_income
    if (
        spend.enabled
        and "SPEND_INCOME_MISMATCH" not in waived
        and spend_above(m.spend, state.effective_income, policy.restore_max_ratio)
    ):
        path.append(
            f"wait until spend over {spend.window} falls from {m.spend} to"
            f" {spend.restore_max_ratio} × {income_label(state)}"
            if words
            else ""
        )
    low = rules.score_low
    if (
        low.enabled
        and "SCORE_LOW" not in waived
        and m.scorecard.score < low.freeze_below + low.restore_margin
    ):
        path.append(
            f"wait until the behaviour score rises from {m.scorecard.score} to"
            f" {low.freeze_below + low.restore_margin}"
            if words
            else ""
        )
    return path


RULE_NAMES: Final = {
    "OVERDUE_ACTIVE": "overdue_active",
    "OVERDUE_REPEATED": "overdue_repeated",
    "LOAN_VELOCITY": "loan_velocity",
    "SMALL_LOAN_BURST": "small_loan_burst",
    "SPEND_INCOME_MISMATCH": "spend_income",
    "SCORE_LOW": "score_low",
}
"""The policy table (under ``rules``) of each freeze reason; a reduce rule's adds ``reduce_``."""


def rule_name(code: str, *, reduced: bool = False) -> str:
    """The policy table under ``rules`` of the freeze rule of ``code``, or its reduce rule."""
    return f"reduce_{RULE_NAMES[code]}" if reduced else RULE_NAMES[code]


def rule_enabled(code: str, policy: Policy, *, reduced: bool = False) -> bool:
    """Whether the freeze rule of ``code`` is enabled, or its reduce rule if ``reduced``."""
    rule = getattr(policy.source.rules, rule_name(code, reduced=reduced))
    return bool(rule.enabled)


def reduce_cleared(code: str, state: UserState, m: Measures, policy: Policy) -> bool:
    """Whether a reduce reason's restore condition holds; always, once its rule is disabled.

    A policy change can disable a rule while users are reduced for it: like a disabled freeze
    rule, it then holds no one back.
    """
    rules = policy.source.rules
    if not rule_enabled(code, policy, reduced=True):
        return True
    if code == "OVERDUE_REPEATED":
        return m.episodes <= rules.reduce_overdue_repeated.restore_max_episodes
    return not spend_above(m.spend, state.effective_income, policy.reduce_restore_max_ratio)


def reduce_path(state: UserState, m: Measures, policy: Policy) -> list[str]:
    """What still stands between a reduced limit and the full one."""
    rules = policy.source.rules
    path: list[str] = []
    for code in state.reduce_reasons:
        if not rule_enabled(code, policy, reduced=True):
            continue  # cleared at the next evaluation
        if code == "OVERDUE_REPEATED":
            path.append(
                f"wait until overdue episodes in {policy.source.overdue.episode_window} fall"
                f" from {m.episodes} to {rules.reduce_overdue_repeated.restore_max_episodes}"
            )
        else:
            path.append(
                f"wait until spend over {rules.spend_income.window} falls from {m.spend} to"
                f" {rules.reduce_spend_income.restore_max_ratio} × {income_label(state)}"
            )
    return path


def cleared(
    codes: Sequence[str], state: UserState, m: Measures, policy: Policy, *, reduced: bool = False
) -> list[ReasonCode]:
    """Restore reasons: one per cleared freeze reason, or reduce reason if ``reduced``."""
    rules = policy.source.rules
    reasons: list[ReasonCode] = []
    for code in codes:
        if code == "OVERDUE_ACTIVE":
            reasons.append(ReasonCode(
                CLEARED_CODES[code], 0, 0, "every overdue instalment is repaid and the cure period is over"
            ))  # fmt: skip
        elif code == "OVERDUE_REPEATED":
            threshold = (
                rules.reduce_overdue_repeated.restore_max_episodes
                if reduced
                else rules.overdue_repeated.restore_max_episodes
            )
            reasons.append(ReasonCode(
                CLEARED_CODES[code], m.episodes, threshold,
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
        elif code == "SPEND_INCOME_MISMATCH":
            income = state.effective_income
            limit = (
                rules.reduce_spend_income.restore_max_ratio
                if reduced
                else rules.spend_income.restore_max_ratio
            )
            reasons.append(ReasonCode(
                CLEARED_CODES[code], ratio(m.spend, income) if income else 0,
                number(Fraction(limit)),
                f"spend {m.spend} over the last {rules.spend_income.window} is within"
                f" {limit} × the {'verified' if state.verified_income is not None else 'declared'}"
                " monthly income",
            ))  # fmt: skip
        else:
            low = rules.score_low
            reasons.append(ReasonCode(
                CLEARED_CODES[code], m.scorecard.score, low.freeze_below + low.restore_margin,
                f"behaviour score {m.scorecard.score} is back at"
                f" {low.freeze_below + low.restore_margin} or above",
            ))  # fmt: skip
        if not rule_enabled(code, policy, reduced=reduced):
            # Cleared by a policy change, not by the measure: say so, as the value may not be
            # within the threshold.
            last = reasons[-1]
            reasons[-1] = ReasonCode(
                last.code, last.value, last.threshold,
                f"rules.{rule_name(code, reduced=reduced)} is disabled in the policy",
            )  # fmt: skip
    return reasons


def next_expiry(state: UserState, policy: Policy) -> int | None:
    """Next time an entry leaves a window whose restore condition (freeze or reduce) fails.

    Or a window a rule an operator set aside counts in: the waiver lapses at the instant the
    rule stops holding, which only an evaluation then can see. Without that timer it lapsed
    at the user's next event, so an unrelated event changed later freezes.
    """
    rules = policy.source.rules
    clock = state.clock
    waived = state.waived
    expiries: list[int] = []
    income = state.effective_income
    spend = state.spend.total(clock - policy.spend_window)
    episodes = episodes_since(state, clock - policy.episode_window)
    spend_blocks = "SPEND_INCOME_MISMATCH" in waived
    episodes_block = "OVERDUE_REPEATED" in waived
    counted = (
        ("LOAN_VELOCITY", rules.loan_velocity.enabled, state.applications, policy.loan_window,
         rules.loan_velocity.restore_max_applications),
        ("SMALL_LOAN_BURST", rules.small_loan_burst.enabled, state.small_applications,
         policy.small_window, rules.small_loan_burst.restore_max_applications),
    )  # fmt: skip
    for code, enabled, window, length, restore_max in counted:
        blocks = state.frozen and enabled and window.total(clock - length) > restore_max
        if blocks or code in waived:
            oldest = window.oldest_after(clock - length)
            if oldest is not None:
                expiries.append(oldest + length)
    if state.frozen:
        spend_blocks = spend_blocks or (
            rules.spend_income.enabled and spend_above(spend, income, policy.restore_max_ratio)
        )
        repeated = rules.overdue_repeated
        episodes_block = episodes_block or (
            repeated.enabled and episodes > repeated.restore_max_episodes
        )
    if "SPEND_INCOME_MISMATCH" in state.reduce_reasons and rules.reduce_spend_income.enabled:
        spend_blocks = spend_blocks or spend_above(spend, income, policy.reduce_restore_max_ratio)
    if "OVERDUE_REPEATED" in state.reduce_reasons and rules.reduce_overdue_repeated.enabled:
        limit = rules.reduce_overdue_repeated.restore_max_episodes
        episodes_block = episodes_block or episodes > limit
    if spend_blocks:
        oldest = state.spend.oldest_after(clock - policy.spend_window)
        if oldest is not None:
            expiries.append(oldest + policy.spend_window)
    if episodes_block:
        start = clock - policy.episode_window
        first = min((e.start for e in state.episodes if e.start > start), default=None)
        if first is not None:
            expiries.append(first + policy.episode_window)
    return min(expiries) if expiries else None


def current_days_past_due(state: UserState) -> int:
    """DPD of the oldest overdue instalment at the clock."""
    return (state.clock - state.instalments[0].due_at) // DAY


def ratio(spend: int, income: int) -> float:
    """A spend-to-income ratio for a reason's ``value``, rounded for reading."""
    return round(spend / income, 4)


def ratio_above(spend: int, income: int, bar: Fraction) -> float:
    """:func:`ratio` of a spend above ``bar`` × income, never rounded onto the bar.

    Rounded up where rounding to the nearest would reach it: a reason's value must read
    above the threshold it is above, also to a consumer comparing the two JSON numbers as
    floats, where a bar such as 2.2 is a float slightly above the decimal. Rounded up, the
    value is a decimal of 4 places above the bar's of up to 12, so their floats differ too.
    """
    value = ratio(spend, income)
    if value > number(bar):
        return value
    return -(-spend * 10_000 // income) / 10_000


def number(value: Fraction) -> int | float:
    """A policy ratio as JSON wants it: an integer when it is one."""
    return value.numerator if value.denominator == 1 else float(value)
