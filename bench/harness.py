"""What the end-to-end benchmarks share: a broker, black-box workers, producing and reading.

The worker is driven only from outside, as ``lineguard worker`` configured by ``LINEGUARD_*``
variables (``chaos.workers.WorkerSlot`` starts and stops it); it is observed through
``/readyz``, ``/metrics``, its committed offsets and its output topic. Every process started
here is stopped by its own handle, also on failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from chaos.workers import WorkerSlot
from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS
from streams.devbroker import _fetch_high_watermarks

LIMIT_TOPIC: Final = "credit.limit-events.v1"
PARTITIONS: Final = 6
"""``LINEGUARD_TOPIC_PARTITIONS``'s default, as in docker compose."""
SEND_WINDOW: Final = 64
"""Batches in flight before the producer waits for their acks."""
COMMIT_INTERVAL_SECONDS: Final = 0.5
"""The workers' ``LINEGUARD_BROKER_COMMIT_INTERVAL``: a commit comes up to this late."""
READY_POLL_SECONDS: Final = 0.05
"""How often :meth:`Workers.wait_ready` asks ``/readyz``."""

_STARTED: Final = time.perf_counter()


def log(message: str) -> None:
    """Progress to stderr, with the seconds since the benchmark started."""
    print(f"[bench {time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Spread:
    """The median, min and max of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def show(self, fmt: str = "{:,.0f}", unit: str = "") -> str:
        """``median (min–max, n runs)``."""
        return (
            f"{fmt.format(self.median)}{unit} (min {fmt.format(self.low)}, max"
            f" {fmt.format(self.high)}; {len(self.values)} runs)"
        )


def spread(values: Iterable[float]) -> Spread:
    """A :class:`Spread` of ``values``."""
    return Spread(tuple(values))


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


@dataclass(frozen=True)
class Names:
    """The topic and group names of one worker run: the contract's names behind a prefix."""

    prefix: str

    def topic(self, contract_topic: str) -> str:
        return f"{self.prefix}.{contract_topic}"

    @property
    def inputs(self) -> list[str]:
        return [self.topic(t) for t in INPUT_TOPICS]

    @property
    def limit_events(self) -> str:
        return self.topic(LIMIT_TOPIC)

    def env(self, bootstrap: str, *, app_id: str | None = None, store: str = "memory://",
            partitions: int = PARTITIONS) -> dict[str, str]:  # fmt: skip
        """A worker's ``LINEGUARD_*`` settings for these topics, on the embedded broker."""
        purchases, repayments, applications, verifications, overrides = self.inputs
        return {
            "LINEGUARD_BROKER_URL": f"kafka://{bootstrap}",
            "LINEGUARD_DEV_BROKER": "tansu",
            "LINEGUARD_APP_ID": app_id or self.prefix,
            "LINEGUARD_STORE": store,
            "LINEGUARD_TOPIC_PARTITIONS": str(partitions),
            "LINEGUARD_PURCHASES_TOPIC": purchases,
            "LINEGUARD_REPAYMENTS_TOPIC": repayments,
            "LINEGUARD_LOAN_APPLICATIONS_TOPIC": applications,
            "LINEGUARD_INCOME_VERIFICATIONS_TOPIC": verifications,
            "LINEGUARD_LIMIT_OVERRIDES_TOPIC": overrides,
            "LINEGUARD_LIMIT_EVENTS_TOPIC": self.limit_events,
            # As the chaos run and the worker tests: a hold long enough that the event-time
            # merge follows the logs, so the decisions equal replay's.
            "LINEGUARD_MAX_IDLE": "30",
            "LINEGUARD_BROKER_COMMIT_INTERVAL": str(COMMIT_INTERVAL_SECONDS),
        }


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create topics before anything writes to them, so the broker does not pick the count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(bootstrap: str, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A batching aiokafka producer (values are pre-encoded bytes)."""
    settings: dict[str, Any] = {"linger_ms": 20, "max_batch_size": 512 * 1024, "acks": 1}
    settings.update(options)
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def produce_keyed(
    bootstrap: str, records: Iterable[tuple[str, bytes, bytes]], partitions: int
) -> dict[TopicPartition, int]:
    """Send (topic, key, value) records, partitioned as Kafka's default partitioner would.

    Records are packed into batches by hand (``create_batch``/``send_batch``): a ``send``
    per record costs more than the broker's work. Each partition keeps the input's order.
    Returns the end offset of every partition written, from the acks (Tansu's ListOffsets
    is not trusted, see ``streams.devbroker``).
    """
    ends: dict[TopicPartition, int] = {}
    async with producer(bootstrap) as client:
        open_batches: dict[tuple[str, int], Any] = {}
        pending: list[tuple[TopicPartition, int, asyncio.Future[Any]]] = []

        async def flush(topic: str, partition: int) -> None:
            batch = open_batches.pop((topic, partition))
            count = batch.record_count()
            future = await client.send_batch(batch, topic, partition=partition)
            pending.append((TopicPartition(topic, partition), count, future))

        async def settle() -> None:
            for tp, count, future in pending:
                meta = await future
                ends[tp] = max(ends.get(tp, 0), meta.offset + count)
            pending.clear()

        for topic, key, value in records:
            partition = partition_for(key, partitions)
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[(topic, partition)] = client.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                await flush(topic, partition)
                batch = open_batches[(topic, partition)] = client.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            if len(pending) >= SEND_WINDOW:
                await settle()
        for topic, partition in list(open_batches):
            await flush(topic, partition)
        await settle()
    return ends


COMMIT_POLL_SECONDS: Final = 0.1
"""How often :func:`wait_committed` reads the group's committed offsets."""
STOP_SECONDS: Final = 10.0
"""How long closing :func:`wait_committed`'s client may take."""


def _raise_if_exited(slots: Sequence[WorkerSlot]) -> None:
    for slot in slots:
        if not slot.alive():
            code = None if slot.process is None else slot.process.returncode
            raise RuntimeError(f"{slot.name} exited with {code}; see {slot.log_path}")


async def wait_committed(
    bootstrap: str, group: str, ends: dict[TopicPartition, int], bound: float, *,
    started: float | None = None, slots: Sequence[WorkerSlot] = (),
) -> tuple[int, float]:  # fmt: skip
    """Wait until ``group`` has committed every offset in ``ends``, or for ``bound`` seconds.

    Returns the sum of its committed offsets then, and the seconds waited. One client reads
    them all in one request every :data:`COMMIT_POLL_SECONDS`, so the time is measured to
    about that, and the polling costs the broker next to nothing. ``started`` is the
    ``time.monotonic()`` the clock starts from (now by default); the bound counts from it.

    Every step (the client's start, each fetch) is cut off at the bound: aiokafka retries a
    coordinator lookup forever, so without that a broker that stops answering would hold
    the benchmark with it. A fetch cut off leaves the count of the last one that answered.
    If one of ``slots`` (the workers of ``group``) has exited, this raises at once: a dead
    worker commits nothing, and its run is a failure, not a slow run.
    """
    started = time.monotonic() if started is None else started
    deadline = started + bound
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    try:
        total, done = sum(ends.values()), 0
        partitions = list(ends)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.start(), deadline - time.monotonic())
            while time.monotonic() < deadline:
                _raise_if_exited(slots)
                await asyncio.sleep(min(COMMIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                offsets = await asyncio.wait_for(
                    consumer._coordinator.fetch_committed_offsets(partitions),
                    deadline - time.monotonic(),
                )
                _raise_if_exited(slots)
                done = sum(max(meta.offset, 0) for meta in offsets.values())
                if done >= total:
                    break
        return done, time.monotonic() - started
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.stop(), STOP_SECONDS)


async def high_watermarks(bootstrap: str, topic: str, partitions: int) -> int:
    """Sum of the Fetch high watermarks of ``topic`` (records written, Tansu-proof)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        await consumer._client.force_metadata_update()
        high = await _fetch_high_watermarks(consumer._client, dict.fromkeys(tps, 0), 0)
        return sum(high.values())
    finally:
        await consumer.stop()


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics: each sample's value summed by metric name."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def readyz(port: int) -> Any:
    """The body of a worker's /readyz (its partitions), whatever the status."""
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return orjson.loads(error.read())


def _ready_at(slot: WorkerSlot, bound: float) -> float:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        _raise_if_exited([slot])
        if slot.ready():
            return time.monotonic()
        time.sleep(READY_POLL_SECONDS)
    raise RuntimeError(f"{slot.name} was not ready within {bound:.0f} s; see {slot.log_path}")


@dataclass
class Workers:
    """Worker processes of one benchmark; :meth:`stop_all` ends every one it started."""

    workdir: Path
    slots: list[WorkerSlot] = field(default_factory=list)

    def start(self, name: str, env: dict[str, str]) -> WorkerSlot:
        slot = WorkerSlot(name, env, self.workdir)
        self.slots.append(slot)
        slot.start()
        return slot

    async def wait_ready(self, slot: WorkerSlot, bound: float) -> float:
        """The ``time.monotonic()`` of ``/readyz``'s first 200 response.

        Raises past ``bound`` seconds, or as soon as the process has exited. A clock started
        from the returned time starts at the response itself, not when this coroutine
        resumes after it.
        """
        return await asyncio.to_thread(_ready_at, slot, bound)

    async def stop(self, slot: WorkerSlot) -> None:
        await asyncio.to_thread(slot.stop)

    def stop_all(self) -> None:
        for slot in self.slots:
            slot.stop()


@contextlib.contextmanager
def workers(workdir: Path) -> Iterator[Workers]:
    """Workers that are all stopped when the block ends, however it ends."""
    group = Workers(workdir)
    try:
        yield group
    finally:
        group.stop_all()
