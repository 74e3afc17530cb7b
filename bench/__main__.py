"""``make bench``: every benchmark of issue 6, bounded in time, written to BENCHMARKS.md.

Sections: core only (in process), timers (in process), then on an embedded Tansu broker
each (a fresh one per section): worker end to end with its raw-consumer baseline, decision
lag, scale-out, recovery and memory. Workers are ``lineguard worker`` subprocesses; every
broker and worker started here is stopped when its section ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import core_runs, e2e, lag, recovery, scale, timers
from bench.harness import log
from bench.report import Results, now, render
from streams.devbroker import TansuBroker

SECTIONS = ("core", "timers", "e2e", "lag", "scale", "recovery")


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--output", type=Path, default=Path("BENCHMARKS.md"))
    add("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    add("--repeat", type=_positive, default=3, help="runs per figure (median, min, max)")
    add("--core-records", type=_positive, default=500_000)
    add("--core-users", type=_positive, default=100_000)
    add("--timer-users", type=_positive, default=1_000_000)
    add("--timer-due", type=_positive, default=1_000)
    add("--e2e-records", type=_positive, default=500_000)
    add("--e2e-users", type=_positive, default=100_000)
    add("--e2e-bound", type=float, default=45.0, help="seconds a worker run may take")
    add("--lag-rates", default="1000,5000")
    add("--lag-duration", type=float, default=10.0)
    add("--lag-drain", type=float, default=10.0)
    add("--scale-records", type=_positive, default=20_000)
    add("--scale-bound", type=float, default=120.0)
    add("--recovery-users", type=_positive, default=1_000_000)
    add("--recovery-bound", type=float, default=900.0, help="seconds to /readyz per run")
    add("--stores", default="memory://,rocksdb://")
    add("--keep", action="store_true", help="keep the working directory (worker logs)")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.only.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    return args


async def _broker_sections(args: argparse.Namespace, results: Results, workdir: Path) -> None:
    if "e2e" in args.sections:
        with TansuBroker() as broker:
            results.e2e = await e2e.run(
                broker.bootstrap, workdir, records=args.e2e_records, users=args.e2e_users,
                repeat=args.repeat, bound=args.e2e_bound,
            )  # fmt: skip
    if "lag" in args.sections:
        rates = tuple(int(r) for r in args.lag_rates.split(","))
        with TansuBroker() as broker:
            results.lag = await lag.run(
                broker.bootstrap, workdir, rates=rates, repeat=args.repeat,
                duration=args.lag_duration, drain=args.lag_drain,
            )  # fmt: skip
    if "scale" in args.sections:
        with TansuBroker() as broker:
            results.scale = await scale.run(
                broker.bootstrap, workdir, records=args.scale_records, bound=args.scale_bound
            )
    if "recovery" in args.sections:
        with TansuBroker() as broker:
            results.recovery = await recovery.run(
                broker.bootstrap, workdir, users=args.recovery_users, repeat=args.repeat,
                stores=tuple(args.stores.split(",")), bound=args.recovery_bound,
            )  # fmt: skip


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the run as Ctrl-C does, so every broker and worker is stopped first."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    started = time.perf_counter()
    results = Results(argv=argv, started=now(), load_before=os.getloadavg()[0])
    results.skipped = [f"`{s}` (not in --only)" for s in SECTIONS if s not in args.sections]
    if "core" in args.sections:
        results.core = core_runs.run(
            records=args.core_records, users=args.core_users, repeat=args.repeat
        )
    if "timers" in args.sections:
        results.timers = timers.run(users=args.timer_users, due=args.timer_due, repeat=args.repeat)
    workdir = Path(tempfile.mkdtemp(prefix="lineguard-bench-"))
    failed = True
    try:
        asyncio.run(_broker_sections(args, results, workdir))
        failed = False
    finally:
        if failed or args.keep:
            log(f"worker logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results.wall_seconds = time.perf_counter() - started
    args.output.write_text(render(results), encoding="utf-8")
    log(f"wrote {args.output} after {results.wall_seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
