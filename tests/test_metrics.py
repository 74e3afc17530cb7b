"""The worker's registry: every series named, bound at start-up, no label that can hold a user id."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from metric_labels import assert_no_label_can_hold_a_user_id
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from risk.contract import Reason
from risk.limits import DECISION_REASONS
from streams.metrics import (
    DECISION_LAG_SECONDS,
    REGISTRY,
    ConsumerLag,
    Counts,
    Partition,
    PartitionCounts,
    bind,
)

EXPOSE = (
    "import agents.assess;"
    "from prometheus_client import generate_latest;"
    "from streams.metrics import REGISTRY;"
    "print(generate_latest(REGISTRY).decode())"
)


@pytest.fixture(scope="module")
def families() -> list[Metric]:
    """The registry of a worker process that has started but seen no record."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", EXPOSE], env=clean, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    return list(text_string_to_metric_families(done.stdout))


@pytest.fixture(scope="module")
def samples(families: list[Metric]) -> list[Sample]:
    return [s for f in families for s in f.samples]


def test_every_series_the_hot_path_uses_exists_at_zero_before_the_first_record(
    samples: list[Sample],
) -> None:
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    for kind, codes in DECISION_REASONS.items():
        for code in codes:
            key = ("lineguard_decisions_total", (("reason", code), ("type", kind)))
            assert values[key] == 0
    for reason in Reason:
        key = ("lineguard_dead_letters_total",
               (("reason", str(reason)), ("topic", "credit.repayments.v1")))  # fmt: skip
        assert values[key] == 0
    names = {s.name for s in samples}
    assert names >= {
        "lineguard_events_total", "lineguard_recovery_in_progress",
        "lineguard_processing_seconds_bucket", "lineguard_decision_lag_seconds_bucket",
        "lineguard_build_info",
    }  # fmt: skip
    # counted once the worker has recovered its partitions (test_sre_gauges.py)
    assert not names & {"lineguard_users", "lineguard_timers_pending"}
    # no record yet: no event time, rather than 0 (1970)
    assert "lineguard_last_event_timestamp_seconds" not in names


def test_the_recovery_gauge_says_that_a_worker_without_partitions_reports_1(
    families: list[Metric],
) -> None:
    (help_text,) = (f.documentation for f in families if f.name == "lineguard_recovery_in_progress")
    assert "no input partition" in help_text


def test_no_metric_label_can_hold_a_user_id(samples: list[Sample]) -> None:
    assert_no_label_can_hold_a_user_id(samples)


@pytest.mark.parametrize(
    "labels",
    [{"user_id": "u-1"}, {"topic": "u-1"}, {"reason": "u-1"}, {"status": "u-1"}],
)
def test_the_label_check_refuses_a_label_outside_its_closed_set(labels: dict[str, str]) -> None:
    with pytest.raises(AssertionError):
        assert_no_label_can_hold_a_user_id([Sample("lineguard_x_total", labels, 1.0)])


def lag_samples(*partitions: Partition) -> dict[tuple[str, str], float]:
    """The samples of ``lineguard_consumer_lag_records`` for these partitions, by (topic, partition)."""
    registry = CollectorRegistry()
    registry.register(ConsumerLag(lambda: partitions, lambda tp: tp))
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_the_lag_of_a_partition_never_committed_counts_from_where_the_worker_resumed() -> None:
    # Retention deleted offsets 0-899 of partition 0; the group has never committed there.
    lag = lag_samples(
        Partition("credit.purchases.v1", 0, end_offset=1000, committed_offset=None,
                  resumed_offset=900),
        Partition("credit.purchases.v1", 1, end_offset=1000, committed_offset=400,
                  resumed_offset=300),
        Partition("credit.purchases.v1", 2, end_offset=1000, committed_offset=0,
                  resumed_offset=0),
    )  # fmt: skip
    assert lag == {
        ("credit.purchases.v1", "0"): 100,  # not 1000: offsets 0-899 are gone
        ("credit.purchases.v1", "1"): 600,  # a commit counts over where it resumed
        ("credit.purchases.v1", "2"): 1000,  # committed 0 is a commit, not "unknown"
    }


def test_a_partition_with_no_known_start_or_end_has_no_lag_sample() -> None:
    lag = lag_samples(
        # after a rebalance, before the consumer seeked: neither offset is known yet
        Partition("credit.purchases.v1", 0, end_offset=1000, committed_offset=None,
                  resumed_offset=None),
        # not fetched yet: no end offset
        Partition("credit.purchases.v1", 1, end_offset=None, committed_offset=5,
                  resumed_offset=5),
        Partition("credit.purchases.v1", 2, end_offset=10, committed_offset=7),
    )  # fmt: skip
    assert lag == {("credit.purchases.v1", "2"): 3}


