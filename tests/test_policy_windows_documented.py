"""Features named after a default window measure the policy's window, and the docs say so."""

from __future__ import annotations

import json
from pathlib import Path

from builders import application, run, summary

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = {
    "overdue_episodes_180d": "overdue.episode_window",
    "loan_applications_7d": "rules.loan_velocity.window",
    "loan_applications_30d": "rules.loan_velocity.long_window",
    "small_loan_applications_24h": "rules.small_loan_burst.window",
    "spend_30d": "rules.spend_income.window",
}


def test_the_limit_event_schema_names_the_policy_window_of_each_feature() -> None:
    schema = json.loads((ROOT / "schemas" / "limit-event.v1.schema.json").read_text("utf-8"))
    features = schema["properties"]["features"]["properties"]
    for feature, window in WINDOWS.items():
        assert window in features[feature]["description"], feature


def test_the_readme_says_the_names_keep_their_default_windows() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## The policy file", 1)[1].split("\n## ", 1)[0]
    for feature, window in WINDOWS.items():
        assert f"`{feature}`" in section, feature
        assert f"`{window.rsplit('.', 1)[-1]}`" in section or f"`{window}`" in section, window
    assert "Lengthening a window on a live worker takes effect gradually" in section
    assert "strictly looser" not in readme


def test_a_burst_is_restored_once_the_velocity_bound_holds_too_as_the_readme_says() -> None:
    # Three small applications within an hour: SMALL_LOAN_BURST. After 24 hours the burst
    # bound (at most 1) holds, but the 3 applications stay in LOAN_VELOCITY's 7 days, above
    # its restore bound of 2, until the first leaves them.
    lines = [
        application(f"2026-03-01T10:{minute}:00Z", 50000, user="u-4", event_id=f"a-{minute}")
        for minute in ("00", "30", "59")
    ]
    assert summary(run(lines, until="2026-06-01T00:00:00Z")) == [
        ("limit.freeze", "2026-03-01T10:59:00Z", "a-59", ["SMALL_LOAN_BURST"]),
        ("limit.restore", "2026-03-08T10:00:00Z", "timer:window:2026-03-08T10:00:00Z",
         ["SMALL_LOAN_BURST_CLEARED"]),
    ]  # fmt: skip
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "a burst of 3 is restored 7 days after its first application, not 24 hours" in readme
