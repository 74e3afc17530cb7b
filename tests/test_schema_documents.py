"""The published contract in schemas/: JSON Schemas and the AsyncAPI document.

These tests check the documents themselves: they are valid draft 2020-12 schemas, every field
is described, known-good samples pass, known-bad samples fail, and the AsyncAPI document is
consistent with the schema files. They need no network and no Kafka.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator, validators

from risk.limits import DECISION_REASONS
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS as CORE_INPUT_TOPICS
from risk.replay import parse_records, replay
from streams.runtime import TRUNCATED_HEADER

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://lineguard.dev/schemas/"
MAX_SAFE = 2**53 - 1

INPUT_SCHEMAS = (
    "purchase.v1.schema.json",
    "repayment.v1.schema.json",
    "loan-application.v1.schema.json",
    "income-verification.v1.schema.json",
    "limit-override.v1.schema.json",
)
OUTPUT_SCHEMAS = ("limit-event.v1.schema.json", "dead-letter.v1.schema.json")
ALL_SCHEMAS = INPUT_SCHEMAS + OUTPUT_SCHEMAS

TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
DLT_REASONS = [
    "invalid_json",
    "schema_violation",
    "key_mismatch",
    "too_late",
    "too_large",
    "in_future",
]

Json = dict[str, Any]


def load(name: str) -> Json:
    data = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_asyncapi() -> Json:
    data = yaml.safe_load((SCHEMA_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# JSON Schema's data model has one number type: 100.0 *is* an integer to a conforming
# validator. lineguard's contract is stricter (a JSON integer token only, enforced by its
# decoder). To test that rule we mirror it with a validator whose "integer" is a Python int
# (json.loads gives a float for 100.0 and 1e2). bool is not an int here either.
def _is_strict_integer(checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


StrictIntegerValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


def plain_validator(schema: Json) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def strict_validator(schema: Json) -> Any:
    return StrictIntegerValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(name: str, doc: object) -> None:
    schema = load(name)
    for make in (plain_validator, strict_validator):
        errors = [e.message for e in make(schema).iter_errors(doc)]
        assert errors == [], f"{name} rejected a good document {doc!r}: {errors}"


def assert_invalid(name: str, doc: object) -> None:
    """Rejected by a standard draft 2020-12 validator with format checking, and strictly."""
    schema = load(name)
    assert not plain_validator(schema).is_valid(doc), f"{name} accepted {doc!r}"
    assert not strict_validator(schema).is_valid(doc), f"{name} accepted {doc!r}"


def assert_invalid_token(name: str, doc: object) -> None:
    """Rejected by the integer-token rule, which plain JSON Schema cannot express."""
    schema = load(name)
    assert not strict_validator(schema).is_valid(doc), f"{name} accepted {doc!r}"


def with_(doc: Json, **changes: Any) -> Json:
    out = copy.deepcopy(doc)
    out.update(changes)
    return out


def without(doc: Json, key: str) -> Json:
    out = copy.deepcopy(doc)
    del out[key]
    return out


# ---------------------------------------------------------------------------------------------
# Sample documents

PURCHASE: Json = {
    "event_id": "e-purchase-1",
    "user_id": "u-1842",
    "occurred_at": "2026-03-01T10:00:00+08:00",
    "order_id": "o-17",
    "amount": 120000,
}
PURCHASE_FULL: Json = with_(
    PURCHASE,
    installments=3,
    first_due_at="2026-03-31T02:00:00Z",
    merchant_id="m-jd-001",
)
REPAYMENT: Json = {
    "event_id": "e-repay-1",
    "user_id": "u-1842",
    "occurred_at": "2026-04-02T09:30:00.5Z",
    "amount": 35000,
}
LOAN_APPLICATION: Json = {
    "event_id": "e-loan-1",
    "user_id": "u-1842",
    "occurred_at": "2026-03-02T12:00:00-05:30",
    "requested_amount": 100000,
}
LOAN_APPLICATION_FULL: Json = with_(
    LOAN_APPLICATION, term_months=12, declared_monthly_income=800000, channel="app"
)
INCOME_VERIFICATION: Json = {
    "event_id": "e-verify-1",
    "user_id": "u-1842",
    "occurred_at": "2026-03-21T09:00:00+08:00",
    "verified_monthly_income": 900000,
    "source": "bank_statement",
}
LIMIT_OVERRIDE: Json = {
    "event_id": "e-override-1",
    "user_id": "u-1842",
    "occurred_at": "2026-03-02T00:00:00Z",
    "action": "freeze",
    "operator": "op-7",
    "note": "fraud check",
}

SAMPLES: dict[str, Json] = {
    "purchase.v1.schema.json": PURCHASE,
    "repayment.v1.schema.json": REPAYMENT,
    "loan-application.v1.schema.json": LOAN_APPLICATION,
    "income-verification.v1.schema.json": INCOME_VERIFICATION,
    "limit-override.v1.schema.json": LIMIT_OVERRIDE,
}
FULL_SAMPLES: dict[str, Json] = {
    "purchase.v1.schema.json": PURCHASE_FULL,
    "repayment.v1.schema.json": with_(REPAYMENT, order_id="o-17"),
    "loan-application.v1.schema.json": LOAN_APPLICATION_FULL,
    # Every field of these two is required.
    "income-verification.v1.schema.json": INCOME_VERIFICATION,
    "limit-override.v1.schema.json": LIMIT_OVERRIDE,
}


def limit_event_id(user_id: str, type_: str, caused_by: str, policy_version: str) -> str:
    name = f"lineguard:{user_id}:{type_}:{caused_by}:{policy_version}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def design_example() -> Json:
    """The limit event of DESIGN.md §1, verbatim except for its two "…" placeholders."""
    caused_by = "timer:overdue:2026-03-04T00:00:00Z"
    return {
        "event_id": limit_event_id("u-1842", "limit.freeze", caused_by, "2026-11-28.1"),
        "type": "limit.freeze",
        "user_id": "u-1842",
        "occurred_at": "2026-03-04T00:00:00Z",
        "decided_at": "2026-03-04T00:00:01.20Z",
        "caused_by": caused_by,
        "reasons": [
            {
                "code": "OVERDUE_ACTIVE",
                "value": 1,
                "threshold": 1,
                "message": "instalment 2 of order o-17 is 5 days past due",
            }
        ],
        "features": {
            "overdue_active": 1,
            "overdue_amount": 35000,
            "max_dpd": 5,
            "overdue_episodes_180d": 1,
            "loan_applications_7d": 0,
            "small_loan_applications_24h": 0,
            "spend_30d": 120000,
            "declared_monthly_income": 800000,
            "outstanding": 360000,
        },
        "restore_path": ["repay 35000 overdue"],
        "policy_version": "2026-11-28.1",
    }


# The DESIGN.md example abbreviates "features": the schema also requires these three, and the
# four features of graduated limits (issue 4), which came later.
FEATURES_MISSING_FROM_DESIGN_EXAMPLE: Json = {
    "loan_applications_30d": 0,
    "credit": 0,
    "cure_ends_at": None,
    "verified_monthly_income": None,
    "other_lender_applications_30d": 0,
    "active_days_90d": 3,
    "score": 575,
}
# It also predates the status and limit_fraction of graduated limits.
FIELDS_MISSING_FROM_DESIGN_EXAMPLE: Json = {"status": "frozen", "limit_fraction": 0.0}
GRADUATED_FEATURES: Json = {
    "verified_monthly_income": 900000,
    "other_lender_applications_30d": 2,
    "active_days_90d": 11,
    "score": 590,
}
FIELD_ORDER = [
    "event_id",
    "type",
    "status",
    "limit_fraction",
    "user_id",
    "occurred_at",
    "decided_at",
    "caused_by",
    "reasons",
    "features",
    "restore_path",
    "policy_version",
]


def in_field_order(doc: Json) -> Json:
    return {name: doc[name] for name in FIELD_ORDER} | doc


def limit_freeze() -> Json:
    doc = design_example()
    doc["features"].update(FEATURES_MISSING_FROM_DESIGN_EXAMPLE)
    doc.update(FIELDS_MISSING_FROM_DESIGN_EXAMPLE)
    return in_field_order(doc)


def limit_restore() -> Json:
    caused_by = "e-repay-7"
    return {
        "event_id": limit_event_id("u-1842", "limit.restore", caused_by, "2026-11-28.1"),
        "type": "limit.restore",
        "status": "active",
        "limit_fraction": 1.0,
        "user_id": "u-1842",
        "occurred_at": "2026-03-10T08:15:00.123456Z",
        "decided_at": "2026-03-10T08:15:00.130001Z",
        "caused_by": caused_by,
        "reasons": [
            {
                "code": "REPAID_AND_CURED",
                "value": 0,
                "threshold": 0,
                "message": "all overdue instalments repaid; no cure period running",
            },
            {
                "code": "LOAN_VELOCITY_CLEARED",
                "value": 2,
                "threshold": 2,
                "message": "2 loan applications in 7 days, at most 2 allowed",
            },
        ],
        "features": {
            "overdue_active": 0,
            "overdue_amount": 0,
            "max_dpd": 0,
            "overdue_episodes_180d": 1,
            "loan_applications_7d": 2,
            "loan_applications_30d": 6,
            "small_loan_applications_24h": 0,
            "spend_30d": 0,
            "declared_monthly_income": None,
            "outstanding": 325000,
            "credit": 150,
            "cure_ends_at": None,
            **GRADUATED_FEATURES,
        },
        "restore_path": [],
        "policy_version": "2026-11-28.1",
    }


def limit_event(
    type_: str,
    status: str,
    fraction: float,
    caused_by: str,
    reasons: list[tuple[str, float, float, str]],
    restore_path: list[str],
) -> Json:
    """A decision of graduated limits, with the features of limit_restore()."""
    return in_field_order(
        {
            **limit_restore(),
            "event_id": limit_event_id("u-1842", type_, caused_by, "2026-11-28.2"),
            "type": type_,
            "status": status,
            "limit_fraction": fraction,
            "caused_by": caused_by,
            "reasons": [
                {"code": code, "value": value, "threshold": threshold, "message": message}
                for code, value, threshold, message in reasons
            ],
            "restore_path": restore_path,
            "policy_version": "2026-11-28.2",
        }
    )


def limit_reduce() -> Json:
    message = "2 overdue episodes started in the last 180d"
    return limit_event(
        "limit.reduce", "reduced", 0.5, "timer:overdue:2026-02-13T00:00:00Z",
        [("OVERDUE_REPEATED", 2, 2, message)],
        ["wait until overdue episodes in 180d fall from 2 to 1"],
    )  # fmt: skip


def limit_restore_to_probation() -> Json:
    message = "every overdue instalment is repaid and the cure period is over"
    return limit_event(
        "limit.restore", "probation", 0.5, "timer:cure:2026-05-05T00:00:00Z",
        [("REPAID_AND_CURED", 0, 0, message)],
        [],
    )  # fmt: skip


def limit_restore_to_reduced() -> Json:
    return limit_event(
        "limit.restore", "reduced", 0.5, "p-3",
        [("PROBATION_COMPLETED", 3, 3, "3 instalments in a row paid on time")],
        [],
    )  # fmt: skip


def limit_manual_freeze() -> Json:
    return limit_event(
        "limit.freeze", "frozen", 0.0, "ov-1",
        [("MANUAL_OVERRIDE", 1, 1, "freeze by operator op-7: fraud check")],
        ["MANUAL_REVIEW_REQUIRED: frozen by an operator; an operator's restore lifts it"],
    )  # fmt: skip


def limit_manual_restore() -> Json:
    return limit_event(
        "limit.restore", "active", 1.0, "ov-2",
        [("MANUAL_OVERRIDE", 1, 1, "restore by operator op-7: fraud check passed")],
        [],
    )  # fmt: skip


LIMIT_SAMPLES = {
    "freeze": limit_freeze,
    "restore": limit_restore,
    "reduce": limit_reduce,
    "restore to probation": limit_restore_to_probation,
    "restore to reduced": limit_restore_to_reduced,
    "manual freeze": limit_manual_freeze,
    "manual restore": limit_manual_restore,
}


DEAD_LETTER: Json = {
    "topic": "credit.purchases.v1",
    "key": "u-1842",
    "reason": "schema_violation",
    "error": "amount: expected an integer, got a float",
    "line": 7,
    "value": '{"event_id":"e-1","user_id":"u-1842","amount":100.0}',
}
DEAD_LETTER_B64: Json = {
    "topic": "credit.repayments.v1",
    "key": None,
    "reason": "invalid_json",
    "error": "value is not valid UTF-8",
    "line": 1,
    "value_base64": "/w==",
}


# ---------------------------------------------------------------------------------------------
# Schema documents: well-formed, self-contained, described


def walk_subschemas(schema: object, path: str) -> Iterator[tuple[str, Json, bool]]:
    """Yield (path, subschema, must_be_described) for every subschema at every depth.

    Entries of "properties" and "$defs" must carry a description; other subschemas (anyOf
    branches, oneOf "required" clauses, ...) are walked for the properties inside them.
    """
    if not isinstance(schema, dict):
        return
    for keyword in ("properties", "$defs", "patternProperties", "dependentSchemas"):
        for name, sub in schema.get(keyword, {}).items():
            sub_path = f"{path}/{keyword}/{name}"
            if isinstance(sub, dict):
                yield sub_path, sub, keyword in ("properties", "$defs")
                yield from walk_subschemas(sub, sub_path)
    for keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(keyword, [])):
            sub_path = f"{path}/{keyword}/{i}"
            if isinstance(sub, dict):
                yield sub_path, sub, False
                yield from walk_subschemas(sub, sub_path)
    for keyword in (
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    ):
        sub = schema.get(keyword)
        if isinstance(sub, dict):
            yield f"{path}/{keyword}", sub, False
            yield from walk_subschemas(sub, f"{path}/{keyword}")


def undescribed(schema: Json) -> list[str]:
    return [
        path
        for path, sub, must in walk_subschemas(schema, "#")
        if must and not (isinstance(sub.get("description"), str) and sub["description"].strip())
    ]


def all_refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                assert isinstance(value, str)
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_refs(item)


def resolve_pointer(doc: object, fragment: str) -> object:
    assert fragment.startswith("/") or fragment == "", fragment
    node = doc
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        else:
            assert isinstance(node, dict) and part in node, f"unresolvable: #{fragment}"
            node = node[part]
    return node


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == SCHEMA_URI
    assert schema["$id"] == ID_BASE + name
    assert schema["type"] == "object"
    assert isinstance(schema["title"], str) and schema["title"].strip()
    assert isinstance(schema["description"], str) and schema["description"].strip()
    assert set(schema["required"]) <= set(schema["properties"])


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_property_at_every_depth_is_described(name: str) -> None:
    assert undescribed(load(name)) == []


def test_description_walker_reaches_nested_properties() -> None:
    paths = {path for path, _, _ in walk_subschemas(load("limit-event.v1.schema.json"), "#")}
    assert "#/properties/features/properties/cure_ends_at" in paths
    assert "#/$defs/reason/properties/code" in paths
    assert "#/properties/restore_path/items" in paths
    assert "#/allOf/6/then/properties/restore_path" in paths
    assert "#/properties/features/properties/score" in paths
    missing = {
        "type": "object",
        "properties": {
            "a": {
                "description": "described",
                "anyOf": [{"type": "object", "properties": {"deep": {"type": "string"}}}],
            },
            "b": {"description": "  "},
        },
        "$defs": {"d": {"type": "string"}},
    }
    assert undescribed(missing) == [
        "#/properties/a/anyOf/0/properties/deep",
        "#/properties/b",
        "#/$defs/d",
    ]


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_is_self_contained(name: str) -> None:
    schema = load(name)
    refs = list(all_refs(schema))
    assert all(ref.startswith("#") for ref in refs), refs
    for ref in refs:
        resolve_pointer(schema, ref[1:])


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_timestamps_use_the_strict_rfc3339_profile(name: str) -> None:
    schema = load(name)
    if name == "dead-letter.v1.schema.json":
        assert "timestamp" not in schema.get("$defs", {})
        return
    assert schema["$defs"]["timestamp"]["type"] == "string"
    assert schema["$defs"]["timestamp"]["format"] == "date-time"
    assert schema["$defs"]["timestamp"]["pattern"] == TIMESTAMP_PATTERN


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_input_schema_allows_unknown_fields_and_says_so(name: str) -> None:
    schema = load(name)
    assert schema["additionalProperties"] is True
    assert "Unknown fields are allowed and ignored" in schema["description"]
    assert_valid(name, with_(SAMPLES[name], producer_extra={"anything": [1, 2.5, None]}))


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_input_money_fields_are_safe_positive_integers(name: str) -> None:
    money = load(name)["$defs"]["money"]
    assert (money["type"], money["minimum"], money["maximum"]) == ("integer", 1, MAX_SAFE)


# ---------------------------------------------------------------------------------------------
# Input events: required, optional and null


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_minimal_and_full_input_samples_validate(name: str) -> None:
    assert_valid(name, SAMPLES[name])
    assert_valid(name, FULL_SAMPLES[name])


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_every_required_input_field_is_required_and_not_nullable(name: str) -> None:
    schema = load(name)
    assert schema["required"][:3] == ["event_id", "user_id", "occurred_at"]
    for field in schema["required"]:
        assert_invalid(name, without(SAMPLES[name], field))
        assert_invalid(name, with_(SAMPLES[name], **{field: None}))


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_every_optional_input_field_accepts_null(name: str) -> None:
    schema = load(name)
    optional = set(schema["properties"]) - set(schema["required"])
    full = FULL_SAMPLES[name]
    assert optional <= set(full), "the full sample should set every optional field"
    assert_valid(name, with_(full, **dict.fromkeys(optional)))
    for field in optional:
        assert_valid(name, with_(full, **{field: None}))
        assert_valid(name, without(full, field))


def test_optional_fields_per_event_type() -> None:
    def optional(name: str) -> set[str]:
        schema = load(name)
        return set(schema["properties"]) - set(schema["required"])

    assert optional("purchase.v1.schema.json") == {"installments", "first_due_at", "merchant_id"}
    assert optional("repayment.v1.schema.json") == {"order_id"}
    assert optional("loan-application.v1.schema.json") == {
        "term_months",
        "declared_monthly_income",
        "channel",
    }
    assert optional("income-verification.v1.schema.json") == set()
    assert optional("limit-override.v1.schema.json") == set()


@pytest.mark.parametrize("name", INPUT_SCHEMAS)
def test_input_must_be_an_object(name: str) -> None:
    for doc in ([SAMPLES[name]], "x", 1, None):
        assert_invalid(name, doc)


# ---------------------------------------------------------------------------------------------
# Timestamps

GOOD_TIMESTAMPS = [
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00.1Z",
    "2026-03-01T10:00:00.123456789+08:00",
    "2026-03-01T10:00:00-05:30",
    "2026-03-01T10:00:00+23:59",
    "2026-03-01T10:00:00-00:00",
    "2028-02-29T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
BAD_TIMESTAMPS = [
    "2026-02-30T00:00:00Z",  # no such day
    "2025-02-29T00:00:00Z",  # not a leap year
    "2026-04-31T00:00:00Z",
    "2026-03-01t10:00:00Z",  # lowercase t
    "2026-03-01T10:00:00z",  # lowercase z
    "2026-12-31T23:59:60Z",  # leap second
    "2026-03-01 10:00:00Z",
    "2026-03-01T10:00:00",  # no offset
    "2026-03-01",
    "2026-03-01T24:00:00Z",
    "2026-03-01T10:60:00Z",
    "2026-13-01T10:00:00Z",
    "2026-00-01T10:00:00Z",
    "2026-03-00T10:00:00Z",
    "2026-03-32T10:00:00Z",
    "2026-03-01T10:00:00.Z",
    "2026-03-01T10:00:00+24:00",
    "2026-03-01T10:00:00+08:60",
    "2026-03-01T10:00:00+0800",
    "2026-03-01T10:00Z",
    "1969-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z",
    "26-03-01T10:00:00Z",
    " 2026-03-01T10:00:00Z",
    "",
]


@pytest.mark.parametrize("value", GOOD_TIMESTAMPS)
def test_good_timestamps_are_accepted(value: str) -> None:
    assert_valid("purchase.v1.schema.json", with_(PURCHASE, occurred_at=value, first_due_at=value))
    if value.endswith("Z"):  # lineguard writes its own times in UTC
        assert_valid("limit-event.v1.schema.json", with_(limit_freeze(), decided_at=value))


def test_the_times_lineguard_writes_are_utc_and_the_schema_says_how_they_are_written() -> None:
    schema = load(LIMIT)
    for value in ("2026-03-04T08:00:01.2+08:00", "2026-03-04T00:00:01.2+00:00"):
        assert_invalid(LIMIT, with_(limit_freeze(), decided_at=value))
        features = dict(limit_freeze()["features"], cure_ends_at=value)
        assert_invalid(LIMIT, with_(limit_freeze(), features=features))
    written = schema["$defs"]["utc_timestamp"]["description"]
    assert "at most 6 digits" in written
    assert "compare them as instants, not as text" in written
    assert "can be earlier than occurred_at" in schema["properties"]["decided_at"]["description"]


@pytest.mark.parametrize("value", BAD_TIMESTAMPS)
def test_bad_timestamps_are_rejected(value: str) -> None:
    for name, sample in SAMPLES.items():
        assert_invalid(name, with_(sample, occurred_at=value))
    assert_invalid("purchase.v1.schema.json", with_(PURCHASE, first_due_at=value))
    assert_invalid("limit-event.v1.schema.json", with_(limit_freeze(), decided_at=value))
    features = dict(limit_freeze()["features"], cure_ends_at=value)
    assert_invalid("limit-event.v1.schema.json", with_(limit_freeze(), features=features))


@pytest.mark.parametrize("value", [1772359200, 1772359200.5, ["2026-03-01T10:00:00Z"]])
def test_timestamps_must_be_strings(value: object) -> None:
    assert_invalid("purchase.v1.schema.json", with_(PURCHASE, occurred_at=value))


def test_day_of_month_check_comes_from_the_format_assertion() -> None:
    timestamp = load("purchase.v1.schema.json")["$defs"]["timestamp"]
    pattern_only = {k: v for k, v in timestamp.items() if k != "format"}
    assert Draft202012Validator(pattern_only).is_valid("2026-02-30T00:00:00Z")
    assert not plain_validator(timestamp).is_valid("2026-02-30T00:00:00Z")
    assert "2026-02-30" in timestamp["description"]


# ---------------------------------------------------------------------------------------------
# Money and other integers


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("purchase.v1.schema.json", "amount"),
        ("repayment.v1.schema.json", "amount"),
        ("loan-application.v1.schema.json", "requested_amount"),
        ("income-verification.v1.schema.json", "verified_monthly_income"),
    ],
)
def test_money_bounds_and_types(name: str, field: str) -> None:
    sample = SAMPLES[name]
    for good in (1, 100, MAX_SAFE):
        assert_valid(name, with_(sample, **{field: good}))
    for bad in (0, -1, MAX_SAFE + 1, "100", True, None, 99.5, [100]):
        assert_invalid(name, with_(sample, **{field: bad}))


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("purchase.v1.schema.json", {"amount": 100.0}),
        ("purchase.v1.schema.json", {"amount": 1e2}),
        ("purchase.v1.schema.json", {"installments": 3.0}),
        ("repayment.v1.schema.json", {"amount": 100.0}),
        ("loan-application.v1.schema.json", {"requested_amount": 100.0}),
        ("loan-application.v1.schema.json", {"term_months": 12.0}),
        ("loan-application.v1.schema.json", {"declared_monthly_income": 0.0}),
        ("income-verification.v1.schema.json", {"verified_monthly_income": 900000.0}),
    ],
)
def test_integer_fields_take_integer_tokens_only(name: str, changes: Json) -> None:
    doc = with_(SAMPLES[name], **changes)
    assert_invalid_token(name, doc)
    # The same document parsed from JSON text: 100.0 stays a float, 100 an int.
    reparsed = json.loads(json.dumps(doc))
    assert_invalid_token(name, reparsed)
    assert_valid(name, with_(SAMPLES[name], **{k: int(v) for k, v in changes.items()}))


def test_integer_token_rule_is_beyond_plain_json_schema() -> None:
    # Documented in schemas/README.md and in the money description: a conforming validator
    # sees 100.0 as the integer 100, so the token rule is enforced by lineguard's decoder.
    schema = load("purchase.v1.schema.json")
    doc = with_(PURCHASE, amount=100.0)
    assert plain_validator(schema).is_valid(doc)
    assert not strict_validator(schema).is_valid(doc)
    assert "100.0" in schema["$defs"]["money"]["description"]


def readme_contract_section() -> str:
    """The ``## The contract`` section of the top-level README."""
    text = (SCHEMA_DIR.parent / "README.md").read_text(encoding="utf-8")
    return text.split("\n## The contract\n", 1)[1].split("\n## ", 1)[0]


