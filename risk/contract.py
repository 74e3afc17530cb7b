"""The input contract: raw Kafka record bytes to typed events, or a rejection.

Checks run in the order of the contract, cheapest and most certain first:
``too_large``, ``invalid_json``, ``schema_violation``, ``key_mismatch``. The
checks that need time or state (``in_future``, duplicates, ``too_late``) are in
:mod:`risk.engine`.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Annotated, Final, Literal, get_args

import msgspec

from risk.clock import DAY, parse_timestamp

MAX_MONEY: Final = 2**53 - 1

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Money = Annotated[int, msgspec.Meta(ge=1, le=MAX_MONEY)]
Income = Annotated[int, msgspec.Meta(ge=0, le=MAX_MONEY)]
TermMonths = Annotated[int, msgspec.Meta(ge=1, le=600)]
Operator = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
Installments = Literal[1, 3, 6, 9, 12, 24]
IncomeSource = Literal["payslip", "bank_statement", "credit_report", "employer"]
OverrideAction = Literal["freeze", "restore"]
_CHOICES: Final = {
    f"`$.{field}`": ", ".join(map(repr, get_args(choices)))
    + (" (case-sensitive)" if isinstance(get_args(choices)[0], str) else "")
    for field, choices in (
        ("installments", Installments),
        ("source", IncomeSource),
        ("action", OverrideAction),
    )
}
"""What an enum field takes, by msgspec's path: its error names only the value it refused."""


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (header ``dlt.reason``)."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    KEY_MISMATCH = "key_mismatch"
    TOO_LATE = "too_late"
    TOO_LARGE = "too_large"
    IN_FUTURE = "in_future"


class Rejection(msgspec.Struct, frozen=True):
    """A record that cannot be applied, with a short human-readable message."""

    reason: Reason
    error: str


# Wire shapes. Timestamps are decoded as text because msgspec's own datetime
# parser is lenient (lowercase ``t``, a space separator); ours is strict.
class _PurchaseWire(msgspec.Struct):
    event_id: EventId
    user_id: UserId
    occurred_at: str
    order_id: Reference
    amount: Money
    installments: Installments | None = None
    first_due_at: str | None = None
    merchant_id: Reference | None = None


class _RepaymentWire(msgspec.Struct):
    event_id: EventId
    user_id: UserId
    occurred_at: str
    amount: Money
    order_id: Reference | None = None


class _LoanApplicationWire(msgspec.Struct):
    event_id: EventId
    user_id: UserId
    occurred_at: str
    requested_amount: Money
    term_months: TermMonths | None = None
    declared_monthly_income: Income | None = None
    channel: Channel | None = None


class _IncomeVerificationWire(msgspec.Struct):
    event_id: EventId
    user_id: UserId
    occurred_at: str
    verified_monthly_income: Money  # a verification proves an income: zero proves nothing
    source: IncomeSource


class _LimitOverrideWire(msgspec.Struct):
    event_id: EventId
    user_id: UserId
    occurred_at: str
    action: OverrideAction
    operator: Operator
    note: Note


class Purchase(msgspec.Struct, frozen=True):
    """A purchase on the line; ``at`` and ``first_due`` are epoch microseconds."""

    event_id: str
    user_id: str
    at: int
    order_id: str
    amount: int
    installments: int
    first_due: int


class Repayment(msgspec.Struct, frozen=True):
    """A repayment, optionally aimed at one order first."""

    event_id: str
    user_id: str
    at: int
    amount: int
    order_id: str | None


class LoanApplication(msgspec.Struct, frozen=True):
    """A loan or credit application; ``declared_monthly_income`` None when not given."""

    event_id: str
    user_id: str
    at: int
    requested_amount: int
    declared_monthly_income: int | None
    channel: str | None = None


class IncomeVerification(msgspec.Struct, frozen=True):
    """Proof of repayment ability: an income the lender has verified from ``source``."""

    event_id: str
    user_id: str
    at: int
    verified_monthly_income: int
    source: str


class LimitOverride(msgspec.Struct, frozen=True):
    """An operator's manual freeze or restore, audited in the limit event it causes."""

    event_id: str
    user_id: str
    at: int
    action: str
    operator: str
    note: str


