"""The Python decoder and the published JSON Schemas accept exactly the same inputs.

Samples come from the schemas themselves (hypothesis-jsonschema) and from mutations of
them, so a field added, tightened or loosened on one side only fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

from risk.contract import (
    _DECODERS,
    INCOME_VERIFICATIONS,
    LIMIT_OVERRIDES,
    LOAN_APPLICATIONS,
    MAX_MONEY,
    PURCHASES,
    REPAYMENTS,
    Event,
    Reason,
    Rejection,
    Repayment,
    decode,
)
from risk.replay import INPUT_TOPICS

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
TOPICS = {
    PURCHASES: "purchase.v1.schema.json",
    REPAYMENTS: "repayment.v1.schema.json",
    LOAN_APPLICATIONS: "loan-application.v1.schema.json",
    INCOME_VERIFICATIONS: "income-verification.v1.schema.json",
    LIMIT_OVERRIDES: "limit-override.v1.schema.json",
}


def _strict_integer(_checker: object, instance: object) -> bool:
    # JSON Schema's data model calls 100.0 an integer; the contract wants an integer token.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _ecma_pattern(validator: Any, pattern: str, instance: object, _schema: Any) -> Any:
    # Python's `$` also matches before a final newline; ECMA-262 (the schema's dialect) does not.
    if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Strict = validators.extend(
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)
_FORMATS = FormatChecker()


@_FORMATS.checks("date-time")
def _date_time_from_the_epoch(instance: object) -> bool:
    """RFC 3339, and not before the epoch once the offset is applied: the schemas say so in words."""
    if not Draft202012Validator.FORMAT_CHECKER.conforms(instance, "date-time"):
        return False
    if not isinstance(instance, str) or not instance.startswith("1970-01-01T"):
        return True
    offset = instance[-6:]
    return offset[0] != "+" or instance[11:16] >= offset[1:]


VALIDATORS = {
    topic: _Strict(json.loads((SCHEMAS / name).read_text("utf-8")), format_checker=_FORMATS)
    for topic, name in TOPICS.items()
}
SCHEMA_DOCS = {topic: validator.schema for topic, validator in VALIDATORS.items()}


def test_every_input_topic_has_its_schema() -> None:
    assert sorted(TOPICS) == list(range(len(INPUT_TOPICS)))
    for topic, name in TOPICS.items():
        assert f"({INPUT_TOPICS[topic]})" in SCHEMA_DOCS[topic]["title"], name


def _encodable(value: object) -> bool:
    """False for strings holding lone surrogates: valid to a validator, ``invalid_json`` to lineguard.

    README says so; ``tests/test_contract_producers.py`` checks that rejection and its error.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(topic: int, doc: Any) -> Event | Rejection:
    key = doc.get("user_id") if isinstance(doc, dict) else None
    key_bytes = key.encode() if isinstance(key, str) and _encodable(key) else b"k"
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    return decode(topic, key_bytes, raw, 1 << 24)


def _agrees(topic: int, doc: Any) -> None:
    schema_valid = VALIDATORS[topic].is_valid(doc)
    decoded = _decode(topic, doc)
    if schema_valid:
        assert not isinstance(decoded, Rejection), (doc, decoded)
    else:
        assert isinstance(decoded, Rejection), doc
        assert decoded.reason is Reason.SCHEMA_VIOLATION, (doc, decoded)


_fast = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def _valid_sample(draw: st.DrawFn) -> tuple[int, dict[str, Any]]:
    topic = draw(st.sampled_from(sorted(TOPICS)))
    doc = draw(from_schema(SCHEMA_DOCS[topic]))
    assume(_encodable(doc) and VALIDATORS[topic].is_valid(doc))
    return topic, doc


@_fast
@given(_valid_sample())
def test_every_schema_valid_sample_decodes(sample: tuple[int, dict[str, Any]]) -> None:
    topic, doc = sample
    decoded = _decode(topic, doc)
    assert not isinstance(decoded, Rejection), (doc, decoded)
    assert decoded.event_id == doc["event_id"]
    assert decoded.user_id == doc["user_id"]


_WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-5, max_value=700).map(float),
    st.text(max_size=140),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(
        [
            "2026-03-01T00:00:00Z",
            "2026-03-01T00:00:00.5+08:00",
            "2026-03-01t00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-01T00:00:60Z",
            "2026-03-01T00:00:00Z\n",
            "1969-12-31T23:59:59Z",
            "x" * 128,
            "x" * 129,
            "x" * 1000,
            "x" * 1001,
            "freeze",
            "restore",
            "payslip",
            "bank_statement",
            "Payslip",
            "y" * 64,
            "y" * 65,
            "",
            1,
            3,
            24,
            2,
            0,
            2**53 - 1,
            2**53,
            600,
            601,
        ]
    ),
)


def _branches(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """The subschemas a field's value may match, with local ``$ref`` resolved."""
    if "$ref" in schema:
        return _branches(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root)
    if "anyOf" in schema:
        return [b for branch in schema["anyOf"] for b in _branches(branch, root)]
    return [schema]


def _variants(schema: dict[str, Any], root: dict[str, Any]) -> list[Any]:
    """Values at and just past the bounds a field's schema states."""
    out: list[Any] = []
    for branch in _branches(schema, root):
        if "maxLength" in branch:
            top = branch["maxLength"]
            out += ["x" * top, "x" * (top + 1), "𝒳" * top, "𝒳" * (top + 1), ""]
        if "minimum" in branch:
            low = branch["minimum"]
            out += [low - 1, low, float(low), low + 1]
        if "maximum" in branch:
            high = branch["maximum"]
            out += [high, high + 1]
        for value in branch.get("enum", []):
            if value is None:
                out += [value]
            elif isinstance(value, str):
                out += [value, value.upper(), f"{value} ", value[:-1], 1]
            else:
                out += [value, value + 1, float(value), True]
    return out


@_fast
@given(_valid_sample(), st.data())
def test_values_at_the_schema_bounds_are_accepted_or_rejected_alike(
    sample: tuple[int, dict[str, Any]], data: st.DataObject
) -> None:
    topic, doc = sample
    properties = SCHEMA_DOCS[topic]["properties"]
    field = data.draw(st.sampled_from(sorted(properties)))
    variants = _variants(properties[field], SCHEMA_DOCS[topic]) or [None, 1.0, "x"]
    _agrees(topic, {**doc, field: data.draw(st.sampled_from(variants))})


@_fast
@given(_valid_sample(), st.data())
def test_mutated_samples_are_accepted_or_rejected_alike(
    sample: tuple[int, dict[str, Any]], data: st.DataObject
) -> None:
    topic, doc = sample
    fields = sorted(SCHEMA_DOCS[topic]["properties"])
    field = data.draw(st.sampled_from(fields))
    mutated = dict(doc)
    if data.draw(st.booleans()):
        mutated.pop(field, None)
    else:
        mutated[field] = data.draw(_WRONG_VALUES)
    assume(_encodable(mutated))
    _agrees(topic, mutated)


@_fast
@given(st.sampled_from(sorted(TOPICS)), st.one_of(st.lists(st.integers()), st.text(), st.none()))
def test_non_objects_are_rejected_by_both(topic: int, doc: object) -> None:
    assume(_encodable(doc))
    _agrees(topic, doc)


_BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])


@_fast
@given(_valid_sample(), _BAD_UTF8, st.booleans())
def test_invalid_utf8_in_an_unknown_field_or_key_is_invalid_json(
    sample: tuple[int, dict[str, Any]], bad: bytes, in_key: bool
) -> None:
    """msgspec skips an unknown field unread; the bytes must still be UTF-8, as for any field."""
    topic, doc = sample
    extra = {"\u0000marker": "x"} if in_key else {"x_extra": "\u0000marker"}
    raw = json.dumps({**doc, **extra}).encode().replace(b"\\u0000marker", bad)
    key = doc["user_id"].encode()
    rejection = decode(topic, key, raw, 1 << 24)
    assert isinstance(rejection, Rejection), raw
    assert rejection.reason is Reason.INVALID_JSON
    assert "invalid UTF-8" in rejection.error