def test_the_repeated_key_rule_is_documented_where_a_validator_cannot_see_it() -> None:
    # A validator is handed the parsed document, which keeps only the last occurrence, so it
    # accepts what lineguard rejects: the rule must be written down for producers.
    raw = '{"event_id": "r-1", "user_id": "u-1", "occurred_at": "2026-03-01T00:00:00Z",'
    doc = json.loads(raw + ' "amount": 0, "amount": 5}')
    assert doc["amount"] == 5
    assert_valid("repayment.v1.schema.json", doc)
    schemas_readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    for text in (readme_contract_section(), schemas_readme):
        text = " ".join(text.split())
        assert "A repeated key: the last occurrence counts" in text
        assert '`"amount": 0, "amount": 5` is rejected' in text


def test_installments() -> None:
    name = "purchase.v1.schema.json"
    for good in (1, 3, 6, 9, 12, 24, None):
        assert_valid(name, with_(PURCHASE, installments=good))
    for bad in (0, 2, 4, 36, -3, "3", True):
        assert_invalid(name, with_(PURCHASE, installments=bad))
    assert load(name)["properties"]["installments"]["default"] == 1


def test_loan_application_ranges() -> None:
    name = "loan-application.v1.schema.json"
    for good in (1, 600, None):
        assert_valid(name, with_(LOAN_APPLICATION, term_months=good))
    for bad in (0, 601, -12, "12"):
        assert_invalid(name, with_(LOAN_APPLICATION, term_months=bad))
    for good in (0, 1, MAX_SAFE, None):
        assert_valid(name, with_(LOAN_APPLICATION, declared_monthly_income=good))
    for bad in (-1, MAX_SAFE + 1, "800000"):
        assert_invalid(name, with_(LOAN_APPLICATION, declared_monthly_income=bad))


