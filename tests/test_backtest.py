"""risk.backtest: two policies over the same records, on inputs whose difference is known."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk.backtest import BacktestResult, CountDiff, _changes, backtest, render_text
from risk.clock import HOUR, format_timestamp
from risk.policy import Policy, load_policy
from risk.replay import InputRecord, parse_records

from builders import NOW, application, policy_with, purchase, repayment, run, ts

BASELINE = load_policy()
# A 7-day grace needs minor_max_dpd of at least 7 (an episode starts 7 days past due).
GRACE_7D = {"grace_days": 7, "minor_max_dpd": 7}
OVERDUE_AT = "timer:overdue:2026-03-04T00:00:00Z"
# One instalment of 35000 due 2026-03-01, repaid 5 days late: past the default 3-day
# grace (frozen at 03-04, DPD 5 so a 30-day cure) but within a 7-day one.
REPAID_LATE = [
    purchase("2026-02-01T00:00:00Z", 35000, order="o-1", first_due="2026-03-01T00:00:00Z"),
    repayment("2026-03-06T00:00:00Z", 35000, event_id="r-1"),
]


# Three small applications in an hour: a SMALL_LOAN_BURST freeze under the packaged policy.
BURST = [
    application(f"2026-02-02T09:0{i}:00Z", 50000, user="u-2", event_id=f"a-{i}") for i in range(3)
]


def variant(version: str, changes: dict[str, dict[str, Any]]) -> Policy:
    """The default policy with another version and some tables' fields changed."""
    return policy_with(changes, version=version)


def records(lines: list[dict[str, Any]]) -> list[InputRecord]:
    return list(parse_records([orjson.dumps(line) for line in lines]))


def compare(
    lines: list[dict[str, Any]],
    candidate: Policy,
    baseline: Policy = BASELINE,
    *,
    until: str | None = None,
    partitions: int = 1,
) -> BacktestResult:
    return backtest(
        records(lines), baseline, candidate, partitions=partitions,
        until=None if until is None else ts(until), now=ts(NOW),
    )  # fmt: skip


def rows(result: BacktestResult) -> dict[tuple[str, str | None], tuple[int, int, int]]:
    return {
        (row.type, row.reason): (row.baseline, row.candidate, row.difference)
        for row in (*result.decisions, *result.reasons)
    }


def test_a_longer_grace_avoids_the_freeze_and_the_restore_the_baseline_makes() -> None:
    result = compare(
        REPAID_LATE,
        variant("grace-7d", {"overdue": GRACE_7D}),
        until="2026-06-01T00:00:00Z",
    )
    assert rows(result) == {
        ("limit.freeze", None): (1, 0, -1),
        ("limit.reduce", None): (0, 0, 0),
        ("limit.restore", None): (1, 0, -1),
        ("limit.freeze", "OVERDUE_ACTIVE"): (1, 0, -1),
        ("limit.restore", "REPAID_AND_CURED"): (1, 0, -1),
    }
    assert [(c.kind, c.user_id, c.caused_by) for c in result.changes] == [
        ("baseline_only", "u-1", OVERDUE_AT),
        ("baseline_only", "u-1", "timer:cure:2026-04-05T00:00:00Z"),
    ]
    first = result.changes[0]
    assert first.baseline is not None
    assert first.candidate is None
    assert first.baseline.policy_version == BASELINE.version
    assert result.records_agree
    assert not result.identical
    assert (result.baseline_version, result.candidate_version) == (BASELINE.version, "grace-7d")


def test_frozen_at_end_counts_the_users_left_frozen_under_only_one_policy() -> None:
    # No --until: the cure never ends, so the baseline leaves u-1 frozen; the candidate never froze.
    result = compare(REPAID_LATE, variant("grace-7d", {"overdue": GRACE_7D}))
    assert result.frozen_at_end.baseline == ("u-1",)
    assert result.frozen_at_end.candidate == ()
    assert result.frozen_at_end.only_baseline == ("u-1",)
    assert result.frozen_at_end.only_candidate == ()
    assert result.document()["frozen_at_end"] == {
        "baseline": 1, "candidate": 0, "only_baseline": ["u-1"], "only_candidate": [],
    }  # fmt: skip


