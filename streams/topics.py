"""Topics and the per-user table, declared once from the settings."""

from __future__ import annotations

from typing import Any

from streams.app import app, settings


def _raw_topic(*names: str) -> Any:
    """A topic of raw bytes: lineguard decodes and validates values itself."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )


TICK_TOPIC = settings.tick_topic
"""Internal, co-partitioned with the inputs: a tick on partition *p* lets the agent sweep
timers and end an idle hold inside the stream, where table writes are allowed."""

inputs = _raw_topic(*settings.input_topics, TICK_TOPIC)
limit_events = _raw_topic(settings.limit_events_topic)
dead_letters = {topic: _raw_topic(f"{topic}.dlt") for topic in settings.input_topics}
users = app.Table(
    "users",
    key_type=bytes,  # bytes keys and values make Faust use the raw codec for the changelog
    value_type=bytes,
    partitions=settings.topic_partitions,
    help="Per-user risk state (risk.state.UserState), msgpack-encoded.",
    options=settings.rocksdb_options() if settings.store.startswith("rocksdb") else None,
)