Event = Purchase | Repayment | LoanApplication | IncomeVerification | LimitOverride

PURCHASES, REPAYMENTS, LOAN_APPLICATIONS, INCOME_VERIFICATIONS, LIMIT_OVERRIDES = range(5)
"""Topic indexes: the order of the contract's topic table, which breaks event-time ties."""

_DECODERS: Final = (
    msgspec.json.Decoder(_PurchaseWire),
    msgspec.json.Decoder(_RepaymentWire),
    msgspec.json.Decoder(_LoanApplicationWire),
    msgspec.json.Decoder(_IncomeVerificationWire),
    msgspec.json.Decoder(_LimitOverrideWire),
)
_OPTIONAL: Final = tuple(
    frozenset(f"`$.{field.name}`" for field in msgspec.structs.fields(wire) if not field.required)
    for wire in (
        _PurchaseWire,
        _RepaymentWire,
        _LoanApplicationWire,
        _IncomeVerificationWire,
        _LimitOverrideWire,
    )
)
"""Each topic's optional fields, by msgspec's path (``order_id`` is one only on repayments)."""
_NO_VALUE: Final = "leave an optional field out, or send null, when it has no value"
_GO_ZERO_TIME: Final = "0001-01-01T00:00:00"
_any_json: Final = msgspec.json.Decoder()
_json_str: Final = msgspec.json.Decoder(str)
_TOO_DEEP: Final = Rejection(
    Reason.INVALID_JSON, "JSON nested deeper than the decoder's recursion limit"
)
"""msgspec raises RecursionError past the interpreter's limit (about 1,000 levels)."""
_DEFAULT_FIRST_DUE: Final = 30 * DAY
_JSON_WHITESPACE: Final = b" \t\r\n"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_PADDING: Final = " \t\r\n\x00"
"""What producers leave around a key: a line's newline, a C string's NUL, stray spaces."""
_ESCAPE: Final = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
"""One escape in a JSON string; scanning from the start pairs each backslash with its escape."""
_DATE_TIME: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
_TIMESTAMP_HINTS: Final = tuple(
    (re.compile(form, re.DOTALL), hint)
    for form, hint in (
        (
            _DATE_TIME + r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?(?:\[.*\])?",
            "the seconds are missing (Java's OffsetDateTime.toString() leaves out :00)",
        ),
        (
            _DATE_TIME + r"(?::[0-9]{2}(?:[.,][0-9]+)?)?",
            "the UTC offset is missing: add Z or ±HH:MM (a local date-time is no instant)",
        ),
        (r".*\[.*\]", "drop the zone name in brackets (Java's ZonedDateTime.toString())"),
        (r".{10}[t ].*", "use an uppercase T between the date and the time"),
        (r".*[0-9]z", "use an uppercase Z"),
        (
            r".*:[0-9]{2}(?:\.[0-9]+)?[+-][0-9]{2}(?:[0-9]{2})?",
            "write the offset as ±HH:MM, with the colon",
        ),
        (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "the time of day and the offset are missing"),
        (r".{19},[0-9]+.*", "use a full stop before the fraction"),
    )
)
"""Common forms of other libraries that are not the contract's, and what to change."""
_LONGEST_HINTED: Final = 100
"""The longest timestamp matched against the hints: a zone name in brackets included, no
real one is longer, and the patterns' ``.*`` would take quadratic time on a string of
megabytes (a policy may allow records of up to 16 MiB), holding up the whole worker."""
_STOPPED_AT: Final = re.compile(r"\(byte ([0-9]+)\)$")
"""Where msgspec's parse stopped, when its message says; a problem before that came first."""


