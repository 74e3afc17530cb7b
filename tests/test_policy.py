"""Policy validation: every bad field is named, relations between fields are checked."""

from __future__ import annotations

import math
from fractions import Fraction
from importlib import resources

import msgspec
import orjson
import pytest

from risk.clock import DAY, HOUR
from risk.policy import PolicyError, load_policy, parse_policy, score_range
from risk.score import Scorecard

from builders import application, purchase, repayment, run, summary


def test_the_default_policy_matches_the_design() -> None:
    policy = load_policy()
    rules = policy.source.rules
    assert policy.grace == 3 * DAY
    assert policy.cure == 30 * DAY
    assert policy.minor_max_dpd == 3
    assert policy.episode_window == 180 * DAY
    assert (
        rules.overdue_repeated.freeze_min_episodes,
        rules.overdue_repeated.restore_max_episodes,
    ) == (3, 2)
    assert (
        rules.loan_velocity.freeze_min_applications,
        rules.loan_velocity.restore_max_applications,
    ) == (5, 2)
    assert policy.loan_window == 7 * DAY
    assert policy.small_window == 24 * HOUR
    assert rules.small_loan_burst.small_max_amount == 100_000
    assert (policy.freeze_above_ratio, policy.restore_max_ratio) == (Fraction(3), Fraction(2))
    assert policy.allowed_lateness == 7 * DAY
    assert policy.watermark_delay == 60 * 10**6
    assert policy.max_record_bytes == 65536


def test_sections_may_be_left_out() -> None:
    assert parse_policy('version = "v1"').loan_window == 7 * DAY


def test_decimal_ratios_are_exact() -> None:
    policy = parse_policy('version = "v"\n[rules.spend_income]\nrestore_max_ratio = "2.1"\n')
    assert policy.restore_max_ratio == Fraction(21, 10)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('version = ""', "version"),
        ('version = "has space"', "version"),
        ('version = "v"\nunknown = 1', "unknown"),
        (
            'version = "v"\n[rules.loan_velocity]\nfreeze_min_applications = 0',
            "rules.loan_velocity.freeze_min_applications",
        ),
        (
            'version = "v"\n[rules.loan_velocity]\nrestore_max_applications = 5',
            "rules.loan_velocity.restore_max_applications",
        ),
        (
            'version = "v"\n[rules.small_loan_burst]\nfreeze_min_applications = 65\nrestore_max_applications = 1',
            "rules.small_loan_burst.freeze_min_applications",
        ),
        (
            'version = "v"\n[rules.overdue_repeated]\nfreeze_min_episodes = 2',
            "rules.overdue_repeated.restore_max_episodes",
        ),
        (
            'version = "v"\n[rules.spend_income]\nrestore_max_ratio = "3.5"',
            "rules.spend_income.restore_max_ratio",
        ),
        (  # equal to the freeze bar: no hysteresis
            'version = "v"\n[rules.spend_income]\nrestore_max_ratio = "3.0"',
            "rules.spend_income.restore_max_ratio",
        ),
        (
            'version = "v"\n[rules.spend_income]\nfreeze_above_ratio = "three"',
            "rules.spend_income.freeze_above_ratio",
        ),
        ('version = "v"\n[rules.spend_income]\nwindow = "0d"', "rules.spend_income.window"),
        ('version = "v"\n[rules.spend_income]\nwindow = "401d"', "rules.spend_income.window"),
        (
            'version = "v"\n[rules.loan_velocity]\nlong_window = "1d"',
            "rules.loan_velocity.long_window",
        ),
        ('version = "v"\n[rules.overdue_active]\nenabled = "yes"', "rules.overdue_active.enabled"),
        ('version = "v"\n[time]\ndedup_horizon = "29d"', "time.dedup_horizon"),
        ('version = "v"\n[time]\nallowed_lateness = "40d"', "time.dedup_horizon"),
        ('version = "v"\n[input]\nmax_record_bytes = 10', "input.max_record_bytes"),
        ('version = "v"\n[overdue]\ncure_days = 1000', "overdue.cure_days"),
        ('version = "v"\n[overdue]\nminor_max_dpd = -1', "overdue.minor_max_dpd"),
        ('version = "v"\n[overdue]\nepisode_window = 180', "overdue.episode_window"),
        (
            'version = "v"\n[rules.reduce_overdue_repeated]\nreduce_min_episodes = 3',
            "rules.reduce_overdue_repeated.reduce_min_episodes",
        ),
        (
            'version = "v"\n[rules.reduce_overdue_repeated]\nrestore_max_episodes = 2',
            "rules.reduce_overdue_repeated.restore_max_episodes",
        ),
        (
            'version = "v"\n[rules.reduce_spend_income]\nreduce_above_ratio = "3"',
            "rules.reduce_spend_income.reduce_above_ratio",
        ),
        (
            'version = "v"\n[rules.reduce_spend_income]\nrestore_max_ratio = "2.5"',
            "rules.reduce_spend_income.restore_max_ratio",
        ),
        (  # equal to the reduce bar: no hysteresis
            'version = "v"\n[rules.reduce_spend_income]\nrestore_max_ratio = "2"',
            "rules.reduce_spend_income.restore_max_ratio",
        ),
        (
            'version = "v"\n[income_verification]\ncure_remaining_factor = "1.5"',
            "income_verification.cure_remaining_factor",
        ),
        ('version = "v"\n[restore]\nautomatic_per_window = 0', "restore.automatic_per_window"),
        ('version = "v"\n[restore]\nwindow = "2y"', "restore.window"),
        ('version = "v"\n[probation]\non_time_instalments = 0', "probation.on_time_instalments"),
        ('version = "v"\n[score]\nbase_odds = 0', "score.base_odds"),
        (
            'version = "v"\n[score.points.max_dpd_180d]\n'
            "bins = [{up_to = 3, points = 0}, {up_to = 30, points = 5}, {points = -9}]",
            "score.points.max_dpd_180d.bins",
        ),
        (
            'version = "v"\n[score.points.active_days_90d]\n'
            "bins = [{up_to = 9, points = 0}, {up_to = 4, points = 5}, {points = 9}]",
            "score.points.active_days_90d.bins",
        ),
        (
            'version = "v"\n[score.points.account_age_days]\n'
            "bins = [{up_to = 9, points = 0}, {up_to = 99, points = 5}]",
            "score.points.account_age_days.bins",
        ),
        (
            'version = "v"\n[score.points.late_share]\nmissing = 5\n'
            'bins = [{up_to = "0", points = 0}, {points = -9}]',
            "score.points.late_share.missing",
        ),
        (
            'version = "v"\n[score.points.late_share]\nbins = [{up_to = "x", points = 0}]',
            "score.points.late_share.bins",
        ),
    ],
)
def test_a_bad_field_is_named(text: str, field: str) -> None:
    with pytest.raises(PolicyError, match="invalid policy") as raised:
        parse_policy(text)
    assert f"`{field}`" in str(raised.value) or field in str(raised.value)


