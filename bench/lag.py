"""Decision lag: limit event consumed minus causing record produced, at a fixed rate.

Each simulated user sends three small loan applications (≤ ¥1,000) in a row, stamped with
the wall clock; the third one freezes the line at once (``SMALL_LOAN_BURST``), and its
limit event names that application's ``event_id`` in ``caused_by``. A producer paces the
records at the given rate for a bounded time and notes when it handed each third
application to the client; a consumer beside it, in the same process, reads the limit
topic and notes when each freeze arrives. Each run has its own topics and a fresh worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench.harness import (
    PARTITIONS,
    Names,
    Spread,
    Workers,
    create_topics,
    log,
    producer,
    spread,
)
from risk.clock import format_timestamp
from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS

GOAL_P99_SECONDS = 0.100
GOAL_RATE = 5_000
APPLICATIONS_PER_USER = 3
"""The third small application within 24 hours freezes (``rules.small_loan_burst``)."""
TICK_SECONDS = 0.005


@dataclass(frozen=True)
class LagRun:
    """One run at one rate."""

    rate: int
    sent: int
    seconds: float
    expected: int
    received: int
    lags: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class LagResult:
    rate: int
    duration: float
    drain: float
    runs: list[LagRun]

    def spread(self, q: float) -> Spread:
        return spread(run.quantile(q) for run in self.runs)

    @property
    def complete(self) -> bool:
        return all(run.received >= run.expected for run in self.runs)


def application(user: int, seq: int, rate: int, run: int) -> tuple[str, bytes, bytes]:
    """A small loan application stamped with the wall clock: (event id, key, value)."""
    user_id = f"lag{rate}-{run}-u{user:07d}"
    event_id = f"{user_id}-a{seq}"
    value = orjson.dumps(
        {
            "event_id": event_id,
            "user_id": user_id,
            "occurred_at": format_timestamp(time.time_ns() // 1000),
            "requested_amount": 50_000,
            "term_months": 3,
        }
    )
    return event_id, user_id.encode(), value


async def _produce(
    bootstrap: str, topic: str, rate: int, duration: float, run: int, sent_at: dict[str, float]
) -> tuple[int, float]:
    """Pace applications at ``rate`` per second for ``duration`` seconds."""
    sent = 0
    async with producer(bootstrap, linger_ms=1) as client:
        started = time.perf_counter()
        target = int(duration * rate)
        while sent < target:
            elapsed = time.perf_counter() - started
            due = min(int(elapsed * rate), target)
            while sent < due:
                user, seq = divmod(sent, APPLICATIONS_PER_USER)
                event_id, key, value = application(user, seq, rate, run)
                if seq == APPLICATIONS_PER_USER - 1:
                    sent_at[event_id] = time.time()
                await client.send(topic, value, key=key,
                                  partition=partition_for(key, PARTITIONS))  # fmt: skip
                sent += 1
            await asyncio.sleep(TICK_SECONDS)
        await client.flush()
        return sent, time.perf_counter() - started


async def _consume(
    bootstrap: str, topic: str, sent_at: dict[str, float], lags: list[float],
    stop: asyncio.Event,
) -> None:  # fmt: skip
    """Read limit events as they come and match them to their causing applications."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=10)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: set[str] = set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20)
            arrived = time.time()
            for messages in batch.values():
                for message in messages:
                    cause = orjson.loads(message.value)["caused_by"]
                    if cause in sent_at and cause not in seen:  # timers and copies are skipped
                        seen.add(cause)
                        lags.append(arrived - sent_at[cause])
    finally:
        await consumer.stop()


async def lag_run(
    bootstrap: str, workdir: Path, group: Workers, rate: int, run: int, duration: float,
    drain: float,
) -> LagRun:  # fmt: skip
    """One fresh worker and fresh topics; produce for ``duration`` s, wait ≤ ``drain`` s more."""
    names = Names(f"lag{rate}-{run}")
    await create_topics(bootstrap, [*names.inputs, names.limit_events], PARTITIONS)
    slot = group.start(f"lag{rate}-{run}", names.env(bootstrap))
    try:
        await group.wait_ready(slot, 90)
        sent_at: dict[str, float] = {}
        lags: list[float] = []
        stop = asyncio.Event()
        consumer = asyncio.create_task(_consume(bootstrap, names.limit_events, sent_at, lags, stop))
        try:
            topic = names.topic(INPUT_TOPICS[2])  # loan applications
            sent, seconds = await _produce(bootstrap, topic, rate, duration, run, sent_at)
            deadline = time.perf_counter() + drain
            # The consumer task fills ``lags``; polling it ten times a second is plenty here.
            while len(lags) < len(sent_at) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await consumer
        result = LagRun(rate, sent, seconds, len(sent_at), len(lags), lags)
        log(
            f"lag {rate}/s run {run}: sent {sent:,} in {seconds:.1f} s, {len(lags):,} of"
            f" {len(sent_at):,} freezes back; p50 {result.quantile(0.5) * 1000:,.0f} ms,"
            f" p99 {result.quantile(0.99) * 1000:,.0f} ms"
        )
        return result
    finally:
        await group.stop(slot)


async def run(
    bootstrap: str, workdir: Path, *, rates: tuple[int, ...], repeat: int, duration: float,
    drain: float,
) -> list[LagResult]:  # fmt: skip
    results = []
    group = Workers(workdir)
    try:
        for rate in rates:
            runs = [
                await lag_run(bootstrap, workdir, group, rate, attempt, duration, drain)
                for attempt in range(1, repeat + 1)
            ]
            results.append(LagResult(rate, duration, drain, runs))
    finally:
        group.stop_all()
    return results