def decode(
    topic_index: int, key: bytes | None, value: bytes | None, max_record_bytes: int
) -> Event | Rejection:
    """Decode one record of input topic ``topic_index`` into an event or a rejection."""
    if value is None:
        return Rejection(Reason.INVALID_JSON, "the record has no value (a tombstone)")
    if len(value) > max_record_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"value of {len(value)} bytes exceeds {max_record_bytes} bytes"
        )
    if not value.isascii():
        # msgspec skips an unknown field without checking its bytes: check them all here,
        # so no later step meets bad UTF-8.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejection(
                Reason.INVALID_JSON, f"invalid UTF-8 at byte {error.start}: {error.reason}"
            )
    try:
        wire = _DECODERS[topic_index].decode(value)
    except msgspec.ValidationError as error:
        return _invalid_json(value) or Rejection(
            Reason.SCHEMA_VIOLATION, _schema_error(topic_index, str(error))
        )
    except msgspec.DecodeError as error:
        return _malformed(value, str(error))
    except RecursionError:
        return _TOO_DEEP
    at = parse_timestamp(wire.occurred_at)
    if isinstance(at, str):
        return _bad_timestamp(at, wire.occurred_at, "occurred_at", optional=False)
    event: Event
    if isinstance(wire, _PurchaseWire):
        first_due = (
            at + _DEFAULT_FIRST_DUE
            if wire.first_due_at is None
            else parse_timestamp(wire.first_due_at)
        )
        if isinstance(first_due, str):
            return _bad_timestamp(first_due, wire.first_due_at or "", "first_due_at", optional=True)
        event = Purchase(
            wire.event_id, wire.user_id, at, wire.order_id, wire.amount,
            wire.installments or 1, first_due,
        )  # fmt: skip
    elif isinstance(wire, _RepaymentWire):
        event = Repayment(wire.event_id, wire.user_id, at, wire.amount, wire.order_id)
    elif isinstance(wire, _LoanApplicationWire):
        event = LoanApplication(
            wire.event_id, wire.user_id, at, wire.requested_amount,
            wire.declared_monthly_income, wire.channel,
        )  # fmt: skip
    elif isinstance(wire, _IncomeVerificationWire):
        event = IncomeVerification(
            wire.event_id, wire.user_id, at, wire.verified_monthly_income, wire.source
        )
    else:
        event = LimitOverride(
            wire.event_id, wire.user_id, at, wire.action, wire.operator, wire.note
        )
    if key is None:
        return Rejection(Reason.KEY_MISMATCH, "the record has no key; it must be the user_id")
    if key != event.user_id.encode():
        return Rejection(Reason.KEY_MISMATCH, _how_the_key_differs(key, event.user_id))
    return event


def _how_the_key_differs(key: bytes, user_id: str) -> str:
    """Say how a record key differs from ``user_id``, for the producer to fix; quote neither.

    Tools print a key and a ``user_id`` that differ by a newline, a quote, the charset or
    the Unicode normal form alike, so "not the user_id" alone leaves the producer guessing.
    """
    if not key:
        return "the record key is empty; it must be the user_id as UTF-8"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            f"the record key is not UTF-8 ({error.reason} at byte {error.start});"
            " it must be the user_id as UTF-8"
        )
    start = text.find(user_id)
    if start >= 0 and not text.replace(user_id, "", 1).strip(_PADDING):
        before, after = text[:start], text[start + len(user_id) :]
        padding = " and ".join(
            f"{where} by {extra!r}"
            if len(extra) <= 4
            else f"{where} by {len(extra)} whitespace or NUL characters"
            for where, extra in (("preceded", before), ("followed", after))
            if extra
        )
        return f"the record key is the user_id {padding}; send the user_id alone"
    if len(text) >= 2 and text[0] == text[-1] == '"' and _json_string(key) == user_id:
        return "the record key is the user_id as a JSON string, in quotes; send it bare"
    if unicodedata.normalize("NFC", text) == unicodedata.normalize("NFC", user_id):
        return (
            "the record key is the user_id in another Unicode normal form (NFC or NFD);"
            " send the user_id's own UTF-8 bytes"
        )
    if text.casefold() == user_id.casefold():
        return "the record key differs from the user_id in letter case only"
    return "the record key is not the event's user_id"


def _json_string(value: bytes) -> str | None:
    """The string a JSON string token holds, or None if ``value`` is not one."""
    try:
        return _json_str.decode(value)
    except msgspec.DecodeError:  # a ValidationError is a DecodeError too
        return None


