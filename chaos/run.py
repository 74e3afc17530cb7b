"""One chaos run: a broker, workers in one group, simulated traffic, and faults on a timer.

Every ``kill_every`` seconds of the traffic a random worker is SIGKILLed (once SIGTERMed
instead) and restarted at once. When the traffic has stopped and the group has committed
every input record, the workers are stopped and :mod:`chaos.check` compares what they
decided with ``lineguard replay`` of the stored input.

Wall clock: the simulator stamps every record at or before the wall time the traffic
started (``streams.simulate``), so no record is ``in_future`` for a worker, and replay
runs with ``now`` at the end of the run, when none is for replay either. The decisions
therefore depend on the logs alone, as in the ``stream`` clock mode they must.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from chaos.check import (
    CheckError,
    DeadLetter,
    DecisionCounts,
    Isolation,
    compare_dead_letters,
    compare_decisions,
    decision_docs,
    expected_dead_letters,
    read_dead_letters,
    read_inputs,
    read_topic,
    run_replay,
    write_lines,
    write_replay_input,
)
from chaos.workers import WorkerSlot, scan_log
from risk.policy import PolicyError, load_policy
from risk.replay import INPUT_TOPICS
from streams.devbroker import TansuBroker, apply_tansu_shims
from streams.runtime import wall_micros
from streams.simulate import run_simulation

LIMIT_TOPIC = "credit.limit-events.v1"
_READY_TIMEOUT_SECONDS = 120.0
_LAG_POLL_SECONDS = 2.0
_MIN_STEP_SECONDS = 1.0
"""A fetch started at the catch-up bound still gets this long, for a last look."""

_STOP_SECONDS = 10.0

_T = TypeVar("_T")

Guarantee = Literal["at_least_once", "exactly_once"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run. The defaults are ``make chaos``; the test runs a short version."""

    duration: float = 120.0
    rate: float = 2000.0
    users: int = 5000
    workers: int = 2
    partitions: int = 6
    kill_every: float = 15.0
    sigterm_at: int = 4
    """Which fault (1, 2, …) is a SIGTERM instead of a SIGKILL; 0 for none."""
    seed: int = 7
    time_scale: float = 600.0
    """Simulated seconds per wall second (see :func:`_policy`)."""
    grace_days: int = 0
    """``overdue.grace_days`` of the policy the workers and replay use."""
    watermark_delay: str = "10m"
    """``time.watermark_delay`` of that policy."""
    guarantee: Guarantee = "at_least_once"
    store: str = "memory://"
    bootstrap: str | None = None
    """A Kafka to run against; None starts an embedded Tansu broker."""
    catch_up_timeout: float = 900.0


@dataclass(slots=True)
class Fault:
    """One worker stopped by a signal and started again."""

    at: float
    worker: str
    signal: str
    pid: int
    exited_after: float
    new_pid: int
    ready_after: float


