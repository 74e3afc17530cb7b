"""A replay that applies records as it reads them decides exactly as one that holds them all."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk.clock import DAY, HOUR, format_timestamp
from risk.policy import load_policy
from risk.replay import InputRecord, ReplayResult, earliest_times, parse_records, replay

from builders import application, override, purchase, repayment, ts, verification

NOW = ts("2030-01-01T00:00:00Z")
UNTIL = ts("2026-12-01T00:00:00Z")
_START = ts("2026-01-01T00:00:00Z")
# Few users, few times and few ids: ties in time, users on every partition, ids met twice.
_USERS = st.sampled_from(["u-1", "u-2", "u-3", "u-4", "u-5"])
_AT = st.builds(
    lambda step, count: format_timestamp(_START + step * count),
    st.sampled_from([0, HOUR, DAY, 3 * DAY]),
    st.integers(min_value=0, max_value=20),
)
_IDS = st.integers(min_value=1, max_value=40).map(lambda n: f"e-{n}")
_TOPICS = st.sampled_from(["credit.purchases.v1", "credit.income-verifications.v1"])


@st.composite
def _line(draw: st.DrawFn) -> dict[str, Any]:
    user, at, event_id = draw(_USERS), draw(_AT), draw(_IDS)
    kind = draw(
        st.sampled_from(
            ["application", "purchase", "repayment", "verification", "override", "invalid"]
        )
    )
    if kind == "application":
        return application(
            at, draw(st.sampled_from([50_000, 500_000])), user=user, event_id=event_id
        )
    if kind == "purchase":
        amount = draw(st.sampled_from([1000, 200_000]))
        return purchase(at, amount, user=user, event_id=event_id, first_due=at)
    if kind == "repayment":
        return repayment(at, draw(st.sampled_from([500, 100_000])), user=user, event_id=event_id)
    if kind == "verification":
        return verification(at, 900_000, user=user, event_id=event_id)
    if kind == "override":
        action = draw(st.sampled_from(["freeze", "restore"]))
        return override(at, action, user=user, event_id=event_id)
    value = draw(
        st.sampled_from(
            [
                {"junk": 1},
                "{not json",
                None,
                {"event_id": event_id, "user_id": "someone-else", "occurred_at": at, "amount": 5},
                {"event_id": event_id, "user_id": user, "occurred_at": "2031-01-01T00:00:00Z",
                 "order_id": "o-9", "amount": 5},
                {"event_id": event_id, "user_id": user, "occurred_at": "yesterday", "amount": 5},
            ]
        )
    )  # fmt: skip
    return {"topic": draw(_TOPICS), "key": user, "value": value}


def _replays(lines: list[bytes], partitions: int) -> tuple[ReplayResult, ReplayResult]:
    def records() -> list[InputRecord]:
        return list(parse_records(lines))

    held = replay(records(), load_policy(), partitions=partitions, until=UNTIL, now=NOW)
    as_read = replay(
        iter(records()), load_policy(), partitions=partitions, until=UNTIL, now=NOW,
        earliest=earliest_times(records(), partitions),
    )  # fmt: skip
    return held, as_read


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_line(), min_size=1, max_size=60), st.sampled_from([1, 2, 3]))
def test_as_read_gives_what_holding_gives(book: list[dict[str, Any]], partitions: int) -> None:
    held, as_read = _replays([orjson.dumps(line) for line in book], partitions)
    assert [d.to_json(0) for d in as_read.decisions] == [d.to_json(0) for d in held.decisions]
    # Rejected records are taken at once, so two on different topics may swap places.
    assert sorted(as_read.dead_letters, key=lambda letter: letter["line"]) == sorted(
        held.dead_letters, key=lambda letter: letter["line"]
    )
    assert (as_read.records, as_read.processed, as_read.duplicates) == (
        held.records,
        held.processed,
        held.duplicates,
    )
