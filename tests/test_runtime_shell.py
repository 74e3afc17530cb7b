"""Pieces of the worker's shell that need no broker: the collector's thresholds."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.runtime import COLLECTOR_THRESHOLDS, tune_collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_the_worker_collects_young_objects_less_often_and_the_old_generation_rarely() -> None:
    tune_collector()
    assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    young, middle, old = COLLECTOR_THRESHOLDS
    assert young > 700 and middle >= 10 and old > 10  # CPython's defaults