def test_loan_application_channel_counts_other_lenders_in_the_score() -> None:
    description = load("loan-application.v1.schema.json")["properties"]["channel"]["description"]
    for text in ("score.own_channel", '"line"', "another lender", "multi-lender", "null"):
        assert text in description
    assert "Informational only" not in description


def test_income_verification_source_and_semantics() -> None:
    name = "income-verification.v1.schema.json"
    for good in ("payslip", "bank_statement", "credit_report", "employer"):
        assert_valid(name, with_(INCOME_VERIFICATION, source=good))
    for bad in ("Payslip", "bank statement", "tax_return", "", None, 1):
        assert_invalid(name, with_(INCOME_VERIFICATION, source=bad))
    description = load(name)["description"]
    for text in (
        "SPEND_INCOME_MISMATCH",
        "behaviour score",
        "income_verification.cure_remaining_factor",
        "INCOME_VERIFIED",
        "never overrides a verified one",
        "credit.income-verifications.v1.dlt",
    ):
        assert text in description


def test_limit_override_action_and_semantics() -> None:
    name = "limit-override.v1.schema.json"
    for good in ("freeze", "restore"):
        assert_valid(name, with_(LIMIT_OVERRIDE, action=good))
    for bad in ("Freeze", "reduce", "unfreeze", "", None, True):
        assert_invalid(name, with_(LIMIT_OVERRIDE, action=bad))
    description = load(name)["description"]
    for text in (
        "caused_by",
        "MANUAL_OVERRIDE",
        "<action> by operator <operator>: <note>",
        "overrides.automatic_may_undo_manual_freeze",
        "emits nothing",
        "credit.limit-overrides.v1.dlt",
    ):
        assert text in description


