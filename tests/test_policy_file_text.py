"""How a policy file's text is read, and what the risk team is told when a value is wrong."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from risk.contract import MAX_MONEY, Rejection, decode
from risk.policy import PolicyError, load_policy, parse_policy
from risk.replay import INPUT_TOPICS

PACKAGED = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")


def test_a_byte_order_mark_at_the_start_is_read_as_utf8(tmp_path: Path) -> None:
    # Windows editors save "UTF-8 with BOM"; the file is the packaged policy all the same.
    for name, text in (("bom.toml", PACKAGED), ("bomcrlf.toml", PACKAGED.replace("\n", "\r\n"))):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        policy = load_policy(tmp_path / name)
        assert policy.version == load_policy().version
        assert policy.fingerprint == load_policy().fingerprint


DURATION_WORDS = (
    'a duration in quotes: a whole number followed by s, m, h or d, like "90s", "15m", "24h"'
    ' or "7d"'
)
RATIO_WORDS = 'a decimal number in quotes, like "2.5" (compared exactly, never as a float)'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[rules.small_loan_burst]\nwindow = "1.5d"',
         f"`rules.small_loan_burst.window` must be {DURATION_WORDS}, got '1.5d'"),
        ('[time]\nallowed_lateness = "7 days"',
         f"`time.allowed_lateness` must be {DURATION_WORDS}, got '7 days'"),
        ("[overdue]\nepisode_window = 180",
         f"`overdue.episode_window` must be {DURATION_WORDS}, got 180"),
        ("[rules.spend_income]\nfreeze_above_ratio = 3.5",
         f'`rules.spend_income.freeze_above_ratio` must be {RATIO_WORDS}, got 3.5: quote it, "3.5"'),
        ('[rules.spend_income]\nfreeze_above_ratio = "3,5"',
         f"`rules.spend_income.freeze_above_ratio` must be {RATIO_WORDS}, got '3,5'"),
        ("[score.points.late_share]\nbins = [{ up_to = 0, points = 0 }, { points = -70 }]",
         f'`score.points.late_share.bins[0].up_to` must be {RATIO_WORDS}, got 0: quote it, "0"'),
    ],
)  # fmt: skip
def test_a_bad_duration_or_ratio_is_explained_in_words_naming_the_field(
    text: str, message: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n{text}\n')
    assert str(raised.value) == f"invalid policy: {message}"
    assert "regex" not in str(raised.value)


@pytest.mark.parametrize("channel", ["line ", " line", " ", "line\t", ""])
def test_an_own_channel_with_white_space_around_it_or_empty_is_refused(channel: str) -> None:
    # The audit's chan.jsonl: three small applications through "line" would all have counted
    # as other lenders' against "line ".
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n[score]\nown_channel = "{channel}"\n')
    assert "`score.own_channel`" in str(raised.value)
    inner = parse_policy('version = "v"\n[score]\nown_channel = "app store"\n')
    assert inner.source.score.own_channel == "app store"


def test_a_small_amount_bar_above_the_largest_amount_is_refused() -> None:
    field = "[rules.small_loan_burst]\nsmall_max_amount"
    accepted = parse_policy(f'version = "v"\n{field} = {MAX_MONEY}\n')
    assert accepted.source.rules.small_loan_burst.small_max_amount == MAX_MONEY
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n{field} = {MAX_MONEY + 1}\n')
    assert "`rules.small_loan_burst.small_max_amount`" in str(raised.value)
    assert str(MAX_MONEY) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[overdue]\nminor_max_dpd = 401", "overdue.minor_max_dpd"),
        ("[probation]\nafter_dpd_above = 10000000000", "probation.after_dpd_above"),
        ("[score.points.max_dpd_180d]\nbins = [{ up_to = 3, points = 0 }, { up_to = 4000,"
         " points = -5 }, { points = -90 }]", "score.points.max_dpd_180d.bins[1].up_to"),
    ],
)  # fmt: skip
def test_a_dpd_bar_past_400_days_is_refused_like_the_grace_and_the_cure(
    text: str, field: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n{text}\n')
    assert str(raised.value).startswith(f"invalid policy: `{field}` must be at most 400, got ")
    at_400 = parse_policy(
        'version = "v"\n[overdue]\nminor_max_dpd = 400\n[probation]\nafter_dpd_above = 400\n'
    )
    assert (at_400.minor_max_dpd, at_400.source.probation.after_dpd_above) == (400, 400)


def test_an_allowed_lateness_below_a_minute_is_refused() -> None:
    # The audit's late.jsonl: a repayment 2 seconds out of order went too_late with "0s".
    for lateness in ("0s", "59s"):
        with pytest.raises(PolicyError) as raised:
            parse_policy(f'version = "v"\n[time]\nallowed_lateness = "{lateness}"\n')
        assert str(raised.value) == (
            f"invalid policy: `time.allowed_lateness` must be at least 1m, got '{lateness}'"
        )
    assert parse_policy('version = "v"\n[time]\nallowed_lateness = "1m"\n').allowed_lateness == (
        60 * 10**6
    )


def test_max_record_bytes_leaves_room_for_the_largest_valid_record() -> None:
    # A limit override with every string at its longest, as Python's json.dumps writes it
    # (non-ASCII \u-escaped): 1,000 astral characters of note are 12,000 bytes alone.
    wide = "\N{GRINNING FACE}"
    record = json.dumps({
        "event_id": wide * 128, "user_id": wide * 64,
        "occurred_at": "2026-03-05T10:00:00.000000+08:00", "action": "restore",
        "operator": wide * 128, "note": wide * 1000,
    }).encode()  # fmt: skip
    overrides = INPUT_TOPICS.index("credit.limit-overrides.v1")
    decoded = decode(overrides, (wide * 64).encode(), record, load_policy().max_record_bytes)
    assert not isinstance(decoded, Rejection), decoded
    floor = parse_policy('version = "v"\n[input]\nmax_record_bytes = 16384\n').max_record_bytes
    assert len(record) <= floor
    assert not isinstance(decode(overrides, (wide * 64).encode(), record, floor), Rejection)
    with pytest.raises(PolicyError) as raised:
        parse_policy('version = "v"\n[input]\nmax_record_bytes = 16383\n')
    assert "`input.max_record_bytes`" in str(raised.value)
