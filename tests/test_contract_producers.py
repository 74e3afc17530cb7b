"""The contract as producers in other languages meet it: what their mistakes are told.

A dead letter's ``dlt.error`` is all a producer's team sees of lineguard. For the mistakes
other languages' writers make (a .NET or Java byte order mark, a C string's NUL, a
serializer that sends nothing, JavaScript's lone surrogate escape, a key in another charset,
quoted or with a newline), it must name the mistake, not where msgspec stopped or only that
the key is not the user id.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import msgspec
import pytest
from test_contract_agreement import VALIDATORS

from risk.clock import format_timestamp, monthly, parse_timestamp
from risk.contract import (
    _CHOICES,
    _DECODERS,
    _OPTIONAL,
    INCOME_VERIFICATIONS,
    LIMIT_OVERRIDES,
    LOAN_APPLICATIONS,
    PURCHASES,
    REPAYMENTS,
    Reason,
    Rejection,
    Repayment,
    decode,
)

from builders import application, decisions, purchase, repayment, run

GOOD = b'{"event_id":"r-1","user_id":"u-1","occurred_at":"2026-03-01T00:00:00Z","amount":100}'


def _rejection(value: bytes, key: bytes | None = b"u-1") -> Rejection:
    rejection = decode(REPAYMENTS, key, value, 1 << 16)
    assert isinstance(rejection, Rejection), value
    return rejection


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"", "the value is empty (0 bytes); it must be a JSON object"),
        (b" \r\n", "the value holds only whitespace; it must be a JSON object"),
        (
            b"\xef\xbb\xbf" + GOOD,
            "the value starts with a UTF-8 byte order mark (EF BB BF); send the JSON without it",
        ),
        (
            GOOD + b"\x00",
            f"a NUL byte follows the JSON at byte {len(GOOD)} (a C string's terminator?);"
            " send only the JSON text",
        ),
        (
            GOOD + b"\n\x00\x00",
            f"a NUL byte follows the JSON at byte {len(GOOD) + 1} (a C string's terminator?);"
            " send only the JSON text",
        ),
        (  # a wrongly typed field before the NUL: the NUL is still what makes it invalid JSON
            GOOD.replace(b"100", b"1.5") + b"\x00",
            f"a NUL byte follows the JSON at byte {len(GOOD)} (a C string's terminator?);"
            " send only the JSON text",
        ),
    ],
)
def test_a_producer_framing_mistake_is_named_in_the_error(value: bytes, error: str) -> None:
    assert _rejection(value) == Rejection(Reason.INVALID_JSON, error)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (GOOD + b"x\x00", "JSON is malformed: trailing characters (byte 85)"),
        (b"\x00", "JSON is malformed: invalid character (byte 0)"),
        (b'{"event_id": "r-1", "amount": 1', "Input data was truncated"),
    ],
)
def test_other_malformed_json_keeps_the_decoders_own_message(value: bytes, error: str) -> None:
    """Only a NUL after a whole JSON text is called one; truncated JSON is still truncated."""
    assert _rejection(value) == Rejection(Reason.INVALID_JSON, error)


@pytest.mark.parametrize(
    ("tail", "escape"),
    [
        (b',"device":"\\ud83d"}', "\\ud83d"),  # JSON.stringify of a string cut inside a pair
        (b',"device":"\\ude00"}', "\\ude00"),
        (b',"device":"\\ud83d\\n"}', "\\ud83d"),
        (b',"device":"\\uD83D\\u0041"}', "\\uD83D"),
        (b',"order_id":"\\ud83d"}', "\\ud83d"),
        (b',"device":"\\ud83dabcdefgh","more":1}', "\\ud83d"),
    ],
)
def test_a_lone_surrogate_escape_is_named_with_its_offset(tail: bytes, escape: str) -> None:
    """Valid to JSON's grammar and to a schema validator, but no Unicode: say so, not 'truncated'."""
    value = GOOD[:-1] + tail
    parsed = json.loads(value)  # what a validator in Python, Java or JavaScript is given
    assert VALIDATORS[REPAYMENTS].is_valid(parsed)
    offset = len(GOOD[:-1]) + tail.index(b"\\u")
    assert _rejection(value) == Rejection(
        Reason.INVALID_JSON,
        f"a lone UTF-16 surrogate escape {escape} at byte {offset}: strings must be valid"
        " Unicode, in an unknown field too",
    )