@dataclass(slots=True)
class Report:
    """Everything a run measured; ``passed`` is the verdict."""

    plan: dict[str, Any]
    started: str
    broker: str
    produced: int = 0
    traffic_seconds: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    unexpected_exits: int = 0
    unclean_stops: list[str] = field(default_factory=list)
    """Workers a SIGTERM did not end with status 0 within its grace, or a SIGKILL did not end."""
    log_problems: dict[str, int] = field(default_factory=dict)
    """Lines of the worker logs naming a traceback, an agent crash or restart, or
    ``StateNotPersistedError`` (:data:`chaos.workers.LOG_PROBLEMS`), by kind."""
    caught_up_after: float | None = None
    stalled: list[str] = field(default_factory=list)
    """Input partitions still not committed to their end when the catch-up wait ran out."""
    replay_summary: str = ""
    decisions: DecisionCounts | None = None
    dead_letters_expected: int = 0
    dead_letters_found: int = 0
    dead_letters_lost: int = 0
    dead_letters_unexpected: int = 0
    dead_letters_duplicated: int = 0
    dead_letters_malformed: int = 0
    """Letters on the wrong ``.dlt`` topic or partition, with other bytes than their input
    record, or with missing or unreadable headers; counted in ``dead_letters_unexpected`` too."""
    workdir: str = ""
    error: str = ""

    @property
    def passed(self) -> bool:
        """No error, every decision and dead letter found, and nothing extra or different.

        A run that produced nothing, or whose replay expects no decision, checked nothing
        and fails.
        """
        return (
            not self.error
            and self.produced > 0
            and self.decisions is not None
            and self.decisions.expected > 0
            and self.decisions.ok
            and not self.dead_letters_lost
            and not self.dead_letters_unexpected
            and not self.unexpected_exits
            and not self.unclean_stops
            and not any(self.log_problems.values())
            and not self.stalled
        )

    @property
    def warnings(self) -> list[str]:
        """What deserves a look but does not fail the run.

        Repeated decisions or dead letters under ``exactly_once``: lineguard sends limit
        events, dead letters and ticks with Faust's plain producer, outside the transaction,
        so a crash repeats them there too (README, Guarantees and failure modes, and
        Reliability testing); consumers deduplicate by ``event_id`` in either mode. They are still counted and named here, because
        exactly-once is what the run was asked to check.
        """
        duplicated = (
            self.decisions.duplicated if self.decisions else 0,
            self.dead_letters_duplicated,
        )
        if self.plan.get("guarantee") != "exactly_once" or not any(duplicated):
            return []
        return [
            f"exactly_once repeated {duplicated[0]} decisions and {duplicated[1]} dead letters:"
            " lineguard sends them with Faust's plain producer, outside the transaction"
            " (a known limitation, README)"
        ]

    def as_json(self) -> dict[str, Any]:
        """The report as plain data, with the verdict and the warnings."""
        return {**asdict(self), "passed": self.passed, "warnings": self.warnings}

    def lines(self) -> Iterator[str]:
        """The figures, one per line, for the terminal and RELIABILITY.md."""
        yield f"broker                {self.broker}"
        yield f"input records         {self.produced} in {self.traffic_seconds:.1f} s"
        yield f"faults                {len(self.faults)}: " + ", ".join(
            f"{n} {s}" for s, n in sorted(Counter(f.signal for f in self.faults).items())
        )
        if self.faults:
            worst = max(f.ready_after for f in self.faults)
            yield f"restart to ready      at most {worst:.1f} s"
        yield f"unexpected exits      {self.unexpected_exits}"
        yield f"unclean stops         {len(self.unclean_stops)}"
        for stop in self.unclean_stops:
            yield f"  {stop}"
        problems = ", ".join(f"{n} {kind}" for kind, n in sorted(self.log_problems.items()) if n)
        yield f"worker log problems   {problems or 0}"
        if self.caught_up_after is not None:
            yield f"caught up             {self.caught_up_after:.1f} s after the traffic stopped"
        if self.stalled:
            yield f"stalled partitions    {len(self.stalled)}: {', '.join(self.stalled)}"
        if self.replay_summary:
            yield f"replay                {self.replay_summary}"
        if self.decisions is not None:
            d = self.decisions
            yield f"decisions expected    {d.expected}"
            yield f"decisions found       {d.found}"
            yield f"decisions lost        {d.lost}"
            yield f"decisions unexpected  {d.unexpected}"
            yield f"decisions mismatched  {d.mismatched}"
            yield f"decisions duplicated  {d.duplicated} (extra copies, same event_id and content)"
            yield f"users out of order    {d.reordered_users}"
            yield f"dead letters expected {self.dead_letters_expected}"
            yield f"dead letters found    {self.dead_letters_found}"
            yield (
                f"dead letters lost     {self.dead_letters_lost}, unexpected"
                f" {self.dead_letters_unexpected}, duplicated {self.dead_letters_duplicated}"
            )
            yield f"dead letters malformed {self.dead_letters_malformed} (counted as unexpected)"
        for warning in self.warnings:
            yield f"warning               {warning}"
        if self.error:
            yield f"error                 {self.error}"
        if self.workdir:
            yield f"kept                  {self.workdir}"
        yield "PASS" if self.passed else "FAIL"


