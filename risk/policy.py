"""The risk policy: a versioned TOML file holding every threshold, window and period.

Loading checks types, ranges and the relations between fields, and every error
names the field's path (``rules.loan_velocity.restore_max_applications``), so a
bad file stops start-up with a message the risk team can act on.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import tomllib
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

from risk.clock import DAY, parse_duration
from risk.contract import MAX_MONEY

EXACT_TIMESTAMPS_CAP: Final = 64
"""Exact timestamps kept per window; a count threshold above this could not be decided exactly."""
EPISODES_CAP: Final = 32
"""Overdue episodes kept per user."""
MAX_WINDOW: Final = 400 * DAY
"""Longest window: hourly buckets beyond the exact cap stay below 9,600 per window."""
MAX_ODDS_DOUBLINGS: Final = 64
"""How far a score may reach from ``score.base_points``, in ``points_to_double_odds``: odds
between ``base_odds`` × 2**±64 cover any real book, and stay finite floats."""
MAX_RATIO: Final = 1000
"""Largest ratio: spend of a thousand months' income. A larger bar decides nothing more, and
a threshold a decision carries must stay a number JSON encoders accept (below 2**64)."""

Count = Annotated[int, msgspec.Meta(ge=0)]
# Digit counts are limited so that no value reaches int()'s 4,300-digit limit, and the
# patterns end in \Z, not $, which would also match before a final newline ("3\n").
_DURATION_PATTERN: Final = r"^[0-9]{1,12}(s|m|h|d)\Z"
_RATIO_PATTERN: Final = r"^[0-9]{1,12}(\.[0-9]{1,12})?\Z"
Duration = Annotated[str, msgspec.Meta(pattern=_DURATION_PATTERN)]
Ratio = Annotated[str, msgspec.Meta(pattern=_RATIO_PATTERN)]
_EXPECTED: Final = {
    _DURATION_PATTERN: "a duration in quotes: a whole number followed by s, m, h or d,"
    ' like "90s", "15m", "24h" or "7d"',
    _RATIO_PATTERN: 'a decimal number in quotes, like "2.5" (compared exactly, never as a float)',
}
"""What a duration or a ratio field takes, in words: msgspec's message would show the regex."""
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")


class PolicyError(ValueError):
    """A policy file that must not be used; the message names the field."""


# Every section forbids unknown keys: in a policy file they are typos, and a
# silently ignored threshold is worse than a refused start-up.
class OverduePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Grace, cure and episode counting."""

    grace_days: Count = 3
    minor_max_dpd: Count = 3
    cure_days: Count = 30
    episode_window: Duration = "180d"


class OverdueActiveRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze while any instalment is overdue."""

    enabled: bool = True


class OverdueRepeatedRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze on repeated overdue episodes."""

    enabled: bool = True
    freeze_min_episodes: Annotated[int, msgspec.Meta(ge=1)] = 3
    restore_max_episodes: Count = 2


class LoanVelocityRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze on many loan applications in a short window."""

    enabled: bool = True
    window: Duration = "7d"
    freeze_min_applications: Annotated[int, msgspec.Meta(ge=1)] = 5
    restore_max_applications: Count = 2
    long_window: Duration = "30d"


class SmallLoanBurstRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze on a burst of small applications."""

    enabled: bool = True
    window: Duration = "24h"
    # No requested amount exceeds MAX_MONEY, so a larger bar would only hide a typo.
    small_max_amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_MONEY)] = 100000
    freeze_min_applications: Annotated[int, msgspec.Meta(ge=1)] = 3
    restore_max_applications: Count = 1


class SpendIncomeRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze when spend runs far ahead of the declared monthly income."""

    enabled: bool = True
    window: Duration = "30d"
    freeze_above_ratio: Ratio = "3"
    restore_max_ratio: Ratio = "2.0"


class ScoreLowRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Freeze below a behaviour score; restore once it is back above threshold + margin."""

    enabled: bool = False
    freeze_below: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 480
    restore_margin: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class ReduceOverdueRepeatedRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Reduce the limit on overdue episodes below the freeze bar."""

    enabled: bool = True
    reduce_min_episodes: Annotated[int, msgspec.Meta(ge=1)] = 2
    restore_max_episodes: Count = 1


class ReduceSpendIncomeRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Reduce the limit when spend over ``rules.spend_income.window`` nears the freeze bar."""

    enabled: bool = False
    reduce_above_ratio: Ratio = "2.0"
    restore_max_ratio: Ratio = "1.5"


class Rules(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One section per rule: five freeze rules, the score rule and two reduce rules."""

    overdue_active: OverdueActiveRule = OverdueActiveRule()
    overdue_repeated: OverdueRepeatedRule = OverdueRepeatedRule()
    loan_velocity: LoanVelocityRule = LoanVelocityRule()
    small_loan_burst: SmallLoanBurstRule = SmallLoanBurstRule()
    spend_income: SpendIncomeRule = SpendIncomeRule()
    score_low: ScoreLowRule = ScoreLowRule()
    reduce_overdue_repeated: ReduceOverdueRepeatedRule = ReduceOverdueRepeatedRule()
    reduce_spend_income: ReduceSpendIncomeRule = ReduceSpendIncomeRule()


class ProbationPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Half the limit after a severe freeze, until enough instalments are paid on time."""

    enabled: bool = True
    after_dpd_above: Count = 30
    on_time_instalments: Annotated[int, msgspec.Meta(ge=1, le=24)] = 3


class RestorePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Anti-flapping: automatic restores from a freeze allowed per rolling window."""

    automatic_per_window: Annotated[int, msgspec.Meta(ge=1, le=12)] = 1
    window: Duration = "365d"


class IncomeVerificationPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a verified income does to a cure period still running."""

    cure_remaining_factor: Ratio = "0.5"


class OverridePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Operators' freezes and restores from ``credit.limit-overrides.v1``."""

    automatic_may_undo_manual_freeze: bool = False


