"""A real Prometheus scrapes a real worker: counters move, the worker is up, the rules load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prom_tools import ROOT, require
from worker_harness import Topics, Worker, produce, wait_for

from risk.replay import INPUT_TOPICS, InputRecord, parse_records
from streams.devbroker import free_port

from builders import APPLICATIONS, REPAYMENTS, application

pytestmark = pytest.mark.integration
PARTITIONS = 3
BURST_USERS = 4
"""Users who each send three small loan applications in a day: one SMALL_LOAN_BURST freeze each."""


class Prometheus:
    """A Prometheus server on a loopback port, with its HTTP API."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    require("prometheus"),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = self.api("query", query=query)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
        try:
            url = f"http://127.0.0.1:{self.port}/-/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: this process and no other."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def scrape_config(target: str) -> dict[str, Any]:
    """The repository's prometheus.yml, cut down to the lineguard job pointed at one worker.

    The job keeps its own settings and the real alert rules are loaded; only the target and
    a 1 s interval change, and Alertmanager is left out so that nothing leaves the loopback
    interface.
    """
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    job = next(c for c in config["scrape_configs"] if c["job_name"] == "lineguard")
    job["static_configs"] = [{"targets": [target]}]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "prometheus" / name) for name in config["rule_files"]],
        "scrape_configs": [job],
    }


@pytest.fixture
def topics(unique_prefix: str) -> Topics:
    return Topics(unique_prefix)


@pytest.fixture
def worker(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[Worker]:
    started = Worker(kafka_bootstrap, topics, tmp_path, PARTITIONS)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Prometheus]]:
    """Start Prometheus; the finalizer stops it by its own PID, whether the test passed or not."""
    started: list[Prometheus] = []

    def start(config: dict[str, Any]) -> Prometheus:
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        started.append(Prometheus(config, workdir))
        return started[-1]

    try:
        yield start
    finally:
        for prometheus in started:
            prometheus.stop()


def traffic() -> list[InputRecord]:
    """Freezes and dead letters: small-loan bursts, then records the contract rejects."""
    lines = [
        application(f"2026-05-01T1{hour}:00:00Z", 50_000, user=f"burst-{n}")
        for n in range(BURST_USERS)
        for hour in range(3)
    ]
    lines += [
        {"topic": APPLICATIONS, "key": "bad-1", "value": "{not json"},
        {"topic": REPAYMENTS, "key": "bad-2", "value": {"event_id": "r", "user_id": "bad-2"}},
        {"topic": REPAYMENTS, "key": "bad-3", "value": "[1, 2"},
    ]
    return list(parse_records([orjson.dumps(line) for line in lines]))


def test_prometheus_scrapes_a_worker_and_sees_decisions_and_dead_letters(
    kafka_bootstrap: str,
    topics: Topics,
    worker: Worker,
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
) -> None:
    worker.wait_ready()
    names = [topics.name(topic) for topic in INPUT_TOPICS]
    prometheus = start_prometheus(scrape_config(f"127.0.0.1:{worker.port}"))
    wait_for(prometheus.ready, 30, "prometheus ready")

    freezes = 'sum(lineguard_decisions_total{job="lineguard", type="limit.freeze"})'
    dead_letters = 'sum(lineguard_dead_letters_total{job="lineguard"})'
    up = f'up{{job="lineguard", instance="127.0.0.1:{worker.port}"}}'
    wait_for(lambda: prometheus.value(up) == 1, 30, "the worker scraped and up")
    assert prometheus.value(freezes) == 0  # bound at start-up, so present before any record
    assert prometheus.value(dead_letters) == 0
    started = time.time()

    records = traffic()
    asyncio.run(produce(kafka_bootstrap, topics, records, PARTITIONS))
    wait_for(lambda: prometheus.value(freezes) == BURST_USERS, 60, "freezes in prometheus")
    wait_for(lambda: prometheus.value(dead_letters) == 3, 60, "dead letters in prometheus")

    reasons = prometheus.api(
        "query", query='sum by (reason) (lineguard_dead_letters_total{job="lineguard"}) > 0'
    )["result"]
    assert {r["metric"]["reason"]: r["value"][1] for r in reasons} == {
        "invalid_json": "2",
        "schema_violation": "1",
    }
    burst = (
        'lineguard_decisions_total{job="lineguard", type="limit.freeze", reason="SMALL_LOAN_BURST"}'
    )
    assert prometheus.value(burst) == BURST_USERS
    events = f'sum(lineguard_events_total{{job="lineguard", topic="{names[2]}"}})'
    wait_for(lambda: prometheus.value(events) == BURST_USERS * 3 + 1, 30, "every application")

    # The counters moved inside Prometheus's own history: 0 before the traffic, then up.
    # A range query's last step can fall just before the scrape an instant query saw.
    def history() -> list[float]:
        result = prometheus.api(
            "query_range", query=freezes, start=str(started - 2), end=str(time.time()), step="1"
        )["result"]
        return [float(value) for _, value in result[0]["values"]]

    wait_for(lambda: history()[-1] == BURST_USERS, 10, "the freezes in Prometheus's history")
    values = history()
    assert values[0] == 0 and values == sorted(values)
    assert prometheus.value(up) == 1

    # The real alert rules load and evaluate against the real series without error.
    def rules_evaluated() -> bool:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(rule["health"] == "ok" for rule in rules)

    wait_for(rules_evaluated, 30, "every alert rule evaluated")
    loaded = {r["name"] for g in prometheus.api("rules")["groups"] for r in g["rules"]}
    expected = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())["groups"]
    assert loaded == {r["alert"] for g in expected for r in g["rules"]}
