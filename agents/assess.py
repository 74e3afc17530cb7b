"""The risk agent: one Faust agent over the input topics, calling the pure core.

Records arrive as raw bytes, so a value that does not decode becomes a dead letter
instead of killing the agent. The agent declares the subscription; its records are
taken out of each fetch as one batch (:mod:`streams.fetch`) before Faust would
dispatch them one by one, and are handled in Faust's fetch loop. Any that still
reach the stream are handled the same way.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import structlog
from faust.types import StreamT

from streams import metrics
from streams.app import app, cache_log_colors, settings, worker_policy
from streams.runtime import Runtime, tune_collector
from streams.topics import TICK_TOPIC, dead_letters, inputs, limit_events, users

log = structlog.get_logger(__name__)

policy = worker_policy()  # checked by `lineguard worker` before it contacted the broker

metrics.BUILD_INFO.info(
    {
        "version": version("lineguard"),
        "policy_version": policy.version,
        "policy_fingerprint": policy.fingerprint,
    }
)
for topic in settings.input_topics:
    metrics.INPUT_INFO.labels(consumergroup=settings.app_id, topic=topic).set(1)

runtime = Runtime(
    app=app,
    settings=settings,
    policy=policy,
    table=users,
    limit_topic=limit_events,
    dead_letter_topics=dead_letters,
    tick_topic=TICK_TOPIC,
)


@app.agent(inputs)
async def assess(stream: StreamT[Any]) -> None:
    """Decode, merge by event time, apply, decide; ack each record once applied."""
    async for event in stream.noack().events():  # type: ignore[attr-defined]  # StreamT omits it
        await runtime.on_records([event.message])


@app.timer(interval=max(0.05, min(0.25, settings.max_idle / 4)))
async def end_idle_holds() -> None:
    """Wake partitions whose merge waits on an empty topic.

    A hold may have run out (``max_idle``), or the topic been fetched since
    (``Runtime._may_receive``).
    """
    for partition in runtime.holding():
        await runtime.send_tick(partition, b"idle")


if settings.clock == "wall":

    @app.timer(interval=settings.wall_sweep_interval)
    async def wall_sweep() -> None:
        """The wall clock mode: every assigned partition advances its watermark from now."""
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == TICK_TOPIC}
        for partition in assigned:
            await runtime.send_tick(partition, b"wall")


@app.on_worker_init.connect
def take_over_input_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Before the first fetch: the runtime, not Faust's fetch loop, orders input records."""
    runtime.delivery.install(app.consumer)
    runtime.diversion.install(app.consumer)


@app.on_worker_init.connect
def collect_garbage_less_often(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """In the worker process only: see :func:`streams.runtime.tune_collector`."""
    tune_collector()


@app.task
async def announce_policy() -> None:
    """Log which policy this worker decides by, once the worker's logging is set up.

    The fingerprint tells an edit whose version was not bumped from the policy it replaced.
    """
    log.info("policy", policy_version=policy.version, policy_fingerprint=policy.fingerprint)


@app.task
async def format_log_lines_for_less() -> None:
    """See :func:`streams.app.cache_log_colors`.

    A task, as the app starts: the worker sets up its logging before that, but after
    ``on_worker_init``.
    """
    cache_log_colors()


@app.on_rebalance_complete.connect
async def recover_partitions(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Once the table is recovered: timers and user counts of the new partitions."""
    runtime.recover()


@app.on_partitions_revoked.connect
async def forget_buffers(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Drop merge buffers on a rebalance; unacked records are redelivered after the seek.

    The batch in flight finishes first, so the partitions move with its state written.
    """
    await runtime.settled()
    runtime.reset()
    log.info("partitions_revoked")
