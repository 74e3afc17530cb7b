"""A minor slip must stay possible: `overdue.minor_max_dpd` below the grace would forbid it."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk.policy import PolicyError, load_policy, parse_policy

from builders import purchase, repayment, run, summary

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_a_minor_max_dpd_below_the_grace_is_refused_naming_both_fields() -> None:
    # An episode starts at due + grace, 7 days past due: a bar of 3 could never be met.
    with pytest.raises(PolicyError) as raised:
        parse_policy('version = "v"\n[overdue]\ngrace_days = 7\n')
    message = str(raised.value)
    assert "`overdue.minor_max_dpd` (3) must be at least `overdue.grace_days` (7)" in message


def test_a_minor_max_dpd_equal_to_the_grace_is_accepted() -> None:
    assert parse_policy('version = "v"\n[overdue]\ngrace_days = 7\nminor_max_dpd = 7\n').grace


def test_a_minor_max_dpd_of_0_forgives_no_slip_and_is_accepted() -> None:
    # A strict policy a risk team may want: every episode needs the cure period.
    strict = parse_policy('version = "strict"\n[overdue]\nminor_max_dpd = 0\n')
    lines = [
        purchase("2026-02-01T00:00:00Z", 35000, order="o-1", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-04T01:00:00Z", 35000, event_id="r-1"),
    ]
    result = run(lines, until="2026-06-01T00:00:00Z", policy=strict)
    assert [(d.type, d.caused_by) for d in result.decisions] == [
        ("limit.freeze", "timer:overdue:2026-03-04T00:00:00Z"),
        ("limit.restore", "timer:cure:2026-04-03T01:00:00Z"),
    ]


def test_the_7_day_grace_example_restores_a_slip_repaid_an_hour_after_grace_at_once() -> None:
    # Due 03-01, overdue at 03-08 (7 days of grace), repaid an hour later: DPD 7, the only
    # episode in 180 days, so the cure period is 0 days, as with the packaged 3-day grace.
    lines = [
        purchase("2026-02-01T00:00:00Z", 35000, order="o-2", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-08T01:00:00Z", 35000, event_id="r-2"),
    ]
    result = run(
        lines, until="2026-06-01T00:00:00Z", policy=load_policy(EXAMPLES / "grace-7d.toml")
    )
    assert summary(result) == [
        ("limit.freeze", "2026-03-08T00:00:00Z", "timer:overdue:2026-03-08T00:00:00Z",
         ["OVERDUE_ACTIVE"]),
        ("limit.restore", "2026-03-08T01:00:00Z", "r-2", ["REPAID_AND_CURED"]),
    ]  # fmt: skip
