"""The cost of a watermark step in the pure core, with 1M users in a dict store.

``PartitionProcessor.advance_watermark`` pops due timers off a heap. The store holds
``users`` states: all but ``repeat`` × ``due`` of them are copies of a user whose first
instalment was bought 10 days after the others' (so its timer is far off); the rest come in
``repeat`` groups of ``due`` copies, each group of a user who bought an hour after the
previous group, so each group's timers share one time. Every copy is decoded from the
template's msgpack bytes, so no two users share a mutable object. After
``PartitionProcessor.recover`` has built the heap:

- a step with no timer due is ``advance_watermark(watermark + 1 µs)``, timed over many calls;
- a step with ``due`` timers due advances to one group's timer time (each run takes the
  next group, so each fires ``due`` timers on fresh users).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import orjson

from bench.harness import Spread, log, spread
from risk.clock import DAY, HOUR, format_timestamp
from risk.contract import PURCHASES, Rejection, decode
from risk.engine import next_timer
from risk.partition import PartitionProcessor
from risk.policy import Policy, load_policy
from risk.state import STATE_DECODER, STATE_ENCODER, UserState

START = 1_772_323_200_000_000
"""2026-03-01T00:00:00Z in epoch microseconds."""
IDLE_CALLS = 100_000


def _purchase_state(policy: Policy, at: int) -> UserState:
    """The state the core builds from one 1-instalment purchase at ``at``."""
    value = orjson.dumps(
        {"event_id": f"t-{at}", "user_id": "template", "occurred_at": format_timestamp(at),
         "order_id": f"o-{at}", "amount": 120_000, "installments": 1}
    )  # fmt: skip
    event = decode(PURCHASES, b"template", value, policy.max_record_bytes)
    assert not isinstance(event, Rejection), event  # noqa: S101 - a fixed, valid record
    store: dict[str, UserState] = {}
    PartitionProcessor(policy, store).handle(event, at + HOUR)
    return store["template"]


@dataclass(frozen=True)
class TimerResult:
    users: int
    due: int
    build_seconds: float
    idle_step: Spread
    """Seconds per step with no timer due."""
    due_step: Spread
    """Seconds per step firing ``due`` timers."""
    fired: list[int]


def run(*, users: int, due: int, repeat: int) -> TimerResult:
    policy = load_policy()
    far = STATE_ENCODER.encode(_purchase_state(policy, START + 10 * DAY))
    groups = [
        STATE_ENCODER.encode(_purchase_state(policy, START + k * HOUR))
        for k in range(1, repeat + 1)
    ]
    log(f"timers: decoding {users:,} user states into a dict store")
    started = time.perf_counter()
    gc.disable()  # a million new objects would trigger full collections over and over
    store: dict[str, UserState] = {}
    decode_state = STATE_DECODER.decode
    for index in range(users):
        group = index // due
        state = decode_state(groups[group] if group < repeat else far)
        state.user_id = f"u-{index:07d}"
        store[state.user_id] = state
    processor = PartitionProcessor(policy, store)
    processor.recover(store.values())
    gc.enable()
    build = time.perf_counter() - started
    log(f"timers: store and heap built in {build:.1f} s ({processor.pending_timers:,} timers)")
    gc.collect()
    gc.freeze()
    idle, fired_steps, fired = [], [], []
    for k in range(repeat):
        watermark = processor.watermark
        assert watermark is not None  # noqa: S101 - recovered states set it
        step = processor.advance_watermark
        started = time.perf_counter()
        for _ in range(IDLE_CALLS):
            step(watermark + 1)
        idle.append((time.perf_counter() - started) / IDLE_CALLS)
        first = store[f"u-{k * due:07d}"]
        timer = next_timer(first, policy)
        assert timer is not None  # noqa: S101 - an unpaid instalment has a timer
        started = time.perf_counter()
        decisions = step(timer[0])
        fired_steps.append(time.perf_counter() - started)
        fired.append(len(decisions))
        log(
            f"timers run {k + 1}: idle step {idle[-1] * 1e6:.2f} µs; step to"
            f" {format_timestamp(timer[0])} took {fired_steps[-1] * 1e3:.1f} ms,"
            f" {len(decisions):,} decisions"
        )
    gc.unfreeze()
    return TimerResult(users, due, build, spread(idle), spread(fired_steps), fired)
