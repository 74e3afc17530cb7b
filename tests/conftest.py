"""Shared fixtures: one Kafka-protocol broker per session, and per-test name isolation."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from streams.devbroker import TansuBroker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of the broker for integration tests (mark them ``integration``).

    With ``LINEGUARD_TEST_BOOTSTRAP`` set, the tests run against that Kafka instead, and
    nothing is started. Otherwise one embedded Tansu broker serves the whole session and is
    stopped when it ends, whether the tests passed or not. Topics and groups live as long as
    the broker, so each test names its own with :func:`unique_prefix`.
    """
    external = os.environ.get("LINEGUARD_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    broker = TansuBroker()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_prefix() -> str:
    """A short prefix such as ``t1a2b3c4d`` for this test's topics, app id and groups."""
    return f"t{uuid.uuid4().hex[:8]}"
