"""The contract as producers in other languages meet it: what their mistakes are told.

A dead letter's ``dlt.error`` is all a producer's team sees of lineguard. For the mistakes
other languages' writers make (a .NET or Java byte order mark, a C string's NUL, a
serializer that sends nothing, JavaScript's lone surrogate escape), it must name the
mistake, not where msgspec stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_contract_agreement import VALIDATORS

from risk.contract import REPAYMENTS, Reason, Rejection, decode

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