@pytest.mark.parametrize(
    "tail",
    [b',"device":"\\ud83d\\ude00"}', b',"device":"\\\\ud83d"}', b',"device":"\\\\\\ud83d\\ude00"}'],
)
def test_a_surrogate_pair_and_an_escaped_backslash_are_accepted(tail: bytes) -> None:
    assert not isinstance(decode(REPAYMENTS, b"u-1", GOOD[:-1] + tail, 1 << 16), Rejection)


def test_an_earlier_syntax_error_is_reported_before_a_lone_surrogate() -> None:
    value = GOOD[:-1] + b'x,"device":"\\ud83d"}'
    assert (
        _rejection(value).error == f"JSON is malformed: expected ',' or '}}' (byte {len(GOOD) - 1})"
    )


def test_the_contract_documents_say_a_lone_surrogate_is_rejected() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text("utf-8").split("\n## The contract\n", 1)[1]
    assert "lone UTF-16 surrogate" in readme.split("\n## ", 1)[0]
    assert "lone UTF-16 surrogate" in (root / "schemas" / "README.md").read_text("utf-8")
    for topic, validator in VALIDATORS.items():
        assert "lone UTF-16 surrogate" in validator.schema["description"], topic


def _value(user_id: str) -> bytes:
    return GOOD.replace(b'"u-1"', json.dumps(user_id, ensure_ascii=False).encode())


_CHINESE = "用户-1"
_NFC = "u-\u00e9"


@pytest.mark.parametrize(
    ("user_id", "key", "error"),
    [
        ("u-1", b"", "the record key is empty; it must be the user_id as UTF-8"),
        (  # a Java producer's String.getBytes() on a Windows host in China
            _CHINESE,
            _CHINESE.encode("gbk"),
            "the record key is not UTF-8 (invalid continuation byte at byte 0);"
            " it must be the user_id as UTF-8",
        ),
        (
            "u-1",
            b"u-1\n",
            "the record key is the user_id followed by '\\n'; send the user_id alone",
        ),
        (
            "u-1",
            b"u-1\x00",
            "the record key is the user_id followed by '\\x00'; send the user_id alone",
        ),
        (
            "u-1",
            b" u-1\r\n",
            "the record key is the user_id preceded by ' ' and followed by '\\r\\n';"
            " send the user_id alone",
        ),
        (  # a JSON key serializer
            "u-1",
            b'"u-1"',
            "the record key is the user_id as a JSON string, in quotes; send it bare",
        ),
        (
            _NFC,
            b'"u-\\u00e9"',
            "the record key is the user_id as a JSON string, in quotes; send it bare",
        ),
        ("u-1", b"U-1", "the record key differs from the user_id in letter case only"),
        (
            _NFC,
            unicodedata.normalize("NFD", _NFC).encode(),
            "the record key is the user_id in another Unicode normal form (NFC or NFD);"
            " send the user_id's own UTF-8 bytes",
        ),
        ("u-1", b"u-2", "the record key is not the event's user_id"),
        ("u-1", b'"u-2"', "the record key is not the event's user_id"),
        ("u-1", b"u-1u-1", "the record key is not the event's user_id"),
        ("u-1", b"x u-1", "the record key is not the event's user_id"),
    ],
)
def test_a_key_mismatch_says_how_the_key_differs(user_id: str, key: bytes, error: str) -> None:
    """Each is a key_mismatch still (DESIGN 1: the key must equal user_id); the error says why."""
    assert _rejection(_value(user_id), key) == Rejection(Reason.KEY_MISMATCH, error)