def test_the_same_cause_decided_differently_is_one_change_with_both_sides() -> None:
    # With a velocity bar of 3 the candidate gives LOAN_VELOCITY for the same application too.
    candidate = variant("velocity-3", {"rules.loan_velocity": {"freeze_min_applications": 3}})
    result = compare(BURST, candidate)
    assert [(c.kind, c.caused_by) for c in result.changes] == [("changed", "a-2")]
    change = result.changes[0]
    assert change.baseline is not None
    assert change.candidate is not None
    assert [r.code for r in change.baseline.reasons] == ["SMALL_LOAN_BURST"]
    assert [r.code for r in change.candidate.reasons] == ["LOAN_VELOCITY", "SMALL_LOAN_BURST"]
    assert change.baseline.event_id != change.candidate.event_id  # the version is hashed in
    assert rows(result)[("limit.freeze", None)] == (1, 1, 0)
    assert rows(result)[("limit.freeze", "LOAN_VELOCITY")] == (0, 1, 1)
    assert result.frozen_at_end.only_baseline == result.frozen_at_end.only_candidate == ()


def test_a_freeze_moved_to_another_cause_shows_on_both_sides() -> None:
    candidate = variant("burst-2", {"rules.small_loan_burst": {"freeze_min_applications": 2}})
    result = compare(BURST, candidate)
    assert [(c.kind, c.caused_by) for c in result.changes] == [
        ("candidate_only", "a-1"),
        ("baseline_only", "a-2"),
    ]
    assert rows(result)[("limit.freeze", "SMALL_LOAN_BURST")] == (1, 1, 0)


def test_records_dead_lettered_under_only_one_policy_are_reported() -> None:
    # One topic keeps file order, so the second repayment comes 2 days behind the user's
    # clock: late, within the default 7 days of lateness but beyond the candidate's 1.
    lines = [
        repayment("2026-02-10T00:00:00Z", 1000, event_id="r-1"),
        repayment("2026-02-08T00:00:00Z", 500, event_id="r-late"),
    ]
    result = compare(lines, variant("lateness-1d", {"time": {"allowed_lateness": "1d"}}))
    assert not result.records_agree
    assert result.baseline_records.dead_lettered == 0
    assert result.candidate_records.dead_lettered == 1
    assert result.candidate_records.dead_letters_by_reason == {"too_late": 1}
    assert result.baseline_records.balanced
    assert result.candidate_records.balanced
    assert [
        (d.line, d.topic, d.baseline_reason, d.candidate_reason) for d in result.dead_letter_changes
    ] == [(2, "credit.repayments.v1", None, "too_late")]
    assert "RECORD COUNTS DIFFER" in render_text(result)
    assert "line 2 (credit.repayments.v1): baseline accepted, candidate too_late" in render_text(
        result
    )


def test_the_readme_shows_the_real_output_of_its_example() -> None:
    root = Path(__file__).resolve().parent.parent
    lines = (root / "examples" / "overdue.jsonl").read_bytes().splitlines()
    result = backtest(
        parse_records(lines), BASELINE, load_policy(root / "examples" / "grace-7d.toml"),
        until=ts("2026-06-01T00:00:00Z"), now=ts(NOW),
    )  # fmt: skip
    command = (
        "$ lineguard backtest examples/overdue.jsonl --candidate examples/grace-7d.toml"
        " --until 2026-06-01T00:00:00Z\n"
    )
    assert command + render_text(result) + "```" in (root / "README.md").read_text("utf-8")


def test_identical_policies_give_an_all_zero_diff() -> None:
    result = compare(REPAID_LATE, BASELINE, until="2026-06-01T00:00:00Z")
    assert result.identical
    assert result.changes == ()
    assert all(row.difference == 0 for row in (*result.decisions, *result.reasons))
    assert rows(result)[("limit.freeze", "OVERDUE_ACTIVE")] == (1, 1, 0)


def test_the_document_is_json_and_the_text_lists_the_first_changes() -> None:
    result = compare(
        REPAID_LATE,
        variant("grace-7d", {"overdue": GRACE_7D}),
        until="2026-06-01T00:00:00Z",
    )
    doc = orjson.loads(orjson.dumps(result.document()))
    assert doc["candidate"]["policy_version"] == "grace-7d"
    assert doc["identical"] is False
    assert doc["changes"][0]["kind"] == "baseline_only"
    assert doc["changes"][0]["candidate"] is None
    assert doc["changes"][0]["baseline"]["caused_by"] == OVERDUE_AT
    assert "decided_at" not in doc["changes"][0]["baseline"]
    assert {"type": "limit.freeze", "reason": "OVERDUE_ACTIVE", "baseline": 1, "candidate": 0,
            "difference": -1} in doc["reasons"]  # fmt: skip
    text = render_text(result, show=1)
    assert "differing decisions: 2, first 1 shown" in text
    assert f"u-1  {OVERDUE_AT}: limit.freeze frozen [OVERDUE_ACTIVE] -> none" in text
    assert "timer:cure" not in text