@contextmanager
def _broker(plan: Plan) -> Iterator[tuple[str, str]]:
    """``(bootstrap, description)``: the given Kafka, or an embedded Tansu stopped on exit."""
    if plan.bootstrap:
        yield plan.bootstrap, f"{plan.bootstrap} (external), {plan.guarantee}"
        return
    with TansuBroker() as broker:
        # The same shim the workers get: without it, end offsets read short on Tansu.
        apply_tansu_shims()
        yield broker.bootstrap, f"{broker.bootstrap} (embedded Tansu, in memory), {plan.guarantee}"


def run(plan: Plan, say: Callable[[str], None] = print, *, keep: bool = False) -> Report:
    """Run the plan; every process it started is stopped before it returns.

    The working directory (worker logs, the replay input and both sides of the comparison,
    about 80 MB for ``make chaos``) is kept after a failure, or always with ``keep``.
    """
    if plan.guarantee == "exactly_once" and not plan.bootstrap:
        raise ValueError(
            "exactly_once needs transactions, which the embedded Tansu broker does not support"
            " (see README, Development broker): pass --bootstrap or LINEGUARD_TEST_BOOTSTRAP"
        )
    if plan.guarantee == "exactly_once" and plan.store.startswith("rocksdb"):
        raise ValueError("exactly_once runs with --store memory:// only (README, Guarantees)")
    workdir = Path(tempfile.mkdtemp(prefix="lineguard-chaos-"))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with _broker(plan) as (bootstrap, description):
        report = Report(asdict(plan), started, description, workdir=str(workdir))
        say(f"chaos: broker {description}; logs in {workdir}")
        prefix = f"chaos{uuid.uuid4().hex[:8]}"
        topics = [f"{prefix}.{name}" for name in INPUT_TOPICS]
        policy = _policy(workdir, plan)
        env = _worker_env(plan, bootstrap, prefix, topics) | {"LINEGUARD_POLICY_FILE": str(policy)}
        slots = [WorkerSlot(f"worker-{n + 1}", env, workdir) for n in range(plan.workers)]
        try:
            asyncio.run(_drive(plan, bootstrap, prefix, topics, slots, report, say))
        except RuntimeError as error:  # a worker that does not start, or exits at once
            report.error = str(error)
        finally:
            for slot in slots:
                slot.stop()
            _check_stops(slots, report)
        if not report.error:
            try:
                _verify(plan, bootstrap, prefix, topics, workdir, report, say)
            except (RuntimeError, TimeoutError) as error:  # replay failed, or a topic unreadable
                report.error = str(error)
    if report.passed and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
        report.workdir = ""
    return report


def _check_stops(slots: list[WorkerSlot], report: Report) -> None:
    """How every process ended, and what its log says: a crash is not only a missing PID."""
    for slot in slots:
        for exit_ in slot.exits:
            if not exit_.signal:  # found dead when it was to be stopped: nothing else saw it
                report.unexpected_exits += 1
                report.unclean_stops.append(f"{slot.name}: {exit_.describe()}")
            elif not exit_.clean:
                report.unclean_stops.append(f"{slot.name}: {exit_.describe()}")
        if slot.log_path.exists():
            found = scan_log(slot.log_path.read_text(errors="replace"))
            for kind, count in found.items():
                report.log_problems[kind] = report.log_problems.get(kind, 0) + count