# ---------------------------------------------------------------------------------------------
# Strings: lengths in code points


ASTRAL = "\U0001d4b3"  # MATHEMATICAL SCRIPT CAPITAL X: one code point, two UTF-16 units


@pytest.mark.parametrize(
    ("name", "field", "low", "high"),
    [
        ("purchase.v1.schema.json", "event_id", 1, 128),
        ("purchase.v1.schema.json", "user_id", 1, 64),
        ("purchase.v1.schema.json", "order_id", 1, 128),
        ("purchase.v1.schema.json", "merchant_id", 1, 128),
        ("repayment.v1.schema.json", "event_id", 1, 128),
        ("repayment.v1.schema.json", "user_id", 1, 64),
        ("repayment.v1.schema.json", "order_id", 1, 128),
        ("loan-application.v1.schema.json", "event_id", 1, 128),
        ("loan-application.v1.schema.json", "user_id", 1, 64),
        ("loan-application.v1.schema.json", "channel", 1, 64),
        ("income-verification.v1.schema.json", "event_id", 1, 128),
        ("income-verification.v1.schema.json", "user_id", 1, 64),
        ("limit-override.v1.schema.json", "event_id", 1, 128),
        ("limit-override.v1.schema.json", "user_id", 1, 64),
        ("limit-override.v1.schema.json", "operator", 1, 128),
        ("limit-override.v1.schema.json", "note", 1, 1000),
    ],
)
def test_string_lengths_count_code_points(name: str, field: str, low: int, high: int) -> None:
    sample = FULL_SAMPLES[name]
    for char in ("a", ASTRAL, "中"):
        assert_valid(name, with_(sample, **{field: char * low}))
        assert_valid(name, with_(sample, **{field: char * high}))
        assert_invalid(name, with_(sample, **{field: char * (high + 1)}))
    assert_invalid(name, with_(sample, **{field: ""}))
    assert_invalid(name, with_(sample, **{field: 42}))


