"""Faust's checks of the consumer: the stream-idle one misfires here and is dropped, no other."""

from __future__ import annotations

import logging

import pytest
from faust.transport.drivers import aiokafka as driver

import streams.app  # noqa: F401 - installs the worker's logging filters

FAUST = logging.getLogger("faust.transport.drivers.aiokafka")


def slow_processing_error(message: str) -> str:
    """The text Faust logs for one of its checks, as its consumer thread builds it."""
    causes = [driver.SLOW_PROCESSING_CAUSE_STREAM, driver.SLOW_PROCESSING_CAUSE_AGENT]
    text = driver.AIOKafkaConsumerThread._make_slow_processing_error(
        None, message, causes, "stream_processing_timeout", 300.0
    )
    return f"[^--AIOKafkaConsumerThread]: {text}"


@pytest.mark.parametrize(
    ("message", "args", "logged"),
    [
        (driver.SLOW_PROCESSING_STREAM_IDLE_SINCE_START, ("TP(...)", "5 minutes ago"), False),
        (driver.SLOW_PROCESSING_STREAM_IDLE, ("TP(...)", "5 minutes ago"), False),
        # a broker that stopped answering is still told
        (driver.SLOW_PROCESSING_NO_RECENT_FETCH, ("TP(...)", "5 minutes ago"), True),
        (driver.SLOW_PROCESSING_NO_RECENT_RESPONSE, ("TP(...)", "5 minutes ago"), True),
        (driver.SLOW_PROCESSING_NO_RECENT_COMMIT, ("TP(...)", "5 minutes ago"), True),
    ],
)
def test_only_faust_stream_idle_errors_are_dropped(
    message: str, args: tuple[str, ...], logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        FAUST.error(slow_processing_error(message), *args)
    assert [r.levelno for r in caplog.records] == ([logging.ERROR] if logged else [])