def _policy(workdir: Path, plan: Plan) -> Path:
    """The packaged policy with the plan's grace and watermark delay, written to ``workdir``.

    Online, the event-time merge can only wait for records the worker knows are there, so
    records of two topics that reach the broker within a few milliseconds of each other may
    be applied in either order, and an event may move the watermark past a timer before an
    earlier record of another topic is visible. In real time that needs two events of one
    partition within milliseconds, well inside the 60 s watermark delay. The simulator's
    time is compressed, which shrinks every gap: at its default 14,400× a repayment made 12
    minutes after its purchase is 50 ms later on the wall clock, and the 60 s delay is 4 ms.
    So the plan compresses time 600× (12 minutes are 1.2 s), and to still see overdue timers
    within minutes it sets the grace to 0 days (overdue at the due date, which the
    simulator sets 30 minutes to 12 hours after a purchase) and the watermark delay to
    10 minutes (1 s of wall time). Replay uses the same file.
    """
    text = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
    for default, chosen in (
        ('watermark_delay = "60s"', f'watermark_delay = "{plan.watermark_delay}"'),
        ("grace_days = 3", f"grace_days = {plan.grace_days}"),
    ):
        if default not in text:
            raise RuntimeError(f"the packaged policy no longer has {default}")
        text = text.replace(default, chosen)
    path = workdir / "policy.toml"
    path.write_text(text, "utf-8")
    try:
        load_policy(path)
    except PolicyError as error:
        raise ValueError(f"the chaos policy is invalid: {error}") from error
    return path


def _worker_env(plan: Plan, bootstrap: str, prefix: str, topics: list[str]) -> dict[str, str]:
    purchases, repayments, applications, verifications, overrides = topics
    env = {
        "LINEGUARD_BROKER_URL": f"kafka://{bootstrap}",
        "LINEGUARD_APP_ID": prefix,
        "LINEGUARD_TOPIC_PARTITIONS": str(plan.partitions),
        "LINEGUARD_PROCESSING_GUARANTEE": plan.guarantee,
        "LINEGUARD_STORE": plan.store,
        "LINEGUARD_PURCHASES_TOPIC": purchases,
        "LINEGUARD_REPAYMENTS_TOPIC": repayments,
        "LINEGUARD_LOAN_APPLICATIONS_TOPIC": applications,
        "LINEGUARD_INCOME_VERIFICATIONS_TOPIC": verifications,
        "LINEGUARD_LIMIT_OVERRIDES_TOPIC": overrides,
        "LINEGUARD_LIMIT_EVENTS_TOPIC": f"{prefix}.{LIMIT_TOPIC}",
        # An empty input partition with unread data holds the merge until it is fetched.
        # A worker restarted under load may take seconds to fetch every partition once, and
        # a hold that ran out would merge in another order than replay (as in the tests).
        "LINEGUARD_MAX_IDLE": "30",
    }
    if plan.bootstrap:
        # Real brokers accept these (group.min.session.timeout.ms is 6 s by default); with
        # the 60 s default a killed worker's partitions would stand still for a minute.
        env.update(
            LINEGUARD_BROKER_SESSION_TIMEOUT="10",
            LINEGUARD_BROKER_HEARTBEAT_INTERVAL="1",
            LINEGUARD_BROKER_REBALANCE_TIMEOUT="10",
        )
    else:
        env["LINEGUARD_DEV_BROKER"] = "tansu"
    return env


