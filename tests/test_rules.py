"""Hand-checked scenarios: one per rule of the default policy, for freeze and restore."""

from __future__ import annotations

import uuid
from fractions import Fraction

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from risk.clock import DAY
from risk.contract import MAX_MONEY, LoanApplication, Purchase, Repayment
from risk.decision import Decision
from risk.engine import OVERDUE, WINDOW, apply, fire_timers, new_state, next_timer
from risk.limits import restore_path
from risk.rules import Measures, number, ratio_above
from risk.state import UserState

from builders import (
    application,
    decisions,
    decoded,
    policy_with,
    purchase,
    repayment,
    run,
    summary,
    ts,
)

FREEZE, RESTORE = "limit.freeze", "limit.restore"
RESTORES_UNLIMITED = policy_with({"restore": {"automatic_per_window": 12}})

# One instalment of 35000 due 2026-03-01T00:00Z: overdue at exactly 2026-03-04T00:00Z.
BOUGHT = purchase("2026-02-01T00:00:00Z", 35000, order="o-17", first_due="2026-03-01T00:00:00Z")


def test_repayment_just_before_due_plus_grace_is_on_time() -> None:
    result = run(
        [BOUGHT, repayment("2026-03-03T23:59:59.999999Z", 35000)], until="2026-06-01T00:00:00Z"
    )
    assert summary(result) == []


def test_repayment_at_exactly_due_plus_grace_is_late_and_the_zero_day_cure_restores_at_once() -> (
    None
):
    result = run([BOUGHT, repayment("2026-03-04T00:00:00Z", 35000, event_id="r-1")])
    assert summary(result) == [
        (FREEZE, "2026-03-04T00:00:00Z", "timer:overdue:2026-03-04T00:00:00Z", ["OVERDUE_ACTIVE"]),
        (RESTORE, "2026-03-04T00:00:00Z", "r-1", ["REPAID_AND_CURED"]),
    ]
    freeze, restore = decisions(result)
    assert freeze["reasons"] == [
        {
            "code": "OVERDUE_ACTIVE",
            "value": 1,
            "threshold": 1,
            "message": "instalment 1 of order o-17 is 3 days past due",
        }
    ]
    assert freeze["features"]["max_dpd"] == 3
    assert freeze["restore_path"] == ["repay 35000 overdue"]
    assert restore["restore_path"] == []
    assert restore["features"]["cure_ends_at"] is None
    assert restore["features"]["outstanding"] == 0


def test_overdue_freeze_has_the_contract_fields_and_a_deterministic_event_id() -> None:
    result = run(
        [
            application("2026-01-05T00:00:00Z", 50000, income=800000, event_id="a-1"),
            BOUGHT,
            repayment("2026-03-06T00:00:00Z", 10000, event_id="r-1"),
        ]
    )
    (freeze,) = decisions(result)
    assert list(freeze) == [
        "event_id", "type", "status", "limit_fraction", "user_id", "occurred_at", "caused_by",
        "reasons", "features", "restore_path", "policy_version",
    ]  # fmt: skip
    assert (freeze["status"], freeze["limit_fraction"]) == ("frozen", 0.0)
    assert freeze["event_id"] == str(
        uuid.uuid5(
            uuid.NAMESPACE_URL,
            "lineguard:u-1:limit.freeze:timer:overdue:2026-03-04T00:00:00Z:2026-11-28.2",
        )
    )
    assert freeze["features"] == {
        "overdue_active": 1,
        "overdue_amount": 35000,
        "max_dpd": 3,
        "overdue_episodes_180d": 1,
        "loan_applications_7d": 0,
        "loan_applications_30d": 0,
        "small_loan_applications_24h": 0,
        "spend_30d": 0,
        "declared_monthly_income": 800000,
        "outstanding": 35000,
        "credit": 0,
        "cure_ends_at": None,
        "verified_monthly_income": None,
        "other_lender_applications_30d": 0,
        "active_days_90d": 1,
        # 600 base, -15 for one episode, -5 for 3 DPD, +10 for no spend in 30 days
        "score": 590,
    }
    assert freeze["policy_version"] == "2026-11-28.2"


