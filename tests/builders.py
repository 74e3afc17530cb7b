"""Builders for replay input lines and a helper to run the core over them."""

from __future__ import annotations

import itertools
import tomllib
from importlib import resources
from typing import Any

import orjson

from risk.clock import parse_timestamp
from risk.contract import Event, Rejection, decode
from risk.policy import Policy, load_policy, policy_from_mapping
from risk.replay import INPUT_TOPICS, ReplayResult, parse_records, replay

PURCHASES, REPAYMENTS, APPLICATIONS, VERIFICATIONS, OVERRIDES = INPUT_TOPICS
NOW = "2030-01-01T00:00:00Z"
_ids = itertools.count(1)


def ts(text: str) -> int:
    parsed = parse_timestamp(text)
    assert isinstance(parsed, int), parsed
    return parsed


def _record(topic: str, user: str, body: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    value = {"event_id": event_id or f"e-{next(_ids)}", "user_id": user, **body}
    return {"topic": topic, "key": user, "value": value}


def purchase(
    at: str,
    amount: int,
    *,
    user: str = "u-1",
    order: str = "o-1",
    installments: int | None = None,
    first_due: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"occurred_at": at, "order_id": order, "amount": amount}
    if installments is not None:
        body["installments"] = installments
    if first_due is not None:
        body["first_due_at"] = first_due
    return _record(PURCHASES, user, body, event_id)


def repayment(
    at: str,
    amount: int,
    *,
    user: str = "u-1",
    order: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"occurred_at": at, "amount": amount}
    if order is not None:
        body["order_id"] = order
    return _record(REPAYMENTS, user, body, event_id)


def application(
    at: str,
    requested: int = 500_000,
    *,
    user: str = "u-1",
    income: int | None = None,
    channel: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"occurred_at": at, "requested_amount": requested}
    if income is not None:
        body["declared_monthly_income"] = income
    if channel is not None:
        body["channel"] = channel
    return _record(APPLICATIONS, user, body, event_id)


def verification(
    at: str,
    income: int,
    *,
    user: str = "u-1",
    source: str = "payslip",
    event_id: str | None = None,
) -> dict[str, Any]:
    body = {"occurred_at": at, "verified_monthly_income": income, "source": source}
    return _record(VERIFICATIONS, user, body, event_id)


def override(
    at: str,
    action: str,
    *,
    user: str = "u-1",
    operator: str = "op-7",
    note: str = "customer called",
    event_id: str | None = None,
) -> dict[str, Any]:
    body = {"occurred_at": at, "action": action, "operator": operator, "note": note}
    return _record(OVERRIDES, user, body, event_id)


def policy_with(changes: dict[str, dict[str, Any]], *, version: str | None = None) -> Policy:
    """The default policy with some tables' fields changed (one level deep per table path).

    ``version``, if given, replaces the policy's version, as a candidate policy would.
    """
    text = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
    raw = tomllib.loads(text)
    if version is not None:
        raw["version"] = version
    for path, fields in changes.items():
        table = raw
        for part in path.split("."):
            table = table.setdefault(part, {})
        table.update(fields)
    return policy_from_mapping(raw)


def decoded(lines: list[dict[str, Any]]) -> list[Event]:
    """The events of ``lines``, decoded as the worker decodes records; none may be rejected."""
    events: list[Event] = []
    for record in parse_records([orjson.dumps(line) for line in lines]):
        event = decode(INPUT_TOPICS.index(record.topic), record.key, record.value, 65536)
        assert not isinstance(event, Rejection), event
        events.append(event)
    return events


def run(
    lines: list[dict[str, Any]],
    *,
    until: str | None = None,
    partitions: int = 1,
    policy: Policy | None = None,
    now: str = NOW,
) -> ReplayResult:
    raw = [orjson.dumps(line) for line in lines]
    return replay(
        list(parse_records(raw)),
        policy or load_policy(),
        partitions=partitions,
        until=None if until is None else ts(until),
        now=ts(now),
    )


def decisions(result: ReplayResult) -> list[dict[str, Any]]:
    """Decisions as they appear on the topic, without the wall-clock ``decided_at``."""
    out = []
    for decision in result.decisions:
        doc = orjson.loads(decision.to_json(0))
        del doc["decided_at"]
        out.append(doc)
    return out


def summary(result: ReplayResult) -> list[tuple[str, str, str, list[str]]]:
    """(type, occurred_at, caused_by, reason codes) per decision: the hand-checked essentials."""
    return [
        (d["type"], d["occurred_at"], d["caused_by"], [r["code"] for r in d["reasons"]])
        for d in decisions(result)
    ]
