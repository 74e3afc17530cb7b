"""BENCHMARKS.md, every number taken from the results of one ``python -m bench`` run."""

from __future__ import annotations

import math
import os
import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench import core_runs, e2e, lag, recovery
from bench.core import BATCH_RECORDS, cpu_model
from bench.core_runs import CoreResult
from bench.e2e import E2EResult
from bench.harness import (
    COMMIT_INTERVAL_SECONDS,
    COMMIT_POLL_SECONDS,
    READY_POLL_SECONDS,
    Spread,
    verdict,
)
from bench.lag import LagResult
from bench.recovery import RecoveryResult
from bench.scale import ScaleResult
from bench.timers import TimerResult
from chaos.check import DecisionCounts

SCALE_RATES = (10_000, 50_000, 100_000)
INCOMPLETE = "**incomplete**"
"""The verdict of a figure whose runs did not all finish and check out: neither met nor not."""
BUSY_LOAD = 1.0
"""A 1-minute load average from this up means other work shared the CPUs."""


@dataclass
class Results:
    argv: list[str]
    started: datetime
    load_before: float
    wall_seconds: float = 0.0
    core: CoreResult | None = None
    e2e: E2EResult | None = None
    lag: list[LagResult] = field(default_factory=list)
    recovery: RecoveryResult | None = None
    timers: TimerResult | None = None
    scale: ScaleResult | None = None
    skipped: list[str] = field(default_factory=list)


def _ms(s: Spread) -> str:
    return s.show("{:,.0f}", " ms") if not math.isnan(s.median) else "n/a"


def _scaled(s: Spread, factor: float, fmt: str, unit: str = "") -> str:
    return Spread(tuple(v * factor for v in s.values)).show(fmt, unit)