def test_astral_user_id_of_64_code_points_passes() -> None:
    user_id = "𝒳" * 64
    assert len(user_id.encode("utf-16-le")) // 2 == 128
    assert_valid("purchase.v1.schema.json", with_(PURCHASE, user_id=user_id))
    assert_invalid("purchase.v1.schema.json", with_(PURCHASE, user_id="𝒳" * 65))


def test_event_id_of_129_characters_fails() -> None:
    assert_valid("repayment.v1.schema.json", with_(REPAYMENT, event_id="e" * 128))
    assert_invalid("repayment.v1.schema.json", with_(REPAYMENT, event_id="e" * 129))


# ---------------------------------------------------------------------------------------------
# Limit events

LIMIT = "limit-event.v1.schema.json"
GRADUATED_FEATURE_NAMES = {
    "verified_monthly_income",
    "other_lender_applications_30d",
    "active_days_90d",
    "score",
}
FEATURE_NAMES = GRADUATED_FEATURE_NAMES | {
    "overdue_active",
    "overdue_amount",
    "max_dpd",
    "overdue_episodes_180d",
    "loan_applications_7d",
    "loan_applications_30d",
    "small_loan_applications_24h",
    "spend_30d",
    "declared_monthly_income",
    "outstanding",
    "credit",
    "cure_ends_at",
}


def test_design_example_validates_once_placeholders_are_concrete() -> None:
    assert_valid(LIMIT, limit_freeze())


def test_design_example_omits_required_fields_and_features() -> None:
    errors = list(plain_validator(load(LIMIT)).iter_errors(design_example()))
    missing = [*FEATURES_MISSING_FROM_DESIGN_EXAMPLE, *FIELDS_MISSING_FROM_DESIGN_EXAMPLE]
    assert sorted(e.message for e in errors) == sorted(
        f"'{name}' is a required property" for name in missing
    )


@pytest.mark.parametrize("sample", sorted(LIMIT_SAMPLES))
def test_limit_event_samples_validate(sample: str) -> None:
    assert_valid(LIMIT, LIMIT_SAMPLES[sample]())