def test_a_key_mismatch_error_stays_short_however_long_the_padding() -> None:
    """dlt.error keeps 500 characters; replay's error must be the same text, so stay below."""
    rejection = _rejection(_value("u-1"), b"\t u-1" + b" " * 5000)
    assert rejection.error == (
        "the record key is the user_id preceded by '\\t ' and followed by 5000 whitespace or"
        " NUL characters; send the user_id alone"
    )


def test_the_key_mismatch_error_quotes_no_user_id() -> None:
    """A user id is personal data: the error describes the difference, never the id."""
    for key in (b"pii-7\n", b'"pii-7"', b"PII-7", b"pii-8"):
        assert "pii" not in _rejection(_value("pii-7"), key).error.casefold()


def test_the_key_that_is_the_user_id_is_accepted() -> None:
    for user_id in ("u-1", _CHINESE, _NFC, "a b"):
        assert not isinstance(
            decode(REPAYMENTS, user_id.encode(), _value(user_id), 1 << 16), Rejection
        )


@pytest.mark.parametrize("topic", sorted(VALIDATORS))
def test_each_input_schema_says_a_fraction_past_microseconds_is_truncated(topic: int) -> None:
    """Java prints nanoseconds; the schema must say what lineguard makes of them, as README does."""
    described = VALIDATORS[topic].schema["$defs"]["timestamp"]["description"]
    assert "truncated, never rounded, so .123456789 is read as .123456" in described
    nanos = GOOD.replace(b"00:00:00Z", b"00:00:00.123456789Z")
    micros = GOOD.replace(b"00:00:00Z", b"00:00:00.123456Z")
    decoded, expected = (decode(REPAYMENTS, b"u-1", v, 1 << 16) for v in (nanos, micros))
    assert isinstance(decoded, Repayment) and decoded == expected


@pytest.mark.parametrize(
    ("first_due_at", "due"),
    [
        (
            "2026-03-01T00:00:00+08:00",
            ["2026-02-28T16:00:00Z", "2026-03-28T16:00:00Z", "2026-04-28T16:00:00Z"],
        ),
        (
            "2026-03-01T23:59:59+08:00",
            ["2026-03-01T15:59:59Z", "2026-04-01T15:59:59Z", "2026-05-01T15:59:59Z"],
        ),
    ],
)
def test_the_utc_month_examples_of_the_schema_and_readme_hold(
    first_due_at: str, due: list[str]
) -> None:
    """A producer at +08:00 reads these examples to learn which day its instalments fall due."""
    first = parse_timestamp(first_due_at)
    assert isinstance(first, int)
    assert [format_timestamp(at) for at in monthly(first, 3)] == due
    purchase = VALIDATORS[PURCHASES].schema["properties"]["first_due_at"]["description"]
    assert f"{first_due_at} is {due[0]}" in purchase or f"{first_due_at} gives" in purchase
    assert all(at in purchase for at in due[1:])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    assert f"`{first_due_at}`" in readme


_HEAD = {"event_id": "e-1", "user_id": "u-1", "occurred_at": "2026-03-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("topic", "doc", "error"),
    [
        (  # a Java enum's name()
            INCOME_VERIFICATIONS,
            {**_HEAD, "verified_monthly_income": 1, "source": "PAYSLIP"},
            "Invalid enum value 'PAYSLIP' - at `$.source`; expected one of 'payslip',"
            " 'bank_statement', 'credit_report', 'employer' (case-sensitive)",
        ),
        (
            LIMIT_OVERRIDES,
            {**_HEAD, "action": "Freeze", "operator": "op", "note": "n"},
            "Invalid enum value 'Freeze' - at `$.action`; expected one of 'freeze', 'restore'"
            " (case-sensitive)",
        ),
        (
            PURCHASES,
            {**_HEAD, "order_id": "o-1", "amount": 1, "installments": 4},
            "Invalid enum value 4 - at `$.installments`; expected one of 1, 3, 6, 9, 12, 24",
        ),
    ],
)
def test_an_enum_field_refused_says_what_it_takes(
    topic: int, doc: dict[str, object], error: str
) -> None:
    """msgspec names only the value it refused; the producer needs the list."""
    assert decode(topic, b"u-1", json.dumps(doc).encode(), 1 << 16) == Rejection(
        Reason.SCHEMA_VIOLATION, error
    )


