"""A seeded forge of hostile input records, each with the outcomes the contract allows.

Valid events for two pools of users are interleaved with records derived from them:
truncated, mutated, wrongly typed, huge numbers, deep nesting, invalid UTF-8, timestamps
far in the past or future, keys that do not match, tombstones and oversized values.

Every valid event falls within :data:`SPAN` before :data:`NOW`, which is shorter than the
allowed lateness, and nothing later than ``NOW + max_future_skew`` is accepted. So no
accepted record, however mangled, can push a user's clock far enough to make a later valid
event late: the valid events must all be processed, whatever noise surrounds them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from risk.clock import DAY, HOUR, MINUTE, format_timestamp, parse_timestamp
from risk.contract import Reason
from risk.policy import load_policy

POLICY: Final = load_policy()
_start = parse_timestamp("2026-01-01T00:00:00Z")
assert isinstance(_start, int)
START: Final = _start
SPAN: Final = 5 * DAY
"""Every valid event falls in [START, NOW]; below allowed_lateness (7 days)."""
NOW: Final = START + SPAN
"""The wall clock of the ``in_future`` check."""

EVENT: Final = "event"
PROCESSED: Final = "processed"
DUPLICATE: Final = "duplicate"
DECODE_REASONS: Final = frozenset(
    {Reason.TOO_LARGE, Reason.INVALID_JSON, Reason.SCHEMA_VIOLATION, Reason.KEY_MISMATCH}
)
ANY_DECODE: Final = frozenset({EVENT, *DECODE_REASONS})
ANY_OUTCOME: Final = frozenset({PROCESSED, DUPLICATE, *Reason})

MONEY_FIELDS: Final = (
    ("amount",),
    ("amount",),
    ("requested_amount", "declared_monthly_income"),
    ("verified_monthly_income",),
    (),
)
"""The integer money fields of each input topic, by topic index."""
SAFE_DEPTH: Final = 400
"""Deepest nesting generated here. Deeper JSON (about 1,000 levels) raises RecursionError in
the decoder: see ``tests/test_fuzz.py::test_json_nested_deeper_than_the_stack_is_rejected``."""


@dataclass(frozen=True, slots=True)
class Fuzzed:
    """One input record and what may become of it.

    ``decoded`` holds what :func:`risk.contract.decode` may return (``"event"`` or a reason);
    ``outcome`` what the core may make of it (``"processed"``, ``"duplicate"`` or a reason).
    """

    kind: str
    topic: int
    key: bytes | None
    value: bytes | None
    decoded: frozenset[str]
    outcome: frozenset[str]


def _stamp(at: int, rng: random.Random) -> str:
    """``at`` as RFC 3339, in UTC or with a random offset (the same instant)."""
    if rng.random() < 0.7:
        return format_timestamp(at)
    minutes = rng.choice([-720, -330, -60, 60, 330, 480, 525, 840])
    local = format_timestamp(at + minutes * MINUTE)[:-1]
    sign = "+" if minutes >= 0 else "-"
    return f"{local}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class Forge:
    """:class:`Fuzzed` records from one ``random.Random``: the same seed, the same records."""

    def __init__(self, rng: random.Random, steady_users: int = 200, target_users: int = 50) -> None:
        self.rng = rng
        self.steady = [f"s-{n}" for n in range(steady_users)]
        self.targets = [f"t-{n}" for n in range(target_users)]
        self._sent: list[Fuzzed] = []
        """Valid steady records, for exact redeliveries."""
        self._applied: list[tuple[int, dict[str, Any]]] = []
        """Valid target events (topic, body): hostile copies of them reuse an applied id."""
        self._copied = False
        self._ids = itertools.count()
        self._hostile: list[Callable[[int, dict[str, Any]], Fuzzed]] = [
            self._truncated, self._mutated, self._wrong_type, self._huge_number,
            self._deep_unknown, self._deep_required, self._non_utf8, self._bad_timestamp,
            self._far_past, self._pre_epoch, self._far_future, self._odd_due_date,
            self._key_mismatch, self._tombstone, self._too_large, self._wrong_shape,
        ]  # fmt: skip

    def corpus(self, count: int) -> Iterator[Fuzzed]:
        """``count`` records: about a third valid, the rest hostile or redelivered."""
        for index in range(count):
            at = START + SPAN * index // max(1, count)
            roll = self.rng.random()
            if roll < 0.25:
                yield self._valid(self.rng.choice(self.steady), at, steady=True)
            elif roll < 0.35:
                yield self._valid(self.rng.choice(self.targets), at, steady=False)
            elif roll < 0.40 and self._sent:
                original = self.rng.choice(self._sent[-500:])
                yield Fuzzed("redelivery", original.topic, original.key, original.value,
                             frozenset({EVENT}), frozenset({DUPLICATE}))  # fmt: skip
            elif roll < 0.45:
                yield self._random_bytes()
            else:
                topic, doc, self._copied = self._target_doc(at)
                yield self.rng.choice(self._hostile)(topic, doc)

    # Valid events ------------------------------------------------------------------

    def _body(self, topic: int, user: str, at: int) -> dict[str, Any]:
        rng = self.rng
        doc: dict[str, Any] = {
            "event_id": f"e{next(self._ids)}-{rng.getrandbits(32):08x}",  # unique, shrunk or not
            "user_id": user,
            "occurred_at": _stamp(at, rng),
        }
        if topic == 0:
            due = at + rng.choice([HOUR, DAY, 2 * DAY, 30 * DAY])
            doc |= {"order_id": f"o-{rng.randrange(8)}", "amount": rng.randint(1, 5_000_000),
                    "installments": rng.choice([1, 3, 6, 9, 12, 24, None]),
                    "first_due_at": rng.choice([None, _stamp(due, rng)]),
                    "merchant_id": rng.choice([None, "m-1"])}  # fmt: skip
        elif topic == 1:
            doc |= {"amount": rng.randint(1, 3_000_000), "order_id": rng.choice([None, "o-1"])}
        elif topic == 2:
            doc |= {"requested_amount": rng.choice([5_000, 100_000, 2_000_000]),
                    "term_months": rng.choice([None, 1, 12, 600]),
                    "declared_monthly_income": rng.choice([None, 0, 300_000]),
                    "channel": rng.choice([None, "line", "other-bank"])}  # fmt: skip
        elif topic == 3:
            sources = ["payslip", "bank_statement", "credit_report", "employer"]
            doc |= {"verified_monthly_income": rng.randint(1, 2_000_000),
                    "source": rng.choice(sources)}  # fmt: skip
        else:
            doc |= {"action": rng.choice(["freeze", "restore"]), "operator": "op-1",
                    "note": "x" * rng.randint(1, 1000)}  # fmt: skip
        if rng.random() < 0.1:
            doc["unknown_field"] = {"nested": [1, 2.5, None, "ü"]}
        return doc

    def _valid(self, user: str, at: int, *, steady: bool) -> Fuzzed:
        topic = self.rng.randrange(5)
        doc = self._body(topic, user, at)
        record = Fuzzed("valid", topic, user.encode(), orjson.dumps(doc), frozenset({EVENT}),
                        frozenset({PROCESSED}))  # fmt: skip
        if steady:
            self._sent.append(record)
        else:
            self._applied = [*self._applied[-499:], (topic, doc)]
        return record

    def _target_doc(self, at: int) -> tuple[int, dict[str, Any], bool]:
        """A target user's event to mangle: a copy of an applied one (its id is then a
        duplicate's), or a new one. A copy keeps its topic, so it comes after the original."""
        if self._applied and self.rng.random() < 0.5:
            topic, doc = self.rng.choice(self._applied)
            return topic, dict(doc), True
        topic = self.rng.randrange(5)
        return topic, self._body(topic, self.rng.choice(self.targets), at), False

    def _accepted(self) -> set[str]:
        """What becomes of a mangled record that still decodes and is not in the future."""
        return {DUPLICATE} if self._copied else {PROCESSED}

    # Hostile records ---------------------------------------------------------------

    @staticmethod
    def _make(
        kind: str, topic: int, key: bytes | None, value: bytes | None, decoded: set[str],
        outcome: set[str] | None = None,
    ) -> Fuzzed:  # fmt: skip
        """A record; ``outcome`` defaults to the decoder's reasons, as for any rejection."""
        return Fuzzed(kind, topic, key, value, frozenset(decoded),
                      frozenset(decoded if outcome is None else outcome))  # fmt: skip

    @staticmethod
    def _key(doc: dict[str, Any]) -> bytes:
        return str(doc["user_id"]).encode()

    def _random_bytes(self) -> Fuzzed:
        raw = self.rng.randbytes(self.rng.randrange(0, 300))
        key = self.rng.choice(self.targets).encode()
        reasons = {Reason.INVALID_JSON, Reason.SCHEMA_VIOLATION}
        return self._make("random_bytes", self.rng.randrange(5), key, raw, reasons)

    def _truncated(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        raw = orjson.dumps(doc)
        # A proper prefix of a JSON object is never valid JSON.
        cut = raw[: self.rng.randrange(len(raw))]
        return self._make("truncated", topic, self._key(doc), cut, {Reason.INVALID_JSON})

    def _mutated(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        raw = bytearray(orjson.dumps(doc))
        for _ in range(self.rng.randint(1, 4)):
            raw[self.rng.randrange(len(raw))] = self.rng.randrange(256)
        return self._make("mutated", topic, self._key(doc), bytes(raw), set(ANY_DECODE),
                          set(ANY_OUTCOME))  # fmt: skip

    def _wrong_type(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        key = self._key(doc)
        name = self.rng.choice(
            [k for k, v in doc.items() if v is not None and k != "unknown_field"]
        )
        current = doc[name]
        if isinstance(current, str):
            options: list[Any] = [17, 1.5, True, ["x"], {"x": 1}]
            if name in ("source", "action"):
                options.append("salary")  # not one of the allowed words
        else:
            options = [str(current), float(current), True, [current], {"n": current}]
            if name == "installments":
                options.append(2)  # not one of 1, 3, 6, 9, 12, 24
        if name in ("event_id", "user_id", "occurred_at", "amount", "order_id") and not (
            name == "order_id" and topic == 1
        ):
            options.append(None)  # null for a required field
        doc[name] = self.rng.choice(options)
        return self._make("wrong_type", topic, key, orjson.dumps(doc), {Reason.SCHEMA_VIOLATION})

    def _huge_number(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        # Overrides carry no money: a huge integer where a word is required.
        fields = MONEY_FIELDS[topic] or ("action",)
        token = self.rng.choice(
            [b"9007199254740992", b"18446744073709551617", b"-9223372036854775809",
             b"1" + b"0" * 400, b"1e400", b"-1e400", b"1E2", b"-1", b"-0.0"]
        )  # fmt: skip
        doc[self.rng.choice(fields)] = "@@HUGE@@"
        raw = orjson.dumps(doc).replace(b'"@@HUGE@@"', token)
        return self._make("huge_number", topic, self._key(doc), raw,
                          {Reason.SCHEMA_VIOLATION, Reason.INVALID_JSON})  # fmt: skip

    def _nest(self, depth: int) -> bytes:
        if self.rng.random() < 0.5:
            return b"[" * depth + b"0" + b"]" * depth
        return b'{"a":' * depth + b"0" + b"}" * depth

    def _deep_unknown(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        doc["deep"] = "@@DEEP@@"
        raw = orjson.dumps(doc).replace(b'"@@DEEP@@"', self._nest(self.rng.randint(1, SAFE_DEPTH)))
        return self._make("deep_unknown", topic, self._key(doc), raw, {EVENT}, self._accepted())

    def _deep_required(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        key = self._key(doc)
        doc["event_id"] = "@@DEEP@@"
        raw = orjson.dumps(doc).replace(b'"@@DEEP@@"', self._nest(self.rng.randint(1, SAFE_DEPTH)))
        return self._make("deep_required", topic, key, raw, {Reason.SCHEMA_VIOLATION})

    def _non_utf8(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        key = self._key(doc)
        doc[self.rng.choice(["event_id", "user_id", "occurred_at"])] = "@@BAD@@"
        bad = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                               b"\xc0\xaf", b"ok\x80"])  # fmt: skip
        raw = orjson.dumps(doc).replace(b"@@BAD@@", bad)
        return self._make("non_utf8", topic, key, raw, {Reason.INVALID_JSON})

    def _bad_timestamp(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        doc["occurred_at"] = self.rng.choice(
            ["2026-01-02t00:00:00Z", "2026-01-02 00:00:00Z", "2026-01-02T00:00:00",
             "2026-01-02T00:00:00z", "2026-02-30T00:00:00Z", "2026-01-02T24:00:00Z",
             "2026-12-31T23:59:60Z", "2026-01-02T00:00:00+24:00", "10000-01-01T00:00:00Z",
             "２０２６-01-02T00:00:00Z", "", "2026-01-02", "1767312000", "now"]
        )  # fmt: skip
        return self._make("bad_timestamp", topic, self._key(doc), orjson.dumps(doc),
                          {Reason.SCHEMA_VIOLATION})  # fmt: skip

    def _far_past(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        # Too late for a user with a clock; the first event of a user without one.
        outcome = {DUPLICATE} if self._copied else {Reason.TOO_LATE, PROCESSED}
        doc["occurred_at"] = format_timestamp(self.rng.randrange(0, START - 8 * DAY))
        return self._make("far_past", topic, self._key(doc), orjson.dumps(doc), {EVENT}, outcome)

    def _pre_epoch(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        year = self.rng.choice([0, 1, 1000, 1900, 1969])
        doc["occurred_at"] = f"{year:04d}-06-01T00:00:00Z"
        return self._make("pre_epoch", topic, self._key(doc), orjson.dumps(doc),
                          {Reason.SCHEMA_VIOLATION})  # fmt: skip

    def _far_future(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        latest = parse_timestamp("9999-12-31T23:59:59.999999Z")
        assert isinstance(latest, int)
        edge = NOW + POLICY.max_future_skew
        at = self.rng.choice([edge + 1, edge + HOUR, edge + 36500 * DAY,
                              self.rng.randrange(edge + 1, latest), latest])  # fmt: skip
        doc["occurred_at"] = format_timestamp(at)
        return self._make("far_future", topic, self._key(doc), orjson.dumps(doc), {EVENT},
                          {Reason.IN_FUTURE})  # fmt: skip

    def _odd_due_date(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        if topic != 0:
            return self._far_future(topic, doc)
        doc["installments"] = 24
        doc["first_due_at"] = self.rng.choice(
            ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-01-31T00:00:00+14:00"]
        )
        return self._make("odd_due_date", topic, self._key(doc), orjson.dumps(doc), {EVENT},
                          self._accepted())  # fmt: skip

    def _key_mismatch(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        user = self._key(doc)
        key = self.rng.choice([None, b"", b"\xff\xfe", user.upper(), user + b" ", b"s-0",
                               user + b"\x00"])  # fmt: skip
        return self._make("key_mismatch", topic, key, orjson.dumps(doc), {Reason.KEY_MISMATCH})

    def _tombstone(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        return self._make("tombstone", topic, self._key(doc), None, {Reason.INVALID_JSON})

    def _too_large(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        doc["padding"] = "x" * (POLICY.max_record_bytes + self.rng.randrange(0, 1000))
        return self._make("too_large", topic, self._key(doc), orjson.dumps(doc),
                          {Reason.TOO_LARGE})  # fmt: skip

    def _wrong_shape(self, topic: int, doc: dict[str, Any]) -> Fuzzed:
        raw = self.rng.choice([b"[]", b"null", b"true", b"17", b'"text"', orjson.dumps([doc])])
        return self._make("wrong_shape", topic, self._key(doc), raw, {Reason.SCHEMA_VIOLATION})