def test_overdue_past_minor_dpd_needs_the_thirty_day_cure() -> None:
    result = run(
        [BOUGHT, repayment("2026-03-06T00:00:00Z", 35000, event_id="r-1")],
        until="2026-05-01T00:00:00Z",
    )
    assert summary(result) == [
        (FREEZE, "2026-03-04T00:00:00Z", "timer:overdue:2026-03-04T00:00:00Z", ["OVERDUE_ACTIVE"]),
        (RESTORE, "2026-04-05T00:00:00Z", "timer:cure:2026-04-05T00:00:00Z", ["REPAID_AND_CURED"]),
    ]


def test_a_minor_spell_during_a_running_cure_does_not_cut_it_short() -> None:
    """The 200-day spell's 30-day cure runs to 08-24. A minor spell alone in its 180 days
    ends on 07-31 with a 0-day cure of its own, which must not end the running one."""
    result = run(
        [
            purchase("2025-12-01T00:00:00Z", 1000, order="a", first_due="2026-01-01T00:00:00Z"),
            purchase("2026-06-01T00:00:00Z", 1000, order="b", first_due="2026-07-28T00:00:00Z"),
            repayment("2026-07-25T00:00:00Z", 1000, order="a"),
            repayment("2026-07-31T12:00:00Z", 1000, order="b"),
        ],
        until="2026-10-01T00:00:00Z",
    )
    assert summary(result) == [
        (FREEZE, "2026-01-04T00:00:00Z", "timer:overdue:2026-01-04T00:00:00Z", ["OVERDUE_ACTIVE"]),
        (RESTORE, "2026-08-24T00:00:00Z", "timer:cure:2026-08-24T00:00:00Z", ["REPAID_AND_CURED"]),
    ]


def test_cure_does_not_restore_before_the_watermark_reaches_it() -> None:
    result = run([BOUGHT, repayment("2026-03-06T00:00:00Z", 35000)])
    assert [d[0] for d in summary(result)] == [FREEZE]


def test_partial_repayment_keeps_the_line_frozen_and_says_what_is_left() -> None:
    result = run(
        [
            BOUGHT,
            repayment("2026-03-05T00:00:00Z", 20000),
            purchase("2026-03-05T01:00:00Z", 100, order="o-18"),
        ]
    )
    (freeze,) = decisions(result)
    assert freeze["restore_path"] == ["repay 35000 overdue"]


def _overdue_episode(buy: str, due: str, repay: str, order: str) -> list[dict[str, object]]:
    return [
        purchase(buy, 1000, order=order, first_due=due),
        repayment(repay, 1000, event_id=f"r-{order}"),
    ]


def test_overdue_repeated_freezes_on_the_third_episode_and_restores_when_one_leaves() -> None:
    lines = [
        *_overdue_episode("2026-01-01T00:00:00Z", "2026-01-10T00:00:00Z", "2026-01-13T12:00:00Z", "a"),
        *_overdue_episode("2026-01-20T00:00:00Z", "2026-02-10T00:00:00Z", "2026-02-14T00:00:00Z", "b"),
        *_overdue_episode("2026-03-20T00:00:00Z", "2026-04-10T00:00:00Z", "2026-04-14T00:00:00Z", "c"),
    ]  # fmt: skip
    # Anti-flapping would hold the second restore back; this scenario is about the rules.
    result = run(lines, until="2026-08-01T00:00:00Z", policy=RESTORES_UNLIMITED)
    assert summary(result) == [
        (FREEZE, "2026-01-13T00:00:00Z", "timer:overdue:2026-01-13T00:00:00Z", ["OVERDUE_ACTIVE"]),
        # max DPD 3 and the only episode: no cure period.
        (RESTORE, "2026-01-13T12:00:00Z", "r-a", ["REPAID_AND_CURED"]),
        (FREEZE, "2026-02-13T00:00:00Z", "timer:overdue:2026-02-13T00:00:00Z", ["OVERDUE_ACTIVE"]),
        # the second episode in 180 days: 30 days of cure from the repayment.
        (RESTORE, "2026-03-16T00:00:00Z", "timer:cure:2026-03-16T00:00:00Z", ["REPAID_AND_CURED"]),
        (
            FREEZE, "2026-04-13T00:00:00Z", "timer:overdue:2026-04-13T00:00:00Z",
            ["OVERDUE_ACTIVE", "OVERDUE_REPEATED"],
        ),
        # cure ends 2026-05-14, but 3 episodes stay in 180 days until the first leaves.
        (
            RESTORE, "2026-07-12T00:00:00Z", "timer:window:2026-07-12T00:00:00Z",
            ["REPAID_AND_CURED", "OVERDUE_REPEATED_CLEARED"],
        ),
    ]  # fmt: skip
    statuses = [d["status"] for d in decisions(result)]
    # Two episodes in 180 days reduce the limit: each restore from then on is to "reduced".
    assert statuses == ["frozen", "active", "frozen", "reduced", "frozen", "reduced"]
    third_freeze = decisions(result)[4]
    assert third_freeze["reasons"][1]["value"] == 3
    assert third_freeze["features"]["overdue_episodes_180d"] == 3