def test_a_partition_that_cannot_be_read_during_a_rebalance_is_left_out_of_the_scrape() -> None:
    offsets = {
        0: Partition("credit.purchases.v1", 0, 50, 20),
        2: Partition("credit.purchases.v1", 2, 9, 9),
    }

    def read(partition: int) -> Partition:
        if partition not in offsets:  # as aiokafka's highwater() of a revoked partition
            raise AssertionError("Partition is not assigned")
        return offsets[partition]

    registry = CollectorRegistry()
    registry.register(ConsumerLag(lambda: [0, 1, 2], read))
    scraped = generate_latest(registry).decode()
    assert (
        'lineguard_consumer_lag_records{partition="0",topic="credit.purchases.v1"} 30.0' in scraped
    )
    assert (
        'lineguard_consumer_lag_records{partition="2",topic="credit.purchases.v1"} 0.0' in scraped
    )
    assert 'partition="1"' not in scraped


def test_an_assignment_that_cannot_be_read_gives_a_scrape_without_lag_samples() -> None:
    def assigned() -> list[int]:
        raise RuntimeError("Set changed size during iteration")

    registry = CollectorRegistry()
    registry.register(ConsumerLag(assigned, lambda tp: Partition("t", tp, 1, 0)))
    scraped = generate_latest(registry).decode()
    assert "# TYPE lineguard_consumer_lag_records gauge" in scraped
    assert "lineguard_consumer_lag_records{" not in scraped


def count_samples(counts: Counts | None) -> dict[tuple[str, str], float]:
    """The samples of ``lineguard_users`` and ``lineguard_timers_pending``, by (name, status)."""
    registry = CollectorRegistry()
    registry.register(PartitionCounts(lambda: counts))
    return {
        (s.name, s.labels.get("status", "")): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_a_worker_that_knows_its_counts_exports_each_status_and_its_timers() -> None:
    counts = Counts(users={"active": 1990, "reduced": 0, "probation": 3, "frozen": 7}, timers=42)
    assert count_samples(counts) == {
        ("lineguard_users", "active"): 1990,
        ("lineguard_users", "reduced"): 0,
        ("lineguard_users", "probation"): 3,
        ("lineguard_users", "frozen"): 7,
        ("lineguard_timers_pending", ""): 42,
    }


def test_a_worker_that_does_not_know_its_counts_exports_no_sample_not_zero() -> None:
    registry = CollectorRegistry()
    registry.register(PartitionCounts(lambda: None))
    scraped = generate_latest(registry).decode()
    assert "# TYPE lineguard_users gauge" in scraped
    assert "# TYPE lineguard_timers_pending gauge" in scraped
    assert count_samples(None) == {}


def histogram_quantile(q: float, bounds: list[float], amounts: list[float]) -> float:
    """Prometheus's ``histogram_quantile`` of ``amounts`` counted in buckets with ``bounds``."""
    counts = [sum(1 for amount in amounts if amount <= bound) for bound in bounds]
    rank = q * len(amounts)
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if bounds[index] == float("inf"):
        return bounds[index - 1]  # what Prometheus returns for the +Inf bucket
    lower, below = (bounds[index - 1], counts[index - 1]) if index else (0.0, 0)
    return lower + (bounds[index] - lower) * (rank - below) / (counts[index] - below)


@pytest.mark.parametrize(
    ("lags", "low", "high"),
    [
        # live timers: watermark delay (60 s) plus up to a minute
        ([60 + n * 0.06 for n in range(1000)], 100, 130),
        # a backfill of events about three weeks old: no longer capped at a day
        ([20 * 86400 + n * 86.4 for n in range(1000)], 20 * 86400, 30 * 86400),
    ],
)
def test_the_decision_lag_p99_reads_close_to_the_lags_observed(
    lags: list[float], low: float, high: float
) -> None:
    bounds = list(DECISION_LAG_SECONDS._upper_bounds)
    assert low <= histogram_quantile(0.99, bounds, lags) <= high


def test_a_topics_event_time_has_a_sample_from_its_first_record() -> None:
    def event_times() -> dict[str, float]:
        return {
            s.labels["topic"]: s.value
            for f in REGISTRY.collect()
            if f.name == "lineguard_last_event_timestamp_seconds"
            for s in f.samples
            if s.labels["topic"].startswith("sre.")
        }

    bound = bind(["sre.first-seen.v1", "sre.never-seen.v1"], {})
    assert event_times() == {}
    bound.last_event["sre.first-seen.v1"].set(1_764_000_000)
    assert event_times() == {"sre.first-seen.v1": 1_764_000_000}
