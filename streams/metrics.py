"""Prometheus metrics of the worker, in the service's own registry.

Every label takes its values from a small closed set (topics, outcomes, reasons,
statuses, partitions), never a user id. The label children the hot path uses are
bound once, when the runtime starts, so every series exists from the first scrape
(a ``rate()`` over a series that appears late misses its first increase) and no
event pays for a label lookup. The exception is the latest event time of a topic, a
gauge: it has no sample until the topic's first record, rather than 0 (1970).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from risk.contract import Reason
from risk.partition import Outcome

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
# The standard process, interpreter and garbage-collector families that SREs' dashboards
# and alerts expect of a Python service (memory, CPU, open files, collections), which a
# registry of one's own leaves out.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
# No ``_created`` series: one more per counter and histogram child, which Prometheus
# stores as a gauge that no query here reads; a reset shows in the counter itself.
disable_created_metrics()  # type: ignore[no-untyped-call]

TP = TypeVar("TP")
"""What the consumer names an assigned partition by (Faust's ``TP`` in the worker)."""

EVENTS = Counter(
    "lineguard_events",
    "Input records by topic and outcome (processed, duplicate, dead_lettered).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "lineguard_dead_letters",
    "Records sent to a dead-letter topic, by input topic and reason.",
    ["topic", "reason"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "lineguard_decisions",
    "Limit events emitted, by type and reason code (a decision with two reasons counts twice).",
    ["type", "reason"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "lineguard_processing_seconds",
    "Wall time to merge and apply one decoded input record in the core, the timers it fires"
    " included.",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
             0.025, 0.1),
    registry=REGISTRY,
)  # fmt: skip
BATCH_SECONDS = Histogram(
    "lineguard_batch_seconds",
    "Wall time to handle one batch of records: apply, emit and await the limit events and"
    " dead letters, write each changed user once, and ack.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
DECISION_LAG_SECONDS = Histogram(
    "lineguard_decision_lag_seconds",
    "Emit time of a limit event minus the event time of the record or timer that caused it.",
    # Live timers trail event time by the watermark delay (60 s), so 60-300 s is split
    # finely; a backlog or a backfill reaches hours to weeks, which the last ones tell apart.
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 90, 120, 180, 300, 600, 1800, 3600,
             21600, 86400, 604800, 2592000),
    registry=REGISTRY,
)  # fmt: skip
MISROUTED_USERS = Counter(
    "lineguard_input_misrouted_users",
    "Users whose state was created on another partition than murmur2 gives their key, by the"
    " input topic of the record that created it: a producer that does not partition with"
    " murmur2 (RELIABILITY.md, defect 49).",
    ["topic"],
    registry=REGISTRY,
)
LAST_EVENT_TIMESTAMP = Gauge(
    "lineguard_last_event_timestamp_seconds",
    "Event time (occurred_at) of the latest accepted record, by input topic; no sample before"
    " the topic's first record.",
    ["topic"],
    registry=REGISTRY,
)
RECOVERY_IN_PROGRESS = Gauge(
    "lineguard_recovery_in_progress",
    "1 while the worker has no input partition (more workers than partitions), rebalances"
    " or recovers its table from the changelog; else 0.",
    registry=REGISTRY,
)
STORE_PARTITIONS_DROPPED = Counter(
    "lineguard_store_partitions_dropped",
    "RocksDB table partitions dropped at a recovery and rebuilt from the whole changelog,"
    " because their store was not from it (a data directory from another changelog).",
    registry=REGISTRY,
)
BUILD_INFO = Info(
    "lineguard_build",
    "Version of the running lineguard, and its policy's version and fingerprint (a hash of"
    " what it decides by, which tells an edit that kept its version).",
    registry=REGISTRY,
)
INPUT_INFO = Gauge(
    "lineguard_input_info",
    "Always 1: an input topic this worker's consumer group reads. Alerts join kafka-exporter's"
    " lag with it, so they need no group or topic names of their own.",
    ["consumergroup", "topic"],
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Partition:
    """One assigned input topic-partition, as the consumer lag collector sees it."""

    topic: str
    partition: int
    end_offset: int | None
    committed_offset: int | None
    resumed_offset: int | None = None
    """Where the worker started reading at the assignment: the committed offset, or the
    earliest one the broker still holds for a partition the group never committed."""


class ConsumerLag(Collector, Generic[TP]):
    """``lineguard_consumer_lag_records``: end offset minus committed offset, at scrape time.

    A partition the group has never committed counts from where the worker resumed it,
    not from offset 0: records deleted by retention before it are no lag, and would
    otherwise be counted until the first commit. A partition with neither offset known
    (between a rebalance and the seek that follows it) has no sample.

    Collected in the scrape's thread while the consumer's own thread may be rebalancing:
    reading the assignment, or one partition of it, can raise then (aiokafka's
    ``highwater`` asserts that the partition is still assigned). What raises is left out
    of that scrape, so that ``/metrics`` keeps answering.
    """

    def __init__(
        self, assigned: Callable[[], Iterable[TP]], read: Callable[[TP], Partition]
    ) -> None:
        self._assigned = assigned
        self._read = read

    def describe(self) -> Iterable[Metric]:
        """The family without samples, so registering does not read the consumer."""
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        """One sample per assigned input partition whose end offset and start are known."""
        family = self._family()
        for tp in self._partitions():
            start = tp.committed_offset if tp.committed_offset is not None else tp.resumed_offset
            if tp.end_offset is not None and start is not None:
                family.add_metric([tp.topic, str(tp.partition)], max(0, tp.end_offset - start))
        return [family]

    def _partitions(self) -> Iterator[Partition]:
        try:
            assigned = list(self._assigned())
        except Exception as error:  # a rebalance changing the assignment under the scrape
            log.debug("consumer_lag_not_read", error=repr(error))
            return
        for key in assigned:
            try:
                yield self._read(key)
            except Exception as error:  # e.g. revoked since the assignment was read
                log.debug("consumer_lag_partition_not_read", partition=repr(key), error=repr(error))

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "lineguard_consumer_lag_records",
            "Records in an assigned input partition not yet committed by this worker.",
            labels=["topic", "partition"],
        )


@dataclass(frozen=True)
class Counts:
    """What a worker's partitions hold: users by limit status, and timers scheduled."""

    users: Mapping[str, int]
    timers: int


class PartitionCounts(Collector):
    """``lineguard_users{status}`` and ``lineguard_timers_pending``, read at scrape time.

    ``read`` gives None while the worker does not know its partitions' counts: it is
    rebalancing, recovering its table, or has no partition. Then there is no sample, not
    a 0 that would read as every user gone and back at each rebalance; the partitions
    that moved are counted by the worker that has them now.
    """

    def __init__(self, read: Callable[[], Counts | None]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering does not read the worker."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        """One sample per status and one of timers, once the counts are known."""
        users, timers = self._families()
        counts = self._read()
        if counts is not None:
            for status, count in counts.users.items():
                users.add_metric([status], count)
            timers.add_metric([], counts.timers)
        return [users, timers]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "lineguard_users",
                "Users with state in this worker's partitions, by limit status; no sample"
                " while the worker rebalances, recovers or has no partition.",
                labels=["status"],
            ),
            GaugeMetricFamily(
                "lineguard_timers_pending",
                "Overdue, cure and window timers scheduled in this worker's partitions; no"
                " sample while the worker rebalances, recovers or has no partition.",
            ),
        )


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` of every amount, with one increment per bucket and one of the sum.

    ``observe`` takes a lock per bucket and per sum and walks the buckets in Python; once
    per input record that was about 4% of the worker's CPU. The bucket is the first upper
    bound at or above the amount, as ``observe`` picks it (prometheus-client 0.26: its
    ``_upper_bounds``, ending in +Inf, and ``_buckets``, ``_sum``).
    """
    if not amounts:
        return
    bounds = histogram._upper_bounds
    buckets = histogram._buckets
    for index, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(amounts))


class _FirstSeen(dict[str, Gauge]):
    """Each topic's ``lineguard_last_event_timestamp_seconds`` child, made at its first use."""

    def __missing__(self, topic: str) -> Gauge:
        child = self[topic] = LAST_EVENT_TIMESTAMP.labels(topic)
        return child


@dataclass(frozen=True)
class Bound:
    """The label children the hot path increments, created once."""

    events: Mapping[tuple[str, str], Counter]
    dead_letters: Mapping[tuple[str, str], Counter]
    decisions: Mapping[tuple[str, str], Counter]
    last_event: Mapping[str, Gauge]
    misrouted: Mapping[str, Counter]


def bind(topics: Iterable[str], decision_reasons: Mapping[str, Iterable[str]]) -> Bound:
    """Create every (topic, outcome), (topic, reason), (type, reason) and topic counter at zero."""
    topics = tuple(topics)
    return Bound(
        events={(t, str(o)): EVENTS.labels(t, str(o)) for t in topics for o in Outcome},
        dead_letters={(t, str(r)): DEAD_LETTERS.labels(t, str(r)) for t in topics for r in Reason},
        decisions={
            (kind, code): DECISIONS.labels(kind, code)
            for kind, codes in decision_reasons.items()
            for code in codes
        },
        last_event=_FirstSeen(),
        misrouted={t: MISROUTED_USERS.labels(t) for t in topics},
    )
