"""Event time as integer microseconds since the Unix epoch, UTC.

Integers keep window and due-date arithmetic exact. The calendar code is the
proleptic Gregorian algorithm of Howard Hinnant's ``days_from_civil``, so it has
no year limit and never builds a naive ``datetime``.
"""

from __future__ import annotations

import re
from typing import Final

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# ASCII digits only: ``\d`` would also match other scripts' digits.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DURATION = re.compile(r"([0-9]+)(s|m|h|d)")
_DURATION_UNITS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY}


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of a day count since 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def days_in_month(year: int, month: int) -> int:
    """Length of a month, leap years included."""
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_timestamp(text: str) -> int | str:
    """Parse the strict RFC 3339 profile of the contract.

    Returns epoch microseconds, or an error message. Uppercase ``T`` and ``Z``
    only, an offset is required, a leap second and an instant before the epoch
    are rejected, and a fraction longer than microseconds is truncated (never
    rounded into the next second).

    The common UTC form ``YYYY-MM-DDTHH:MM:SS[.f]Z`` takes a fast path that looks
    the date up in a cache of dates already checked and reads the time of day
    directly; anything else, and every error, goes through
    :func:`_parse_timestamp_checked`, so the fast path accepts exactly what it
    accepts, with the same value.
    """
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T":
        days = _DAYS.get(text[:10])
        if days is None:
            days = _cache_date(text[:10])
        seconds = _time_of_day(text)
        if days is not None and seconds is not None:
            if len(text) == 20:
                return (days * 86400 + seconds) * SECOND
            fraction = text[20:-1]
            if text[19] == "." and fraction.isdigit() and fraction.isascii():
                micros = int(fraction[:6]) * _FRACTION_SCALE[min(len(fraction), 6)]
                return (days * 86400 + seconds) * SECOND + micros
    return _parse_timestamp_checked(text)


_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DAYS: dict[str, int] = {}
"""Valid ``YYYY-MM-DD`` dates from 1970 on, as days since the epoch; bounded by :data:`_DAYS_CAP`."""
_DAYS_CAP: Final = 4096
_FRACTION_SCALE: Final = (0, 100_000, 10_000, 1_000, 100, 10, 1)
"""Microseconds per unit of a fraction of 1 to 6 digits (a longer one is truncated to 6)."""


def _cache_date(text: str) -> int | None:
    """Days since the epoch of a valid date from 1970 on, remembered; None otherwise."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if year < 1970 or not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return None
    if len(_DAYS) >= _DAYS_CAP:
        _DAYS.clear()  # hostile input with ever new dates: start over rather than grow
    days = _DAYS[text] = days_from_civil(year, month, day)
    return days


def _time_of_day(text: str) -> int | None:
    """Seconds since midnight of the ``HH:MM:SS`` at ``text[11:19]`` (no leap second), or None."""
    if text[13] != ":" or text[16] != ":":
        return None
    digits = text[11:13] + text[14:16] + text[17:19]
    if not (digits.isdigit() and digits.isascii()):
        return None
    number = int(digits)
    hour, minute, second = number // 10000, number // 100 % 100, number % 100
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour * 3600 + minute * 60 + second


def _parse_timestamp_checked(text: str) -> int | str:
    """:func:`parse_timestamp` for every form, with the error message of each rejection."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return f"{text[:40]!r} is not an RFC 3339 timestamp YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)"
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    if year < 1970:
        return f"{text[:40]!r}: years before 1970 are not accepted"
    if not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return f"{text[:40]!r}: no such date"
    if hour > 23 or minute > 59 or second > 59:
        return f"{text[:40]!r}: no such time of day (leap seconds are not accepted)"
    offset_seconds = 0
    if offset != "Z":
        offset_hours, offset_minutes = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            return f"{text[:40]!r}: no such UTC offset"
        offset_seconds = (offset_hours * 3600 + offset_minutes * 60) * (
            -1 if offset[0] == "-" else 1
        )
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    utc = (seconds - offset_seconds) * SECOND + micros
    if utc < 0:  # 1970-01-01T00:30:00+01:00: the year is 1970, the instant is not
        return f"{text[:40]!r}: before 1970-01-01T00:00:00Z once its UTC offset is applied"
    return utc


def format_timestamp(micros: int) -> str:
    """Render as UTC ``Z`` with the fraction's trailing zeros stripped."""
    seconds, fraction = divmod(micros, SECOND)
    text = format_timestamp_seconds(seconds * SECOND)
    if fraction:
        text = f"{text[:-1]}.{fraction:06d}".rstrip("0") + "Z"
    return text


def format_timestamp_seconds(micros: int) -> str:
    """Render as ``YYYY-MM-DDTHH:MM:SSZ``, truncated to the second (timer names)."""
    days, day_micros = divmod(micros, DAY)
    year, month, day = civil_from_days(days)
    second_of_day = day_micros // SECOND
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def add_months(micros: int, months: int) -> int:
    """The same day and time of day ``months`` calendar months later, clamped to month end."""
    days, day_micros = divmod(micros, DAY)
    return _add_months_to_day(days, months) * DAY + day_micros


def _add_months_to_day(days: int, months: int) -> int:
    year, month, day = civil_from_days(days)
    month_count = year * 12 + (month - 1) + months
    year, month = divmod(month_count, 12)
    month += 1
    day = min(day, days_in_month(year, month))
    return days_from_civil(year, month, day)


def monthly(first: int, count: int) -> list[int]:
    """``add_months(first, k)`` for k in ``range(count)``: the due dates of ``count`` instalments."""
    days, day_micros = divmod(first, DAY)
    key = days, count
    series = _MONTHLY.get(key)
    if series is None:
        if len(_MONTHLY) >= _MONTHLY_CAP:
            _MONTHLY.clear()  # ever new due dates: start over rather than grow
        series = _MONTHLY[key] = tuple(_add_months_to_day(days, k) for k in range(count))
    return [day * DAY + day_micros for day in series]


_MONTHLY: dict[tuple[int, int], tuple[int, ...]] = {}
"""Day numbers of monthly series by (first day, count); bounded by :data:`_MONTHLY_CAP`."""
_MONTHLY_CAP: Final = 4096


def parse_duration(text: str) -> int | None:
    """Parse ``90s``, ``15m``, ``24h`` or ``7d`` into microseconds; None if malformed."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
