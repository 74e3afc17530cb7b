"""Scale-out: two workers in one consumer group split the partitions and the records.

Both workers start and are ready (each owns its share of the partitions) before any input
is written; then ``records`` persona records are produced and the run waits, within its
time bound, until the group has committed them all. Each worker's ``/metrics``
(``lineguard_events_total``) says how many records it handled, and its ``/readyz`` which
partitions it owns.

What it measures is the split, not a rate. The run is short (``make bench`` gives it 20,000
records), so the workers' commit interval (``LINEGUARD_BROKER_COMMIT_INTERVAL``) and the
commit poll would be a large share of its time, and both workers, the broker and the
producer share the machine's CPUs; the pair's events/s would say little, so it is not
reported. The seconds kept run from before the first record is produced to the last commit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bench import core
from bench.harness import (
    PARTITIONS,
    Names,
    Workers,
    create_topics,
    log,
    produce_keyed,
    readyz,
    scrape,
    wait_committed,
)


@dataclass(frozen=True)
class WorkerShare:
    name: str
    partitions: list[int]
    events: float


@dataclass(frozen=True)
class ScaleResult:
    records: int
    partitions: int
    caught_up: bool
    seconds: float
    """From before the first record was produced to the last commit, or to the bound."""
    committed: int
    total: int
    shares: list[WorkerShare]


async def _wait_split(group: Workers, ports: list[int], bound: float) -> list[list[int]]:
    """Wait until the workers' partitions are disjoint and cover every partition."""
    deadline = time.perf_counter() + bound
    while True:
        owned = [sorted(readyz(port).get("partitions", [])) for port in ports]
        flat = [p for parts in owned for p in parts]
        if sorted(flat) == list(range(PARTITIONS)) and all(owned):
            return owned
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the workers did not split the partitions in {bound} s: {owned}")
        await asyncio.sleep(0.5)


async def run(bootstrap: str, workdir: Path, *, records: int, bound: float) -> ScaleResult:
    names = Names("scale")
    generated, _ = core.generate(records, max(2, records // 5), 20260302)
    await create_topics(bootstrap, [*names.inputs, names.limit_events], PARTITIONS)
    group = Workers(workdir)
    try:
        slots = [group.start(f"scale-{n}", names.env(bootstrap)) for n in (1, 2)]
        for slot in slots:
            await group.wait_ready(slot, 90)
        owned = await _wait_split(group, [s.port for s in slots], 60)
        log(f"scale: two workers own partitions {owned[0]} and {owned[1]}")
        topics = names.inputs
        started = time.monotonic()
        ends = await produce_keyed(
            bootstrap, ((topics[t], key, value) for t, key, value in generated), PARTITIONS
        )
        total = sum(ends.values())
        done, seconds = await wait_committed(
            bootstrap, names.prefix, ends, bound, started=started, slots=slots
        )
        owned = [sorted(readyz(s.port).get("partitions", [])) for s in slots]
        shares = [
            WorkerShare(s.name, parts, scrape(s.port).get("lineguard_events_total", 0.0))
            for s, parts in zip(slots, owned, strict=True)
        ]
        log(
            f"scale: {done:,} of {total:,} committed in {seconds:.1f} s; "
            + ", ".join(f"{w.name} {w.events:,.0f} events on {w.partitions}" for w in shares)
        )
        return ScaleResult(records, PARTITIONS, done >= total, seconds, done, total, shares)
    finally:
        group.stop_all()