def test_overdue_repeated_alone_restores_when_its_first_episode_leaves_the_window() -> None:
    # Pins the freeze rule's own window timer: the reduce rule, which also sets one, is off.
    policy = policy_with(
        {
            "restore": {"automatic_per_window": 12},
            "rules.reduce_overdue_repeated": {"enabled": False},
        }
    )
    lines = [
        *_overdue_episode("2026-01-01T00:00:00Z", "2026-01-10T00:00:00Z", "2026-01-13T12:00:00Z", "a"),
        *_overdue_episode("2026-01-20T00:00:00Z", "2026-02-10T00:00:00Z", "2026-02-14T00:00:00Z", "b"),
        *_overdue_episode("2026-03-20T00:00:00Z", "2026-04-10T00:00:00Z", "2026-04-14T00:00:00Z", "c"),
    ]  # fmt: skip
    assert summary(run(lines, until="2026-08-01T00:00:00Z", policy=policy))[-1] == (
        RESTORE, "2026-07-12T00:00:00Z", "timer:window:2026-07-12T00:00:00Z",
        ["REPAID_AND_CURED", "OVERDUE_REPEATED_CLEARED"],
    )  # fmt: skip


def test_one_abandoned_order_is_one_long_episode() -> None:
    result = run(
        [
            purchase(
                "2026-01-01T00:00:00Z", 3000, installments=3, first_due="2026-02-01T00:00:00Z"
            ),
            repayment("2026-06-01T00:00:00Z", 3000, event_id="r-1"),
        ],
        until="2026-09-01T00:00:00Z",
    )
    assert summary(result) == [
        (FREEZE, "2026-02-04T00:00:00Z", "timer:overdue:2026-02-04T00:00:00Z", ["OVERDUE_ACTIVE"]),
        (RESTORE, "2026-07-01T00:00:00Z", "timer:cure:2026-07-01T00:00:00Z", ["REPAID_AND_CURED"]),
    ]
    assert decisions(result)[1]["features"]["overdue_episodes_180d"] == 1


def test_loan_velocity_freezes_at_five_and_restores_when_the_third_leaves_at_exactly_seven_days() -> (
    None
):
    lines = [
        application(f"2026-05-0{day}T10:00:00Z", 500_000, event_id=f"a-{day}")
        for day in range(1, 6)
    ]
    result = run(lines, until="2026-06-01T00:00:00Z")
    assert summary(result) == [
        (FREEZE, "2026-05-05T10:00:00Z", "a-5", ["LOAN_VELOCITY"]),
        # a-3 (2026-05-03T10:00Z) leaves (t - 7d, t] at exactly t = 2026-05-10T10:00Z.
        (RESTORE, "2026-05-10T10:00:00Z", "timer:window:2026-05-10T10:00:00Z", ["LOAN_VELOCITY_CLEARED"]),
    ]  # fmt: skip
    freeze, restore = decisions(result)
    assert freeze["reasons"][0]["value"] == 5
    assert freeze["restore_path"] == ["wait until loan applications in 7d fall from 5 to 2"]
    assert restore["reasons"][0]["value"] == 2
    assert restore["reasons"][0]["threshold"] == 2


def test_an_application_still_counts_one_microsecond_before_seven_days() -> None:
    lines = [
        application(f"2026-05-0{day}T10:00:00Z", 500_000, event_id=f"a-{day}")
        for day in range(1, 6)
    ]
    lines.append(application("2026-05-10T09:59:59.999999Z", 500_000, event_id="a-6"))
    result = run(lines)
    # At a-6, a-3 has not left yet: 4 in the window, above the restore bound of 2.
    assert [d[0] for d in summary(result)] == [FREEZE]


