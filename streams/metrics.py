"""Prometheus metrics of the worker. Labels are bounded: never a user id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

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
    "Limit events emitted, by type and reason code.",
    ["type", "reason"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "lineguard_processing_seconds",
    "Wall time to apply one input record, decisions and state writes included.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
DECISION_LAG_SECONDS = Histogram(
    "lineguard_decision_lag_seconds",
    "Decision time minus the decision's event time.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 3600, 86400, 604800),
    registry=REGISTRY,
)
LAST_EVENT_TIMESTAMP = Gauge(
    "lineguard_last_event_timestamp_seconds",
    "Event time (occurred_at) of the latest accepted record, by input topic.",
    ["topic"],
    registry=REGISTRY,
)
BUILD_INFO = Info(
    "lineguard_build", "Version of the running lineguard and its policy.", registry=REGISTRY
)