def test_restore_event_validates() -> None:
    assert_valid(LIMIT, limit_restore())


def test_schema_lists_the_fields_in_the_order_lineguard_emits_them() -> None:
    schema = load(LIMIT)
    assert schema["required"] == FIELD_ORDER
    assert list(schema["properties"]) == FIELD_ORDER
    assert all(list(make()) == FIELD_ORDER for make in LIMIT_SAMPLES.values())


def test_limit_event_required_fields_and_features() -> None:
    schema = load(LIMIT)
    assert set(schema["required"]) == {
        "event_id",
        "type",
        "status",
        "limit_fraction",
        "user_id",
        "occurred_at",
        "decided_at",
        "caused_by",
        "reasons",
        "features",
        "restore_path",
        "policy_version",
    }
    assert set(schema["properties"]["features"]["required"]) == FEATURE_NAMES
    for field in schema["required"]:
        assert_invalid(LIMIT, without(limit_freeze(), field))
    for feature in FEATURE_NAMES:
        features = dict(limit_freeze()["features"])
        del features[feature]
        assert_invalid(LIMIT, with_(limit_freeze(), features=features))


def test_limit_event_allows_unknown_fields() -> None:
    schema = load(LIMIT)
    assert schema["additionalProperties"] is True
    assert schema["properties"]["features"]["additionalProperties"] is True
    doc = limit_freeze()
    doc["new_top_level_field"] = {"x": 1}
    doc["features"]["new_feature_90d"] = 3
    assert_valid(LIMIT, doc)


def test_limit_event_id_is_a_uuid5() -> None:
    assert_invalid(LIMIT, with_(limit_freeze(), event_id=str(uuid.uuid4())))
    assert_invalid(LIMIT, with_(limit_freeze(), event_id="9b1f…"))
    assert_invalid(LIMIT, with_(limit_freeze(), event_id=limit_freeze()["event_id"].upper()))
    assert_valid(LIMIT, with_(limit_freeze(), event_id=limit_event_id("u", "t", "c", "p")))


def test_limit_event_type_and_times() -> None:
    for bad in ("limit.suspend", "freeze", "LIMIT.FREEZE", "limit.reduced", None):
        assert_invalid(LIMIT, with_(limit_freeze(), type=bad))
    assert_valid(LIMIT, limit_reduce())
    # occurred_at is always rendered in UTC with Z
    assert_invalid(LIMIT, with_(limit_freeze(), occurred_at="2026-03-04T08:00:00+08:00"))
    assert_invalid(LIMIT, with_(limit_freeze(), occurred_at="2026-03-04T00:00:00+00:00"))
    assert_valid(LIMIT, with_(limit_freeze(), occurred_at="2026-03-04T00:00:00.5Z"))


def test_limit_event_reasons() -> None:
    assert_invalid(LIMIT, with_(limit_freeze(), reasons=[]))
    good_reason = limit_freeze()["reasons"][0]
    for code in ("OVERDUE_REPEATED", "SPEND_INCOME_MISMATCH", "SMALL_LOAN_BURST_CLEARED", "X9"):
        assert_valid(LIMIT, with_(limit_freeze(), reasons=[dict(good_reason, code=code)]))
    for code in ("overdue_active", "_X", "9X", "", "OVERDUE-ACTIVE"):
        assert_invalid(LIMIT, with_(limit_freeze(), reasons=[dict(good_reason, code=code)]))
    for field in ("code", "value", "threshold", "message"):
        reason = dict(good_reason)
        del reason[field]
        assert_invalid(LIMIT, with_(limit_freeze(), reasons=[reason]))
    assert_valid(LIMIT, with_(limit_freeze(), reasons=[dict(good_reason, value=2.5)]))
    assert_invalid(LIMIT, with_(limit_freeze(), reasons=[dict(good_reason, value="1")]))
    description = load(LIMIT)["$defs"]["reason"]["properties"]["code"]["description"]
    for code in (
        "OVERDUE_ACTIVE",
        "OVERDUE_REPEATED",
        "LOAN_VELOCITY",
        "SMALL_LOAN_BURST",
        "SPEND_INCOME_MISMATCH",
        "SCORE_LOW",
        "MANUAL_OVERRIDE",
        "REPAID_AND_CURED",
        "_CLEARED",
        "SCORE_LOW_CLEARED",
        "INCOME_VERIFIED",
        "PROBATION_COMPLETED",
        "consumers must accept unknown codes",
    ):
        assert code in description
    for code in ("PROBATION_COMPLETED", "INCOME_VERIFIED", "MANUAL_OVERRIDE", "SCORE_LOW"):
        assert_valid(LIMIT, with_(limit_freeze(), reasons=[dict(good_reason, code=code)]))
    # Every code the core can put in a decision is named, under the decision type that carries it.
    assert set(DECISION_REASONS) == set(load(LIMIT)["properties"]["type"]["enum"])
    sections = {
        "limit.freeze": description.split("Freeze codes")[1].split("Reduce codes")[0],
        "limit.reduce": description.split("Reduce codes")[1].split("Restore codes")[0],
        "limit.restore": description.split("Restore codes")[1],
    }
    for type_, codes in DECISION_REASONS.items():
        for code in codes:
            assert code in sections[type_], (type_, code)


def test_limit_event_features() -> None:
    base = limit_freeze()
    nullable = {"declared_monthly_income", "verified_monthly_income", "cure_ends_at"}
    integer_features = FEATURE_NAMES - nullable - {"score"}
    for feature in integer_features:
        assert_invalid(LIMIT, with_(base, features=dict(base["features"], **{feature: -1})))
        assert_invalid(LIMIT, with_(base, features=dict(base["features"], **{feature: None})))
        assert_invalid(LIMIT, with_(base, features=dict(base["features"], **{feature: 1.5})))
        assert_valid(LIMIT, with_(base, features=dict(base["features"], **{feature: 0})))
    assert_invalid(LIMIT, with_(base, features=dict(base["features"], declared_monthly_income=0)))
    assert_valid(LIMIT, with_(base, features=dict(base["features"], declared_monthly_income=1)))
    cure = "2026-04-03T00:00:00Z"
    assert_valid(LIMIT, with_(base, features=dict(base["features"], cure_ends_at=cure)))
    for income in (1, MAX_SAFE, None):
        features = dict(base["features"], verified_monthly_income=income)
        assert_valid(LIMIT, with_(base, features=features))
    for income in (0, -1, 1.5, "900000"):
        features = dict(base["features"], verified_monthly_income=income)
        assert_invalid(LIMIT, with_(base, features=features))
    # The score is an integer on the PDO scale; a strict policy table may push it below 0.
    for score in (600, 0, -40, 1200):
        assert_valid(LIMIT, with_(base, features=dict(base["features"], score=score)))
    for score in (600.5, None, "600"):
        assert_invalid(LIMIT, with_(base, features=dict(base["features"], score=score)))


