"""Run real `lineguard worker` processes against the test broker, and talk to them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from risk.replay import INPUT_TOPICS, InputRecord
from streams.devbroker import free_port

LIMIT_TOPIC = "credit.limit-events.v1"


@dataclass
class Topics:
    """The topic names of one test: the contract's names behind a unique prefix."""

    prefix: str

    def name(self, contract_topic: str) -> str:
        return f"{self.prefix}.{contract_topic}"

    def env(self) -> dict[str, str]:
        purchases, repayments, applications, verifications, overrides = (
            self.name(t) for t in INPUT_TOPICS
        )
        return {
            "LINEGUARD_PURCHASES_TOPIC": purchases,
            "LINEGUARD_REPAYMENTS_TOPIC": repayments,
            "LINEGUARD_LOAN_APPLICATIONS_TOPIC": applications,
            "LINEGUARD_INCOME_VERIFICATIONS_TOPIC": verifications,
            "LINEGUARD_LIMIT_OVERRIDES_TOPIC": overrides,
            "LINEGUARD_LIMIT_EVENTS_TOPIC": self.name(LIMIT_TOPIC),
        }


@dataclass
class Worker:
    """One worker process; ``stop`` always ends it (SIGTERM, then SIGKILL)."""

    bootstrap: str
    topics: Topics
    workdir: Path
    partitions: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
        env.update(self.topics.env())
        env.update(
            LINEGUARD_BROKER_URL=f"kafka://{self.bootstrap}",
            LINEGUARD_APP_ID=self.topics.prefix,
            LINEGUARD_TOPIC_PARTITIONS=str(self.partitions),
            LINEGUARD_WEB_PORT=str(self.port),
            LINEGUARD_DATADIR=str(self.workdir / f"data-{self.port}"),
            # Generous: a worker under load may take seconds to fetch every partition once,
            # and a hold that runs out changes the merge order (KIP-353 max.task.idle.ms).
            LINEGUARD_MAX_IDLE="30",
            LINEGUARD_BROKER_COMMIT_INTERVAL="0.5",
        )
        if not os.environ.get("LINEGUARD_TEST_BOOTSTRAP"):
            env["LINEGUARD_DEV_BROKER"] = "tansu"
        env.update(self.extra_env)
        log = open(self.workdir / f"worker-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from streams.entry import main; main()", "worker", "-l", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, body, _ = self.request(path, {"Authorization": f"Bearer {token}"} if token else {})
        return status, body

    def request(self, path: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
        """Status, parsed body and response headers of a GET with ``headers``."""
        request = urllib.request.Request(self.url + path, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, _parse(response.read(), response.headers), response.headers
        except urllib.error.HTTPError as error:
            return error.code, _parse(error.read(), error.headers), error.headers

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}: {self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s: {self.log()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples on this worker whose labels include ``labels``."""
        return sum(
            sample.value
            for sample in self.samples()
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def samples(self) -> list[Sample]:
        """Every sample this worker exposes at ``/metrics``."""
        status, text = self.get("/metrics")
        assert status == 200
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        path = self.workdir / f"worker-{self.port}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextmanager
def started_workers(
    bootstrap: str, topics: Topics, tmp_path: Path, partitions: int
) -> Iterator[Callable[..., Worker]]:
    """Start workers as a test asks (``Worker``'s keywords), and stop each, even when it fails."""
    started: list[Worker] = []

    def start(**kwargs: Any) -> Worker:
        worker = Worker(bootstrap, topics, tmp_path, partitions, **kwargs).start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def _parse(body: bytes, headers: Any) -> Any:
    if "json" in headers.get("Content-Type", ""):
        return orjson.loads(body)
    return body.decode()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def create_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    counts: dict[str, int] | None = None,
    **client: Any,
) -> None:
    """Create the input topics first: a broker may auto-create them with another count.

    ``client`` takes aiokafka's security options, here and in the helpers below.
    """
    counts = counts or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.name(t), num_partitions=counts.get(t, partitions),
                      replication_factor=1)
             for t in INPUT_TOPICS]
        )  # fmt: skip
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topics: Topics,
    records: list[InputRecord],
    partitions: int = 3,
    compression_type: str | None = None,
    **client: Any,
) -> None:
    """Send records in order; each topic-partition's log keeps the list's order."""
    await create_topics(bootstrap, topics, partitions, **client)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, compression_type=compression_type, **client
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topics.name(r.topic), value=r.value, key=r.key) for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_changelog(bootstrap: str, topics: Topics, partitions: int) -> str:
    """Create the changelog of the worker's ``users`` table, as Faust names it; return the name."""
    name = f"{topics.prefix}-users-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def produce_to_changelog(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes | None]],
    partition_of: Callable[[bytes], int],
) -> None:
    """Write table records straight to a changelog, in order, as a worker would have left it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=partition_of(key))
            for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, *, expected: int | None = None, settle: float = 2.0,
    wait_seconds: float = 60, **client: Any,
) -> dict[int, list[Any]]:  # fmt: skip
    """Read a topic from the start, by partition, until ``expected`` records or quiet."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
        enable_auto_commit=False, **client,
    )  # fmt: skip
    await consumer.start()
    by_partition: dict[int, list[Any]] = defaultdict(list)
    count = 0
    try:
        deadline = time.monotonic() + wait_seconds
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for tp, messages in batch.items():
                by_partition[tp.partition] += messages
                count += len(messages)
                quiet_since = time.monotonic()
            if expected is not None and count >= expected:
                await asyncio.sleep(settle / 2)
                for tp, messages in (await consumer.getmany(timeout_ms=250)).items():
                    by_partition[tp.partition] += messages
                break
            if expected is None and time.monotonic() - quiet_since > settle:
                break
    finally:
        await consumer.stop()
    return dict(by_partition)


def limit_events_by_partition(messages: dict[int, list[Any]]) -> dict[int, list[dict[str, Any]]]:
    """Limit events without ``decided_at``, the only field allowed to differ."""
    out: dict[int, list[dict[str, Any]]] = {}
    for partition, records in messages.items():
        docs = [orjson.loads(m.value) for m in records]
        for doc in docs:
            doc.pop("decided_at")
        out[partition] = docs
    return out


async def read_back(bootstrap: str, topics: Topics) -> list[InputRecord]:
    """The input topics as stored, partition by partition, each in log order."""
    records: list[InputRecord] = []
    for contract_topic in INPUT_TOPICS:
        stored = await consume_all(bootstrap, topics.name(contract_topic), settle=1.5)
        for partition in sorted(stored):
            records += [
                InputRecord(m.offset, contract_topic, m.key, m.value) for m in stored[partition]
            ]
    return records