def test_a_disabled_rule_neither_freezes_nor_blocks_a_restore() -> None:
    policy = parse_policy('version = "no-velocity"\n[rules.loan_velocity]\nenabled = false\n')
    lines = [application(f"2026-05-01T0{h}:00:00Z", 500_000) for h in range(6)]
    assert run(lines, policy=policy).decisions == []
    assert len(run(lines).decisions) == 1
    # Pins the restore half: six applications during a cure hold only an enabled rule's restore.
    cured = [
        purchase("2026-02-01T00:00:00Z", 35000, order="o-1", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-05T12:00:00Z", 35000),  # 4 DPD: cured on 04-04T12:00
        *[application(f"2026-04-03T0{h}:00:00Z", 500_000) for h in range(6)],
    ]
    until = "2026-05-01T00:00:00Z"
    assert summary(run(cured, until=until, policy=policy))[-1] == (
        "limit.restore", "2026-04-04T12:00:00Z", "timer:cure:2026-04-04T12:00:00Z",
        ["REPAID_AND_CURED"],
    )  # fmt: skip
    # enabled, it holds the line until the third application is seven days old
    assert summary(run(cured, until=until))[-1][:2] == ("limit.restore", "2026-04-10T03:00:00Z")


def _default_with(old: str, new: str) -> str:
    """The packaged policy file with its first ``old`` replaced by ``new``."""
    text = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("minor_max_dpd = 3", "minor_max_dpd = " + "9" * 5000, "`overdue.minor_max_dpd` (line"),
        ('freeze_above_ratio = "3"', f'freeze_above_ratio = "3.{"0" * 5000}"',
         "rules.spend_income.freeze_above_ratio"),
        ('freeze_above_ratio = "3"', f'freeze_above_ratio = "{"9" * 5000}"',
         "rules.spend_income.freeze_above_ratio"),
        ('episode_window = "180d"', f'episode_window = "{"9" * 5000}d"', "overdue.episode_window"),
    ],
)  # fmt: skip
def test_a_number_with_thousands_of_digits_is_a_policy_error_naming_the_field(
    old: str, new: str, field: str
) -> None:
    with pytest.raises(PolicyError, match="invalid policy") as raised:
        parse_policy(_default_with(old, new))
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[rules.spend_income]\nfreeze_above_ratio = "3\\n"', "rules.spend_income.freeze_above_ratio"),
        ('[overdue]\nepisode_window = "7d\\n"', "overdue.episode_window"),
    ],
)  # fmt: skip
def test_a_value_ending_in_a_newline_is_refused(text: str, field: str) -> None:
    with pytest.raises(PolicyError, match="invalid policy") as raised:
        parse_policy(f'version = "v"\n{text}\n')
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grace_days = 401", "`overdue.grace_days` must be at most 400, got 401"),
        ("cure_days = 1000", "`overdue.cure_days` must be at most 400, got 1000"),
        ("minor_max_dpd = 401", "`overdue.minor_max_dpd` must be at most 400, got 401"),
    ],
)
def test_each_day_count_is_checked_on_its_own_with_its_path_and_value(
    text: str, message: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n[overdue]\n{text}\n')
    assert str(raised.value) == f"invalid policy: {message}"


@pytest.mark.parametrize(
    ("section", "key", "field"),
    [
        ("rules.spend_income", "freeze_above_ratio", "rules.spend_income.freeze_above_ratio"),
        ("rules.spend_income", "restore_max_ratio", "rules.spend_income.restore_max_ratio"),
        ("rules.reduce_spend_income", "reduce_above_ratio",
         "rules.reduce_spend_income.reduce_above_ratio"),
        ("rules.reduce_spend_income", "restore_max_ratio",
         "rules.reduce_spend_income.restore_max_ratio"),
        ("score.points.spend_to_income_30d", "bins",
         "score.points.spend_to_income_30d.bins[0].up_to"),
    ],
)  # fmt: skip
def test_a_ratio_above_a_thousand_is_refused_naming_the_field(
    section: str, key: str, field: str
) -> None:
    value = '"1000.001"'  # 2**64, which orjson could not encode, already fails the pattern
    if key == "bins":
        value = f"[{{ up_to = {value}, points = 0 }}, {{ points = -5 }}]"
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n[{section}]\n{key} = {value}\n')
    assert f"`{field}` must be at most 1000, got '1000.001'" in str(raised.value)


def test_a_ratio_of_a_thousand_loads() -> None:
    policy = parse_policy('version = "v"\n[rules.spend_income]\nfreeze_above_ratio = "1000"\n')
    assert policy.freeze_above_ratio == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('max_future_skew = "30s"', "`time.max_future_skew` must be at least 1m, got '30s'"),
        ('max_future_skew = "8d"', "`time.max_future_skew` must be at most 7d, got '8d'"),
        ('max_future_skew = "400d"', "`time.max_future_skew` must be at most 7d, got '400d'"),
        ('watermark_delay = "25h"', "`time.watermark_delay` must be at most 1d, got '25h'"),
        ('watermark_delay = "400d"', "`time.watermark_delay` must be at most 1d, got '400d'"),
    ],
)
def test_an_out_of_range_time_setting_is_refused_not_adjusted(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n[time]\n{text}\n')
    assert str(raised.value) == f"invalid policy: {message}"


def test_the_time_settings_bounds_themselves_load() -> None:
    policy = parse_policy('version = "v"\n[time]\nmax_future_skew = "1m"\nwatermark_delay = "0s"\n')
    assert (policy.max_future_skew, policy.watermark_delay) == (HOUR // 60, 0)
    policy = parse_policy('version = "v"\n[time]\nmax_future_skew = "7d"\nwatermark_delay = "1d"\n')
    assert (policy.max_future_skew, policy.watermark_delay) == (7 * DAY, DAY)


ODDS_OVERFLOW = """version = "odds-1"
[score]
base_points = 0
points_to_double_odds = 1
[score.points.on_time_instalments]
bins = [{ points = 500 }]
[score.points.active_days_90d]
bins = [{ points = 500 }]
[score.points.account_age_days]
bins = [{ points = 500 }]
"""


def test_a_scorecard_whose_odds_would_overflow_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(ODDS_OVERFLOW)
    assert "`score.points_to_double_odds` (1) must be at least 24" in str(raised.value)
    assert "scores reach 1160-1510" in str(raised.value)
    steep_enough = ODDS_OVERFLOW.replace("double_odds = 1", "double_odds = 24")
    assert parse_policy(steep_enough + "[rules.score_low]\nfreeze_below = 1200\n")


def test_the_default_scores_reach_260_to_680() -> None:
    policy = load_policy()
    assert score_range(policy.source.score, policy.score_bins) == (260, 680)


@pytest.mark.parametrize("score", [-100_000, 0, 100_000])
def test_odds_are_a_finite_float_whatever_the_score(score: int) -> None:
    policy = load_policy()
    steep = msgspec.structs.replace(
        policy,
        source=msgspec.structs.replace(
            policy.source,
            score=msgspec.structs.replace(policy.source.score, points_to_double_odds=1),
        ),
    )
    odds = Scorecard(score, {}, {}).odds(steep)
    assert math.isfinite(odds)
    assert orjson.loads(orjson.dumps({"odds": odds}))["odds"] == odds


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("freeze_below = 2000", "`rules.score_low.freeze_below` + `rules.score_low.restore_margin`"
         " (2000 + 20) must be at most 680"),
        ("freeze_below = 670", "(670 + 20) must be at most 680"),
        ("freeze_below = 260", "`rules.score_low.freeze_below` (260) must be above 260"),
        ("freeze_below = 0", "`rules.score_low.freeze_below` (0) must be above 260"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_the_score_rules_bars_must_be_scores_the_scorecard_can_reach(
    rule: str, message: str, enabled: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'version = "v"\n[rules.score_low]\nenabled = {enabled}\n{rule}\n')
    assert message in str(raised.value)


def test_the_score_rules_bars_at_the_edges_of_the_reachable_scores_load() -> None:
    for rule in ("freeze_below = 261", "freeze_below = 660\nrestore_margin = 20"):
        assert parse_policy(f'version = "v"\n[rules.score_low]\nenabled = true\n{rule}\n')
