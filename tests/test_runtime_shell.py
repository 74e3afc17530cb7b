"""Pieces of the worker's shell that need no broker: collector, observations, log colours,
the batch's view of the table, flushes."""

from __future__ import annotations

import gc
import io
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import colorlog
import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from prometheus_client import CollectorRegistry, Histogram

from risk.state import STATE_DECODER, STATE_ENCODER, UserState
from streams import metrics
from streams.app import cache_log_colors
from streams.progress import progress_key
from streams.runtime import COLLECTOR_THRESHOLDS, TableStore, tune_collector


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


def test_observe_all_counts_as_one_observe_per_amount() -> None:
    buckets = (0.001, 0.01, 0.1, 1.0)
    one_by_one = Histogram("one_by_one", "d", buckets=buckets, registry=CollectorRegistry())
    together = Histogram("together", "d", buckets=buckets, registry=CollectorRegistry())
    amounts = [0.0, 0.0005, 0.001, 0.0011, 0.01, 0.5, 1.0, 2.0, 30.0, 0.001]
    for amount in amounts:
        one_by_one.observe(amount)
    metrics.observe_all(together, amounts)
    metrics.observe_all(together, [])

    def samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(histogram._name), s.labels, s.value)
            for family in histogram.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    expected, got = samples(one_by_one), samples(together)
    assert [(n, labels) for n, labels, _ in got] == [(n, labels) for n, labels, _ in expected]
    assert [v for _, _, v in got] == pytest.approx([v for _, _, v in expected])


def test_cached_log_colours_format_every_line_as_before() -> None:
    logger = logging.getLogger("lineguard.test.colours")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for level in (logging.INFO, logging.WARNING, logging.INFO):
            logger.log(level, "line %s", 1)
        before = stream.getvalue()
        cache_log_colors(logger)
        cache_log_colors(logger)  # once is enough: a second call changes nothing
        stream.seek(0)
        stream.truncate()
        for level in (logging.INFO, logging.WARNING, logging.INFO):
            logger.log(level, "line %s", 1)
        assert stream.getvalue() == before
    finally:
        logger.removeHandler(handler)


def _state(user_id: str, clock: int) -> UserState:
    return UserState(user_id=user_id, first_seen=1, clock=clock, last_activity=clock)


def test_a_batch_reads_each_user_once_and_writes_each_changed_one_once() -> None:
    app = faust.App("table-store", store="memory://")
    store = MemoryStore("memory://", app, table=SimpleNamespace(name="users"))  # type: ignore[arg-type]
    store.data[b"known"] = STATE_ENCODER.encode(_state("known", 5))
    users = TableStore(SimpleNamespace(data=store), partition=3)

    assert users.get("new") is None
    with pytest.raises(KeyError):
        users["new"]
    known = users["known"]
    assert known.clock == 5
    assert users.get("known") is known  # decoded once: the core's changes stay on it
    users["new"] = _state("new", 7)
    users["known"] = known
    known.clock = 9

    writes = users.take(b"marks")
    assert writes.opening == (progress_key(3), b"marks")  # heads each record batch
    assert [(key, STATE_DECODER.decode(value).clock) for key, value in writes.records] == [
        (b"new", 7),
        (b"known", 9),
    ]
    assert not users.take(None)  # nothing held back once taken
