"""`lineguard demo`: an embedded broker, a worker and the simulator, with live figures.

Everything it starts it also stops: on Ctrl-C, at the end of ``--duration``, or when
something fails. The worker runs as a child process, exactly as ``lineguard worker``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

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


_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What stops the demo: Ctrl-C, a supervisor, or a closed terminal."""
_SIMULATOR_STOP_SECONDS: Final = 5.0
_WORKER_STOP_SECONDS: Final = 10.0
"""How long the worker gets to stop after SIGTERM before it is killed."""


async def run_demo(
    *, duration: float, users: int, rate: float, seed: int, out: TextIO = sys.stdout
) -> None:
    """Run broker, worker and simulator for ``duration`` seconds, printing live figures.

    The broker and the worker run in sessions of their own, so a terminal's Ctrl-C reaches
    only the demo, which then stops them in order: the simulator, the worker (SIGTERM, then
    SIGKILL after 10 s), and the broker last, which the others need until they have stopped.

    Raises:
        SystemExit: ``128 + signal`` (130 for SIGINT, 143 for SIGTERM) once a signal has
            stopped everything.
    """
    loop = asyncio.get_running_loop()
    latest: list[SimulationStats] = []
    body = asyncio.ensure_future(_run(duration, users, rate, seed, latest, out))
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if not received:  # a second Ctrl-C does not cut the stopping short
            received.append(signum)
            print(f"\n{signum.name}: stopping the simulator, the worker and the broker", file=out)
            body.cancel()

    for signum in _SIGNALS:  # instead of Faust's, which would cancel the demo at once
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await body
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        if received and latest:
            print(f"simulator: {latest[-1].summary()}", file=out)
        print("stopped the worker and the broker", file=out, flush=True)
    if received:
        raise SystemExit(128 + received[0])


async def _run(
    duration: float,
    users: int,
    rate: float,
    seed: int,
    latest: list[SimulationStats],
    out: TextIO,
) -> None:
    with _workdir(out) as workdir:
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
                # A session of its own: the terminal's Ctrl-C is the demo's to pass on, in order.
                worker = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "from streams.app import main; main()", "worker",
                    "-l", "info", env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            finally:
                log_file.close()
            # Should the demo die before its own stopping runs, the worker goes with it.
            atexit.register(_kill, worker)
            try:
                assert broker.process is not None  # noqa: S101 - the broker has started
                print(
                    f"broker   {broker.bootstrap} (Tansu, in memory, pid {broker.process.pid})",
                    file=out,
                )
                print(f"worker   {base}  (pid {worker.pid}, log: {log})", file=out)
                await _wait_ready(f"{base}/readyz", worker, log)
                print(f"metrics  {base}/metrics", file=out)
                print(f"health   {base}/healthz  {base}/readyz", file=out)
                print(
                    f"a user   curl -H 'Authorization: Bearer {token}' {base}/users/{user}",
                    file=out,
                )
                print(
                    f"simulating {users} users at {rate:.0f} records/s for {duration:.0f} s",
                    file=out,
                    flush=True,
                )
                await _simulate_and_show(
                    broker.bootstrap, base, duration, users, rate, seed, latest, out
                )
            finally:
                await _stop_worker(worker)
                atexit.unregister(_kill)


@contextlib.contextmanager
def _workdir(out: TextIO) -> Iterator[Path]:
    """A ``lineguard-demo-*`` directory for the worker's log and data, removed at the end.

    The end of ``--duration`` and a signal remove it; a failure keeps it, and says so,
    for the worker's log that the error message points to.
    """
    path = Path(tempfile.mkdtemp(prefix="lineguard-demo-"))
    failed = False
    try:
        yield path
    except Exception:
        failed = True
        print(f"kept {path} for the worker's log", file=out, flush=True)
        raise
    finally:
        if not failed:
            shutil.rmtree(path, ignore_errors=True)


async def _stop_worker(worker: asyncio.subprocess.Process) -> None:
    """SIGTERM, up to 10 s to exit, then SIGKILL; by its own handle, never its group."""
    if worker.returncode is None:
        worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), _WORKER_STOP_SECONDS)
        except TimeoutError:
            worker.kill()
            await worker.wait()


def _kill(worker: asyncio.subprocess.Process) -> None:
    """The last resort at exit: SIGKILL the worker if nothing has stopped it."""
    if worker.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)


async def _simulate_and_show(
    bootstrap: str,
    base: str,
    duration: float,
    users: int,
    rate: float,
    seed: int,
    latest: list[SimulationStats],
    out: TextIO,
) -> None:
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
        # Its producer flushes and stops while the broker still runs; bounded all the same.
        simulation.cancel()
        await asyncio.wait({simulation}, timeout=_SIMULATOR_STOP_SECONDS)
        if simulation.done() and not simulation.cancelled():
            simulation.exception()  # raised above if it mattered; not logged again at exit
