"""A seeded synthetic history: many users, time-ordered, with overdues, bursts and bad records."""

from __future__ import annotations

import random
from typing import Any

from risk.clock import DAY, HOUR, MINUTE, format_timestamp, parse_timestamp
from risk.replay import INPUT_TOPICS

PURCHASES, REPAYMENTS, APPLICATIONS, VERIFICATIONS, OVERRIDES = INPUT_TOPICS
START = parse_timestamp("2026-01-01T00:00:00Z")
assert isinstance(START, int)


def synthetic_history(
    users: int, events: int, seed: int, *, graduated: bool = False
) -> list[dict[str, Any]]:
    """``events`` replay lines over ``users`` users and about four months.

    With ``graduated``, some applications name a channel, and income verifications and
    operators' overrides join in; without it, the history is the one the golden
    decisions were made from.
    """
    rng = random.Random(seed)
    step = (120 * DAY) // events
    at = START
    lines: list[dict[str, Any]] = []
    for index in range(events):
        at += rng.randint(0, 2 * step)
        user = f"u-{rng.randrange(users)}"
        stamp = format_timestamp(at + rng.choice([0, 0, 0, -HOUR, -2 * DAY]))
        roll = rng.random()
        event_id = f"{seed}-{index}"
        if roll < 0.004:
            lines.append({"topic": REPAYMENTS, "key": user, "value": "{broken"})
            continue
        if roll < 0.01 and lines:
            lines.append(lines[rng.randrange(max(0, len(lines) - 50), len(lines))])  # redelivery
            continue
        if roll < 0.45:
            value: dict[str, Any] = {
                "order_id": f"o-{rng.randrange(4)}",
                "amount": rng.randint(1_000, 600_000),
                "installments": rng.choice([1, 1, 3, 6]),
                "first_due_at": format_timestamp(at + rng.choice([5 * DAY, 15 * DAY, 30 * DAY])),
            }
            topic = PURCHASES
        elif roll < 0.8:
            value = {"amount": rng.randint(1_000, 700_000)}
            if rng.random() < 0.3:
                value["order_id"] = f"o-{rng.randrange(4)}"
            topic = REPAYMENTS
        elif graduated and roll > 0.96:
            value = {"verified_monthly_income": rng.choice([200_000, 1_500_000]),
                     "source": rng.choice(["payslip", "bank_statement"])}  # fmt: skip
            topic = VERIFICATIONS
        elif graduated and roll > 0.945:
            value = {"action": rng.choice(["freeze", "restore"]), "operator": "op-1",
                     "note": "synthetic review"}  # fmt: skip
            topic = OVERRIDES
        else:
            value = {"requested_amount": rng.choice([20_000, 90_000, 300_000, 2_000_000])}
            if rng.random() < 0.3:
                value["declared_monthly_income"] = rng.choice([0, 300_000, 1_000_000])
            if graduated:
                value["channel"] = rng.choice(["line", "other-bank", None])
            topic = APPLICATIONS
        value = {"event_id": event_id, "user_id": user, "occurred_at": stamp, **value}
        lines.append({"topic": topic, "key": user, "value": value})
        at += rng.choice([0, MINUTE])
    return lines
