"""Money sums saturate at MAX_MONEY, so a user's state and decisions always stay encodable.

Each input amount is at most MAX_MONEY (2**53 - 1), but sums of them are not: without the
ceiling, 2,049 maximal repayments take the credit past 2**64, where msgpack cannot encode
the state and orjson cannot write the decision, and the worker's batch is never acked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from risk.clock import DAY, MINUTE
from risk.contract import MAX_MONEY, Event, LoanApplication, Purchase, Repayment
from risk.decision import Decision
from risk.engine import apply, new_state
from risk.limits import features
from risk.policy import load_policy
from risk.state import INSTALMENTS_CAP, STATE_DECODER, STATE_ENCODER, UserState
from risk.window import Window

from builders import ts

POLICY = load_policy()
START = ts("2026-01-01T00:00:00Z")
MONEY_FEATURES = ("overdue_amount", "spend_30d", "outstanding", "credit")
SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "limit-event.v1.schema.json").read_text(
        "utf-8"
    )
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _check(state: UserState, decisions: list[Decision]) -> None:
    """The state round-trips through msgpack, and every decision is valid limit-event JSON."""
    assert STATE_DECODER.decode(STATE_ENCODER.encode(state)) == state
    assert state.credit <= MAX_MONEY
    for instalment in state.instalments:
        assert 0 <= instalment.paid < instalment.amount <= MAX_MONEY
    for window in (state.spend, state.applications, state.small_applications):
        assert all(value <= MAX_MONEY for value in window.bucket_values)
    for decision in decisions:
        record: dict[str, Any] = orjson.loads(decision.to_json(decision.occurred_at))
        VALIDATOR.validate(record)
    snapshot = features(state, POLICY)
    assert all(snapshot[name] <= MAX_MONEY for name in MONEY_FEATURES)


def test_maximal_repayments_then_a_loan_burst_freeze_with_an_encodable_state() -> None:
    """The audit's reproduction: credit past 2**64, then the freeze of five applications."""
    first = Repayment("r-0", "u-1", START, MAX_MONEY, None)
    state = new_state(first)
    decisions: list[Decision] = []
    for index in range(2049):
        decisions += apply(state, Repayment(f"r-{index}", "u-1", START, MAX_MONEY, None), POLICY)
    for index in range(5):
        at = START + (index + 1) * MINUTE
        decisions += apply(state, LoanApplication(f"a-{index}", "u-1", at, 1_000, None), POLICY)
    assert state.credit == MAX_MONEY
    assert [d.type for d in decisions] == ["limit.freeze"]
    assert decisions[0].features["credit"] == MAX_MONEY
    _check(state, decisions)


def test_merged_instalments_saturate_and_keep_what_is_owed() -> None:
    """Past the instalment cap two nearly paid maximal instalments merge: 2 is still owed."""
    last_due = START + 60 * DAY
    p0 = Purchase("p-0", "u-1", START, "o-0", MAX_MONEY, 1, last_due)
    state = new_state(p0)
    decisions = apply(state, p0, POLICY)
    decisions += apply(
        state, Purchase("p-1", "u-1", START, "o-1", MAX_MONEY, 1, last_due - 1), POLICY
    )
    decisions += apply(state, Repayment("r-0", "u-1", START, MAX_MONEY - 1, "o-0"), POLICY)
    decisions += apply(state, Repayment("r-1", "u-1", START, MAX_MONEY - 1, "o-1"), POLICY)
    for index in range(2, INSTALMENTS_CAP + 1):  # earlier due dates: p-0 is merged into p-1
        purchase = Purchase(
            f"p-{index}", "u-1", START, f"o-{index}", MAX_MONEY, 1, START + 30 * DAY + index
        )
        decisions += apply(state, purchase, POLICY)
    assert len(state.instalments) == INSTALMENTS_CAP
    merged = state.instalments[-1]
    assert (merged.order_id, merged.amount, merged.unpaid) == ("o-1", MAX_MONEY, 2)
    _check(state, decisions)


def test_a_bucket_of_maximal_amounts_saturates() -> None:
    window = Window()
    for minute in range(3 * 64):
        window.add(START + minute * 1_000, MAX_MONEY, 64)
    assert window.bucket_values == [MAX_MONEY]
    assert window.total(START - 1) == 65 * MAX_MONEY  # a total is a measure, never stored


_KINDS = st.sampled_from(["purchase", "due-purchase", "repayment", "application"])
_BLOCKS = st.lists(
    st.tuples(_KINDS, st.integers(1, 1_200), st.integers(0, 3 * 24 * 60)), min_size=1, max_size=6
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=_BLOCKS, installments=st.sampled_from([1, 3, 6, 9, 12, 24]))
def test_any_sequence_of_maximal_amounts_keeps_state_and_decisions_encodable(
    blocks: list[tuple[str, int, int]], installments: int
) -> None:
    """Blocks of events that all carry MAX_MONEY, a few minutes to days apart."""
    at = START
    state: UserState | None = None
    decisions: list[Decision] = []
    serial = 0
    for kind, count, gap_minutes in blocks:
        at += gap_minutes * MINUTE
        for _ in range(count):
            serial += 1
            event: Event
            if kind == "repayment":
                event = Repayment(f"e-{serial}", "u-1", at, MAX_MONEY, None)
            elif kind == "application":
                event = LoanApplication(f"e-{serial}", "u-1", at, MAX_MONEY, MAX_MONEY)
            else:
                first_due = at if kind == "due-purchase" else at + 30 * DAY
                event = Purchase(
                    f"e-{serial}", "u-1", at, f"o-{serial}", MAX_MONEY, installments, first_due
                )
            if state is None:
                state = new_state(event)
            decisions += apply(state, event, POLICY)
        assert state is not None
        _check(state, decisions)
        decisions = []