def code_version() -> str:
    """The commit measured, and whether the checkout had changes on top of it."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"
    try:
        commit = subprocess.run(  # noqa: S603 - git, fixed arguments
            [git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 - git, fixed arguments
            [git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (", with uncommitted changes" if dirty else "")


def render(r: Results) -> str:
    lines = [
        "# lineguard benchmarks",
        "",
        "Written by `make bench` (`python -m bench`). Every figure is the median of the runs"
        " shown, with their min and max. Everything runs on this one machine: the embedded Tansu"
        " broker, the worker(s) and the load generator share its CPUs.",
        "",
        f"- Command: `make bench`, which runs `.venv/bin/python -m bench {shlex.join(r.argv)}`",
        f"- Date: {r.started.isoformat(timespec='seconds')}",
        f"- Code: {code_version()}",
        f"- Machine: {os.cpu_count()} CPUs, {cpu_model()}; {platform.platform()};"
        f" {platform.python_implementation()} {platform.python_version()}",
        f"- 1-minute load average {r.load_before:.2f} at the start and {os.getloadavg()[0]:.2f}"
        " at the end"
        + (
            ": other processes were competing for the CPUs, which lowers every figure here"
            if max(r.load_before, os.getloadavg()[0]) >= BUSY_LOAD
            else ""
        ),
        f"- Wall time of `python -m bench`: {r.wall_seconds / 60:.1f} min (creating the venv, on"
        " a fresh clone, comes on top)",
        "",
    ]
    lines += _summary(r)
    if r.core:
        lines += _core(r.core)
    if r.e2e:
        lines += _e2e(r.e2e)
    if r.lag:
        lines += _lag(r.lag)
    if r.recovery:
        lines += _recovery(r.recovery)
    if r.timers:
        lines += _timers(r.timers)
    if r.scale or r.e2e:
        lines += _scale(r.scale, r.e2e)
    if r.skipped:
        lines += ["## Not run", "", *(f"- {s}" for s in r.skipped), ""]
    return "\n".join(lines).rstrip() + "\n"


def _summary(r: Results) -> list[str]:
    rows = ["## Summary", "", "| figure | target | measured | verdict |", "|---|---|---|---|"]
    if r.core:
        rows.append(
            f"| core only, full core events/s (one CPU) | ≥ {core_runs.GOAL:,} |"
            f" {r.core.full.show()} | {verdict(r.core.full.median >= core_runs.GOAL)} |"
        )
    if r.e2e and r.e2e.complete:
        x = r.e2e
        rate = x.worker
        share = Spread(tuple(w / x.baseline.median for w in rate.values))
        rows.append(
            f"| worker end to end, events/s (one worker) | ≥ {e2e.GOAL_RATE:,} |"
            f" {rate.show()} | {verdict(rate.median >= e2e.GOAL_RATE)} |"
        )
        rows.append(
            f"| worker / raw-consumer baseline | ≥ {e2e.GOAL_SHARE:.0%} |"
            f" {share.show('{:.2%}')} | {verdict(share.median >= e2e.GOAL_SHARE)} |"
        )
    elif r.e2e:
        why = f"no figure: {_incomplete(r.e2e)} (see section 2)"
        rows.append(
            f"| worker end to end, events/s (one worker) | ≥ {e2e.GOAL_RATE:,} | {why} |"
            f" {INCOMPLETE} |"
        )
        rows.append(
            f"| worker / raw-consumer baseline | ≥ {e2e.GOAL_SHARE:.0%} | {why} | {INCOMPLETE} |"
        )
    for result in r.lag:
        p99 = result.spread(0.99)
        bound = "" if result.complete else " (≥: not all decisions came back, see below)"
        target = f"≤ {lag.GOAL_P99_SECONDS * 1000:.0f} ms" if result.rate == lag.GOAL_RATE else "—"
        met = (
            verdict(result.complete and p99.median <= lag.GOAL_P99_SECONDS)
            if result.rate == lag.GOAL_RATE
            else "—"
        )
        rows.append(
            f"| decision lag p99 at {result.rate:,} events/s | {target} |"
            f" {_scaled(p99, 1000, '{:,.0f}', ' ms')}{bound} | {met} |"
        )
    if r.recovery:
        rows += [
            f"| recovery to ready, {r.recovery.users:,} users, `{store.store}` |"
            f" ≤ {recovery.GOAL_SECONDS:.0f} s for 1,000,000 users |"
            f" {store.ready.show('{:.1f}', ' s')} |"
            f" {_recovery_verdict(r.recovery.users, store.ready.median)} |"
            for store in r.recovery.stores
        ]
        for store in r.recovery.stores:
            per_user = store.bytes_per_user
            rows.append(
                f"| RSS per tracked user, {r.recovery.users:,} users, `{store.store}` |"
                f" ≤ {recovery.GOAL_BYTES_PER_USER:,} bytes |"
                f" {per_user.show('{:,.0f}', ' bytes')} |"
                f" {verdict(per_user.median <= recovery.GOAL_BYTES_PER_USER)} |"
            )
    if r.timers:
        t = r.timers
        rows.append(
            f"| watermark step, {t.users:,} users, no timer due | — |"
            f" {_scaled(t.idle_step, 1e6, '{:.2f}', ' µs')} | — |"
        )
        rows.append(
            f"| watermark step, {t.users:,} users, {t.due:,} timers due | — |"
            f" {_scaled(t.due_step, 1e3, '{:.1f}', ' ms')} | — |"
        )
    return [*rows, ""]


def _recovery_verdict(users: int, seconds: float) -> str:
    if users >= 1_000_000:
        return verdict(seconds <= recovery.GOAL_SECONDS)
    if seconds > recovery.GOAL_SECONDS:
        # Recovery reads every changelog record: more users take longer, never less.
        return f"{verdict(False)} (already over at {users:,} users)"
    return "not measured at 1,000,000 users"


def _core(c: CoreResult) -> list[str]:
    return [
        "## 1. Core only",
        "",
        f"`bench.core`'s generator and stage functions (see `python -m bench.core` for the"
        f" detailed report with a profile), on a smaller batch: {c.records:,} records for"
        f" {c.users:,} users (seed {c.seed}) over 60 days, with 1% invalid records and 0.5%"
        f" exact duplicates. One thread, the process {c.pinning}. events/s counts every record."
        f" The full core takes the records in batches of {BATCH_RECORDS:,}, with the cyclic"
        " garbage collector set as in the worker: its thresholds raised, and paused during"
        " each batch.",
        "",
        "| stage | events/s |",
        "|---|---|",
        f"| `orjson.loads` of every value (ceiling) | {c.ceiling.show()} |",
        f"| decode only (`risk.contract.decode`) | {c.decode.show()} |",
        f"| full core: decode + `PartitionProcessor.handle` + `Decision.to_json` | {c.full.show()} |",
        "",
        f"Target ≥ {core_runs.GOAL:,} events/s for the full core:"
        f" {verdict(c.full.median >= core_runs.GOAL)}"
        f" ({core_runs.GOAL / c.full.median:.1f}× short)."
        if c.full.median < core_runs.GOAL
        else f"Target ≥ {core_runs.GOAL:,} events/s for the full core: {verdict(True)}.",
        "",
        f"The last full-core run processed {c.processed:,} records, counted {c.duplicates:,}"
        f" duplicates, dead-lettered {c.dead_letters:,} and emitted {c.decisions:,} limit events.",
        "",
    ]


def _e2e(x: E2EResult) -> list[str]:
    lines = [
        "## 2. Worker end to end",
        "",
        f"{x.records:,} records of `bench.core`'s mix (purchases, repayments, loan applications;"
        f" 1% invalid, 0.5% duplicates) for {x.users:,} users, preloaded into the five input"
        f" topics ({x.partitions} partitions each, keyed by user id, partitioned with"
        f" `risk.partitioner`) in {x.produce_seconds:.1f} s"
        f" ({x.records / x.produce_seconds:,.0f} records/s, batches built by hand). Each run"
        " starts one fresh `lineguard worker` (its own consumer group and output topic,"
        " `memory://`, at-least-once, `LINEGUARD_MAX_IDLE=30` as in the chaos run) and measures"
        f" from the `/readyz` 200 response (asked every {READY_POLL_SECONDS} s) until the group"
        f" has committed every input offset (read every {COMMIT_POLL_SECONDS} s), or until the"
        f" time bound of {x.bound:.0f} s. events/s = records committed ÷ that time. The worker"
        f" commits every {COMMIT_INTERVAL_SECONDS} s (`LINEGUARD_BROKER_COMMIT_INTERVAL`), so"
        " the last commit can come up to that long after the last record was handled: each"
        f" time is measured to within about {COMMIT_INTERVAL_SECONDS + COMMIT_POLL_SECONDS:.1f} s"
        f"{_granularity_share(x)}.",
        "",
        "| run | ready after start | all committed | time | records committed | events/s |"
        " limit events written |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for n, w in enumerate(x.runs, 1):
        lines.append(
            f"| {n} | {w.ready_seconds:.1f} s | {'yes' if w.all_committed else 'no'} |"
            f" {w.seconds:.1f} s | {w.committed:,} of {w.total:,} | {w.rate:,.0f} |"
            f" {w.limit_events:,} |"
        )
    lines.append("")
    for n, w in enumerate(x.runs, 1):
        if w.decisions is not None:
            lines.append(f"- Run {n} committed everything; {_decision_check(w.decisions)}")
        elif not w.all_committed:
            lines.append(
                f"- Run {n} hit the time bound of {x.bound:.0f} s with {w.committed:,} of"
                f" {w.total:,} records committed: incomplete, so not checked against replay."
            )
        else:
            lines.append(f"- Run {n} committed everything but was not checked against replay.")
    if x.complete:
        rate = x.worker
        lines += [
            f"- Worker: {rate.show()} events/s; target ≥ {e2e.GOAL_RATE:,}:"
            f" {verdict(rate.median >= e2e.GOAL_RATE)}.",
            f"- Baseline, one aiokafka consumer reading the same {x.records:,} records with"
            f" `orjson.loads` of every value: {x.baseline.show()} events/s.",
            f"- Worker ÷ baseline: {rate.median / x.baseline.median:.2%} of the medians; target"
            f" ≥ {e2e.GOAL_SHARE:.0%}:"
            f" {verdict(rate.median / x.baseline.median >= e2e.GOAL_SHARE)}.",
        ]
    else:
        lines += [
            f"- Worker: no figure, the measurement is incomplete: {_incomplete(x)}. A run"
            " counts only if it committed every record within the bound and its decisions"
            " equal replay's; the rates in the table are what each run did, not a result"
            f" against the target of ≥ {e2e.GOAL_RATE:,} events/s.",
            f"- Baseline, one aiokafka consumer reading the same {x.records:,} records with"
            f" `orjson.loads` of every value: {x.baseline.show()} events/s (no worker ÷"
            " baseline share, for the same reason).",
        ]
    if x.expected_decisions is None:
        lines.append(
            "- The offline replay (the expected limit events) runs only when a run committed"
            " everything, so it was skipped."
        )
    lines.append("")
    return lines


def _incomplete(x: E2EResult) -> str:
    """Which runs did not count, and why."""
    if not x.runs:
        return "no worker run"
    bounded = sum(1 for w in x.runs if not w.all_committed)
    unchecked = sum(1 for w in x.runs if w.all_committed and w.decisions is None)
    failed = sum(1 for w in x.runs if w.decisions is not None and not w.decisions_match)
    why = [f"{bounded} hit the time bound of {x.bound:.0f} s"] if bounded else []
    why += [f"{failed} did not match replay"] if failed else []
    why += [f"{unchecked} not checked against replay"] if unchecked else []
    complete = sum(1 for w in x.runs if w.complete)
    return f"{complete} of {len(x.runs)} runs complete; " + ", ".join(why)


def _decision_check(d: DecisionCounts) -> str:
    """One run's output topic against ``risk.replay`` of the same records."""
    ok = d.ok
    return (
        f"its output topic against `risk.replay` of the same records, event by event"
        f" (`decided_at` aside): {d.expected:,} expected, {d.found:,} found, {d.lost:,} lost,"
        f" {d.unexpected:,} unexpected, {d.mismatched:,} different"
        f" ({d.duplicated:,} repeated copies, {d.reordered_users:,} users in another order):"
        f" {'**passed**' if ok else '**FAILED**'}."
    )