def _bad_timestamp(error: str, text: str, field: str, *, optional: bool) -> Rejection:
    """A timestamp's rejection, with what to change when it is another library's usual form.

    The pattern alone leaves a producer to spot the difference, and some only show now and
    then: Java's ``OffsetDateTime.toString()`` leaves out the seconds when they are zero.
    """
    if "is not an RFC 3339 timestamp" in error and len(text) <= _LONGEST_HINTED:
        hints = [hint for form, hint in _TIMESTAMP_HINTS if form.fullmatch(text)]
        if hints:
            error = f"{error}: {'; '.join(hints)}"
    elif text.startswith(_GO_ZERO_TIME):
        error = f"{error}: this is Go's zero time.Time, a field never set"
        if optional:
            error = f"{error}; {_NO_VALUE} (a *time.Time can be nil)"
    return Rejection(Reason.SCHEMA_VIOLATION, f"{error} - at `$.{field}`")


def _schema_error(topic_index: int, error: str) -> str:
    """The error msgspec gave, with what the producer should send instead where it can tell.

    An enum field gets its choices, since msgspec names only the value it refused. An
    optional field refused for an empty string or a 0 gets how to say "none": Go's encoder
    writes a field's zero value unless it is tagged ``omitempty``.
    """
    problem, _, path = error.rpartition(" - at ")
    if problem.startswith("Invalid enum value") and path in _CHOICES:
        error = f"{error}; expected one of {_CHOICES[path]}"
    optional = _OPTIONAL[topic_index]
    if path in optional and (problem.endswith(">= 1") or problem == "Invalid enum value 0"):
        error = f"{error}; {_NO_VALUE}"
    return error


def _invalid_json(value: bytes) -> Rejection | None:
    """Tell malformed JSON from a type error that msgspec met before the syntax error."""
    try:
        _any_json.decode(value)
    except msgspec.DecodeError as error:
        return _malformed(value, str(error))
    except RecursionError:
        return _TOO_DEEP
    return None


def _malformed(value: bytes, error: str) -> Rejection:
    """An ``invalid_json`` rejection that names the producer's mistake where msgspec's does not.

    msgspec says where its parse stopped: "Input data was truncated" for an empty value
    and for a lone surrogate escape near the end, "invalid character (byte 0)" for a byte
    order mark, "trailing characters" for the NUL that ends a C string. Each of these is a
    common producer bug with one fix to name.
    """
    if not value.strip(_JSON_WHITESPACE):
        what = "is empty (0 bytes)" if not value else "holds only whitespace"
        return Rejection(Reason.INVALID_JSON, f"the value {what}; it must be a JSON object")
    if value.startswith(_UTF8_BOM):
        return Rejection(
            Reason.INVALID_JSON,
            "the value starts with a UTF-8 byte order mark (EF BB BF); send the JSON without it",
        )
    lone = _lone_surrogate(value)
    stopped = _STOPPED_AT.search(error)
    if lone is not None and (stopped is None or int(stopped[1]) >= lone[0]):
        return Rejection(
            Reason.INVALID_JSON,
            f"a lone UTF-16 surrogate escape {lone[1]} at byte {lone[0]}: strings must be"
            " valid Unicode, in an unknown field too",
        )
    text = value.rstrip(b"\x00")
    if len(text) < len(value) and _parses(text):
        return Rejection(
            Reason.INVALID_JSON,
            f"a NUL byte follows the JSON at byte {len(text)} (a C string's terminator?);"
            " send only the JSON text",
        )
    return Rejection(Reason.INVALID_JSON, error)


def _lone_surrogate(value: bytes) -> tuple[int, str] | None:
    r"""The byte offset and text of the first ``\uXXXX`` escape that is half a surrogate pair.

    JSON's grammar allows one (JavaScript's ``JSON.stringify`` writes it for a string cut
    inside a pair), but it stands for no Unicode character, so no UTF-8 text can hold it.
    """
    if b"\\u" not in value:
        return None
    high: re.Match[bytes] | None = None
    for escape in _ESCAPE.finditer(value):
        code = int(escape[1], 16) if escape[1] else None
        if high is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and escape.start() == high.end():
                high = None
                continue
            break
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = escape
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return escape.start(), escape[0].decode()
    return None if high is None else (high.start(), high[0].decode())


def _parses(value: bytes) -> bool:
    """Whether ``value`` is one JSON text."""
    try:
        _any_json.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True
