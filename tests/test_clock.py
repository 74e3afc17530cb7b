"""Strict RFC 3339, UTC rendering and calendar months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk.clock import (
    add_months,
    civil_from_days,
    days_from_civil,
    format_timestamp,
    parse_timestamp,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-04T00:00:00Z", "2026-03-04T00:00:00Z"),
        ("2026-03-04T08:00:00+08:00", "2026-03-04T00:00:00Z"),
        ("2026-03-03T19:00:00-05:00", "2026-03-04T00:00:00Z"),
        ("2026-03-04T00:00:00-00:00", "2026-03-04T00:00:00Z"),
        ("2026-03-04T00:00:01.20Z", "2026-03-04T00:00:01.2Z"),
        ("2026-03-04T00:00:00.1234569Z", "2026-03-04T00:00:00.123456Z"),  # truncated, not rounded
        ("2028-02-29T23:59:59.999999Z", "2028-02-29T23:59:59.999999Z"),
        ("1970-01-01T00:30:00+01:00", "1969-12-31T23:30:00Z"),
    ],
)
def test_accepts_and_renders_in_utc(text: str, expected: str) -> None:
    parsed = parse_timestamp(text)
    assert isinstance(parsed, int)
    assert format_timestamp(parsed) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-04t00:00:00Z",
        "2026-03-04T00:00:00z",
        "2026-03-04 00:00:00Z",
        "2026-03-04T00:00:00",
        "2026-03-04T00:00:00+0800",
        "2026-03-04T00:00:60Z",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-03-04T24:00:00Z",
        "2026-03-04T00:00:00+24:00",
        "2026-03-04T00:00:00.Z",
        "1969-12-31T23:59:59Z",
        "2026-03-04T00:00:00Z\n",
        "２０２６-03-04T00:00:00Z",  # fullwidth digits
        "2026-3-4T00:00:00Z",
        "",
    ],
)
def test_rejects_everything_outside_the_strict_profile(text: str) -> None:
    assert isinstance(parse_timestamp(text), str)


@given(st.integers(min_value=0, max_value=(datetime(9999, 1, 1, tzinfo=UTC) - EPOCH) // MICRO))
def test_agrees_with_the_standard_library(micros: int) -> None:
    aware = EPOCH + micros * MICRO
    assert parse_timestamp(aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == micros
    assert parse_timestamp(format_timestamp(micros)) == micros


@given(st.integers(min_value=-800_000, max_value=3_000_000))
def test_civil_days_round_trip(days: int) -> None:
    assert days_from_civil(*civil_from_days(days)) == days


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ("2026-01-31T10:30:00Z", 1, "2026-02-28T10:30:00Z"),
        ("2026-01-31T10:30:00Z", 2, "2026-03-31T10:30:00Z"),
        ("2028-01-31T00:00:00Z", 1, "2028-02-29T00:00:00Z"),
        ("2026-08-31T00:00:00Z", 1, "2026-09-30T00:00:00Z"),
        ("2026-12-15T00:00:00Z", 1, "2027-01-15T00:00:00Z"),
        ("2026-05-31T00:00:00Z", 23, "2028-04-30T00:00:00Z"),
    ],
)
def test_add_months_clamps_to_month_end(start: str, months: int, expected: str) -> None:
    parsed = parse_timestamp(start)
    assert isinstance(parsed, int)
    assert format_timestamp(add_months(parsed, months)) == expected
