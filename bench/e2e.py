"""Worker end to end on the embedded broker, against a raw consumer baseline.

N persona records (``bench.core``'s generator: purchases, repayments, loan applications,
1% invalid, 0.5% duplicates) are preloaded into the five input topics, keyed by user id and
partitioned with ``risk.partitioner``. Each run then starts one fresh worker (its own
consumer group and output topic, ``memory://`` store, at-least-once) and times it from the
``/readyz`` 200 response until every input offset is committed for its group, or until the
time bound. The clock stops at that commit. Afterwards, once the worker has stopped, a run
that committed everything has its output topic read back and compared, decision for
decision (``decided_at`` aside), with what ``risk.replay`` makes of the same records: a
figure counts only if nothing is lost, nothing unexpected and nothing different. The
baseline is an aiokafka consumer reading the same topics with ``orjson.loads`` of every
value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench import core
from bench.harness import (
    PARTITIONS,
    Names,
    Spread,
    Workers,
    create_topics,
    high_watermarks,
    log,
    produce_keyed,
    scrape,
    spread,
    wait_committed,
)
from chaos.check import DecisionCounts, compare_decisions, read_decisions
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, InputRecord, replay
from streams.runtime import wall_micros

GOAL_RATE = 30_000
GOAL_SHARE = 0.10


@dataclass(frozen=True)
class WorkerRun:
    """One worker's run over the preloaded input."""

    ready_seconds: float
    """From process start to the ``/readyz`` 200 response."""
    total: int
    seconds: float
    """From the ``/readyz`` 200 response to every input offset committed, or to the bound."""
    committed: int
    limit_events: int
    """Records on the output topic (its high watermarks)."""
    events_metric: float
    decisions: DecisionCounts | None = None
    """The output topic against replay; only for a run that committed everything."""

    @property
    def all_committed(self) -> bool:
        return self.committed >= self.total

    @property
    def decisions_match(self) -> bool:
        """Replay's decisions were checked: none lost, unexpected or different, each user's
        in replay's order (consumers of one user's partition see them in that order)."""
        d = self.decisions
        return d is not None and d.ok

    @property
    def complete(self) -> bool:
        """Everything committed and every decision as replay's: the run's figure counts."""
        return self.all_committed and self.decisions_match

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class E2EResult:
    records: int
    users: int
    partitions: int
    produce_seconds: float
    expected_decisions: int | None
    """What replay emits for the same records; computed only when a run committed them all."""
    replay_processed: int | None
    baseline: Spread
    runs: list[WorkerRun]
    bound: float

    @property
    def complete(self) -> bool:
        """Every run committed everything and matched replay: only then is there a figure."""
        return bool(self.runs) and all(run.complete for run in self.runs)

    @property
    def worker(self) -> Spread:
        """The runs' rates; a figure only when :attr:`complete`."""
        return spread(run.rate for run in self.runs)


