"""Strict RFC 3339, UTC rendering and calendar months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk import clock
from risk.clock import (
    _parse_timestamp_checked,
    add_months,
    civil_from_days,
    days_from_civil,
    format_timestamp,
    monthly,
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
        ("1970-01-01T01:00:00+01:00", "1970-01-01T00:00:00Z"),
        ("1970-01-01T00:00:00-01:00", "1970-01-01T01:00:00Z"),
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


@pytest.mark.parametrize(
    "text",
    ["1970-01-01T00:30:00+01:00", "1970-01-01T00:59:59.999999+01:00", "1970-01-01T00:00:00+23:59"],
)
def test_rejects_an_instant_before_the_epoch_reached_through_a_positive_offset(text: str) -> None:
    """The year is 1970, but the instant is 1969: occurred_at would break the limit-event schema."""
    result = parse_timestamp(text)
    assert result == _parse_timestamp_checked(text)
    assert isinstance(result, str)
    assert "before 1970-01-01T00:00:00Z" in result


@given(
    st.integers(min_value=0, max_value=3 * 86_400_000_000), st.integers(0, 23), st.integers(0, 59)
)
def test_every_accepted_timestamp_is_at_or_after_the_epoch(
    micros: int, hours: int, minutes: int
) -> None:
    """Whatever the offset, a timestamp near the epoch is rejected or lands at or after it."""
    local = (EPOCH + micros * MICRO).strftime("%Y-%m-%dT%H:%M:%S.%f")
    for sign in "+-":
        result = parse_timestamp(f"{local}{sign}{hours:02d}:{minutes:02d}")
        assert isinstance(result, str) or result >= 0


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


# The fast path of parse_timestamp must accept exactly what the checked parser accepts, with
# the same value or the same message: near misses of the canonical forms are generated here.
_NEAR_MISS_CHARS = "0123456789-:.TZtz+ \n１٣"
_canonical = st.builds(
    lambda micros, fraction: (
        (EPOCH + micros * MICRO).strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    ),
    st.integers(min_value=-(10**15), max_value=(datetime(9999, 1, 1, tzinfo=UTC) - EPOCH) // MICRO),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,9}", fullmatch=True)),
)


@st.composite
def _near_misses(draw: st.DrawFn) -> str:
    text = list(draw(_canonical))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        index = draw(st.integers(min_value=0, max_value=len(text) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        char = draw(st.sampled_from(_NEAR_MISS_CHARS))
        if action == "replace":
            text[index] = char
        elif action == "insert":
            text.insert(index, char)
        elif len(text) > 1:
            del text[index]
    return "".join(text)


@given(st.one_of(_canonical, _near_misses(), st.text(max_size=30)))
def test_the_fast_path_agrees_with_the_checked_parser(text: str) -> None:
    assert parse_timestamp(text) == _parse_timestamp_checked(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T00:00:00Z",
        "2026-03-04T00:00:60.5Z",
        "2026-03-04T25:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "2026-03-04T00:00:00.Z",
        "2026-03-04T00:00:00.1.2Z",
        "2026-03-04T00:00:00,1Z",
        "2026-03-04T00:00:00.١Z",  # an Arabic-Indic digit
        "2026-03-04T00:00:00.1２Z",
        "2026-03-04T00:0０:00Z",
        "2026-03-04T00:00:00ZZ",
    ],
)
def test_the_fast_path_rejects_near_misses_as_the_checked_parser_does(text: str) -> None:
    result = parse_timestamp(text)
    assert isinstance(result, str)
    assert result == _parse_timestamp_checked(text)


def test_the_date_cache_stays_bounded_and_correct() -> None:
    start = days_from_civil(2000, 1, 1)
    for days in range(start, start + 3 * clock._DAYS_CAP):
        year, month, day = civil_from_days(days)
        text = f"{year:04d}-{month:02d}-{day:02d}T12:00:00.5Z"
        assert parse_timestamp(text) == (days * 86400 + 12 * 3600) * 1_000_000 + 500_000
        assert len(clock._DAYS) <= clock._DAYS_CAP


@given(
    st.integers(min_value=0, max_value=(datetime(9000, 1, 1, tzinfo=UTC) - EPOCH) // MICRO),
    st.sampled_from([1, 3, 6, 9, 12, 24]),
)
def test_monthly_is_add_months_from_the_first_date(first: int, count: int) -> None:
    expected = [add_months(first, months) for months in range(count)]
    assert monthly(first, count) == expected
    assert monthly(first, count) == expected  # the cached series too