def test_small_loan_burst_and_its_restore() -> None:
    lines = [
        application("2026-05-01T10:00:00Z", 100_000, event_id="s-1"),
        application("2026-05-01T12:00:00Z", 99_000, event_id="s-2"),
        application("2026-05-01T20:00:00Z", 5_000, event_id="s-3"),
    ]
    result = run(lines, until="2026-05-10T00:00:00Z")
    assert summary(result) == [
        (FREEZE, "2026-05-01T20:00:00Z", "s-3", ["SMALL_LOAN_BURST"]),
        # Small ones fall to <= 1 in 24 hours at 2026-05-02T12:00Z, but a restore also needs
        # <= 2 applications of any size in 7 days: that holds once s-1 leaves them.
        (RESTORE, "2026-05-08T10:00:00Z", "timer:window:2026-05-08T10:00:00Z", ["SMALL_LOAN_BURST_CLEARED"]),
    ]  # fmt: skip
    restore = decisions(result)[1]
    assert restore["features"]["loan_applications_7d"] == 2
    assert restore["features"]["small_loan_applications_24h"] == 0


def test_an_application_just_above_the_small_limit_is_not_small() -> None:
    lines = [application(f"2026-05-01T1{h}:00:00Z", 100_001) for h in range(3)]
    assert summary(run(lines)) == []


def _spend_lines(amounts: list[tuple[str, int]]) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = [application("2026-04-01T00:00:00Z", 200_000, income=800_000)]
    for index, (at, amount) in enumerate(amounts):
        order = f"o-{index}"
        lines.append(purchase(at, amount, order=order, event_id=f"p-{index}"))
        lines.append(repayment(at.replace("T00", "T01"), amount, order=order))
    return lines


def test_spend_income_mismatch_with_hysteresis() -> None:
    lines = _spend_lines(
        [
            ("2026-04-02T00:00:00Z", 400_000),
            ("2026-04-12T00:00:00Z", 1_000_000),
            ("2026-04-22T00:00:00Z", 1_100_000),
        ]
    )
    result = run(lines, until="2026-06-01T00:00:00Z")
    assert summary(result) == [
        # 2,500,000 > 3 x 800,000
        (FREEZE, "2026-04-22T00:00:00Z", "p-2", ["SPEND_INCOME_MISMATCH"]),
        # 2026-05-02: 2,100,000 is below the freeze bound but above 2 x income: still frozen.
        # 2026-05-12: 1,100,000 <= 1,600,000.
        (
            RESTORE, "2026-05-12T00:00:00Z", "timer:window:2026-05-12T00:00:00Z",
            ["SPEND_INCOME_MISMATCH_CLEARED"],
        ),
    ]  # fmt: skip
    freeze, restore = decisions(result)
    assert freeze["reasons"][0]["value"] == 3.125
    assert freeze["reasons"][0]["threshold"] == 3
    assert freeze["restore_path"] == [
        "wait until spend over 30d falls from 2500000 to 2.0 × the declared monthly income 800000"
    ]
    assert restore["features"]["spend_30d"] == 1_100_000


def test_spend_exactly_at_three_times_income_does_not_freeze() -> None:
    assert summary(run(_spend_lines([("2026-04-02T00:00:00Z", 2_400_000)]))) == []


def test_spend_one_fen_above_three_times_income_reads_above_the_bar() -> None:
    # 2,400,001 / 800,000 = 3.00000125: rounded to 3.0 it read as no more than the bar.
    (freeze,) = decisions(run(_spend_lines([("2026-04-02T00:00:00Z", 2_400_001)])))
    reason = freeze["reasons"][0]
    assert (reason["code"], reason["value"], reason["threshold"]) == (
        "SPEND_INCOME_MISMATCH", 3.0001, 3
    )  # fmt: skip


@st.composite
def bars(draw: st.DrawFn) -> Fraction:
    """A ratio as the policy takes it: up to 12 decimals, above 0 and at most 1000."""
    places = draw(st.integers(0, 12))
    scale = 10**places
    return Fraction(draw(st.integers(1, 1000 * scale)), scale)