@_fast
@given(
    _valid_sample(),
    st.sampled_from(
        [
            "1970-01-01T00:30:00+01:00",
            "1970-01-01T00:59:59.999999+01:00",
            "1970-01-01T01:00:00+01:00",
            "1970-01-01T00:00:00-23:59",
        ]
    ),
)
def test_an_instant_before_the_epoch_is_rejected_by_both(
    sample: tuple[int, dict[str, Any]], occurred_at: str
) -> None:
    """A 1970 date with a positive offset can still be 1969 in UTC; both sides refuse it."""
    topic, doc = sample
    _agrees(topic, {**doc, "occurred_at": occurred_at})


_REPAYMENT_HEAD = b'{"event_id": "r-1", "user_id": "u-1", "occurred_at": "2026-03-01T00:00:00Z", '


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (b'"amount": 5, "amount": 7', 7),  # the last occurrence counts
        (b'"amount": 7, "order_id": "o-1", "order_id": null', 7),  # null: absent, as if alone
        (b'"amount": 7, "x": 1, "x": [true]', 7),  # repeated unknown keys are ignored
        (b'"amount": 0, "amount": 7', "Expected `int` >= 1 - at `$.amount`"),
        (b'"amount": 7.0, "amount": 7', "Expected `int`, got `float` - at `$.amount`"),
        (b'"amount": "7", "amount": 7', "Expected `int`, got `str` - at `$.amount`"),
        (b'"amount": 7, "order_id": "", "order_id": "o-1"', "length >= 1 - at `$.order_id`"),
        (b'"amount": 7, "occurred_at": 1, "occurred_at": "2026-03-01T00:00:00Z"', "got `int`"),
        (b'"amount": 7, "occurred_at": "soon", "occurred_at": "2026-03-01T00:00:00Z"', 7),
    ],
)
def test_a_repeated_key_the_last_counts_and_each_known_field_is_checked(
    fields: bytes, expected: int | str
) -> None:
    """The rule README's contract section states; a schema validator sees only the last."""
    raw = _REPAYMENT_HEAD + fields + b"}"
    decoded = decode(REPAYMENTS, b"u-1", raw, 1 << 24)
    last = json.loads(raw)  # what a JSON Schema validator is given: the last occurrences
    assert VALIDATORS[REPAYMENTS].is_valid(last)
    if isinstance(expected, int):
        assert isinstance(decoded, Repayment), decoded
        assert (decoded.amount, decoded.order_id) == (expected, last.get("order_id"))
    else:  # stricter than the schema, deliberately: an earlier occurrence was wrong
        assert isinstance(decoded, Rejection)
        assert decoded.reason is Reason.SCHEMA_VIOLATION
        assert expected in decoded.error


def _decoder_bounds() -> dict[str, str]:
    """Each bounded string and non-money integer field of the decoder, as README writes it."""
    bounds: dict[str, str] = {}
    for decoder in _DECODERS:
        info = msgspec.inspect.type_info(decoder.type)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            kind = field.type
            if isinstance(kind, msgspec.inspect.UnionType):
                [kind] = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
            if isinstance(kind, msgspec.inspect.StrType) and kind.max_length is not None:
                assert kind.min_length == 1, field.name  # every string field is non-empty
                bounds[field.name] = f"1 to {kind.max_length:,} characters"
            elif isinstance(kind, msgspec.inspect.IntType) and kind.le not in (None, MAX_MONEY):
                bounds[field.name] = f"{kind.ge} to {kind.le:,}"
    return bounds


def test_readme_lists_every_bound_the_decoder_enforces() -> None:
    """Bounds DESIGN 1 leaves open are deliberate: README's contract section lists them all."""
    readme = (SCHEMAS.parent / "README.md").read_text("utf-8")
    section = readme.split("\n## The contract\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (1 to [0-9,]+(?: characters)?) \|$", section, re.M))
    assert rows == _decoder_bounds()
