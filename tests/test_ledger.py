"""The instalment ledger: splits, due dates, allocation order and credit."""

from __future__ import annotations

from risk.clock import format_timestamp
from risk.contract import Purchase, Repayment
from risk.engine import apply, new_state
from risk.policy import load_policy
from risk.state import UserState

from builders import purchase, repayment, run, ts

POLICY = load_policy()


def _state(*events: Purchase) -> UserState:
    state = new_state(events[0])
    for event in events:
        apply(state, event, POLICY)
    return state


def _buy(
    order: str, amount: int, installments: int, first_due: str, at: str = "2026-01-01T00:00:00Z"
) -> Purchase:
    return Purchase(f"p-{order}", "u-1", ts(at), order, amount, installments, ts(first_due))


def test_even_split_puts_the_remainder_on_the_first_instalment() -> None:
    state = _state(_buy("o-1", 100_000, 3, "2026-01-31T10:30:00Z"))
    assert [(i.number, i.amount) for i in state.instalments] == [
        (1, 33_334),
        (2, 33_333),
        (3, 33_333),
    ]


def test_due_dates_count_months_from_the_first_due_date_and_clamp_to_month_end() -> None:
    state = _state(_buy("o-1", 600, 6, "2026-01-31T10:30:00Z"))
    assert [format_timestamp(i.due_at) for i in state.instalments] == [
        "2026-01-31T10:30:00Z",
        "2026-02-28T10:30:00Z",
        "2026-03-31T10:30:00Z",  # from 31 January, not from 28 February
        "2026-04-30T10:30:00Z",
        "2026-05-31T10:30:00Z",
        "2026-06-30T10:30:00Z",
    ]


def _repay(state: UserState, amount: int, order: str | None, at: str) -> None:
    apply(state, Repayment(f"r-{at}", "u-1", ts(at), amount, order), POLICY)


def test_repayment_pays_the_named_order_first_then_everything_by_due_date() -> None:
    state = _state(
        _buy("a", 300, 3, "2026-02-01T00:00:00Z"),
        _buy("b", 200, 2, "2026-01-15T00:00:00Z"),
    )
    _repay(state, 350, "a", "2026-01-02T00:00:00Z")
    # a's three instalments (300), then b's earliest (50 of 100)
    assert [(i.order_id, i.number, i.unpaid) for i in state.instalments] == [
        ("b", 1, 50),
        ("b", 2, 100),
    ]


def test_repayment_without_order_pays_the_earliest_due_first_even_if_not_yet_due() -> None:
    state = _state(
        _buy("a", 300, 3, "2026-02-01T00:00:00Z"),
        _buy("b", 100, 1, "2026-01-15T00:00:00Z"),
    )
    _repay(state, 150, None, "2026-01-02T00:00:00Z")
    # b (due 15 January) first, then a's first instalment (due 1 February) in part.
    assert [(i.order_id, i.number, i.unpaid) for i in state.instalments] == [
        ("a", 1, 50),
        ("a", 2, 100),
        ("a", 3, 100),
    ]
    assert state.paid_on_time == 1


def test_overpayment_becomes_credit_that_pays_the_next_purchase_at_once() -> None:
    state = _state(_buy("a", 100, 1, "2026-02-01T00:00:00Z"))
    _repay(state, 250, None, "2026-01-02T00:00:00Z")
    assert state.instalments == []
    assert state.credit == 150
    apply(state, _buy("b", 300, 3, "2026-03-01T00:00:00Z", at="2026-01-03T00:00:00Z"), POLICY)
    assert state.credit == 0
    assert [(i.number, i.unpaid) for i in state.instalments] == [(2, 50), (3, 100)]


def test_credit_prevents_an_overdue_in_replay() -> None:
    result = run(
        [
            repayment("2026-01-01T00:00:00Z", 5000),
            purchase("2026-01-02T00:00:00Z", 5000, first_due="2026-01-10T00:00:00Z"),
        ],
        until="2026-03-01T00:00:00Z",
    )
    assert result.decisions == []


def test_a_late_purchase_already_past_grace_is_overdue_at_the_users_clock() -> None:
    result = run(
        [
            purchase("2026-01-20T00:00:00Z", 100, order="o-0", event_id="p-0"),
            # two days late in the same topic, and due on 2026-01-10: overdue at once.
            purchase(
                "2026-01-18T00:00:00Z", 5000, first_due="2026-01-10T00:00:00Z", event_id="p-late"
            ),
        ]
    )
    (freeze,) = [(d.type, format_timestamp(d.occurred_at), d.caused_by) for d in result.decisions]
    assert freeze == ("limit.freeze", "2026-01-20T00:00:00Z", "p-late")


def test_a_late_repayment_is_allocated_at_the_clock_and_does_not_rewrite_the_episode() -> None:
    result = run(
        [
            purchase("2026-01-01T00:00:00Z", 5000, first_due="2026-01-10T00:00:00Z"),
            repayment("2026-01-18T00:00:00Z", 1, event_id="r-small"),
            # occurred before the grace ended, but arrives after the user's clock passed it.
            repayment("2026-01-12T00:00:00Z", 4999, event_id="r-late"),
        ],
        until="2026-03-01T00:00:00Z",
    )
    assert [(d.type, format_timestamp(d.occurred_at), d.caused_by) for d in result.decisions] == [
        ("limit.freeze", "2026-01-13T00:00:00Z", "timer:overdue:2026-01-13T00:00:00Z"),
        # ended at the clock (2026-01-18, DPD 8): the 30-day cure runs from there.
        ("limit.restore", "2026-02-17T00:00:00Z", "timer:cure:2026-02-17T00:00:00Z"),
    ]