async def baseline(bootstrap: str, names: Names, total: int, partitions: int) -> float:
    """Seconds for one raw consumer to read every input record and ``orjson.loads`` it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_bytes=16 * 2**20, max_partition_fetch_bytes=4 * 2**20,
    )  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in names.inputs for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads, count = orjson.loads, 0
        started = time.perf_counter()
        deadline = started + 300
        while count < total and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for messages in batch.values():
                for message in messages:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        loads(message.value)
                count += len(messages)
        if count < total:
            raise RuntimeError(f"the baseline read {count:,} of {total:,} records in 300 s")
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def worker_run(
    bootstrap: str, names: Names, run: int, group: Workers, ends: dict[TopicPartition, int],
    bound: float,
) -> tuple[WorkerRun, list[dict[str, Any]] | None]:  # fmt: skip
    """One fresh worker over the preloaded input; what it did within ``bound`` s of ready.

    Also returns the decisions on its output topic (without ``decided_at``), read after the
    worker stopped, when it committed every input record; otherwise None.
    """
    app_id = f"{names.prefix}-run{run}"
    env = names.env(bootstrap, app_id=app_id)
    out_topic = f"{names.prefix}.run{run}.limit-events"
    env["LINEGUARD_LIMIT_EVENTS_TOPIC"] = out_topic
    total = sum(ends.values())
    launched = time.monotonic()
    slot = group.start(f"e2e-{run}", env)
    try:
        ready_at = await group.wait_ready(slot, 90)
        ready = ready_at - launched
        done, seconds = await wait_committed(
            bootstrap, app_id, ends, bound, started=ready_at, slots=[slot]
        )
        metric = scrape(slot.port).get("lineguard_events_total", 0.0)
    finally:
        await group.stop(slot)
    # Decisions are sent before their record is acked, so those of every committed record
    # are written by now; read after the stop, so nothing the worker wrote is missed.
    events = await high_watermarks(bootstrap, out_topic, PARTITIONS)
    online = (
        await read_decisions(bootstrap, out_topic, "read_uncommitted") if done >= total else None
    )
    log(
        f"worker run {run}: ready in {ready:.1f} s, {'all committed' if done >= total else 'bounded'}"
        f" after {seconds:.1f} s, {done:,} of {total:,} committed ({done / seconds:,.0f}/s),"
        f" {events:,} limit events"
    )
    return WorkerRun(ready, total, seconds, done, events, metric), online


async def run(
    bootstrap: str, workdir: Path, *, records: int, users: int, repeat: int, bound: float,
    seed: int = 20260301,
) -> E2EResult:  # fmt: skip
    """Preload, replay offline for the expected decisions, then the baseline and the worker."""
    names = Names("e2e")
    log(f"e2e: generating {records:,} records for {users:,} users")
    generated, _ = core.generate(records, users, seed)
    topics = names.inputs
    await create_topics(bootstrap, topics, PARTITIONS)
    started = time.perf_counter()
    ends = await produce_keyed(
        bootstrap, ((topics[t], key, value) for t, key, value in generated), PARTITIONS
    )
    produce_seconds = time.perf_counter() - started
    log(f"e2e: preloaded {records:,} records in {produce_seconds:.1f} s")
    baseline_rates = []
    for attempt in range(1, repeat + 1):
        seconds = await baseline(bootstrap, names, records, PARTITIONS)
        baseline_rates.append(records / seconds)
        log(f"e2e: baseline run {attempt}: {records / seconds:,.0f} records/s")
    runs: list[WorkerRun] = []
    online: list[list[dict[str, Any]] | None] = []
    with_workers = Workers(workdir)
    try:
        for attempt in range(1, repeat + 1):
            worker, decisions = await worker_run(
                bootstrap, names, attempt, with_workers, ends, bound
            )
            runs.append(worker)
            online.append(decisions)
    finally:
        with_workers.stop_all()
    expected: int | None = None
    processed: int | None = None
    if any(decisions is not None for decisions in online):
        # Only a run that committed everything can be held against the whole replay.
        log("e2e: replaying the same records offline for the expected limit events")
        replayed = replay(
            (InputRecord(i, INPUT_TOPICS[t], k, v) for i, (t, k, v) in enumerate(generated)),
            load_policy(),
            partitions=PARTITIONS,
            now=wall_micros(),
        )
        wanted = [without_decided_at(d.to_json(0)) for d in replayed.decisions]
        expected, processed = len(wanted), replayed.processed
        log(f"e2e: replay expects {expected:,} limit events")
        for n, decisions in enumerate(online):
            if decisions is not None:
                counts = compare_decisions(wanted, decisions)
                runs[n] = dataclasses.replace(runs[n], decisions=counts)
                log(f"e2e: run {n + 1} against replay: {counts}")
    return E2EResult(
        records, users, PARTITIONS, produce_seconds, expected, processed,
        spread(baseline_rates), runs, bound,
    )  # fmt: skip


def without_decided_at(value: bytes) -> dict[str, Any]:
    """A limit event's JSON as ``chaos.check`` compares it: without ``decided_at``."""
    doc: dict[str, Any] = orjson.loads(value)
    del doc["decided_at"]
    return doc