async def _drive(
    plan: Plan,
    bootstrap: str,
    prefix: str,
    topics: list[str],
    slots: list[WorkerSlot],
    report: Report,
    say: Callable[[str], None],
) -> None:
    await _create_topics(bootstrap, topics, plan.partitions)
    for slot in slots:  # one by one: each worker's start-up creates the topics it lacks
        slot.start()
        ready = await asyncio.to_thread(slot.wait_ready, _READY_TIMEOUT_SECONDS)
        say(f"{slot.name} ready after {ready:.1f} s (pid {slot.history[-1]})")
    say(f"traffic: {plan.rate:.0f} records/s for {plan.duration:.0f} s, {plan.users} users")
    loop = asyncio.get_running_loop()
    began = loop.time()
    traffic = asyncio.create_task(
        run_simulation(
            bootstrap, users=plan.users, rate=plan.rate, duration=plan.duration,
            seed=plan.seed, topics=topics, time_scale=plan.time_scale,
        )
    )  # fmt: skip
    try:
        await _faults(plan, slots, began, report, say)
        stats = await traffic
    finally:
        if not traffic.done():
            traffic.cancel()
    report.produced, report.traffic_seconds = stats.records, stats.elapsed
    say(f"traffic done: {stats.summary()}")
    await _catch_up(plan, bootstrap, prefix, topics, slots, report, say)


async def _faults(
    plan: Plan, slots: list[WorkerSlot], began: float, report: Report, say: Callable[[str], None]
) -> None:
    """Stop a random worker every ``kill_every`` seconds and start it again at once."""
    rng = random.Random(plan.seed)  # noqa: S311 - picks a victim, not a secret
    loop = asyncio.get_running_loop()
    number = 1
    while (due := number * plan.kill_every) < plan.duration:
        await asyncio.sleep(max(0.0, began + due - loop.time()))
        await _revive(slots, report, say)
        slot = rng.choice(slots)
        sig = signal.SIGTERM if number == plan.sigterm_at else signal.SIGKILL
        at = loop.time() - began
        pid = slot.history[-1]
        exited_after = await asyncio.to_thread(slot.signal, sig)
        new_pid = slot.start()
        ready_after = await asyncio.to_thread(slot.wait_ready, _READY_TIMEOUT_SECONDS)
        fault = Fault(round(at, 1), slot.name, sig.name, pid, round(exited_after, 2), new_pid,
                      round(ready_after, 1))  # fmt: skip
        report.faults.append(fault)
        say(
            f"[{at:5.1f}s] {sig.name} {slot.name} (pid {pid}, gone in {exited_after:.1f} s);"
            f" restarted as pid {new_pid}, ready after {ready_after:.1f} s"
        )
        number += 1


async def _create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create the inputs first: a broker may auto-create them with another partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1) for topic in topics]
        )
    finally:
        await admin.close()


async def _revive(slots: list[WorkerSlot], report: Report, say: Callable[[str], None]) -> None:
    """Start again any worker that exited by itself, as an orchestrator would; count it."""
    for slot in slots:
        if not slot.alive():
            report.unexpected_exits += 1
            pid = slot.history[-1]
            slot.start()
            say(f"{slot.name} (pid {pid}) exited by itself; restarted as pid {slot.history[-1]}")
            await asyncio.to_thread(slot.wait_ready, _READY_TIMEOUT_SECONDS)