def test_every_enum_field_of_the_decoder_lists_the_schemas_choices() -> None:
    """A new enum field without its list of choices, or a list out of step, fails here."""
    listed = 0
    for topic, decoder in enumerate(_DECODERS):
        info = msgspec.inspect.type_info(decoder.type)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            kinds = getattr(field.type, "types", (field.type,))
            if not any(isinstance(kind, msgspec.inspect.LiteralType) for kind in kinds):
                continue
            enum = VALIDATORS[topic].schema["properties"][field.name]["enum"]
            choices = ", ".join(repr(choice) for choice in enum if choice is not None)
            assert _CHOICES[f"`$.{field.name}`"].removesuffix(" (case-sensitive)") == choices
            listed += 1
    assert listed == len(_CHOICES) == 3


_NOT_RFC3339 = "is not an RFC 3339 timestamp YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)"
_NO_SECONDS = "the seconds are missing (Java's OffsetDateTime.toString() leaves out :00)"
_NO_OFFSET = "the UTC offset is missing: add Z or ±HH:MM (a local date-time is no instant)"
_SPACE = "use an uppercase T between the date and the time"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("2026-03-01T08:00+08:00", _NO_SECONDS),  # OffsetDateTime.toString() at hh:mm:00
        (
            "2026-03-01T08:00:00+08:00[Asia/Shanghai]",
            "drop the zone name in brackets (Java's ZonedDateTime.toString())",
        ),
        ("2026-03-01T08:00:00.123456", _NO_OFFSET),  # Python's naive isoformat()
        ("2026-03-01T08:00", f"{_NO_SECONDS}; {_NO_OFFSET}"),  # LocalDateTime.toString()
        ("2026-03-01 08:00:00+00:00", _SPACE),  # Python's str(datetime)
        ("2026-03-01t08:00:00Z", _SPACE),
        ("2026-03-01T08:00:00z", "use an uppercase Z"),
        ("2026-03-01T08:00:00+0800", "write the offset as ±HH:MM, with the colon"),
        ("2026-03-01T08:00:00.5-08", "write the offset as ±HH:MM, with the colon"),
        ("2026-03-01T08:00:00,5Z", "use a full stop before the fraction"),
        ("2026-03-01", "the time of day and the offset are missing"),
    ],
)
@pytest.mark.parametrize("field", ["occurred_at", "first_due_at"])
def test_a_timestamp_in_another_librarys_form_says_what_to_change(
    text: str, hint: str, field: str
) -> None:
    doc = {**_HEAD, "order_id": "o-1", "amount": 1, field: text}
    assert decode(PURCHASES, b"u-1", json.dumps(doc).encode(), 1 << 16) == Rejection(
        Reason.SCHEMA_VIOLATION, f"{text!r} {_NOT_RFC3339}: {hint} - at `$.{field}`"
    )


def test_a_timestamp_too_long_to_be_one_gets_no_hint() -> None:
    # The hints' patterns take quadratic time; a 64 KiB timestamp held the worker a second.
    text = "2026-03-01T08:00:00+08:00[" + "A" * 100 + "]"
    doc = {**_HEAD, "amount": 1, "occurred_at": text}
    rejection = decode(REPAYMENTS, b"u-1", json.dumps(doc).encode(), 1 << 16)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == Reason.SCHEMA_VIOLATION
    assert rejection.error.endswith(f"{_NOT_RFC3339} - at `$.occurred_at`")  # no hint after it


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("garbage", f"'garbage' {_NOT_RFC3339}"),
        ("1772323200", f"'1772323200' {_NOT_RFC3339}"),
        ("2026-03-01T08:00:00.Z", f"'2026-03-01T08:00:00.Z' {_NOT_RFC3339}"),
        ("2026-02-30T08:00:00Z", "'2026-02-30T08:00:00Z': no such date"),
    ],
)
def test_other_bad_timestamps_keep_their_message(text: str, error: str) -> None:
    doc = {**_HEAD, "amount": 1, "occurred_at": text}
    rejection = decode(REPAYMENTS, b"u-1", json.dumps(doc).encode(), 1 << 16)
    assert rejection == Rejection(Reason.SCHEMA_VIOLATION, f"{error} - at `$.occurred_at`")