def _granularity_share(x: E2EResult) -> str:
    """The commit interval and the poll as a share of the median run's time."""
    if not x.runs:
        return ""
    seconds = Spread(tuple(w.seconds for w in x.runs)).median
    share = (COMMIT_INTERVAL_SECONDS + COMMIT_POLL_SECONDS) / seconds if seconds else math.inf
    return f", {share:.1%} of the median run's {seconds:.1f} s"


def _lag(results: list[LagResult]) -> list[str]:
    first = results[0]
    lines = [
        "## 3. Decision lag",
        "",
        "Each simulated user sends three small loan applications (¥500) in a row, stamped with"
        " the wall clock; the third freezes the line at once (`SMALL_LOAN_BURST`) and the freeze"
        " names it in `caused_by`. A producer paces the applications at a fixed rate for"
        f" {first.duration:.0f} s; a consumer beside it (same process) reads the limit topic."
        " Lag = wall time the freeze was read − wall time its third application was handed to"
        f" the producer. After the producer stops, the run waits at most {first.drain:.0f} s"
        " more for the remaining freezes. Each run has its own topics and a fresh worker"
        " (`memory://`).",
        "",
        "| rate | freezes back / expected (per run) | p50 | p95 | p99 | target |",
        "|---:|---|---|---|---|---|",
    ]
    for result in results:
        back = ", ".join(f"{r.received:,}/{r.expected:,}" for r in result.runs)
        target = (
            f"p99 ≤ {lag.GOAL_P99_SECONDS * 1000:.0f} ms:"
            f" {verdict(result.complete and result.spread(0.99).median <= lag.GOAL_P99_SECONDS)}"
            if result.rate == lag.GOAL_RATE
            else "—"
        )
        lines.append(
            f"| {result.rate:,}/s | {back} |"
            f" {_scaled(result.spread(0.5), 1000, '{:,.0f}', ' ms')} |"
            f" {_scaled(result.spread(0.95), 1000, '{:,.0f}', ' ms')} |"
            f" {_scaled(result.spread(0.99), 1000, '{:,.0f}', ' ms')} | {target} |"
        )
    if not all(result.complete for result in results):
        lines += [
            "",
            "Where fewer freezes came back than were caused, the worker had not caught up with"
            " the producer by the end of the wait: the percentiles cover only the freezes that"
            " came back, and the missing ones would have come later still, so those figures"
            " are lower bounds.",
        ]
    lines.append("")
    return lines