async def _catch_up(
    plan: Plan,
    bootstrap: str,
    group: str,
    topics: list[str],
    slots: list[WorkerSlot],
    report: Report,
    say: Callable[[str], None],
) -> None:
    """Wait until the group has committed every input record, or note what stayed behind."""
    started = time.monotonic()
    tps = [TopicPartition(topic, p) for topic in topics for p in range(plan.partitions)]

    async def bounded(step: Awaitable[_T]) -> _T:
        """``step`` within what is left of the catch-up bound.

        aiokafka's coordinator lookup for a committed offset retries for ever.
        """
        left = plan.catch_up_timeout - (time.monotonic() - started)
        return await asyncio.wait_for(step, max(left, _MIN_STEP_SECONDS))

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        await bounded(consumer.start())
        reported = 0.0
        while True:
            await _revive(slots, report, say)
            waited = time.monotonic() - started
            end = await bounded(consumer.end_offsets(tps))
            committed = {tp: await bounded(consumer.committed(tp)) or 0 for tp in tps}
            lag = {tp: end[tp] - committed[tp] for tp in tps if end[tp] > committed[tp]}
            behind = [
                f"{tp.topic.removeprefix(group + '.')}[{tp.partition}] {committed[tp]}/{end[tp]}"
                for tp in sorted(lag, key=lambda tp: (-lag[tp], tp))
            ]
            if not behind:
                report.caught_up_after = waited
                say(f"caught up after {waited:.1f} s")
                return
            if waited >= plan.catch_up_timeout:
                report.stalled = behind
                say(f"not caught up after {waited:.0f} s; checking what was decided anyway")
                return
            if waited - reported >= 10:
                say(f"catching up: {sum(lag.values())} records on {len(lag)} partitions;"
                    f" most behind (committed/end): {', '.join(behind[:3])}")  # fmt: skip
                reported = waited
            await asyncio.sleep(_LAG_POLL_SECONDS)
    except TimeoutError:
        waited = time.monotonic() - started
        report.stalled = [
            f"all {len(tps)} input partitions: the committed offsets could not be fetched"
            f" within the {plan.catch_up_timeout:g} s catch-up bound"
        ]
        say(f"no committed offsets after {waited:.0f} s; checking what was decided anyway")
    finally:
        with suppress(TimeoutError):  # leaving a group it never found must not hang either
            await asyncio.wait_for(consumer.stop(), _STOP_SECONDS)


def _verify(
    plan: Plan,
    bootstrap: str,
    prefix: str,
    topics: list[str],
    workdir: Path,
    report: Report,
    say: Callable[[str], None],
) -> None:
    """Read everything back, replay the inputs, and fill in the comparison."""
    now = wall_micros()  # after the run: no later than any wall clock a worker checked
    isolation: Isolation = (
        "read_committed" if plan.guarantee == "exactly_once" else "read_uncommitted"
    )

    n = plan.partitions

    async def read() -> tuple[Any, Any, Any]:
        limit = f"{prefix}.{LIMIT_TOPIC}"
        return (
            await read_inputs(bootstrap, topics, partitions=n),
            decision_docs(await read_topic(bootstrap, limit, isolation, partitions=n)),
            await read_dead_letters(bootstrap, topics, isolation, partitions=n),
        )

    records, online, letters = asyncio.run(read())
    say(f"read back {len(records)} input records, {len(online)} limit events")
    if len(records) != report.produced:
        raise CheckError(
            f"read back {len(records)} input records, but the simulator produced"
            f" {report.produced}: the comparison would not cover the traffic"
        )
    input_path = workdir / "input.jsonl"
    write_replay_input(records, input_path, partitions=plan.partitions)
    replayed = run_replay(input_path, plan.partitions, now, workdir, workdir / "policy.toml")
    report.replay_summary = replayed.summary
    report.decisions = compare_decisions(replayed.decisions, online)
    if not report.decisions.expected:
        report.error = (
            f"replay of {len(records)} input records expects no decision: nothing checked"
        )
    expected_letters = expected_dead_letters(replayed, records)
    write_lines(workdir / "online-decisions.jsonl", online)
    write_lines(workdir / "online-dead-letters.jsonl", map(_letter_doc, letters))
    write_lines(workdir / "replay-dead-letters-located.jsonl", expected_letters)
    counts = compare_dead_letters(expected_letters, letters, topics, records)
    write_lines(workdir / "malformed-dead-letters.jsonl", counts.problems)
    report.dead_letters_expected = counts.expected
    report.dead_letters_found = counts.found
    report.dead_letters_lost = counts.lost
    report.dead_letters_unexpected = counts.unexpected
    report.dead_letters_duplicated = counts.duplicated
    report.dead_letters_malformed = counts.malformed


def _letter_doc(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter read online, for a look: where it was stored and its headers."""
    return {
        "dlt_topic": letter.topic_index, "partition": letter.partition, "offset": letter.offset,
        "headers": [[name, bytes(value or b"").decode(errors="replace")]
                    for name, value in letter.headers],
    }  # fmt: skip