class CountBin(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Points for values up to ``up_to`` (inclusive); the last bin has no bound."""

    points: Annotated[int, msgspec.Meta(ge=-500, le=500)]
    up_to: Count | None = None


class RatioBin(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Points for ratios up to ``up_to`` (inclusive, a decimal string); the last has no bound."""

    points: Annotated[int, msgspec.Meta(ge=-500, le=500)]
    up_to: Ratio | None = None


class CountAttribute(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A scorecard characteristic measured as a count."""

    bins: list[CountBin]


class RatioAttribute(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A scorecard characteristic measured as a ratio; ``missing`` when it cannot be measured."""

    bins: list[RatioBin]
    missing: Annotated[int, msgspec.Meta(ge=-500, le=500)] = 0


def _count(*bins: tuple[int | None, int]) -> CountAttribute:
    return CountAttribute([CountBin(points, up_to) for up_to, points in bins])


def _ratio(*bins: tuple[str | None, int], missing: int = 0) -> RatioAttribute:
    return RatioAttribute([RatioBin(points, up_to) for up_to, points in bins], missing)


class ScorePoints(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The points table: one characteristic per field, bins in increasing order."""

    on_time_instalments: CountAttribute = _count((0, 0), (2, 5), (5, 10), (11, 20), (None, 30))
    late_share: RatioAttribute = _ratio(
        ("0", 0), ("0.1", -10), ("0.25", -25), ("0.5", -45), (None, -70)
    )
    overdue_episodes_180d: CountAttribute = _count((0, 0), (1, -15), (2, -35), (None, -60))
    max_dpd_180d: CountAttribute = _count((0, 0), (3, -5), (30, -25), (60, -55), (None, -90))
    active_days_90d: CountAttribute = _count((4, 0), (14, 10), (None, 20))
    account_age_days: CountAttribute = _count((89, 0), (364, 10), (None, 20))
    other_lender_applications_30d: CountAttribute = _count((0, 0), (2, -10), (5, -30), (None, -60))
    spend_to_income_30d: RatioAttribute = _ratio(
        ("0.5", 10), ("1", 0), ("2", -15), ("3", -35), (None, -60)
    )


SCORE_DIRECTIONS: Final = {
    "on_time_instalments": 1,
    "late_share": -1,
    "overdue_episodes_180d": -1,
    "max_dpd_180d": -1,
    "active_days_90d": 1,
    "account_age_days": 1,
    "other_lender_applications_30d": -1,
    "spend_to_income_30d": -1,
}
"""Whether points must rise (1) or fall (-1) with each characteristic: checked at load."""


class ScorePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The behaviour scorecard and its PDO scaling."""

    base_points: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 600
    base_odds: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    points_to_double_odds: Annotated[int, msgspec.Meta(ge=1, le=200)] = 20
    own_channel: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "line"
    other_lender_window: Duration = "30d"
    active_days_window: Annotated[int, msgspec.Meta(ge=1, le=400)] = 90
    points: ScorePoints = ScorePoints()


class TimePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Event-time handling."""

    allowed_lateness: Duration = "7d"
    watermark_delay: Duration = "60s"
    dedup_horizon: Duration = "30d"
    max_future_skew: Duration = "1d"


class InputPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Limits on input records."""

    # The largest valid record with no unknown field, a limit override whose every string is
    # at its longest and \u-escaped (as Python's json.dumps writes non-ASCII), is about 16,000
    # bytes: below 16 KiB valid records would be dead-lettered as too_large.
    max_record_bytes: Annotated[int, msgspec.Meta(ge=16 * 1024, le=16 * 1024 * 1024)] = 65536


class PolicyFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The policy file as written."""

    version: str
    overdue: OverduePolicy = OverduePolicy()
    rules: Rules = Rules()
    score: ScorePolicy = ScorePolicy()
    probation: ProbationPolicy = ProbationPolicy()
    restore: RestorePolicy = RestorePolicy()
    income_verification: IncomeVerificationPolicy = IncomeVerificationPolicy()
    overrides: OverridePolicy = OverridePolicy()
    time: TimePolicy = TimePolicy()
    input: InputPolicy = InputPolicy()


class Policy(msgspec.Struct, frozen=True):
    """The validated policy in the units the core computes with (microseconds, fractions)."""

    source: PolicyFile
    version: str
    fingerprint: str
    """What the policy decides by, as 12 hex digits: see :func:`policy_fingerprint`."""
    grace: int
    minor_max_dpd: int
    cure: int
    episode_window: int
    loan_window: int
    loan_long_window: int
    small_window: int
    spend_window: int
    freeze_above_ratio: Fraction
    restore_max_ratio: Fraction
    reduce_above_ratio: Fraction
    reduce_restore_max_ratio: Fraction
    cure_remaining_factor: Fraction
    restore_window: int
    other_lender_window: int
    score_bins: dict[str, tuple[tuple[Fraction | None, int], ...]]
    """Each characteristic's bins as (inclusive upper bound or None, points)."""
    allowed_lateness: int
    watermark_delay: int
    dedup_horizon: int
    max_future_skew: int
    max_record_bytes: int


def parse_policy(text: str) -> Policy:
    """Parse and validate policy TOML; raise :class:`PolicyError` naming the field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"policy is not valid TOML: {error}") from error
    except ValueError as error:  # an integer beyond int()'s digit limit, which tomllib lets out
        raise PolicyError(
            f"invalid policy: {_longest_number(text)} has too many digits: {error}"
        ) from error
    return policy_from_mapping(raw)


def policy_from_mapping(raw: dict[str, Any]) -> Policy:
    """Validate a policy already parsed into tables (TOML, or a backtest's variations)."""
    try:
        source = msgspec.convert(raw, PolicyFile)
    except msgspec.ValidationError as error:
        message = _dotted(str(error))
        raise PolicyError(f"invalid policy: {_in_words(message, raw) or message}") from error
    return _resolve(source)


def _in_words(message: str, raw: dict[str, Any]) -> str | None:
    """A bad duration or ratio said in words, naming the field and the value; else None."""
    at = re.fullmatch(r".* - at `([^`]*)`", message)
    if at is None:
        return None
    path = at.group(1)
    pattern = _string_fields().get(re.sub(r"\[[0-9]+\]", "[]", path))
    if pattern is None:
        return None
    value: Any = raw
    for name, index in re.findall(r"([^.\[\]]+)|\[([0-9]+)\]", path):
        value = value[int(index)] if index else value[name]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    quote = f': quote it, "{value}"' if number and pattern == _RATIO_PATTERN else ""
    return f"`{path}` must be {_EXPECTED[pattern]}, got {value!r}{quote}"


@functools.cache
def _string_fields() -> dict[str, str]:
    """The pattern of each duration and ratio field, by dotted path (``[]`` for a list's items)."""
    found: dict[str, str] = {}

    def walk(info: msgspec.inspect.Type, path: str) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            for field in info.fields:
                walk(field.type, f"{path}.{field.name}" if path else field.name)
        elif isinstance(info, msgspec.inspect.ListType):
            walk(info.item_type, f"{path}[]")
        elif isinstance(info, msgspec.inspect.UnionType):
            for member in info.types:
                walk(member, path)
        elif isinstance(info, msgspec.inspect.StrType) and info.pattern in _EXPECTED:
            found[path] = info.pattern

    walk(msgspec.inspect.type_info(PolicyFile), "")
    return found


def load_policy(path: Path | None = None) -> Policy:
    """Load a policy file, or the packaged default policy when ``path`` is None."""
    if path is None:
        text = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
        return parse_policy(text)
    try:
        # utf-8-sig: editors on Windows save UTF-8 with a byte order mark, which TOML refuses.
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"cannot read policy file {path}: {error}") from error
    return parse_policy(text)


def policy_fingerprint(source: PolicyFile) -> str:
    """The first 12 hex digits of the SHA-256 of the effective policy, ``version`` left out.

    ``version`` is the only identity decisions carry (their ``event_id`` hashes it), and an
    edit that forgets to bump it changes decisions under the same name. The fingerprint
    covers every other field after defaults, in canonical JSON (sorted keys), so comments,
    layout, key order and writing out a default change nothing, and any other edit shows.
    """
    tables = msgspec.to_builtins(source)
    del tables["version"]
    return hashlib.sha256(msgspec.json.encode(tables, order="sorted")).hexdigest()[:12]


def _longest_number(text: str) -> str:
    """Name the field on the line holding the longest run of digits: `section.key` (line n)."""
    section, found, longest = "", "a number", 0
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*([^\[\]]+?)\s*\]", line)
        if header is not None:
            section = header.group(1).replace(" ", "") + "."
            continue
        run = max((len(digits) for digits in re.findall(r"[0-9_]+", line)), default=0)
        if run > longest:
            key = line.split("=", 1)[0].strip() if "=" in line else ""
            path = f"{section}{key}" if key else section.rstrip(".") or "a value"
            found, longest = f"`{path}` (line {number})", run
    return found


def _dotted(message: str) -> str:
    """Turn msgspec's ``$.rules.x`` paths into the dotted names of the TOML file."""
    return re.sub(r"`\$\.([^`]*)`", r"`\1`", message).replace("`$`", "the top level")


def _duration(
    value: str, field: str, *, positive: bool = True, at_least: str = "", at_most: str = "400d"
) -> int:
    """``value`` in microseconds, within ``at_least`` (or above 0 if ``positive``)-``at_most``."""
    micros = parse_duration(value)
    if micros is None or (positive and micros == 0):
        raise PolicyError(f"invalid policy: `{field}` must be a positive duration, got {value!r}")
    low = parse_duration(at_least) if at_least else None
    if low is not None and micros < low:
        raise PolicyError(f"invalid policy: `{field}` must be at least {at_least}, got {value!r}")
    high = parse_duration(at_most)
    if high is not None and micros > high:
        raise PolicyError(f"invalid policy: `{field}` must be at most {at_most}, got {value!r}")
    return micros


def _bounded_ratio(value: str, field: str, *, maximum: int = MAX_RATIO, why: str = "") -> Fraction:
    ratio = Fraction(value)
    if ratio > maximum:
        raise PolicyError(
            f"invalid policy: `{field}` must be at most {maximum}, got {value!r}{why}"
        )
    return ratio


def _bound(value: str | int, field: str) -> Fraction:
    """A bin's ``up_to``: a ratio's is bounded like any ratio."""
    return _bounded_ratio(value, field) if isinstance(value, str) else Fraction(value)


def _resolve(source: PolicyFile) -> Policy:
    if _VERSION.fullmatch(source.version) is None:
        raise PolicyError(
            "invalid policy: `version` must be 1-64 characters of letters, digits and ._:+-,"
            f" got {source.version!r}"
        )
    rules = source.rules
    for name, freeze, restore in (
        ("overdue_repeated", rules.overdue_repeated.freeze_min_episodes,
         rules.overdue_repeated.restore_max_episodes),
        ("loan_velocity", rules.loan_velocity.freeze_min_applications,
         rules.loan_velocity.restore_max_applications),
        ("small_loan_burst", rules.small_loan_burst.freeze_min_applications,
         rules.small_loan_burst.restore_max_applications),
    ):  # fmt: skip
        restore_field = (
            "restore_max_episodes" if name == "overdue_repeated" else ("restore_max_applications")
        )
        if restore >= freeze:
            raise PolicyError(
                f"invalid policy: `rules.{name}.{restore_field}` ({restore}) must be below the"
                f" freeze threshold ({freeze}), or a line would be frozen and restored at once"
            )
    cap_checks = (
        ("overdue_repeated.freeze_min_episodes", rules.overdue_repeated.freeze_min_episodes,
         EPISODES_CAP),
        ("loan_velocity.freeze_min_applications", rules.loan_velocity.freeze_min_applications,
         EXACT_TIMESTAMPS_CAP),
        ("small_loan_burst.freeze_min_applications",
         rules.small_loan_burst.freeze_min_applications, EXACT_TIMESTAMPS_CAP),
    )  # fmt: skip
    for field, value, cap in cap_checks:
        if value > cap:
            raise PolicyError(
                f"invalid policy: `rules.{field}` ({value}) is above {cap}, the number of"
                " exact entries kept per user, so it could not be decided exactly"
            )
    freeze_ratio = _bounded_ratio(
        rules.spend_income.freeze_above_ratio, "rules.spend_income.freeze_above_ratio"
    )
    restore_ratio = _bounded_ratio(
        rules.spend_income.restore_max_ratio, "rules.spend_income.restore_max_ratio"
    )
    if restore_ratio >= freeze_ratio:
        raise PolicyError(
            "invalid policy: `rules.spend_income.restore_max_ratio` must be below"
            " `rules.spend_income.freeze_above_ratio`: the restore bound differs from the"
            " freeze bound (hysteresis), or a line would flap on the bar"
        )
    reduce_ratio, reduce_restore_ratio = _check_graduated(source, freeze_ratio)
    cure_factor = _bounded_ratio(
        source.income_verification.cure_remaining_factor,
        "income_verification.cure_remaining_factor",
        maximum=1,
        why=": a verification may shorten a cure period, never lengthen it",
    )
    loan_window = _duration(rules.loan_velocity.window, "rules.loan_velocity.window")
    loan_long_window = _duration(rules.loan_velocity.long_window, "rules.loan_velocity.long_window")
    small_window = _duration(rules.small_loan_burst.window, "rules.small_loan_burst.window")
    if small_window > loan_long_window or loan_window > loan_long_window:
        raise PolicyError(
            "invalid policy: `rules.loan_velocity.long_window` must be at least as long as"
            " `rules.loan_velocity.window` and `rules.small_loan_burst.window`"
        )
    time = source.time
    # As for max_future_skew: producers' clocks and batching put records seconds out of
    # order, and below a minute such a repayment would be dead-lettered as too_late.
    allowed_lateness = _duration(
        time.allowed_lateness, "time.allowed_lateness", positive=False, at_least="1m"
    )
    dedup_horizon = _duration(time.dedup_horizon, "time.dedup_horizon")
    if dedup_horizon < max(30 * DAY, allowed_lateness):
        raise PolicyError(
            "invalid policy: `time.dedup_horizon` must be at least 30d and at least"
            " `time.allowed_lateness`, so that a late duplicate is still recognised"
        )
    episode_window = _duration(source.overdue.episode_window, "overdue.episode_window")
    # Day counts and DPD bars beyond MAX_WINDOW only hide a typo (an extra zero).
    dpd_bins = source.score.points.max_dpd_180d.bins
    for field, days in (
        ("overdue.grace_days", source.overdue.grace_days),
        ("overdue.cure_days", source.overdue.cure_days),
        ("overdue.minor_max_dpd", source.overdue.minor_max_dpd),
        ("probation.after_dpd_above", source.probation.after_dpd_above),
        *(
            (f"score.points.max_dpd_180d.bins[{index}].up_to", dpd_bin.up_to or 0)
            for index, dpd_bin in enumerate(dpd_bins)
        ),
    ):
        if days * DAY > MAX_WINDOW:
            raise PolicyError(f"invalid policy: `{field}` must be at most 400, got {days}")
    overdue = source.overdue
    if 0 < overdue.minor_max_dpd < overdue.grace_days:
        # An episode starts at due + grace, so its largest DPD is at least grace_days: such a
        # bar forgives nothing while it reads as if it did. 0 says so plainly, and is kept
        # for a policy that forgives no slip (with no grace, one repaid on its due day).
        raise PolicyError(
            f"invalid policy: `overdue.minor_max_dpd` ({overdue.minor_max_dpd}) must be at least"
            f" `overdue.grace_days` ({overdue.grace_days}): an episode starts"
            f" {overdue.grace_days} days past due, so no slip could be minor and every one"
            " would need `overdue.cure_days`; set it to 0 if that is what you mean"
        )
    channel = source.score.own_channel
    if channel != channel.strip():
        raise PolicyError(
            f"invalid policy: `score.own_channel` must not begin or end with white space, got"
            f" {channel!r}: channels are compared exactly, so the line's own applications"
            " would all count as other lenders'"
        )
    score_bins = _score_bins(source.score.points)
    reachable = score_range(source.score, score_bins)
    _check_odds(source.score, reachable)
    _check_score_low(rules.score_low, reachable)
    return Policy(
        source=source,
        version=source.version,
        fingerprint=policy_fingerprint(source),
        grace=source.overdue.grace_days * DAY,
        minor_max_dpd=source.overdue.minor_max_dpd,
        cure=source.overdue.cure_days * DAY,
        episode_window=episode_window,
        loan_window=loan_window,
        loan_long_window=loan_long_window,
        small_window=small_window,
        spend_window=_duration(rules.spend_income.window, "rules.spend_income.window"),
        freeze_above_ratio=freeze_ratio,
        restore_max_ratio=restore_ratio,
        reduce_above_ratio=reduce_ratio,
        reduce_restore_max_ratio=reduce_restore_ratio,
        cure_remaining_factor=cure_factor,
        restore_window=_duration(source.restore.window, "restore.window"),
        other_lender_window=_duration(
            source.score.other_lender_window, "score.other_lender_window"
        ),
        score_bins=score_bins,
        allowed_lateness=allowed_lateness,
        # A quiet user's timers fire watermark_delay after the partition's newest event: a
        # day's delay already holds every such freeze and restore a day late.
        watermark_delay=_duration(
            time.watermark_delay, "time.watermark_delay", positive=False, at_most="1d"
        ),
        dedup_horizon=dedup_horizon,
        # Producers' clocks and batching differ by seconds, so below a minute healthy records
        # would be dead-lettered as in_future; above a week, a producer with a bad clock could
        # move watermarks, and fire overdue and cure timers, a week early (README, Time).
        max_future_skew=_duration(
            time.max_future_skew, "time.max_future_skew", at_least="1m", at_most="7d"
        ),
        max_record_bytes=source.input.max_record_bytes,
    )


def _check_graduated(source: PolicyFile, freeze_ratio: Fraction) -> tuple[Fraction, Fraction]:
    """Reduce rules sit below the freeze bar, each with its own hysteresis."""
    rules = source.rules
    reduce = rules.reduce_overdue_repeated
    if reduce.restore_max_episodes >= reduce.reduce_min_episodes:
        raise PolicyError(
            "invalid policy: `rules.reduce_overdue_repeated.restore_max_episodes` must be below"
            " `reduce_min_episodes`, or a limit would be reduced and restored at once"
        )
    if reduce.reduce_min_episodes >= rules.overdue_repeated.freeze_min_episodes:
        raise PolicyError(
            "invalid policy: `rules.reduce_overdue_repeated.reduce_min_episodes` must be below"
            " `rules.overdue_repeated.freeze_min_episodes`: a reduction comes before a freeze"
        )
    spend = rules.reduce_spend_income
    reduce_ratio = _bounded_ratio(
        spend.reduce_above_ratio, "rules.reduce_spend_income.reduce_above_ratio"
    )
    reduce_restore_ratio = _bounded_ratio(
        spend.restore_max_ratio, "rules.reduce_spend_income.restore_max_ratio"
    )
    if reduce_restore_ratio >= reduce_ratio:
        raise PolicyError(
            "invalid policy: `rules.reduce_spend_income.restore_max_ratio` must be below"
            " `reduce_above_ratio`: the restore bound differs from the reduce bound"
            " (hysteresis), or a limit would flap on the bar"
        )
    if reduce_ratio >= freeze_ratio:
        raise PolicyError(
            "invalid policy: `rules.reduce_spend_income.reduce_above_ratio` must be below"
            " `rules.spend_income.freeze_above_ratio`: a reduction comes before a freeze"
        )
    return reduce_ratio, reduce_restore_ratio


def _score_bins(points: ScorePoints) -> dict[str, tuple[tuple[Fraction | None, int], ...]]:
    """Check each characteristic's bins (ordered, bounded but the last, monotone) and resolve."""
    resolved: dict[str, tuple[tuple[Fraction | None, int], ...]] = {}
    for name, direction in SCORE_DIRECTIONS.items():
        attribute: CountAttribute | RatioAttribute = getattr(points, name)
        field = f"score.points.{name}.bins"
        entries: list[CountBin | RatioBin] = list(attribute.bins)
        bins = [
            (None if b.up_to is None else _bound(b.up_to, f"{field}[{index}].up_to"), b.points)
            for index, b in enumerate(entries)
        ]
        if not bins or bins[-1][0] is not None:
            raise PolicyError(f"invalid policy: `{field}` must end with a bin without `up_to`")
        bounds = [bound for bound, _ in bins[:-1]]
        if (
            any(
                low is None or high is None or low >= high
                for low, high in itertools.pairwise(bounds)
            )
            or None in bounds
        ):
            raise PolicyError(
                f"invalid policy: `{field}` must have strictly increasing `up_to` bounds,"
                " and only the last bin may leave it out"
            )
        scores = [score for _, score in bins]
        if scores != sorted(scores, reverse=direction < 0):
            trend = "rise" if direction > 0 else "fall"
            raise PolicyError(
                f"invalid policy: `{field}` points must {trend} from bin to bin: {scores}"
            )
        resolved[name] = tuple(bins)
    if points.late_share.missing > points.late_share.bins[0].points:
        raise PolicyError(
            "invalid policy: `score.points.late_share.missing` must not exceed the first bin's"
            " points, or a first instalment paid on time would lower the score"
        )
    return resolved


def score_range(
    score: ScorePolicy, bins: dict[str, tuple[tuple[Fraction | None, int], ...]]
) -> tuple[int, int]:
    """The lowest and highest score the points table allows (``missing`` counted too)."""
    low = high = score.base_points
    for name, attribute_bins in bins.items():
        points = [p for _, p in attribute_bins]
        attribute = getattr(score.points, name)
        if isinstance(attribute, RatioAttribute):
            points.append(attribute.missing)
        low += min(points)
        high += max(points)
    return low, high


def _check_odds(score: ScorePolicy, reachable: tuple[int, int]) -> None:
    """Every reachable score must stand for finite odds: see :data:`MAX_ODDS_DOUBLINGS`."""
    low, high = reachable
    farthest = max(high - score.base_points, score.base_points - low)
    if farthest > MAX_ODDS_DOUBLINGS * score.points_to_double_odds:
        needed = -(-farthest // MAX_ODDS_DOUBLINGS)
        raise PolicyError(
            f"invalid policy: `score.points_to_double_odds` ({score.points_to_double_odds}) must"
            f" be at least {needed}: scores reach {low}-{high}, more than"
            f" {MAX_ODDS_DOUBLINGS} doublings of the odds from `score.base_points`"
            f" ({score.base_points})"
        )


def _check_score_low(rule: ScoreLowRule, reachable: tuple[int, int]) -> None:
    """The score rule's bars must lie within the scores the points table can give.

    Checked whether or not the rule is enabled, like every other relation: turning it on
    must not be the first time its threshold meets the scorecard, at a worker's start-up.
    """
    low, high = reachable
    if rule.freeze_below <= low:
        raise PolicyError(
            f"invalid policy: `rules.score_low.freeze_below` ({rule.freeze_below}) must be above"
            f" {low}, the lowest score the points table gives, or the rule could never freeze"
        )
    if rule.freeze_below + rule.restore_margin > high:
        raise PolicyError(
            f"invalid policy: `rules.score_low.freeze_below` + `rules.score_low.restore_margin`"
            f" ({rule.freeze_below} + {rule.restore_margin}) must be at most {high}, the highest"
            " score the points table gives, or a frozen line could never be restored"
        )