def test_a_candidate_that_changes_only_features_is_not_identical() -> None:
    # 620 base points instead of 600: every decision's score rises by 20, none changes.
    result = compare(BURST, variant("score-620", {"score": {"base_points": 620}}))
    assert result.changes == ()
    assert all(row.difference == 0 for row in (*result.decisions, *result.reasons))
    assert not result.identical
    assert [(c.user_id, c.caused_by, c.features) for c in result.feature_changes] == [
        ("u-2", "a-2", {"score": (600, 620)}),
    ]
    assert result.features_changed == {"score": 1}
    doc = orjson.loads(orjson.dumps(result.document()))
    assert doc["identical"] is False
    assert doc["features_changed"] == {"score": 1}
    assert doc["feature_changes"] == [
        {"user_id": "u-2", "caused_by": "a-2", "occurred_at": "2026-02-02T09:02:00Z",
         "features": {"score": {"baseline": 600, "candidate": 620}}},
    ]  # fmt: skip
    text = render_text(result).splitlines()
    assert "same decisions with other features, reason values or restore path: 1" in text
    assert "  by feature: score 1" in text
    assert "  2026-02-02T09:02:00Z  u-2  a-2: score 600 -> 620" in text


def test_users_ending_reduced_or_on_probation_are_counted_like_frozen_ones() -> None:
    # Repaid 7 days past due: a severe freeze (past 5 DPD) for the candidate, whose restore
    # after the cure goes to probation; the baseline's bar is 30 DPD.
    lines = [REPAID_LATE[0], repayment("2026-03-08T00:00:00Z", 35000, event_id="r-1")]
    result = compare(
        lines, variant("probation-5", {"probation": {"after_dpd_above": 5}}),
        until="2026-06-01T00:00:00Z",
    )  # fmt: skip
    assert result.probation_at_end.baseline == ()
    assert result.probation_at_end.only_candidate == ("u-1",)
    assert result.reduced_at_end.baseline == result.reduced_at_end.candidate == ()
    assert result.document()["probation_at_end"] == {
        "baseline": 0, "candidate": 1, "only_baseline": [], "only_candidate": ["u-1"],
    }  # fmt: skip
    text = render_text(result).splitlines()
    assert "on probation at end: baseline 0, candidate 1; only baseline 0, only candidate 1" in text
    assert "reduced at end: baseline 0, candidate 0; only baseline 0, only candidate 0" in text


# Property tests: random small books for three users, against a handful of candidate policies.
_USERS = st.sampled_from(["u-1", "u-2", "u-3"])
# Half the times fall in two days, so that bursts of applications happen too.
_HOURS = st.one_of(
    st.integers(min_value=0, max_value=48), st.integers(min_value=0, max_value=24 * 90)
)
_CANDIDATES = [
    variant("grace-1d", {"overdue": {"grace_days": 1}}),
    variant("grace-7d", {"overdue": GRACE_7D, "time": {"allowed_lateness": "2d"}}),
    variant("burst-2", {"rules.small_loan_burst": {"freeze_min_applications": 2}}),
    variant("cure-10d", {"overdue": {"cure_days": 10}}),
]


def _at(hours: int) -> str:
    return format_timestamp(ts("2026-02-01T00:00:00Z") + hours * HOUR)


@st.composite
def books(draw: st.DrawFn) -> list[dict[str, Any]]:
    lines = []
    for n in range(draw(st.integers(min_value=0, max_value=14))):
        user, at = draw(_USERS), _at(draw(_HOURS))
        kind = draw(st.sampled_from(["purchase", "repayment", "application"]))
        if kind == "purchase":
            due = _at(draw(_HOURS) + 24 * 20)
            amount = draw(st.integers(min_value=1, max_value=90000))
            lines.append(purchase(at, amount, user=user, first_due=due, event_id=f"e-{n}"))
        elif kind == "repayment":
            amount = draw(st.integers(min_value=1, max_value=300000))
            lines.append(repayment(at, amount, user=user, event_id=f"e-{n}"))
        else:
            amount = draw(st.integers(min_value=1000, max_value=300000))
            lines.append(application(at, amount, user=user, event_id=f"e-{n}"))
    return lines


