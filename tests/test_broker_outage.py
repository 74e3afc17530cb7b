"""The broker stops answering for 20 s: the worker waits quietly, and loses nothing.

SIGSTOP freezes the broker with its connections open, as a hung broker or a network
partition would: requests go out and nothing comes back. The broker is the test's own, not
the session's, so that no other test sees the pause. Tansu's memory storage survives a
SIGSTOP, unlike a restart.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_worker import PARTITIONS, records_of, replay_by_partition, rule_scenarios, watermark_tail
from worker_harness import (
    LIMIT_TOPIC,
    Topics,
    Worker,
    consume_all,
    limit_events_by_partition,
    produce,
    wait_for,
)

from streams.devbroker import TansuBroker, free_port

from builders import application, purchase, repayment

pytestmark = pytest.mark.integration

PAUSE_SECONDS = 20.0
CPU_SHARE_BOUND = 0.25
"""The most of one core the worker may use while the broker is stopped: a busy loop uses all."""


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker for this test alone; resumed and stopped by its PID whatever happens."""
    broker = TansuBroker()
    try:
        yield broker.start()
    finally:
        process = broker.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        broker.stop()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc/<pid>/stat."""
    # The command name may hold spaces; the fields after it start with the state (field 3),
    # so utime and stime (fields 14 and 15) are the 12th and 13th after the ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def after_the_pause() -> list[dict[str, Any]]:
    """New users, later in event time than every scenario produced before the pause."""
    return [
        purchase(
            "2026-06-01T00:00:00Z",
            35000,
            user="od-after",
            order="oa",
            first_due="2026-07-01T00:00:00Z",
        ),
        repayment("2026-07-06T00:00:00Z", 35000, user="od-after"),
        *[application(f"2026-06-1{d}T10:00:00Z", 500_000, user="vel-after") for d in range(5)],
        *watermark_tail("2026-09-01T00:00:00Z"),
    ]


def without_repeats(online: dict[int, list[dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
    """Each partition's decisions once, in first-seen order; a repeat must be identical."""
    out: dict[int, list[dict[str, Any]]] = {}
    for partition, decisions in online.items():
        seen: dict[str, dict[str, Any]] = {}
        for decision in decisions:
            first = seen.setdefault(decision["event_id"], decision)
            assert first == decision, "a repeated decision differs from the first"
        out[partition] = list(seen.values())
    return out


def test_a_broker_stopped_for_20_s_is_waited_out_without_busy_looping_or_loss(
    own_broker: TansuBroker, unique_prefix: str, tmp_path: Path
) -> None:
    bootstrap, topics = own_broker.bootstrap, Topics(unique_prefix)
    before, after = records_of(rule_scenarios()), records_of(after_the_pause())
    asyncio.run(produce(bootstrap, topics, before, PARTITIONS))
    worker = Worker(
        bootstrap, topics, tmp_path, PARTITIONS, extra_env={"LINEGUARD_DEV_BROKER": "tansu"}
    )
    broker_pid = own_broker.process.pid if own_broker.process else 0
    try:
        worker.start().wait_ready()
        assert worker.process is not None
        wait_for(lambda: worker.metric("lineguard_events_total") >= len(before), 60, "records")
        # Everything before the pause is applied and its offsets committed.
        wait_for(lambda: worker.metric("lineguard_consumer_lag_records") == 0, 30, "commits")
        cpu_before, started = cpu_seconds(worker.process.pid), time.monotonic()
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            while time.monotonic() - started < PAUSE_SECONDS:
                assert worker.process.poll() is None, f"the worker exited: {worker.log()}"
                time.sleep(0.5)
            cpu_used = cpu_seconds(worker.process.pid) - cpu_before
            paused = time.monotonic() - started
            health, scrape = worker.get("/healthz")[0], worker.get("/metrics")[0]
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        assert (health, scrape) == (200, 200)  # the web server kept answering
        assert cpu_used < CPU_SHARE_BOUND * paused, f"{cpu_used:.2f} s of CPU in {paused:.1f} s"

        asyncio.run(produce(bootstrap, topics, after, PARTITIONS))
        records = before + after
        wait_for(lambda: worker.metric("lineguard_events_total") >= len(records), 120, "records")
        wait_for(lambda: worker.metric("lineguard_consumer_lag_records") == 0, 60, "commits")
        expected = replay_by_partition(records)
        total = sum(map(len, expected.values()))
        online = asyncio.run(
            consume_all(bootstrap, topics.name(LIMIT_TOPIC), expected=total, wait_seconds=60)
        )
        assert worker.process.poll() is None
    finally:
        worker.stop()
    assert without_repeats(limit_events_by_partition(online)) == expected
    assert total >= 15


def test_a_worker_that_cannot_reach_kafka_at_start_stops_with_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env |= {"LINEGUARD_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",  # nothing listens
            "LINEGUARD_WEB_PORT": str(free_port()), "LINEGUARD_DATADIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "from streams.entry import main; main()", "worker"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "lineguard: cannot reach Kafka at kafka://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rocksdb_data_directory_another_worker_holds_is_refused_before_kafka(
    tmp_path: Path,
) -> None:
    # Faust would join the group, retry RocksDB's lock for 30 s and crash, rebalancing the
    # healthy worker twice, again at every restart.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env |= {"LINEGUARD_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",  # nothing listens
            "LINEGUARD_STORE": "rocksdb://", "LINEGUARD_DATADIR": str(tmp_path)}  # fmt: skip

    def start_worker() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from streams.entry import main; main()", "worker"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    with (tmp_path / "worker.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        refused = start_worker()
    assert refused.returncode == 2, refused.stderr
    assert f"LINEGUARD_DATADIR {tmp_path} is in use by another lineguard worker (pid 4242)" in (
        refused.stderr
    )
    free = start_worker()  # released: on to Kafka, which is not there
    assert free.returncode == 4, free.stderr


def test_a_web_port_in_use_stops_the_worker_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
        env |= {"LINEGUARD_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
                "LINEGUARD_WEB_PORT": str(port), "LINEGUARD_DATADIR": str(tmp_path)}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", "from streams.entry import main; main()", "worker"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"LINEGUARD_WEB_PORT: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
