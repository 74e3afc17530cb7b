"""Every decision the core emits is valid against schemas/limit-event.v1.schema.json.

The inputs are hand-checked scenarios of graduated limits (the kind in test_graduated.py) and
seeded synthetic histories, with income verifications, operators' overrides and applications
through other lenders mixed in, under the default policy and under policies that switch the
optional rules on. Together they must reach every decision type and every status, so the
schema is checked against each of them, not only against hand-written samples.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from history import synthetic_history
from jsonschema import Draft202012Validator, validators

from risk.clock import parse_timestamp
from risk.decision import Decision
from risk.policy import Policy

from builders import (
    APPLICATIONS,
    OVERRIDES,
    VERIFICATIONS,
    application,
    override,
    policy_with,
    purchase,
    repayment,
    run,
    verification,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "limit-event.v1.schema.json").read_text(
        "utf-8"
    )
)
TYPES = {"limit.freeze", "limit.reduce", "limit.restore"}
STATUSES = {"active", "reduced", "probation", "frozen"}
DECIDED_LAG = 1_200_000  # microseconds from occurred_at to decided_at: any value will do


def _strict_integer(_checker: object, instance: object) -> bool:
    # The contract wants integer tokens: a feature written as 3.0 must fail here.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Strict = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)
VALIDATORS = [
    Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER),
    _Strict(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER),
]

# One instalment of 35000 due 2026-03-01: overdue, and frozen, at 2026-03-04T00:00Z.
BOUGHT = purchase("2026-02-01T00:00:00Z", 35000, order="o-1", first_due="2026-03-01T00:00:00Z")


def scenarios() -> Iterator[tuple[str, list[dict[str, Any]], str, Policy | None]]:
    """(name, input lines, until, policy) of hand-checked scenarios of graduated limits."""
    yield "probation after a freeze past 30 days overdue", [
        BOUGHT,
        repayment("2026-04-05T00:00:00Z", 35000),
        purchase("2026-05-10T00:00:00Z", 3000, order="o-2", installments=3,
                 first_due="2026-06-01T00:00:00Z"),
        repayment("2026-05-30T00:00:00Z", 1000, order="o-2"),
        repayment("2026-06-30T00:00:00Z", 1000, order="o-2"),
        repayment("2026-07-30T00:00:00Z", 1000, order="o-2"),
    ], "2026-09-01T00:00:00Z", None  # fmt: skip
    yield "probation completed while a reduce rule holds", [
        purchase("2026-01-01T00:00:00Z", 1000, order="a", first_due="2026-01-10T00:00:00Z"),
        repayment("2026-01-14T00:00:00Z", 1000),
        purchase("2026-02-20T00:00:00Z", 35000, order="b", first_due="2026-03-01T00:00:00Z"),
        repayment("2026-04-05T00:00:00Z", 35000),
        purchase("2026-05-06T00:00:00Z", 100, order="c1", first_due="2026-05-20T00:00:00Z"),
        purchase("2026-05-06T00:01:00Z", 100, order="c2", first_due="2026-05-21T00:00:00Z"),
        purchase("2026-05-06T00:02:00Z", 100, order="c3", first_due="2026-05-22T00:00:00Z"),
        repayment("2026-05-10T00:00:00Z", 300),
    ], "2026-09-01T00:00:00Z", policy_with({"restore": {"automatic_per_window": 2}})  # fmt: skip
    yield "anti-flapping", [
        BOUGHT,
        repayment("2026-03-05T00:00:00Z", 35000),
        purchase("2026-04-10T00:00:00Z", 20000, order="o-2", first_due="2026-05-01T00:00:00Z"),
        repayment("2026-05-05T00:00:00Z", 20000),
    ], "2027-05-01T00:00:00Z", None  # fmt: skip
    yield "income proof shortens the cure period", [
        BOUGHT,
        repayment("2026-03-11T00:00:00Z", 35000),
        verification("2026-03-21T00:00:00Z", 900_000, source="bank_statement"),
    ], "2026-06-01T00:00:00Z", None  # fmt: skip
    yield "verified income clears the spend rule", [
        application("2026-04-01T00:00:00Z", 200_000, income=100_000),
        purchase("2026-04-02T00:00:00Z", 400_000, order="s"),
        repayment("2026-04-02T01:00:00Z", 400_000, order="s"),
        verification("2026-04-05T00:00:00Z", 250_000, source="employer"),
        application("2026-04-06T00:00:00Z", 5_000, income=50_000),
    ], "2026-06-01T00:00:00Z", None  # fmt: skip
    spend_band = policy_with({"rules.reduce_spend_income": {"enabled": True}})
    yield "the spend band reduces, then freezes", [
        application("2026-04-01T00:00:00Z", 200_000, income=100_000),
        purchase("2026-04-02T00:00:00Z", 250_000, order="s1"),
        repayment("2026-04-02T01:00:00Z", 250_000, order="s1"),
        purchase("2026-04-10T00:00:00Z", 100_000, order="s2"),
        repayment("2026-04-10T01:00:00Z", 100_000, order="s2"),
    ], "2026-06-01T00:00:00Z", spend_band  # fmt: skip
    yield "a freeze restores to reduced", [
        application("2026-04-01T00:00:00Z", 200_000, income=100_000),
        purchase("2026-04-02T00:00:00Z", 350_000, order="s1"),
        repayment("2026-04-02T01:00:00Z", 350_000, order="s1"),
        purchase("2026-04-20T00:00:00Z", 180_000, order="s2"),
        repayment("2026-04-20T01:00:00Z", 180_000, order="s2"),
    ], "2026-07-01T00:00:00Z", spend_band  # fmt: skip
    yield "two episodes reduce the limit", [
        purchase("2026-01-01T00:00:00Z", 1000, order="a", first_due="2026-01-10T00:00:00Z"),
        repayment("2026-01-14T00:00:00Z", 1000),
        purchase("2026-01-20T00:00:00Z", 1000, order="b", first_due="2026-02-10T00:00:00Z"),
        repayment("2026-02-14T00:00:00Z", 1000),
    ], "2026-09-01T00:00:00Z", policy_with({"rules.overdue_active": {"enabled": False}})  # fmt: skip
    yield "an operator freezes and restores", [
        BOUGHT,
        override("2026-03-02T00:00:00Z", "freeze", note="fraud check"),
        repayment("2026-03-05T00:00:00Z", 35000),
        override("2026-04-20T00:00:00Z", "restore", note="fraud check passed"),
        override("2026-04-21T00:00:00Z", "restore", note="changes nothing"),
    ], "2026-06-01T00:00:00Z", None  # fmt: skip
    yield "an operator restore sets rules aside", [
        BOUGHT,
        override("2026-03-10T00:00:00Z", "restore", note="disputed charge"),
        purchase("2026-03-11T00:00:00Z", 100, order="o-2", first_due="2026-04-11T00:00:00Z"),
        repayment("2026-03-20T00:00:00Z", 35000),
    ], "2026-07-01T00:00:00Z", None  # fmt: skip
    yield "the rules may undo an operator freeze", [
        BOUGHT,
        override("2026-03-02T00:00:00Z", "freeze"),
        repayment("2026-03-05T00:00:00Z", 35000),
    ], "2026-06-01T00:00:00Z", policy_with(
        {"overrides": {"automatic_may_undo_manual_freeze": True}}
    )  # fmt: skip
    yield "score low", [
        application(f"2026-01-{day:02d}T00:00:00Z", 500_000, channel="other-bank")
        for day in (1, 6, 11, 16, 21, 26)
    ], "2026-04-01T00:00:00Z", policy_with(
        {"rules.score_low": {"enabled": True, "freeze_below": 560, "restore_margin": 20}}
    )  # fmt: skip


def with_new_inputs(lines: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A synthetic history with channels, income verifications and overrides mixed in."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        value = line["value"]
        if not isinstance(value, dict):  # a broken record: keep it as it is
            out.append(line)
            continue
        if line["topic"] == APPLICATIONS and rng.random() < 0.4:
            value = {**value, "channel": rng.choice(["line", "other-bank", "p2p"])}
            line = {**line, "value": value}
        out.append(line)
        user, at, roll = value["user_id"], value["occurred_at"], rng.random()
        if roll < 0.03:
            income = rng.choice([50_000, 300_000, 2_000_000])
            source = rng.choice(["payslip", "bank_statement", "credit_report", "employer"])
            out.append(verification(at, income, user=user, source=source, event_id=f"v-{index}"))
        elif roll < 0.045:
            action = rng.choice(["freeze", "restore", "restore"])
            out.append(override(at, action, user=user, event_id=f"ov-{index}"))
    assert {line["topic"] for line in out} >= {VERIFICATIONS, OVERRIDES}
    return out


def histories() -> Iterator[tuple[str, list[dict[str, Any]], str, Policy | None]]:
    """Seeded synthetic histories under the default policy and under graduated variations."""
    until = "2026-12-31T00:00:00Z"
    for seed in (3, 4):
        yield f"synthetic history {seed}", synthetic_history(30, 2000, seed), until, None
    variations = policy_with(
        {
            "rules.reduce_spend_income": {"enabled": True},
            "rules.score_low": {"enabled": True, "freeze_below": 560},
            "probation": {"after_dpd_above": 5},
            "restore": {"automatic_per_window": 3},
        }
    )
    for seed in (5, 6):
        lines = with_new_inputs(synthetic_history(30, 2000, seed), seed)
        yield f"synthetic history {seed} with the new inputs", lines, until, None
        yield f"synthetic history {seed}, optional rules on", lines, until, variations


def record(decision: Decision) -> dict[str, Any]:
    """The decision as it is written to credit.limit-events.v1."""
    doc = orjson.loads(decision.to_json(decision.occurred_at + DECIDED_LAG))
    assert isinstance(doc, dict)
    return doc


def test_every_emitted_decision_is_valid_and_every_type_and_status_occurs() -> None:
    documented = SCHEMA["$defs"]["reason"]["properties"]["code"]["description"]
    seen: set[tuple[str, str]] = set()
    checked = 0
    for name, lines, until, policy in [*scenarios(), *histories()]:
        result = run(lines, until=until, policy=policy)
        for decision in result.decisions:
            doc = record(decision)
            for validator in VALIDATORS:
                errors = [error.message for error in validator.iter_errors(doc)]
                assert errors == [], f"{name}: {doc}: {errors}"
            assert list(doc) == list(SCHEMA["properties"]), f"{name}: field order {list(doc)}"
            assert parse_timestamp(doc["decided_at"]) == decision.occurred_at + DECIDED_LAG
            for reason in doc["reasons"]:
                code = reason["code"]
                cleared = code.endswith("_CLEARED") and code.removesuffix("_CLEARED") in documented
                assert code in documented or cleared, f"{name}: undocumented code {code}"
            seen.add((doc["type"], doc["status"]))
            checked += 1
    assert checked > 300
    assert {type_ for type_, _ in seen} == TYPES
    assert {status for _, status in seen} == STATUSES
    # Every pairing the schema allows occurs: a restore reaches each less strict status.
    assert seen == {
        ("limit.freeze", "frozen"),
        ("limit.reduce", "reduced"),
        ("limit.restore", "probation"),
        ("limit.restore", "reduced"),
        ("limit.restore", "active"),
    }