_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(books(), st.sampled_from(_CANDIDATES), st.sampled_from([1, 3]))
def test_counts_per_type_and_reason_are_what_replay_gives_each_policy(
    lines: list[dict[str, Any]], candidate: Policy, partitions: int
) -> None:
    until = "2026-08-01T00:00:00Z"
    result = compare(lines, candidate, until=until, partitions=partitions)
    for side, policy in (("baseline", BASELINE), ("candidate", candidate)):
        replayed = run(lines, until=until, partitions=partitions, policy=policy)
        types = Counter(d.type for d in replayed.decisions)
        reasons = Counter((d.type, r.code) for d in replayed.decisions for r in d.reasons)
        assert {row.type: getattr(row, side) for row in result.decisions} == {
            kind: types[kind] for kind in ("limit.freeze", "limit.reduce", "limit.restore")
        }
        assert {
            (row.type, row.reason): getattr(row, side)
            for row in result.reasons
            if getattr(row, side)
        } == dict(reasons)
        counts = getattr(result, f"{side}_records")
        assert (counts.records, counts.processed, counts.duplicates, counts.dead_lettered) == (
            replayed.records, replayed.processed, replayed.duplicates, replayed.dead_lettered,
        )  # fmt: skip
        last = {d.user_id: d.status for d in replayed.decisions}
        assert set(getattr(result.frozen_at_end, side)) == {
            user for user, status in last.items() if status == "frozen"
        }


@_settings
@given(books(), st.sampled_from(_CANDIDATES))
def test_a_policy_against_itself_is_identical_and_swapping_negates(
    lines: list[dict[str, Any]], candidate: Policy
) -> None:
    assert compare(lines, candidate, candidate).identical
    assert compare(lines, BASELINE, BASELINE).identical
    forward, backward = compare(lines, candidate), compare(lines, BASELINE, candidate)

    def flipped(row: CountDiff) -> CountDiff:
        return CountDiff(row.type, row.reason, row.candidate, row.baseline)

    assert backward.decisions == tuple(map(flipped, forward.decisions))
    assert backward.reasons == tuple(map(flipped, forward.reasons))
    swap = {"baseline_only": "candidate_only", "candidate_only": "baseline_only"}
    assert sorted(
        (c.user_id, c.caused_by, swap.get(c.kind, c.kind)) for c in forward.changes
    ) == sorted((c.user_id, c.caused_by, c.kind) for c in backward.changes)
    assert forward.frozen_at_end.only_baseline == backward.frozen_at_end.only_candidate
    assert [(c.user_id, c.caused_by, {k: v[::-1] for k, v in c.features.items()})
            for c in forward.feature_changes] == [
        (c.user_id, c.caused_by, c.features) for c in backward.feature_changes
    ]  # fmt: skip
    # The changes account for every difference in the counts and in who ends in what status.
    assert forward.identical == (
        not forward.changes and not forward.feature_changes and forward.records_agree
    )


def test_a_candidate_that_changes_only_what_a_restore_waits_for_is_not_identical() -> None:
    # A burst's restore bound at 0 instead of 1: the same freeze, another restore path.
    candidate = variant(
        "burst-restore-0", {"rules": {"small_loan_burst": {"restore_max_applications": 0}}}
    )
    result = compare(BURST, candidate)
    assert result.changes == ()
    assert not result.identical
    [change] = result.feature_changes
    assert (change.user_id, change.caused_by, list(change.features)) == (
        "u-2",
        "a-2",
        ["restore_path"],
    )
    old, new = change.features["restore_path"]
    assert "from 3 to 1" in old and "from 3 to 0" in new
    assert result.features_changed == {"restore_path": 1}


def test_a_threshold_moved_under_an_alike_decision_is_listed() -> None:
    [freeze] = run(BURST, policy=BASELINE).decisions
    moved = msgspec.structs.replace(
        freeze,
        reasons=tuple(msgspec.structs.replace(r, threshold=4, value=5) for r in freeze.reasons),
    )
    [[code]] = [[r.code for r in freeze.reasons]]
    changes, alike = _changes([freeze], [moved])
    assert changes == ()
    assert [c.features for c in alike] == [{f"{code}.value": (3, 5), f"{code}.threshold": (3, 4)}]
