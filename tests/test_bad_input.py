"""Every rejection reason, the dead-letter form, and the no-silent-loss balance."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from risk.contract import Reason, Rejection, decode
from risk.state import DEDUP_CAP

from builders import (
    APPLICATIONS,
    PURCHASES,
    REPAYMENTS,
    application,
    policy_with,
    purchase,
    repayment,
    run,
)

GOOD = {
    "event_id": "r-1",
    "user_id": "u-1",
    "occurred_at": "2026-03-01T00:00:00Z",
    "amount": 100,
}


def _raw(topic: str, value: object, key: str | None = "u-1") -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


def _only_dead_letter(lines: list[dict[str, Any]]) -> dict[str, Any]:
    result = run(lines)
    assert result.processed + result.duplicates + result.dead_lettered == result.records
    return result.dead_letters[-1]


@pytest.mark.parametrize(
    ("value", "error_part"),
    [
        ("{not json", "malformed"),
        ('{"event_id": "r-1", "amount": 1', "truncated"),
        (
            '{"amount": 1.5, ',
            "truncated",
        ),  # a type error before the syntax error is still invalid JSON
        ("", "the value is empty"),
        ('{"a": NaN}', "malformed"),
        ('{"event_id": "\\ud800"}', "lone UTF-16 surrogate escape \\ud800 at byte 14"),
    ],
)
def test_invalid_json(value: str, error_part: str) -> None:
    letter = _only_dead_letter([_raw(REPAYMENTS, value)])
    assert letter["reason"] == "invalid_json"
    assert error_part in letter["error"]
    assert letter["value"] == value


def test_invalid_utf8_given_as_value_base64_is_invalid_json_and_kept_byte_for_byte() -> None:
    raw = b'{"event_id": "r-\xff", "user_id": "u-1"}'
    line = {"topic": REPAYMENTS, "key": "u-1", "value_base64": base64.b64encode(raw).decode()}
    letter = _only_dead_letter([line])
    assert letter["reason"] == "invalid_json"
    assert "value" not in letter
    assert base64.b64decode(letter["value_base64"]) == raw


@pytest.mark.parametrize(
    ("change", "error_part"),
    [
        ({"amount": 100.0}, "Expected `int`, got `float`"),
        ({"amount": True}, "Expected `int`"),
        ({"amount": 0}, ">= 1"),
        ({"amount": 2**53}, "<= 9007199254740991"),
        ({"amount": "100"}, "Expected `int`, got `str`"),
        ({"event_id": "e" * 129}, "length <= 128"),
        ({"event_id": ""}, "length >= 1"),
        ({"occurred_at": "2026-03-01t00:00:00Z"}, "RFC 3339"),
        ({"occurred_at": "2026-02-30T00:00:00Z"}, "no such date"),
        ({"occurred_at": "2026-03-01T00:00:60Z"}, "leap seconds"),
        ({"occurred_at": "2026-03-01T00:00:00"}, "RFC 3339"),
        ({"order_id": 17}, "Expected `str | null`"),
    ],
)
def test_schema_violation(change: dict[str, Any], error_part: str) -> None:
    letter = _only_dead_letter([_raw(REPAYMENTS, {**GOOD, **change})])
    assert letter["reason"] == "schema_violation"
    assert error_part in letter["error"]


@pytest.mark.parametrize("missing", ["event_id", "user_id", "occurred_at", "amount"])
def test_missing_required_field_is_a_schema_violation(missing: str) -> None:
    value = {k: v for k, v in GOOD.items() if k != missing}
    letter = _only_dead_letter([_raw(REPAYMENTS, value)])
    assert letter["reason"] == "schema_violation"
    assert missing in letter["error"]


def test_a_json_array_or_string_is_a_schema_violation() -> None:
    assert _only_dead_letter([_raw(REPAYMENTS, [1])])["reason"] == "schema_violation"
    assert _only_dead_letter([_raw(REPAYMENTS, '"text"')])["reason"] == "schema_violation"


def test_schema_violation_per_topic() -> None:
    assert _only_dead_letter([_raw(PURCHASES, {**GOOD, "installments": 2, "order_id": "o"})])[
        "reason"
    ] == ("schema_violation")
    bad_income = {**GOOD, "requested_amount": 5, "declared_monthly_income": -1}
    assert _only_dead_letter([_raw(APPLICATIONS, bad_income)])["reason"] == "schema_violation"


def test_unknown_fields_and_null_optionals_are_accepted() -> None:
    value = {**GOOD, "order_id": None, "note": {"nested": [1, 2.5]}}
    result = run([_raw(REPAYMENTS, value)])
    assert result.processed == 1


def test_code_point_lengths() -> None:
    # 64 astral code points are 256 UTF-8 bytes and 128 UTF-16 units, but 64 characters.
    user = "𝒳" * 64
    result = run([_raw(REPAYMENTS, {**GOOD, "user_id": user}, key=user)])
    assert result.processed == 1
    too_long = "𝒳" * 65
    letter = _only_dead_letter([_raw(REPAYMENTS, {**GOOD, "user_id": too_long}, key=too_long)])
    assert letter["reason"] == "schema_violation"


@pytest.mark.parametrize("key", ["u-2", None, "U-1", "u-1 "])
def test_key_mismatch(key: str | None) -> None:
    letter = _only_dead_letter([_raw(REPAYMENTS, GOOD, key=key)])
    assert letter["reason"] == "key_mismatch"
    assert letter["key"] == key


def test_a_non_utf8_key_is_a_key_mismatch() -> None:
    assert decode(1, b"\xff", orjson.dumps(GOOD), 65536) == Rejection(
        Reason.KEY_MISMATCH,
        "the record key is not UTF-8 (invalid start byte at byte 0); it must be the user_id as UTF-8",
    )


def test_too_large_is_checked_before_parsing() -> None:
    padded = {**GOOD, "padding": "x" * 70_000}
    letter = _only_dead_letter([_raw(REPAYMENTS, padded)])
    assert letter["reason"] == "too_large"
    assert "exceeds 65536 bytes" in letter["error"]
    assert _only_dead_letter([_raw(REPAYMENTS, "x" * 65_537)])["reason"] == "too_large"


def test_a_tombstone_is_dead_lettered() -> None:
    letter = _only_dead_letter([_raw(REPAYMENTS, None)])
    assert letter["reason"] == "invalid_json"
    assert letter["value"] is None


def test_in_future_uses_the_wall_clock_and_fires_no_timers() -> None:
    lines = [
        purchase("2026-03-01T00:00:00Z", 100, first_due="2026-03-02T00:00:00Z"),
        repayment("2026-03-05T00:00:01Z", 1, event_id="r-future"),
    ]
    result = run(lines, now="2026-03-04T00:00:00Z")
    assert [letter["reason"] for letter in result.dead_letters] == ["in_future"]
    # The overdue timer at 2026-03-05T00:00Z was not fired by the rejected record.
    assert result.decisions == []
    on_the_edge = run([repayment("2026-03-05T00:00:00Z", 1)], now="2026-03-04T00:00:00Z")
    assert on_the_edge.processed == 1


def test_a_record_from_the_far_future_does_not_hold_back_the_records_behind_it() -> None:
    """Ordered by its time, a 2099 repayment would keep u-1's on-time repayment behind it
    until u-3's purchases had moved the watermark past u-1's due date: a wrong freeze."""
    lines = [
        purchase("2026-03-01T00:00:00Z", 100, first_due="2026-03-02T00:00:00Z"),
        repayment("2099-01-01T00:00:00Z", 1, user="u-2"),
        repayment("2026-03-03T00:00:00Z", 100),
        purchase("2026-03-06T00:00:00Z", 100, user="u-3", order="o-3"),
        purchase("2026-03-08T00:00:00Z", 100, user="u-3", order="o-4"),
    ]
    result = run(lines, now="2026-03-10T00:00:00Z")
    assert [(letter["reason"], letter["line"]) for letter in result.dead_letters] == [
        ("in_future", 2)
    ]
    assert result.processed == 4
    assert result.decisions == []


def test_too_late_beyond_allowed_lateness_but_not_at_it() -> None:
    lines = [
        repayment("2026-03-10T00:00:00Z", 1, event_id="r-1"),
        repayment("2026-03-03T00:00:00Z", 1, event_id="r-2"),  # exactly 7 days: applied
        repayment("2026-03-02T23:59:59Z", 1, event_id="r-3"),  # beyond: dead-lettered
    ]
    result = run(lines)
    assert result.processed == 2
    assert [(d["reason"], d["line"]) for d in result.dead_letters] == [("too_late", 3)]


def test_a_duplicate_is_counted_even_when_it_would_be_too_late() -> None:
    first = repayment("2026-03-01T00:00:00Z", 1, event_id="r-1")
    lines = [first, repayment("2026-03-20T00:00:00Z", 1, event_id="r-2"), first]
    result = run(lines)
    assert (result.processed, result.duplicates, result.dead_lettered) == (2, 1, 0)


def test_a_duplicate_stamped_later_than_its_original_moves_no_watermark() -> None:
    """Only accepted events move the watermark: a retry re-stamped on 03-20 must not fire
    u-1's overdue timer (due + grace on 03-05), which no accepted event has reached."""
    lines = [
        purchase("2026-03-01T00:00:00Z", 100, first_due="2026-03-02T00:00:00Z"),
        repayment("2026-03-01T00:00:00Z", 1, user="u-2", event_id="r-1"),
        repayment("2026-03-20T00:00:00Z", 1, user="u-2", event_id="r-1"),
    ]
    result = run(lines)
    assert (result.processed, result.duplicates) == (2, 1)
    assert result.decisions == []
    # An accepted event on 03-20 would have fired it.
    moved = run([*lines[:2], repayment("2026-03-20T00:00:00Z", 1, user="u-2", event_id="r-2")])
    assert [d.caused_by for d in moved.decisions] == ["timer:overdue:2026-03-05T00:00:00Z"]