def _recovery(x: RecoveryResult) -> list[str]:
    lines = [
        "## 4. Recovery and 5. memory",
        "",
        f"A changelog of {x.users:,} users ({x.changelog_bytes / 2**20:,.0f} MiB,"
        f" {x.changelog_bytes / x.users:,.0f} bytes a state on average) written straight to"
        " `<app id>-users-changelog` in"
        f" {x.produce_seconds:.1f} s: states the core built from about 5 records each"
        f" ({x.templates:,} templates from `bench.core`'s generator), cloned under distinct user"
        " ids, encoded with `STATE_ENCODER`, each on the partition `risk.partitioner` gives its"
        " user id. Each run starts a fresh worker (new data directory, so `rocksdb://` rebuilds"
        " from the changelog too) and times it from process start to `GET /readyz` 200; then"
        f" its `lineguard_users`, summed over the statuses, must be {x.users:,} (a run that"
        " reports fewer users fails the benchmark), and two seconds later it reads VmRSS from"
        " `/proc/PID/status`. An idle worker of another app id,"
        " with an empty table, is started before each run for the baseline. RSS per user ="
        f" (RSS after recovery − median idle RSS) ÷ {x.users:,}.",
        "",
        "| store | ready with the changelog | ready, empty table | RSS after recovery |"
        " RSS idle | RSS per user |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{s.store}` | {s.ready.show('{:.1f}', ' s')} | {s.idle_ready.show('{:.1f}', ' s')}"
        f" | {_scaled(s.rss_kib, 1 / 1024, '{:,.0f}', ' MiB')}"
        f" | {_scaled(s.idle_rss_kib, 1 / 1024, '{:,.0f}', ' MiB')}"
        f" | {s.bytes_per_user.show('{:,.0f}', ' bytes')} |"
        for s in x.stores
    ]
    for store, why in x.unavailable.items():
        lines.append(f"| `{store}` | not run: {why} | | | | |")
    for s in x.stores:
        spent = s.ready.median - s.idle_ready.median
        if spent > 0:
            lines.append(
                f"\n`{s.store}`: {x.users / spent:,.0f} users recovered a second (ready with the"
                " changelog minus ready with an empty table, medians); at that rate 1,000,000"
                f" users would take about {1_000_000 * spent / x.users:,.0f} s"
                " more than an empty start — an extrapolation, not a measurement."
            )
    lines += [
        "",
        f"Targets: recovery of 1,000,000 users ≤ {recovery.GOAL_SECONDS:.0f} s; ≤"
        f" {recovery.GOAL_BYTES_PER_USER:,} bytes of RSS per user.",
    ]
    if x.users < 1_000_000:
        lines.append(
            f"This run used {x.users:,} users, not 1,000,000, to stay within `make bench`'s time"
            " budget (see the command line); `python -m bench --only recovery` runs the full"
            " 1,000,000."
        )
    lines.append("")
    return lines