@given(bars(), st.integers(1, MAX_MONEY), st.integers(1, 10**6))
@example(Fraction("2.2"), 1_000_000, 1)
@example(Fraction("1.1"), 1_000_000, 1)
@example(Fraction("2.7"), 10_000_000, 3)
def test_a_spend_reasons_value_reads_above_its_bar_as_json_numbers(
    bar: Fraction, income: int, above: int
) -> None:
    # A consumer compares the JSON numbers as floats: 2.2 is a float slightly above 2.2, so a
    # value rounded onto it (2,200,001 / 1,000,000) read as not above its threshold.
    spend = bar.numerator * income // bar.denominator + above
    value = ratio_above(spend, income, bar)
    written = orjson.loads(orjson.dumps({"value": value, "threshold": number(bar)}))
    assert written["value"] > written["threshold"]
    assert abs(Fraction(value) - Fraction(spend, income)) <= Fraction(1, 10_000)


def test_spend_one_fen_above_a_decimal_bar_reads_above_it() -> None:
    policy = policy_with({"rules.spend_income": {"freeze_above_ratio": "2.2"}})
    lines = [
        application("2026-04-01T00:00:00Z", 500_000, income=1_000_000, event_id="a-1"),
        purchase("2026-04-02T00:00:00Z", 2_200_001, event_id="p-1"),
    ]
    (freeze,) = decisions(run(lines, policy=policy))
    reason = freeze["reasons"][0]
    assert (reason["code"], reason["value"], reason["threshold"]) == (
        "SPEND_INCOME_MISMATCH", 2.2001, 2.2
    )  # fmt: skip


def test_spend_without_declared_income_never_freezes() -> None:
    lines = [
        purchase("2026-04-02T00:00:00Z", 90_000_000),
        repayment("2026-04-02T01:00:00Z", 90_000_000),
    ]
    assert summary(run(lines)) == []


def test_a_higher_declared_income_restores() -> None:
    lines = _spend_lines([("2026-04-02T00:00:00Z", 2_500_000)])
    lines.append(application("2026-04-03T00:00:00Z", 200_000, income=2_000_000, event_id="a-raise"))
    assert summary(run(lines)) == [
        (FREEZE, "2026-04-02T00:00:00Z", "p-0", ["SPEND_INCOME_MISMATCH"]),
        (RESTORE, "2026-04-03T00:00:00Z", "a-raise", ["SPEND_INCOME_MISMATCH_CLEARED"]),
    ]


def test_of_two_declared_incomes_at_one_instant_the_later_in_the_log_counts() -> None:
    # Pins `>=` on the income's time: a same-instant declaration replaces the one before it.
    lines = [
        # 16 days before the pair: no third application in 7 days to hold the restore
        application("2026-03-20T00:00:00Z", 200_000, income=100_000, event_id="a-1"),
        purchase("2026-04-02T00:00:00Z", 400_000, order="s", event_id="p-1"),
        repayment("2026-04-02T01:00:00Z", 400_000, order="s", event_id="r-1"),
        application("2026-04-05T00:00:00Z", 200_000, income=150_000, event_id="a-low"),
        application("2026-04-05T00:00:00Z", 200_000, income=250_000, event_id="a-high"),
    ]
    # 400_000 spent: above 3 x 100_000 and 2 x 150_000, within 2 x 250_000
    assert [(d[0], d[2]) for d in summary(run(lines))] == [(FREEZE, "p-1"), (RESTORE, "a-high")]


def test_freeze_reasons_accumulate_and_every_one_is_cleared_on_restore() -> None:
    lines = [
        BOUGHT,
        *[application(f"2026-03-05T0{h}:00:00Z", 500_000) for h in range(5)],
        repayment("2026-03-05T12:00:00Z", 35000, event_id="r-1"),
    ]
    result = run(lines, until="2026-05-01T00:00:00Z")
    assert summary(result) == [
        (FREEZE, "2026-03-04T00:00:00Z", "timer:overdue:2026-03-04T00:00:00Z", ["OVERDUE_ACTIVE"]),
        (
            RESTORE, "2026-04-04T12:00:00Z", "timer:cure:2026-04-04T12:00:00Z",
            ["REPAID_AND_CURED", "LOAN_VELOCITY_CLEARED"],
        ),
    ]  # fmt: skip


START = ts("2026-01-01T00:00:00Z")


def _reduced_by_two_episodes() -> UserState:
    """Two episodes reduce the line under the default policy, 120 days from ``START``."""
    events = [
        Purchase("p-1", "u-1", START, "o-1", 1000, 1, START + 10 * DAY),
        Repayment("r-1", "u-1", START + 20 * DAY, 1000, None),
        Purchase("p-2", "u-1", START + 60 * DAY, "o-2", 1000, 1, START + 70 * DAY),
        Repayment("r-2", "u-1", START + 80 * DAY, 1000, None),
    ]
    state = new_state(events[0])
    for event in events:
        apply(state, event, RESTORES_UNLIMITED)
    fire_timers(state, START + 120 * DAY, RESTORES_UNLIMITED)
    assert state.reduce_reasons == ["OVERDUE_REPEATED"]
    return state


