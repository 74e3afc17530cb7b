"""Recovery and memory: a worker started over a changelog of 1M users, per store.

The changelog is written directly: states are built by the core from a few events per user
(``bench.core``'s generator and full core over a small batch), then cloned under distinct
user ids up to the wanted count, encoded with ``risk.state.STATE_ENCODER`` and produced to
``<app id>-users-changelog`` (Faust's name for the table ``users``), each to the partition
``risk.partitioner`` gives its user id, where the worker itself would have written it.

Each run starts a fresh worker (a new data directory, so the ``rocksdb://`` store also
rebuilds from the changelog) and times it from process start to ``GET /readyz`` 200. Then
its ``/metrics`` must count every user of the changelog in ``lineguard_users`` (summed over
the statuses), or the run raises; then it reads the worker's VmRSS. An idle worker of
another app id, with an empty table (``lineguard_users`` 0), gives the start-up time and
RSS to subtract.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench import core
from bench.harness import (
    PARTITIONS,
    Names,
    Spread,
    Workers,
    create_topics,
    log,
    produce_keyed,
    rss_kib,
    scrape,
    spread,
)
from risk.policy import load_policy
from risk.state import STATE_ENCODER, UserState

GOAL_SECONDS = 30.0
GOAL_BYTES_PER_USER = 1024
TEMPLATE_RECORDS = 40_000
TEMPLATE_USERS = 8_000
RSS_SETTLE_SECONDS = 2.0


def templates(seed: int = 20260301) -> list[UserState]:
    """States the core built from a few events per user (about 5 records each)."""
    records, _ = core.generate(TEMPLATE_RECORDS, TEMPLATE_USERS, seed)
    run = core.full_core(records, load_policy())
    return list(run.store.values())


def user_id(index: int) -> str:
    return f"u-{index:07d}"


def encoded_states(count: int, models: list[UserState]) -> tuple[list[tuple[bytes, bytes]], int]:
    """``count`` encoded states with distinct user ids, cloned round-robin from ``models``."""
    out = []
    size = 0
    replace, encode = msgspec.structs.replace, STATE_ENCODER.encode
    for index in range(count):
        name = user_id(index)
        value = encode(replace(models[index % len(models)], user_id=name))
        size += len(value)
        out.append((name.encode(), value))
    return out, size


@dataclass(frozen=True)
class StoreResult:
    store: str
    ready: Spread
    """Seconds from process start to /readyz 200 with the full changelog."""
    idle_ready: Spread
    rss_kib: Spread
    idle_rss_kib: Spread
    users: int

    @property
    def bytes_per_user(self) -> Spread:
        idle = self.idle_rss_kib.median
        return spread((rss - idle) * 1024 / self.users for rss in self.rss_kib.values)


@dataclass(frozen=True)
class RecoveryResult:
    users: int
    changelog_bytes: int
    produce_seconds: float
    templates: int
    stores: list[StoreResult]
    unavailable: dict[str, str]


def rocksdb_unavailable() -> str | None:
    """Why ``rocksdb://`` cannot run here, or None when rocksdict is installed."""
    try:
        import rocksdict  # noqa: F401
    except ImportError as error:
        return f"rocksdict is not installed ({error}); `pip install -e '.[rocksdb]'`"
    return None


def check_users(name: str, metrics: dict[str, float], users: int) -> None:
    """Raise unless the worker's ``lineguard_users``, over its statuses, is ``users``.

    A worker ready with fewer users than the changelog holds has not recovered them: its
    time and RSS would be figures for a smaller table.
    """
    found = metrics.get("lineguard_users")
    if found != users:
        raise RuntimeError(
            f"{name} was ready with lineguard_users {found} (summed over its statuses),"
            f" not the {users:,} users of the changelog"
        )


async def start_and_measure(
    group: Workers, name: str, env: dict[str, str], bound: float, users: int
) -> tuple[float, int]:
    """Seconds from process start to ready, and VmRSS (KiB) once settled.

    Raises unless the worker reports ``users`` users when it is ready.
    """
    started = time.monotonic()
    slot = group.start(name, env)
    try:
        ready = await group.wait_ready(slot, bound) - started
        check_users(name, scrape(slot.port), users)
        time.sleep(RSS_SETTLE_SECONDS)  # noqa: ASYNC251 - nothing else runs meanwhile
        assert slot.process is not None  # noqa: S101 - started above
        return ready, rss_kib(slot.process.pid)
    finally:
        await group.stop(slot)


async def run(
    bootstrap: str, workdir: Path, *, users: int, repeat: int, stores: tuple[str, ...],
    bound: float,
) -> RecoveryResult:  # fmt: skip
    names = Names("recovery")
    app_id = "recovery"
    changelog = f"{app_id}-users-changelog"
    log("recovery: building template states with the core")
    models = templates()
    log(f"recovery: encoding {users:,} states from {len(models):,} templates")
    states, size = encoded_states(users, models)
    await create_topics(bootstrap, [*names.inputs, names.limit_events, changelog], PARTITIONS)
    started = time.perf_counter()
    await produce_keyed(bootstrap, ((changelog, k, v) for k, v in states), PARTITIONS)
    produce_seconds = time.perf_counter() - started
    del states
    log(f"recovery: {size / 2**20:,.0f} MiB of changelog produced in {produce_seconds:.1f} s")
    unavailable: dict[str, str] = {}
    results = []
    group = Workers(workdir)
    try:
        for store in stores:
            if store == "rocksdb://" and (why := rocksdb_unavailable()):
                unavailable[store] = why
                continue
            kind = store.removesuffix("://")
            idle_ready, idle_rss, ready, rss = [], [], [], []
            for attempt in range(1, repeat + 1):
                env = names.env(bootstrap, app_id=f"idle-{kind}-{attempt}", store=store)
                seconds, kib = await start_and_measure(group, f"idle-{kind}-{attempt}", env, 60, 0)
                idle_ready.append(seconds)
                idle_rss.append(kib)
                env = names.env(bootstrap, app_id=app_id, store=store)
                seconds, kib = await start_and_measure(
                    group, f"recover-{kind}-{attempt}", env, bound, users
                )
                ready.append(seconds)
                rss.append(kib)
                log(
                    f"recovery {store} run {attempt}: ready in {seconds:.1f} s (idle worker"
                    f" {idle_ready[-1]:.1f} s), RSS {kib / 1024:,.0f} MiB (idle"
                    f" {idle_rss[-1] / 1024:,.0f} MiB)"
                )
            results.append(
                StoreResult(
                    store, spread(ready), spread(idle_ready), spread(rss), spread(idle_rss), users
                )
            )
    finally:
        group.stop_all()
    return RecoveryResult(users, size, produce_seconds, len(models), results, unavailable)
