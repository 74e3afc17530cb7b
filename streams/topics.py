"""Topics and the per-user table, declared once from the settings."""

from __future__ import annotations

from typing import Final

from streams.app import app, settings

TICK_TOPIC: Final = settings.tick_topic
"""Internal, co-partitioned with the inputs: a tick on partition *p* lets the agent sweep
timers and end an idle hold inside the stream, where table writes are allowed."""

inputs = app.topic(
    *settings.input_topics,
    TICK_TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)
limit_events = app.topic(
    settings.limit_events_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)
dead_letters = {
    topic: app.topic(
        f"{topic}.dlt",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    for topic in settings.input_topics
}
ticks = app.topic(
    TICK_TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)
users = app.Table(
    "users",
    key_type=bytes,  # bytes keys and values make Faust use the raw codec for the changelog
    value_type=bytes,
    partitions=settings.topic_partitions,
    help="Per-user risk state (risk.state.UserState), msgpack-encoded.",
)