def test_graduated_features_are_documented() -> None:
    features = load(LIMIT)["properties"]["features"]["properties"]
    assert "600" in features["score"]["description"]
    assert "50:1" in features["score"]["description"]
    assert "20 points" in features["score"]["description"]
    assert "no history scores exactly 600" in features["score"]["description"]
    assert "score.own_channel" in features["other_lender_applications_30d"]["description"]
    assert "purchase or a repayment" in features["active_days_90d"]["description"]
    assert "supersedes" in features["verified_monthly_income"]["description"]


STATUS_FRACTIONS = {"active": 1.0, "reduced": 0.5, "probation": 0.5, "frozen": 0.0}


def test_status_and_limit_fraction_go_together() -> None:
    schema = load(LIMIT)
    assert schema["properties"]["status"]["enum"] == ["active", "reduced", "probation", "frozen"]
    for status, fraction in STATUS_FRACTIONS.items():
        for other in [0, 0.0, 0.5, 1, 1.0, 0.25, 2]:
            doc = with_(limit_manual_restore(), status=status, limit_fraction=other)
            doc["type"] = "limit.freeze" if status == "frozen" else "limit.restore"
            doc["restore_path"] = ["a step"] if status == "frozen" else []
            if other == fraction:
                assert_valid(LIMIT, doc)
            else:
                assert_invalid(LIMIT, doc)
    for bad in ("ACTIVE", "suspended", "", None, 1):
        assert_invalid(LIMIT, with_(limit_restore(), status=bad))
    for bad in ("1.0", None, True, -0.5):
        assert_invalid(LIMIT, with_(limit_restore(), limit_fraction=bad))
    assert_invalid(LIMIT, without(limit_restore(), "status"))
    assert_invalid(LIMIT, without(limit_restore(), "limit_fraction"))


def test_each_type_leaves_its_statuses() -> None:
    allowed = {
        "limit.freeze": {"frozen"},
        "limit.reduce": {"reduced"},
        "limit.restore": {"active", "reduced", "probation"},
    }
    for type_, statuses in allowed.items():
        for status, fraction in STATUS_FRACTIONS.items():
            doc = with_(limit_reduce(), type=type_, status=status, limit_fraction=fraction)
            doc["restore_path"] = [] if type_ == "limit.restore" else ["a step"]
            if status in statuses:
                assert_valid(LIMIT, doc)
            else:
                assert_invalid(LIMIT, doc)


def test_restore_path_is_empty_exactly_on_a_restore() -> None:
    assert_invalid(LIMIT, with_(limit_restore(), restore_path=["repay 1 overdue"]))
    assert_invalid(LIMIT, with_(limit_freeze(), restore_path=[]))
    assert_invalid(LIMIT, with_(limit_freeze(), restore_path=[35000]))
    assert_invalid(LIMIT, with_(limit_reduce(), restore_path=[]))
    for make in (limit_restore_to_probation, limit_restore_to_reduced):
        assert_valid(LIMIT, make())
        assert_invalid(LIMIT, with_(make(), restore_path=["a step"]))
    description = load(LIMIT)["properties"]["restore_path"]["description"]
    for text in ("Always empty on a restore", "MANUAL_REVIEW_REQUIRED:", "probation"):
        assert text in description


def test_limit_event_description_keeps_the_freeze_restore_consumer_working() -> None:
    schema = load(LIMIT)
    description = schema["description"]
    for text in ("limit.freeze", "limit.reduce", "limit.restore", "status", "limit_fraction"):
        assert text in description
    assert "keeps working" in description
    assert "ignores" in description
    # What such a consumer reads stays true: a freeze is frozen, a restore is not.
    assert schema["properties"]["type"]["enum"] == ["limit.freeze", "limit.reduce", "limit.restore"]


# ---------------------------------------------------------------------------------------------
# Dead letters

DLT = "dead-letter.v1.schema.json"


def test_dead_letter_samples_validate() -> None:
    assert_valid(DLT, DEAD_LETTER)
    assert_valid(DLT, DEAD_LETTER_B64)
    assert_valid(DLT, without(DEAD_LETTER, "key"))
    assert_valid(DLT, with_(DEAD_LETTER, value=""))


def test_the_dead_letter_of_a_tombstone_validates_as_replay_writes_it() -> None:
    """A tombstone's value is null in the replay input, the dead-letter line and on Kafka."""
    line = {"topic": CORE_INPUT_TOPICS[1], "key": "u-1", "value": None}
    records = list(parse_records([orjson.dumps(line)]))
    result = replay(records, load_policy(), now=0)
    [letter] = result.dead_letters
    assert (letter["reason"], letter["value"]) == ("invalid_json", None)
    assert "value_base64" not in letter
    assert_valid(DLT, letter)
    assert_invalid(DLT, with_(letter, value_base64=None))
    assert "tombstone" in load(DLT)["properties"]["value"]["description"]


def test_dead_letter_has_exactly_one_of_value_and_value_base64() -> None:
    assert_invalid(DLT, with_(DEAD_LETTER, value_base64="/w=="))
    assert_invalid(DLT, without(DEAD_LETTER, "value"))
    assert_invalid(DLT, with_(without(DEAD_LETTER, "value"), value_base64=None))
    assert_invalid(DLT, with_(DEAD_LETTER, value={"event_id": "e-1"}))


def test_dead_letter_fields() -> None:
    schema = load(DLT)
    assert set(schema["required"]) == {"topic", "reason", "error", "line"}
    assert schema["properties"]["reason"]["enum"] == DLT_REASONS
    for field in ("topic", "reason", "error", "line"):
        assert_invalid(DLT, without(DEAD_LETTER, field))
    for reason in DLT_REASONS:
        assert_valid(DLT, with_(DEAD_LETTER, reason=reason))
    for bad_reason in ("unknown", "INVALID_JSON", None):
        assert_invalid(DLT, with_(DEAD_LETTER, reason=bad_reason))
    for bad_line in (0, -1, "7", None):
        assert_invalid(DLT, with_(DEAD_LETTER, line=bad_line))
    assert_invalid(DLT, with_(DEAD_LETTER, key=7))
    for bad_b64 in ("/w=", "abc", "not base64!", "/w==="):
        assert_invalid(DLT, with_(DEAD_LETTER_B64, value_base64=bad_b64))
    for text in (".dlt", "dlt.original.topic", "dlt.original.partition", "dlt.original.offset"):
        assert text in schema["description"]