def _timers(t: TimerResult) -> list[str]:
    return [
        "## 6. Timers",
        "",
        f"The pure core in this process: a `PartitionProcessor` over a `dict` store of"
        f" {t.users:,} users, each with one pending timer (an unpaid 1-instalment purchase), its"
        f" heap rebuilt by `recover` ({t.build_seconds:.1f} s to decode the states and build"
        " it). A step with no timer due is `advance_watermark(watermark + 1 µs)`, averaged over"
        f" 100,000 calls; a step with {t.due:,} timers due advances to the due time of"
        f" {t.due:,} users whose instalment falls due together (a fresh group each run; each"
        " fires an `OVERDUE_ACTIVE` freeze).",
        "",
        "| step | time |",
        "|---|---|",
        f"| no timer due | {_scaled(t.idle_step, 1e6, '{:.2f}', ' µs')} |",
        f"| {t.due:,} timers due | {_scaled(t.due_step, 1e3, '{:.1f}', ' ms')}"
        f" ({_scaled(t.due_step, 1e6 / t.due, '{:.0f}', ' µs')} a timer;"
        f" decisions per run: {', '.join(f'{n:,}' for n in t.fired)}) |",
        "",
    ]


def _scale(s: ScaleResult | None, x: E2EResult | None) -> list[str]:
    lines = ["## 7. Scale-out", ""]
    if x is not None and not x.complete:
        lines += [
            "No estimate from the worker end to end: its measurement is incomplete (section 2).",
            "",
        ]
    elif x is not None:
        rate = x.worker.median
        partitions = x.partitions
        lines += [
            f"On paper, from the median per-worker rate above ({rate:,.0f} events/s with"
            f" {partitions} partitions, `LINEGUARD_TOPIC_PARTITIONS`): partitions are the unit"
            " of parallelism, so a group uses at most as many workers as partitions, and the"
            " estimate assumes each worker has a CPU of its own and a broker that keeps up.",
            "",
            f"| event rate | workers needed | partitions needed | with {partitions} partitions |",
            "|---:|---:|---:|---|",
        ]
        for target in SCALE_RATES:
            needed = math.ceil(target / rate) if rate else 0
            fits = "enough" if needed <= partitions else f"not enough: at most {partitions} workers"
            lines.append(f"| {target:,}/s | {needed:,} | ≥ {needed:,} | {fits} |")
        lines.append("")
    if s is not None:
        if s.caught_up:
            outcome = (
                f"all {s.committed:,} input records were committed within {s.seconds:.1f} s of"
                " the first one produced"
            )
        else:
            outcome = (
                f"**incomplete**: the time bound ran out with {s.committed:,} of {s.total:,}"
                " input records committed, so the split below covers only those"
            )
        lines += [
            f"Test-sized run: two workers in one group, both ready and owning their partitions"
            f" before {s.records:,} records (`bench.core`'s mix) are produced; {outcome}. One"
            " run. It reports the split, not a rate: the run is too short for one (the"
            f" workers commit every {COMMIT_INTERVAL_SECONDS} s,"
            " `LINEGUARD_BROKER_COMMIT_INTERVAL`, and the commits are read every"
            f" {COMMIT_POLL_SECONDS} s), and both workers, the producer and the broker share"
            f" this machine's {os.cpu_count()} CPUs, so the pair's events/s would say little"
            " about two workers on two machines. What the run shows is that each worker owns"
            " half the partitions and handles the records keyed to them.",
            "",
            "| worker | partitions | `lineguard_events_total` |",
            "|---|---|---:|",
            *(
                f"| {w.name} | {', '.join(map(str, w.partitions))} | {w.events:,.0f} |"
                for w in s.shares
            ),
            "",
        ]
    return lines


def now() -> datetime:
    return datetime.now(UTC)