def test_an_event_id_is_deduplicated_across_topics_and_the_contract_says_so() -> None:
    """Two services' counters collide; the published contract must warn their authors."""
    result = run(
        [
            purchase(
                "2026-02-01T00:00:00Z", 35_000, event_id="1001", first_due="2026-03-01T00:00:00Z"
            ),
            repayment("2026-02-20T00:00:00Z", 35_000, event_id="1001"),
            application("2026-03-10T00:00:00Z", 500_000),
        ]
    )
    assert (result.processed, result.duplicates) == (2, 1)  # the repayment was not applied
    assert [d["reasons"][0]["code"] for d in decisions(result)] == ["OVERDUE_ACTIVE"]
    for topic, validator in VALIDATORS.items():
        for where in (validator.schema["properties"], validator.schema["$defs"]):
            assert "across all the input topics" in where["event_id"]["description"], topic
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text("utf-8").split("\n## The contract\n", 1)[1]
    assert "across all the input topics, not per topic" in readme.split("\n## ", 1)[0]


_NONE = "leave an optional field out, or send null, when it has no value"
_GO_ZERO = "'0001-01-01T00:00:00Z': years before 1970 are not accepted: this is Go's zero time.Time"


@pytest.mark.parametrize(
    ("topic", "change", "error"),
    [  # a Go struct field without omitempty sends its zero value: "", 0 or the zero time
        (
            LOAN_APPLICATIONS,
            {"channel": ""},
            f"Expected `str` of length >= 1 - at `$.channel`; {_NONE}",
        ),
        (
            LOAN_APPLICATIONS,
            {"term_months": 0},
            f"Expected `int` >= 1 - at `$.term_months`; {_NONE}",
        ),
        (
            PURCHASES,
            {"merchant_id": ""},
            f"Expected `str` of length >= 1 - at `$.merchant_id`; {_NONE}",
        ),
        (
            PURCHASES,
            {"installments": 0},
            f"Invalid enum value 0 - at `$.installments`; expected one of 1, 3, 6, 9, 12, 24; {_NONE}",
        ),
        (REPAYMENTS, {"order_id": ""}, f"Expected `str` of length >= 1 - at `$.order_id`; {_NONE}"),
        (
            PURCHASES,
            {"first_due_at": "0001-01-01T00:00:00Z"},
            f"{_GO_ZERO}, a field never set; {_NONE} (a *time.Time can be nil) - at `$.first_due_at`",
        ),
        # required fields: there is no leaving them out
        (PURCHASES, {"order_id": ""}, "Expected `str` of length >= 1 - at `$.order_id`"),
        (REPAYMENTS, {"amount": 0}, "Expected `int` >= 1 - at `$.amount`"),
        (
            REPAYMENTS,
            {"occurred_at": "0001-01-01T00:00:00Z"},
            f"{_GO_ZERO}, a field never set - at `$.occurred_at`",
        ),
    ],
)
def test_a_zero_value_says_how_to_send_none(
    topic: int, change: dict[str, object], error: str
) -> None:
    base = {
        PURCHASES: {"order_id": "o-1", "amount": 1},
        REPAYMENTS: {"amount": 1},
        LOAN_APPLICATIONS: {"requested_amount": 1},
    }[topic]
    doc = {**_HEAD, **base, **change}
    assert decode(topic, b"u-1", json.dumps(doc).encode(), 1 << 16) == Rejection(
        Reason.SCHEMA_VIOLATION, error
    )


def test_the_optional_fields_the_errors_name_are_the_schemas() -> None:
    for topic, validator in VALIDATORS.items():
        schema = validator.schema
        optional = set(schema["properties"]) - set(schema["required"])
        assert _OPTIONAL[topic] == {f"`$.{name}`" for name in optional}, topic
