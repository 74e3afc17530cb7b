"""Graduated limits keep the freezes and restores that lineguard made before them.

``golden/decisions-before-graduated-limits.jsonl.gz`` was written by the code before
limit reductions, probation, anti-flapping, the score and income verification
existed. Every freeze, and every restore out of a freeze, must come out again field
for field. Only anti-flapping withholds some: with it relaxed, nothing changes.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from history import synthetic_history
from jsonschema import Draft202012Validator
from test_worker import graduated_scenarios, rule_scenarios, watermark_tail

from risk.clock import DAY, parse_timestamp
from risk.policy import Policy, load_policy

from builders import decisions, policy_with, run

GOLDEN = Path(__file__).parent / "golden" / "decisions-before-graduated-limits.jsonl.gz"


def _numbered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event ids as the golden run gave them: ``e-1``, ``e-2``, ... in list order."""
    for number, line in enumerate(lines, start=1):
        line["value"]["event_id"] = f"e-{number}"
    return lines


CASES = {
    "rule_scenarios": lambda: _numbered(rule_scenarios() + watermark_tail("2026-09-01T00:00:00Z")),
    "synthetic_seed_7": lambda: synthetic_history(400, 8000, seed=7),
    "synthetic_seed_8": lambda: synthetic_history(150, 6000, seed=8),
}
COMPARED = ("type", "occurred_at", "caused_by", "reasons")
REVIEW = "MANUAL_REVIEW_REQUIRED"
Golden = dict[str, dict[str, list[dict[str, Any]]]]


@pytest.fixture(scope="module")
def golden() -> Golden:
    by_case: Golden = defaultdict(lambda: defaultdict(list))
    for line in gzip.decompress(GOLDEN.read_bytes()).splitlines():
        doc = orjson.loads(line)
        by_case[doc["case"]][doc["user_id"]].append(doc)
    return by_case


def out_of_freeze(case: str, policy: Policy) -> dict[str, list[dict[str, Any]]]:
    """Each user's freezes, and the restores that directly follow a freeze."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    last_type: dict[str, str] = {}
    for doc in decisions(run(CASES[case](), until="2027-06-01T00:00:00Z", partitions=3,
                             policy=policy)):  # fmt: skip
        user = doc["user_id"]
        if doc["type"] == "limit.freeze" or last_type.get(user) == "limit.freeze":
            by_user[user].append(doc)
        last_type[user] = doc["type"]
    return by_user


def assert_same(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    assert [[d[f] for f in COMPARED] for d in new] == [[d[f] for f in COMPARED] for d in old]
    for before, after in zip(old, new, strict=True):
        assert after["features"].items() >= before["features"].items()
        path = [step for step in after["restore_path"] if REVIEW not in step]
        assert path == before["restore_path"]


def until_second_restore_in_a_year(old: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The decisions before the first restore anti-flapping withholds, and when it may come."""
    restores: list[int] = []
    for index, doc in enumerate(old):
        if doc["type"] == "limit.restore":
            at = parse_timestamp(doc["occurred_at"])
            assert isinstance(at, int)
            if restores and at - restores[-1] < 365 * DAY:
                return old[:index], restores[-1] + 365 * DAY
            restores.append(at)
    return old, 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_with_anti_flapping_relaxed_every_earlier_decision_comes_out_unchanged(
    golden: Golden, case: str
) -> None:
    new = out_of_freeze(case, policy_with({"restore": {"automatic_per_window": 12}}))
    assert set(new) == set(golden[case])
    for user, old in golden[case].items():
        assert_same(old, new[user])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_default_policy_changes_only_what_anti_flapping_withholds(
    golden: Golden, case: str
) -> None:
    new = out_of_freeze(case, load_policy())
    assert set(new) == set(golden[case])
    withheld = 0
    for user, old in golden[case].items():
        kept, allowed_again = until_second_restore_in_a_year(old)
        assert_same(kept, new[user][: len(kept)])
        if len(kept) == len(old):
            assert len(new[user]) == len(old)  # nothing withheld: nothing added after either
        else:
            withheld += 1
            held = new[user][len(kept) - 1]
            assert held["type"] == "limit.freeze"
            assert any(REVIEW in step for step in held["restore_path"])
            for later in new[user][len(kept) :]:
                at = parse_timestamp(later["occurred_at"])
                assert isinstance(at, int) and at >= allowed_again
    assert withheld > 0


SPEND_BAND = policy_with({"rules.reduce_spend_income": {"enabled": True}})


def test_a_consumer_of_the_first_contract_still_reads_every_freeze_and_restore() -> None:
    schema = orjson.loads((GOLDEN.parent / "limit-event.v1.before-graduated-limits.schema.json")
                          .read_bytes())  # fmt: skip
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    lines = synthetic_history(300, 6000, seed=21, graduated=True)
    docs = [json.loads(orjson.dumps(d)) for d in decisions(run(lines, partitions=3))]
    docs += [json.loads(orjson.dumps(d)) for d in decisions(
        run(graduated_scenarios(), until="2026-09-01T00:00:00Z", policy=SPEND_BAND)
    )]  # fmt: skip
    known = [d for d in docs if d["type"] in ("limit.freeze", "limit.restore")]
    for doc in known:
        doc["decided_at"] = "2026-11-28T00:00:00Z"
        errors = [error.message for error in validator.iter_errors(doc)]
        assert not errors, (doc, errors)
    assert {d["status"] for d in known} >= {"active", "probation", "reduced", "frozen"}
    assert len(known) < len(docs)  # limit.reduce is new: an old consumer skips it
