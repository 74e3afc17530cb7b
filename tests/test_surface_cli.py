"""The `lineguard` command line against a real worker on the test broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_worker import start_worker, topics
from worker_harness import Topics, Worker

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

LINEGUARD = [sys.executable, "-c", "from streams.entry import main; main()"]


def lineguard_as(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``lineguard ARGS`` with the worker's settings, from its directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env |= worker.topics.env() | worker.extra_env
    env |= {
        "LINEGUARD_BROKER_URL": f"kafka://{worker.bootstrap}",
        "LINEGUARD_APP_ID": worker.topics.prefix,
        "LINEGUARD_TOPIC_PARTITIONS": str(worker.partitions),
        "LINEGUARD_DATADIR": str(worker.workdir / f"data-{worker.port}"),
    }
    return subprocess.run(
        [*LINEGUARD, *args], capture_output=True, text=True, cwd=worker.workdir, env=env,
        timeout=120, check=False,
    )  # fmt: skip


def test_reset_refuses_a_data_directory_a_running_worker_holds(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker(extra_env={"LINEGUARD_STORE": "rocksdb://"})
    worker.wait_ready()
    tables = worker.workdir / f"data-{worker.port}" / "v1" / "tables"
    assert any(tables.glob("users-*.db"))
    refused = lineguard_as(worker, "reset")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "is in use by another lineguard worker" in refused.stderr
    assert "stop it before lineguard reset" in refused.stderr
    assert any(tables.glob("users-*.db"))  # the running worker's state is still there
    assert worker.get("/readyz")[0] == 200
    worker.stop()
    done = lineguard_as(worker, "reset")  # no worker holds it now
    assert done.returncode == 0, done.stderr
    assert not any(tables.glob("users-*.db"))


def test_reset_says_a_memory_store_has_nothing_to_delete(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    worker = Worker(kafka_bootstrap, topics, tmp_path)  # memory://, its settings only
    done = lineguard_as(worker, "reset")
    assert done.returncode == 0, done.stderr
    assert "LINEGUARD_STORE=memory:// keeps no local state to delete" in done.stdout
