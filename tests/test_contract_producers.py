"""The contract as producers in other languages meet it: what their mistakes are told.

A dead letter's ``dlt.error`` is all a producer's team sees of lineguard. For the mistakes
other languages' writers make (a .NET or Java byte order mark, a C string's NUL, a
serializer that sends nothing), it must name the mistake, not where msgspec stopped.
"""

from __future__ import annotations

import pytest

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
