"""The core-only figures for ``make bench``: ``bench.core``'s input and stages, median of N.

``python -m bench.core`` reports the best of its runs with a profile; ``make bench`` wants the
median, min and max, on a batch small enough for its time budget, so this module calls the
same generator and stage functions and times each run itself. The process is pinned to one
CPU while it measures (as ``bench.core`` does), and unpinned afterwards so that the worker
processes started later may use every CPU.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench import core
from bench.harness import Spread, log, spread
from risk.policy import load_policy

GOAL = core.GOAL
T = TypeVar("T")


@dataclass(frozen=True)
class CoreResult:
    records: int
    users: int
    seed: int
    pinning: str
    ceiling: Spread
    decode: Spread
    full: Spread
    """events/s of each stage."""
    processed: int
    duplicates: int
    dead_letters: int
    decisions: int


def _rates(records: int, repeat: int, label: str, stage: Callable[[], T]) -> tuple[Spread, T]:
    rates = []
    result: list[T] = []
    for attempt in range(1, repeat + 1):
        result.clear()  # drop the previous run's state before this run builds its own
        gc.collect()
        started = time.perf_counter()
        result.append(stage())
        seconds = time.perf_counter() - started
        rates.append(records / seconds)
        log(f"core {label} run {attempt}: {records / seconds:,.0f} events/s")
    return spread(rates), result[0]


def run(*, records: int, users: int, repeat: int, seed: int = 20260301) -> CoreResult:
    policy = load_policy()
    log(f"core: generating {records:,} records for {users:,} users")
    generated, _ = core.generate(records, users, seed)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinning = core.pin_to_one_cpu()
    try:
        ceiling, _ = _rates(records, repeat, "orjson.loads", lambda: core.ceiling(generated))
        decode, _ = _rates(records, repeat, "decode", lambda: core.decode_only(generated, policy))
        full, counted = _rates(
            records, repeat, "full core", lambda: core.full_core(generated, policy)
        )
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)
    return CoreResult(
        records, users, seed, pinning, ceiling, decode, full, counted.processed,
        counted.duplicates, sum(counted.dead_letters.values()), sum(counted.decisions.values()),
    )  # fmt: skip