def test_an_id_at_the_dedup_horizon_is_still_a_duplicate_when_the_lateness_reaches_it() -> None:
    """With ``allowed_lateness`` equal to ``dedup_horizon``, X is exactly old enough to be
    applied when it comes again; the pruning past the id cap must not forget it first."""
    equal = policy_with({"time": {"allowed_lateness": "30d", "dedup_horizon": "30d"}})
    late = repayment("2026-01-02T00:00:00Z", 600, event_id="X")
    lines = [
        purchase("2026-01-01T00:00:00Z", 1000, first_due="2026-03-01T00:00:00Z"),
        late,
        # One id past the cap, counting the purchase's: the pruning runs, and keeps X.
        *(repayment("2026-02-01T00:00:00Z", 1, event_id=f"a-{i}") for i in range(DEDUP_CAP - 1)),
        late,
    ]
    result = run(lines, policy=equal)
    assert (result.processed, result.duplicates, result.dead_lettered) == (DEDUP_CAP + 1, 1, 0)


def test_duplicates_never_repeat_a_decision() -> None:
    burst = [application(f"2026-05-01T0{h}:00:00Z", 500, event_id=f"a-{h}") for h in range(3)]
    result = run(burst + burst)
    assert result.duplicates == 3
    assert len(result.decisions) == 1


def test_every_record_is_accounted_for() -> None:
    lines = [
        _raw(REPAYMENTS, "{"),
        _raw(REPAYMENTS, GOOD),
        _raw(REPAYMENTS, GOOD),
        _raw(REPAYMENTS, GOOD, key="other"),
        _raw(PURCHASES, {**GOOD, "order_id": "o"}),
    ]
    result = run(lines)
    assert (result.records, result.processed, result.duplicates, result.dead_lettered) == (
        5, 1, 2, 2,
    )  # fmt: skip
