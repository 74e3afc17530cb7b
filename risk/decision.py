"""Limit events: the decisions lineguard emits, and their wire form."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

import msgspec
import orjson

from risk.clock import format_timestamp

FREEZE: Final = "limit.freeze"
REDUCE: Final = "limit.reduce"
RESTORE: Final = "limit.restore"
LIMIT_FRACTIONS: Final = {"active": 1.0, "reduced": 0.5, "probation": 0.5, "frozen": 0.0}
"""The share of the credit limit each status leaves usable."""


def uuid5_url(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without building a ``UUID`` object."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_URL + name.encode()).digest()[:16])  # noqa: S324 - uuid5 is SHA-1
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_NAMESPACE_URL: Final = uuid.NAMESPACE_URL.bytes


class ReasonCode(msgspec.Struct, frozen=True):
    """One reason of a decision: the measured value against the policy threshold."""

    code: str
    value: int | float
    threshold: int | float
    message: str


class Decision(msgspec.Struct, frozen=True, gc=False):
    """A freeze, reduce or restore, complete but for ``decided_at``, which is wall-clock time."""

    type: str
    status: str
    user_id: str
    occurred_at: int
    caused_by: str
    reasons: tuple[ReasonCode, ...]
    features: dict[str, Any]
    restore_path: tuple[str, ...]
    policy_version: str

    @property
    def event_id(self) -> str:
        """Deterministic id, so consumers can deduplicate a decision re-emitted after a crash."""
        return uuid5_url(
            f"lineguard:{self.user_id}:{self.type}:{self.caused_by}:{self.policy_version}"
        )

    def to_json(self, decided_at: int) -> bytes:
        """The record value on ``credit.limit-events.v1``, fields in the contract's order."""
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "type": self.type,
                "status": self.status,
                "limit_fraction": LIMIT_FRACTIONS[self.status],
                "user_id": self.user_id,
                "occurred_at": format_timestamp(self.occurred_at),
                "decided_at": format_timestamp(decided_at),
                "caused_by": self.caused_by,
                "reasons": [
                    {
                        "code": r.code,
                        "value": r.value,
                        "threshold": r.threshold,
                        "message": r.message,
                    }
                    for r in self.reasons
                ],
                "features": self.features,
                "restore_path": list(self.restore_path),
                "policy_version": self.policy_version,
            }
        )