# ---------------------------------------------------------------------------------------------
# AsyncAPI

EXPECTED_CHANNELS = {
    "credit.purchases.v1": "purchase.v1.schema.json",
    "credit.repayments.v1": "repayment.v1.schema.json",
    "credit.loan-applications.v1": "loan-application.v1.schema.json",
    "credit.income-verifications.v1": "income-verification.v1.schema.json",
    "credit.limit-overrides.v1": "limit-override.v1.schema.json",
    "credit.limit-events.v1": "limit-event.v1.schema.json",
    "credit.purchases.v1.dlt": None,
    "credit.repayments.v1.dlt": None,
    "credit.loan-applications.v1.dlt": None,
    "credit.income-verifications.v1.dlt": None,
    "credit.limit-overrides.v1.dlt": None,
}
INPUT_TOPICS = {
    "credit.purchases.v1",
    "credit.repayments.v1",
    "credit.loan-applications.v1",
    "credit.income-verifications.v1",
    "credit.limit-overrides.v1",
}
DLT_HEADERS = {
    "dlt.original.topic",
    "dlt.original.partition",
    "dlt.original.offset",
    "dlt.reason",
    "dlt.error",
}


def deref(doc: Json, node: Any) -> Any:
    while isinstance(node, dict) and set(node) == {"$ref"}:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#"), ref
        node = resolve_pointer(doc, ref[1:])
    return node


def channel_messages(doc: Json) -> Iterator[tuple[str, Json]]:
    for channel in doc["channels"].values():
        for message in channel["messages"].values():
            yield channel["address"], deref(doc, message)


def test_asyncapi_header() -> None:
    doc = load_asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "lineguard"
    assert doc["info"]["version"] == "1.0.0"
    description = doc["info"]["description"]
    for text in ("user_id", "murmur2", "partitioner=murmur2_random", "same number of partitions"):
        assert text in description
    assert "five input topics" in description
    assert "three input topics" not in description
    for text in ("limit.freeze", "limit.reduce", "limit.restore", "income verifications"):
        assert text in description


def test_the_contract_says_a_policy_rollout_may_make_a_decision_again_differently() -> None:
    # Records applied but not yet committed when a worker stops are applied again by its
    # successor: under a new policy_version their decisions get other ids, or none at all.
    texts = [load(LIMIT)["description"]]
    texts += [c["description"] for c in load_asyncapi()["channels"].values()
              if c["address"] == "credit.limit-events.v1"]  # fmt: skip
    for text in texts:
        flat = " ".join(text.split())
        assert "same event_id only under the same policy_version" in flat
        assert "never retracted" in flat


def test_asyncapi_input_topics_match_the_core() -> None:
    assert set(CORE_INPUT_TOPICS) == INPUT_TOPICS
    for channel in load_asyncapi()["channels"].values():
        if channel["address"] in INPUT_TOPICS:
            assert "other four input topics" in channel["description"]


def test_asyncapi_limit_events_channel_describes_graduated_limits() -> None:
    (channel,) = [
        c for c in load_asyncapi()["channels"].values() if c["address"] == "credit.limit-events.v1"
    ]
    for text in ("limit.freeze", "limit.reduce", "limit.restore", "status", "limit_fraction"):
        assert text in channel["description"]


def test_asyncapi_lists_all_eleven_channels_with_kafka_bindings() -> None:
    doc = load_asyncapi()
    channels = doc["channels"]
    assert sorted(c["address"] for c in channels.values()) == sorted(EXPECTED_CHANNELS)
    for channel in channels.values():
        binding = channel["bindings"]["kafka"]
        assert binding["topic"] == channel["address"]
        assert binding["bindingVersion"] == "0.5.0"
        assert channel["description"].strip()


def test_every_asyncapi_ref_resolves() -> None:
    doc = load_asyncapi()
    refs = list(all_refs(doc))
    file_refs = [ref for ref in refs if not ref.startswith("#")]
    assert len(file_refs) == 6
    for ref in refs:
        target, _, fragment = ref.partition("#")
        if target:
            path = (SCHEMA_DIR / target).resolve()
            assert path.is_file(), ref
            if fragment:
                resolve_pointer(json.loads(path.read_text(encoding="utf-8")), fragment)
        else:
            resolve_pointer(doc, fragment)


def test_asyncapi_messages_use_the_schema_files() -> None:
    doc = load_asyncapi()
    seen = set()
    for address, message in channel_messages(doc):
        seen.add(address)
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] == "string"
        assert "UTF-8" in key["description"]
        assert message["bindings"]["kafka"]["bindingVersion"] == "0.5.0"
        schema_file = EXPECTED_CHANNELS[address]
        if schema_file is None:
            continue
        assert message["contentType"] == "application/json"
        assert "user_id" in key["description"]
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
        assert payload["schema"] == {"$ref": f"./{schema_file}"}
        assert address in load(schema_file)["title"]
    assert seen == set(EXPECTED_CHANNELS)


def test_asyncapi_dead_letter_messages() -> None:
    doc = load_asyncapi()
    dlt_messages = [m for a, m in channel_messages(doc) if a.endswith(".dlt")]
    assert len(dlt_messages) == 5
    for message in dlt_messages:
        headers = message["headers"]
        assert headers["type"] == "object"
        assert set(headers["required"]) == DLT_HEADERS
        # The one optional header: a value too large for the dead-letter topic was replaced.
        assert set(headers["properties"]) == DLT_HEADERS | {TRUNCATED_HEADER}
        for header in headers["properties"].values():
            assert header["type"] == "string"
            assert header["description"].strip()
        assert headers["properties"]["dlt.reason"]["enum"] == DLT_REASONS
        assert "unchanged" in message["payload"]["description"]
        assert "$ref" not in message["payload"]


def test_asyncapi_operations() -> None:
    doc = load_asyncapi()
    actions: dict[str, str] = {}
    for operation in doc["operations"].values():
        channel = deref(doc, operation["channel"])
        actions[channel["address"]] = operation["action"]
        for message in operation["messages"]:
            ref = message["$ref"]
            assert ref.startswith(operation["channel"]["$ref"] + "/messages/"), ref
    expected = {a: "receive" if a in INPUT_TOPICS else "send" for a in EXPECTED_CHANNELS}
    assert actions == expected


def test_dlt_topics_follow_their_input_topics() -> None:
    addresses = {c["address"] for c in load_asyncapi()["channels"].values()}
    assert {a for a in addresses if a.endswith(".dlt")} == {f"{t}.dlt" for t in INPUT_TOPICS}
