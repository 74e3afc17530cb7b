"""`lineguard demo`: an embedded broker, a worker and the simulator, with live figures.

Everything it starts it also stops: on Ctrl-C, at the end of ``--duration``, or when
something fails. The worker runs as a child process, exactly as ``lineguard worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams.devbroker import TansuBroker, free_port
from streams.simulate import SimulationStats, Simulator, run_simulation

Figures = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _scrape(url: str) -> Figures:
    """Counter samples of the worker's /metrics, keyed by metric and sorted labels."""
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
        text = response.read().decode()
    figures: Figures = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total") or sample.name == "lineguard_users":
                labels = tuple(sorted(sample.labels.items()))
                samples = figures.setdefault(sample.name, {})
                samples[labels] = samples.get(labels, 0.0) + sample.value
    return figures


def _render(figures: Figures, elapsed: float, rate: float) -> str:
    events = figures.get("lineguard_events_total", {})
    decisions = figures.get("lineguard_decisions_total", {})
    dead = figures.get("lineguard_dead_letters_total", {})

    def by_reason(kind: str) -> str:
        parts = [
            f"{labels['reason']}={int(n)}"
            for labels, n in ((dict(key), n) for key, n in sorted(decisions.items()))
            if labels["type"] == kind and n
        ]
        return " ".join(parts) or "-"

    users = {dict(key)["status"]: int(n) for key, n in figures.get("lineguard_users", {}).items()}
    limited = " ".join(f"{status}={users[status]}" for status in sorted(users) if users[status])
    return (
        f"[{elapsed:5.1f}s] events {int(sum(events.values()))} ({rate:.0f}/s)"
        f" | freezes {by_reason('limit.freeze')}"
        f" | reductions {by_reason('limit.reduce')}"
        f" | restores {by_reason('limit.restore')}"
        f" | dead letters {int(sum(dead.values()))}"
        f" | users {limited or '-'}"
    )


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL
        status: int = response.status
        return status


async def _wait_ready(url: str, worker: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if worker.returncode is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}; see {log}")
        with contextlib.suppress(OSError):
            if await asyncio.to_thread(_status, url) == 200:
                return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the worker was not ready within 90 s; see {log}")


def sample_user(users: int, seed: int) -> str:
    """The user of the simulator's first record for ``users`` and ``seed``.

    The demo prints it in its ``curl`` line: it is an id the simulator really uses, and the
    first one it sends, so the worker knows it as soon as the simulation has started.
    """
    record = Simulator(users, seed).next_record(datetime.now(UTC))
    user_id: str = orjson.loads(record.value)["user_id"]
    return user_id


async def run_demo(
    *, duration: float, users: int, rate: float, seed: int, out: TextIO = sys.stdout
) -> None:
    """Run broker, worker and simulator for ``duration`` seconds, printing live figures."""
    workdir = Path(tempfile.mkdtemp(prefix="lineguard-demo-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)  # /users is closed without one; this run's only
    user = sample_user(users, seed)
    with TansuBroker() as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
        env.update(
            LINEGUARD_BROKER_URL=broker.url,
            LINEGUARD_DEV_BROKER="tansu",
            LINEGUARD_APP_ID="lineguard-demo",
            LINEGUARD_TOPIC_PARTITIONS="4",
            LINEGUARD_WEB_PORT=str(port),
            LINEGUARD_DATADIR=str(workdir / "data"),
            LINEGUARD_API_TOKEN=token,
        )
        log = workdir / "worker.log"
        log_file = log.open("wb")
        try:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from streams.app import main; main()", "worker",
                "-l", "info", env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log_file.close()
        try:
            print(f"broker   {broker.bootstrap} (Tansu, in memory)", file=out)
            print(f"worker   {base}  (log: {log})", file=out)
            await _wait_ready(f"{base}/readyz", worker, log)
            print(f"metrics  {base}/metrics", file=out)
            print(f"health   {base}/healthz  {base}/readyz", file=out)
            print(
                f"a user   curl -H 'Authorization: Bearer {token}' {base}/users/{user}",
                file=out,
            )
            print(
                f"simulating {users} users at {rate:.0f} records/s for {duration:.0f} s", file=out
            )
            await _simulate_and_show(broker.bootstrap, base, duration, users, rate, seed, out)
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(worker.wait(), 20)
                except TimeoutError:
                    worker.kill()
                    await worker.wait()
            print("stopped the worker and the broker", file=out)


async def _simulate_and_show(
    bootstrap: str, base: str, duration: float, users: int, rate: float, seed: int, out: TextIO
) -> None:
    latest: list[SimulationStats] = []
    simulation = asyncio.create_task(
        run_simulation(
            bootstrap, users=users, rate=rate, duration=duration, seed=seed,
            progress=latest.append,
        )
    )  # fmt: skip
    started = time.monotonic()
    previous, previous_at = 0.0, started
    try:
        while not simulation.done():
            await asyncio.sleep(1)
            with contextlib.suppress(OSError):
                figures = await asyncio.to_thread(_scrape, f"{base}/metrics")
                now = time.monotonic()
                total = sum(figures.get("lineguard_events_total", {}).values())
                rate_seen = (total - previous) / max(now - previous_at, 1e-9)
                previous, previous_at = total, now
                print(_render(figures, now - started, rate_seen), file=out, flush=True)
        stats = await simulation
        print(f"simulator: {stats.summary()}", file=out)
    finally:
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await simulation