def _reduced_then_an_application(rule: str) -> tuple[list[Decision], UserState]:
    """Two episodes reduce the line under the default policy; then `rule` is disabled."""
    state = _reduced_by_two_episodes()
    disabled = policy_with(
        {rule: {"enabled": False}, "restore": {"automatic_per_window": 12}}, version="b"
    )
    later = LoanApplication("a-1", "u-1", START + 121 * DAY, 500_000, None, None)
    return apply(state, later, disabled), state


def test_a_disabled_reduce_rule_keeps_no_one_reduced() -> None:
    (restore,), state = _reduced_then_an_application("rules.reduce_overdue_repeated")
    assert (restore.type, restore.status) == (RESTORE, "active")
    assert [reason.code for reason in restore.reasons] == ["OVERDUE_REPEATED_CLEARED"]
    assert restore.reasons[0].message == "rules.reduce_overdue_repeated is disabled in the policy"
    assert state.reduce_reasons == []


def test_a_disabled_freeze_rule_keeps_no_one_frozen() -> None:
    lines = [
        application(f"2026-05-0{day}T10:00:00Z", 500_000, event_id=f"a-{day}")
        for day in range(1, 6)
    ]
    state = new_state(decoded(lines[:1])[0])
    for event in decoded(lines):
        apply(state, event, RESTORES_UNLIMITED)
    assert state.freeze_reasons == ["LOAN_VELOCITY"]
    disabled = policy_with({"rules.loan_velocity": {"enabled": False}}, version="b")
    assert next_timer(state, disabled) is None  # nothing left to wait for
    (later,) = decoded([purchase("2026-05-06T00:00:00Z", 100, order="o-1")])
    (restore,) = apply(state, later, disabled)
    assert (restore.type, restore.status) == (RESTORE, "active")
    assert [reason.code for reason in restore.reasons] == ["LOAN_VELOCITY_CLEARED"]
    assert restore.reasons[0].message == "rules.loan_velocity is disabled in the policy"


def test_a_disabled_reduce_rule_is_no_step_of_the_restore_path_and_sets_no_timer() -> None:
    # Until the next evaluation clears it, the reason is still in the state.
    state = _reduced_by_two_episodes()
    disabled = policy_with({"rules.reduce_overdue_repeated": {"enabled": False}}, version="b")
    assert restore_path(state, Measures(state, disabled), disabled) == []
    assert next_timer(state, disabled) is None


def test_a_disabled_spend_reduce_rule_sets_no_window_timer() -> None:
    enabled = policy_with({"rules.reduce_spend_income": {"enabled": True}})
    lines = [
        application("2026-03-01T00:00:00Z", 500_000, income=10_000, event_id="a-0"),
        # 2.5 × income: reduced, below the freeze bar
        purchase("2026-03-01T01:00:00Z", 25_000, order="o-1", first_due="2026-06-01T00:00:00Z"),
    ]
    events = decoded(lines)
    state = new_state(events[0])
    for event in events:
        apply(state, event, enabled)
    assert state.reduce_reasons == ["SPEND_INCOME_MISMATCH"]
    assert next_timer(state, enabled) == (ts("2026-03-31T01:00:00Z"), WINDOW)
    disabled = policy_with({"rules.reduce_spend_income": {"enabled": False}}, version="b")
    # only the instalment's own timer is left: due plus three days of grace
    assert next_timer(state, disabled) == (ts("2026-06-04T00:00:00Z"), OVERDUE)


def test_applications_below_the_freeze_bar_do_not_move_a_reduced_users_timer() -> None:
    state = _reduced_by_two_episodes()
    before = next_timer(state, RESTORES_UNLIMITED)
    assert before is not None  # the episodes' window
    for n in range(3):
        later = LoanApplication(f"a-{n}", "u-1", START + 121 * DAY + n, 500_000, None, None)
        apply(state, later, RESTORES_UNLIMITED)
    assert not state.frozen
    assert next_timer(state, RESTORES_UNLIMITED) == before
