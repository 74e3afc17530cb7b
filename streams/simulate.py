"""Synthetic credit-line traffic from five personas, for ``lineguard simulate`` and the demo.

The generator (:class:`Simulator`) is pure: given a seed and the simulated clock of each
call, it returns the same records every time. The asynchronous runner
(:func:`run_simulation`) paces it at a given rate and produces the records to Kafka.

Time compression
----------------
lineguard's policy speaks in days (3 days of grace, 24-hour and 7-day windows, 30-day cure
periods), while a demo lasts about a minute. The simulation therefore runs on a simulated
clock that advances ``time_scale`` times faster than the wall clock, and every timestamp it
writes is simulated time. Two constraints shape the mapping:

- lineguard rejects an ``occurred_at`` more than a day ahead of its wall clock, and in the
  ``stream`` clock mode decisions follow event time only. So simulated time must never run
  ahead of real time.
- A faster clock that starts *now* would run into the future at once.

So the simulated clock starts in the past and **ends at the wall time the run started**:
``simulated = wall_start − (duration − elapsed) × time_scale``. A run of ``duration`` wall
seconds covers ``duration × time_scale`` simulated seconds, and its last record is stamped
at the latest at the wall time the run began. The default ``time_scale`` of 14 400 makes
one wall second four simulated hours, so a one-minute demo covers ten simulated days: the
3-day grace runs out within 20 s, loan-burst freezes clear after 7 days (about 40 s), and a
first due date, set 30 minutes to 12 hours after a purchase rather than the usual 30 days,
comes up within seconds. Longer periods (30-day cures, the 180-day episode count) need
longer runs.

The record of each call is stamped with the simulated time of its *scheduled* send (record
``i`` at ``i / rate`` wall seconds), not with the measured wall time, so what the runner
produces is fixed by its arguments and the seed. Planned follow-ups (a repayment before its
due date, the next application of a burst) keep their planned times; when more are due than
the rate can carry, the stream lags behind the simulated clock, never ahead of it.
Timestamps are non-decreasing over the whole stream, so no record is late for its user.

Use the default ``stream`` clock mode with compressed time. In the ``wall`` clock mode the
worker advances every partition to the real clock, which fires the simulated users' future
timers at once; use ``time_scale=1`` there.

Re-running with the same seed produces the same event ids, which lineguard counts as
duplicates. Use a new seed for fresh traffic: user, order and event ids all carry it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer

from risk.clock import DAY, HOUR, MINUTE, SECOND, add_months, format_timestamp
from risk.contract import INCOME_VERIFICATIONS, LOAN_APPLICATIONS, PURCHASES, REPAYMENTS
from risk.replay import INPUT_TOPICS


class Persona(StrEnum):
    """How a simulated user behaves, and what lineguard should decide about them.

    The expected decisions hold under the default policy (``risk/default_policy.toml``); the
    simulator's timings are chosen around its thresholds.
    """

    GOOD_PAYER = "good_payer"
    """Buys on 1, 3, 6 or 12 instalments and repays each instalment before it falls due.

    Declares no income and applies for no loans. Never frozen.
    """

    OCCASIONAL_LATE = "occasional_late"
    """Buys and repays like a good payer, but now and then pays a first instalment late.

    At most one late instalment per 181 days, repaid 1 to 20 hours after due + grace, i.e.
    at 3 days past due. Frozen with ``OVERDUE_ACTIVE`` when the grace runs out, and restored
    with ``REPAID_AND_CURED`` at the repayment: a single slip of at most 3 days past due
    needs no cure period. A second slip within 365 days stays frozen: anti-flapping allows
    one automatic restore from a freeze per ``restore.window``.
    """

    CHRONIC_DEFAULTER = "chronic_defaulter"
    """Repays a week or more late, twice, then stops repaying altogether.

    Each late order is repaid 7 to 12 days past due: frozen with ``OVERDUE_ACTIVE`` when the
    grace runs out, and restored with ``REPAID_AND_CURED`` when the 30-day cure period ends.
    During the first cure it sends proof of income (2 to 10 days after repaying), which
    halves the cure left: that restore also carries ``INCOME_VERIFIED``. It buys again a few
    days after the full 30 days. The second spell's freeze is not restored
    automatically: anti-flapping allows one automatic restore per 365 days, so the restore
    path says ``MANUAL_REVIEW_REQUIRED``. The third order, within 180 days of the first
    spell, is never repaid.
    """

    LOAN_STACKER = "loan_stacker"
    """Fires bursts of 3 to 6 small loan applications (at most ¥1,000) within hours.

    Most go through other lenders' channels, which lowers the behaviour score.

    Frozen with ``SMALL_LOAN_BURST`` at the third application of a burst; a fifth adds
    ``LOAN_VELOCITY`` to the freeze's reasons. Restored by a window timer, with
    ``SMALL_LOAN_BURST_CLEARED`` (and ``LOAN_VELOCITY_CLEARED``), once the burst has left
    the 7-day window. The next burst comes 9 to 16 days after the last, after the restore,
    and its freeze stays: one automatic restore per 365 days.
    """

    OVERSPENDER = "overspender"
    """Declares a monthly income in a loan application, then spends 3.3 to 4.5 times it.

    The spending is spread over 4 to 6 purchases within a few days, each repaid on time.
    Frozen with ``SPEND_INCOME_MISMATCH`` when the 30-day spend passes 3 × income, restored
    by a window timer with ``SPEND_INCOME_MISMATCH_CLEARED`` once the spend still in the
    30-day window is at most 2 × income, and starts again 35 to 45 days after its last
    purchase; that second freeze stays (one automatic restore per 365 days).
    """


PERSONA_MIX: Final = (
    Persona.GOOD_PAYER,
    Persona.OCCASIONAL_LATE,
    Persona.CHRONIC_DEFAULTER,
    Persona.LOAN_STACKER,
    Persona.OVERSPENDER,
    Persona.GOOD_PAYER,
    Persona.GOOD_PAYER,
    Persona.OCCASIONAL_LATE,
    Persona.GOOD_PAYER,
    Persona.GOOD_PAYER,
)
"""User ``i`` has persona ``PERSONA_MIX[i % 10]``: 50 % good payers, 20 % occasional late
payers, 10 % each of the others. Every persona is present from five users on."""

DEFAULT_TIME_SCALE: Final = 14_400.0
"""Simulated seconds per wall second: 1 s is 4 simulated hours, a minute is 10 days."""

DEFAULT_INVALID_FRACTION: Final = 0.005
"""Share of deliberately invalid records, so that the dead-letter topics show in a demo."""

# The default policy's numbers that the personas' timings are built around.
_GRACE: Final = 3 * DAY
_CURE: Final = 30 * DAY
_EPISODE_WINDOW: Final = 180 * DAY
_SMALL_LOAN_MAX: Final = 100_000

_FIRST_DUE_AFTER: Final = (30 * MINUTE, 12 * HOUR)
"""When a purchase's first instalment falls due: minutes to hours, so due dates come up
within seconds of compressed time. Later instalments follow monthly, as the contract says."""
_RISK_PERSONAS_START_WITHIN: Final = 2 * DAY
_LATE_PROBABILITY: Final = 0.4
_INSTALLMENTS: Final = (1, 3, 6, 12)
_INSTALLMENT_WEIGHTS: Final = (50, 25, 15, 10)
_OTHER_LENDERS: Final = ("partner-bank", "cash-app", "line")
"""Where loan stackers apply: mostly other lenders (any channel but the policy's own, "line")."""
_MERCHANTS: Final = 50
_DEFAULTER_LATE_ORDERS: Final = 2
_PROGRESS_INTERVAL: Final = 1.0
_OVERRUN_SECONDS: Final = 2.0
"""How long past ``duration`` a slow broker may keep the runner going before it stops."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One Kafka record to produce: ``(topic, key, value)`` plus what it stands for.

    ``valid`` is False for the deliberately invalid records, which lineguard must
    dead-letter.
    """

    topic: str
    key: bytes
    value: bytes
    persona: Persona
    valid: bool


@dataclass(frozen=True, slots=True)
class SimulatedClock:
    """Maps wall seconds since the start of a run to simulated event time.

    Attributes:
        start: The simulated time at wall second 0.
        time_scale: Simulated seconds per wall second.
    """

    start: datetime
    time_scale: float

    @classmethod
    def ending_at(cls, end: datetime, duration: float, time_scale: float) -> SimulatedClock:
        """The clock whose ``duration`` wall seconds end at simulated time ``end``.

        With ``end`` the wall time a run starts, no timestamp of the run is ever ahead of
        the real clock.
        """
        return cls(end - timedelta(seconds=duration * time_scale), time_scale)

    def at(self, wall_elapsed: float) -> datetime:
        """The simulated time ``wall_elapsed`` wall seconds into the run."""
        return self.start + timedelta(seconds=wall_elapsed * self.time_scale)


@dataclass(frozen=True, slots=True)
class _Planned:
    """A record whose content was fixed when its user's session was planned."""

    topic: int
    """Index into the topics: ``PURCHASES``, ``REPAYMENTS`` or ``LOAN_APPLICATIONS``."""
    user: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Order:
    """A planned purchase, as far as a caller planning its repayment needs it."""

    order_id: str
    amount: int
    first_due: int


@dataclass(frozen=True, slots=True)
class _Wake:
    """A persona with a cycle of its own (not picked at random) starts its next session."""

    user: int


class Simulator:
    """Deterministic persona traffic: the same seed and clock give the same records.

    Good payers and occasional late payers fill the stream: whenever no planned record is
    due, one of them, picked at random, starts a purchase. The other personas follow
    cycles of their own, so their risky behaviour keeps the spacing their documentation
    promises whatever the rate. A session plans all its records up front (a purchase and
    the repayments of its instalments, or a burst of applications) and each comes out at
    its planned time.

    Args:
        users: Number of simulated users; user ``i`` has persona ``PERSONA_MIX[i % 10]``.
        seed: Seeds the generator and is part of every id, so seeds never share users.
        invalid_fraction: Share of records that are deliberately invalid (malformed JSON,
            a float amount, or a record keyed by order id instead of user id). Each is an
            extra record, so personas keep their documented behaviour, on the topic of the
            valid record before it, so each topic gets them in proportion to its valid
            traffic. 0 turns them off.
        topics: The five input topic names, in the contract's order (``INPUT_TOPICS``).
    """

    def __init__(
        self,
        users: int,
        seed: int,
        *,
        invalid_fraction: float = DEFAULT_INVALID_FRACTION,
        topics: Sequence[str] = INPUT_TOPICS,
    ) -> None:
        if users < 1:
            raise ValueError(f"users must be at least 1, not {users}")
        if not 0 <= invalid_fraction < 1:
            raise ValueError(f"invalid_fraction must be in [0, 1), not {invalid_fraction}")
        if len(topics) != len(INPUT_TOPICS):
            raise ValueError(f"topics must name {len(INPUT_TOPICS)} topics: {INPUT_TOPICS}")
        self._rng = random.Random(seed)  # noqa: S311 - synthetic data, not cryptography
        self._seed = seed
        self._invalid_fraction = invalid_fraction
        self._topics = tuple(topics)
        self._ids = [f"sim{seed}-u{index:05d}" for index in range(users)]
        self._personas = [PERSONA_MIX[index % len(PERSONA_MIX)] for index in range(users)]
        self._open = [
            index
            for index, persona in enumerate(self._personas)
            if persona in (Persona.GOOD_PAYER, Persona.OCCASIONAL_LATE)
        ]
        self._heap: list[tuple[int, int, _Planned | _Wake]] = []
        self._sequence = itertools.count()
        self._events = itertools.count(1)
        self._orders = itertools.count(1)
        self._last: int | None = None
        self._last_topic: int | None = None
        """The topic of the latest valid record, which the next invalid record goes to."""
        self._late_spells: dict[int, int] = {}
        self._defaulter_orders: Counter[int] = Counter()

    @property
    def users(self) -> dict[str, Persona]:
        """Every simulated user id and its persona."""
        return dict(zip(self._ids, self._personas, strict=True))

    def next_record(self, now: datetime) -> SimRecord:
        """The next record, at or before the simulated time ``now``.

        Args:
            now: The simulated clock, timezone-aware. An earlier ``now`` than the previous
                call's is treated as the previous one, so timestamps never go backwards.

        Returns:
            By chance (``invalid_fraction``, once there has been a valid record), an
            invalid record on the topic of the latest valid one. Else the earliest planned
            record that is due by ``now``, stamped with its planned time; else the first
            record of a new purchase by a good or occasionally late payer, stamped ``now``.
        """
        at = _micros(now)
        at -= at % SECOND
        if self._last is None:
            self._start_cycles(at)
        else:
            at = max(at, self._last)
        if (
            self._invalid_fraction
            and self._rng.random() < self._invalid_fraction
            and self._last_topic is not None
        ):
            return self._invalid(self._last_topic, self._last if self._last is not None else at)
        while not self._heap or self._heap[0][0] > at:
            self._plan_purchase(self._rng.choice(self._open), at)
        while True:
            planned_at, _, step = heapq.heappop(self._heap)
            if isinstance(step, _Planned):
                return self._emit(planned_at, step)
            self._plan_cycle(step.user, planned_at)

    def _start_cycles(self, at: int) -> None:
        for user, persona in enumerate(self._personas):
            if persona not in (Persona.GOOD_PAYER, Persona.OCCASIONAL_LATE):
                self._push(at + self._between(0, _RISK_PERSONAS_START_WITHIN), _Wake(user))

    def _plan_cycle(self, user: int, at: int) -> None:
        persona = self._personas[user]
        if persona is Persona.CHRONIC_DEFAULTER:
            self._plan_default(user, at)
        elif persona is Persona.LOAN_STACKER:
            self._plan_burst(user, at)
        else:
            self._plan_overspend(user, at)

    def _plan_purchase(
        self,
        user: int,
        at: int,
        *,
        amount: int | None = None,
        installments: int | None = None,
        repay_on_time: bool = True,
    ) -> _Order:
        """Plan a purchase at ``at`` and, if ``repay_on_time``, its repayments.

        Each instalment is repaid between the previous repayment and its own due date, so
        an order's repayments settle its instalments in due order. An occasional late
        payer's first instalment may instead be repaid at 3 days past due.

        Returns:
            The order, for callers that plan its repayment themselves.
        """
        if amount is None:
            amount = self._rng.randrange(2_000, 300_000, 100)
        if installments is None:
            (installments,) = self._rng.choices(_INSTALLMENTS, _INSTALLMENT_WEIGHTS)
        order = f"sim{self._seed}-o{next(self._orders)}"
        first_due = at + self._between(*_FIRST_DUE_AFTER)
        merchant = f"m-{self._rng.randrange(_MERCHANTS):03d}"
        self._push(
            at,
            _Planned(
                PURCHASES,
                user,
                {
                    "order_id": order,
                    "amount": amount,
                    "installments": installments,
                    "first_due_at": format_timestamp(first_due),
                    "merchant_id": merchant,
                },
            ),
        )
        if repay_on_time:
            late = self._late_spell(user, first_due)
            paid_at = at
            for index, part in enumerate(_split_evenly(amount, installments)):
                due = add_months(first_due, index)
                if late and index == 0:
                    paid_at = due + _GRACE + self._between(HOUR, 20 * HOUR)
                else:
                    seconds = (due - paid_at) // SECOND
                    paid_at += max(1, int(seconds * self._rng.uniform(0.2, 0.9))) * SECOND
                self._push(paid_at, _Planned(REPAYMENTS, user, {"amount": part, "order_id": order}))
        return _Order(order, amount, first_due)

    def _late_spell(self, user: int, first_due: int) -> bool:
        """Whether an occasional late payer pays this order's first instalment late.

        At most one spell per 181 days, so each is the only one in the 180-day episode
        window and, at 3 days past due, needs no cure period.
        """
        if self._personas[user] is not Persona.OCCASIONAL_LATE:
            return False
        start = first_due + _GRACE
        previous = self._late_spells.get(user)
        if previous is not None and start - previous <= _EPISODE_WINDOW + DAY:
            return False
        if self._rng.random() >= _LATE_PROBABILITY:
            return False
        self._late_spells[user] = start
        return True

    def _plan_default(self, user: int, at: int) -> None:
        purchase = self._plan_purchase(
            user,
            at,
            amount=self._rng.randrange(50_000, 500_000, 100),
            installments=self._rng.choice((1, 3)),
            repay_on_time=False,
        )
        self._defaulter_orders[user] += 1
        if self._defaulter_orders[user] > _DEFAULTER_LATE_ORDERS:
            return  # stops repaying: the line stays frozen
        paid_at = purchase.first_due + _GRACE + self._between(4 * DAY, 9 * DAY)
        body = {"amount": purchase.amount, "order_id": purchase.order_id}
        self._push(paid_at, _Planned(REPAYMENTS, user, body))
        if self._defaulter_orders[user] == 1:  # proof of income halves the first cure
            payslip = {"verified_monthly_income": self._rng.randrange(400_000, 1_500_001, 10_000),
                       "source": self._rng.choice(("payslip", "bank_statement"))}  # fmt: skip
            self._push(paid_at + self._between(2 * DAY, 10 * DAY),
                       _Planned(INCOME_VERIFICATIONS, user, payslip))  # fmt: skip
        self._push(paid_at + _CURE + self._between(DAY, 3 * DAY), _Wake(user))

    def _plan_burst(self, user: int, at: int) -> None:
        for index in range(self._rng.randint(3, 6)):
            if index:
                at += self._between(10 * MINUTE, 3 * HOUR)
            body = {
                "requested_amount": self._rng.randrange(10_000, _SMALL_LOAN_MAX + 1, 100),
                "term_months": self._rng.choice((1, 3, 6)),
                "channel": self._rng.choice(_OTHER_LENDERS),
            }
            self._push(at, _Planned(LOAN_APPLICATIONS, user, body))
        self._push(at + self._between(9 * DAY, 16 * DAY), _Wake(user))

    def _plan_overspend(self, user: int, at: int) -> None:
        income = self._rng.randrange(300_000, 1_200_001, 10_000)
        body = {
            "requested_amount": self._rng.randrange(200_000, 2_000_001, 10_000),
            "term_months": self._rng.choice((12, 24)),
            "declared_monthly_income": income,
            "channel": "line",
        }
        self._push(at, _Planned(LOAN_APPLICATIONS, user, body))
        total = int(income * self._rng.uniform(3.3, 4.5))
        weights = [self._rng.uniform(1.0, 3.0) for _ in range(self._rng.randint(4, 6))]
        for part in _split_by_weight(total, weights):
            at += self._between(2 * HOUR, 18 * HOUR)
            self._plan_purchase(user, at, amount=part)
        self._push(at + self._between(35 * DAY, 45 * DAY), _Wake(user))

    def _invalid(self, topic: int, at: int) -> SimRecord:
        """An extra record on ``topic`` that lineguard must dead-letter; it touches no state.

        ``topic`` is that of the latest valid record, so every valid record is followed by
        an invalid one with the same chance: invalid records go to the topics in proportion
        to their valid traffic at the time, and never to a topic without any (the
        simulator sends no limit override). Spread evenly instead, a topic with little
        valid traffic would be mostly dead letters and page ``LineguardDeadLetterRateHigh``.
        """
        user = self._rng.randrange(len(self._ids))
        field_name = "requested_amount" if topic == LOAN_APPLICATIONS else "amount"
        order = f"sim{self._seed}-o{next(self._orders)}"
        value: dict[str, Any] = {
            "event_id": f"sim{self._seed}-e{next(self._events)}",
            "user_id": self._ids[user],
            "occurred_at": format_timestamp(at),
            "order_id": order,
            field_name: self._rng.randrange(1_000, 100_000, 100),
        }
        key = self._ids[user].encode()
        kind = self._rng.randrange(3)
        if kind == 0:  # a float token where an integer is required
            value[field_name] = float(value[field_name])
        elif kind == 1:  # a producer that keys by order id instead of user id
            key = order.encode()
        raw = orjson.dumps(value)
        if kind == 2:  # a truncated, malformed JSON document
            raw = raw[:-1]
        return SimRecord(self._topics[topic], key, raw, self._personas[user], valid=False)

    def _emit(self, at: int, planned: _Planned) -> SimRecord:
        self._last = at
        self._last_topic = planned.topic
        user_id = self._ids[planned.user]
        value = {
            "event_id": f"sim{self._seed}-e{next(self._events)}",
            "user_id": user_id,
            "occurred_at": format_timestamp(at),
            **planned.body,
        }
        return SimRecord(
            self._topics[planned.topic],
            user_id.encode(),
            orjson.dumps(value),
            self._personas[planned.user],
            valid=True,
        )

    def _push(self, at: int, step: _Planned | _Wake) -> None:
        heapq.heappush(self._heap, (at, next(self._sequence), step))

    def _between(self, low: int, high: int) -> int:
        """A whole number of seconds in [low, high), both in microseconds."""
        return self._rng.randrange(low // SECOND, high // SECOND) * SECOND


def _split_evenly(amount: int, parts: int) -> list[int]:
    """The contract's instalment split: even parts, the remainder on the first."""
    base, remainder = divmod(amount, parts)
    return [base + remainder, *([base] * (parts - 1))]


def _split_by_weight(total: int, weights: Sequence[float]) -> list[int]:
    """Integer parts of ``total`` in proportion to ``weights``; the last takes the rounding."""
    scale = sum(weights)
    parts = [int(total * weight / scale) for weight in weights[:-1]]
    return [*parts, total - sum(parts)]


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the simulated clock must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(slots=True)
class SimulationStats:
    """Running totals of a simulation run; the progress callback receives them."""

    simulated_start: datetime
    simulated_now: datetime
    """The simulated time of the latest record sent."""
    records: int = 0
    invalid: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_persona: Counter[Persona] = field(default_factory=Counter)
    elapsed: float = 0.0
    """Wall seconds since the run started."""

    def count(self, record: SimRecord) -> None:
        """Add one produced record."""
        self.records += 1
        self.invalid += not record.valid
        self.by_topic[record.topic] += 1
        self.by_persona[record.persona] += 1

    def summary(self) -> str:
        """One line for a terminal: totals, the simulated time reached, and the breakdowns."""
        topics = " ".join(f"{topic}={count}" for topic, count in sorted(self.by_topic.items()))
        personas = " ".join(f"{p}={count}" for p, count in sorted(self.by_persona.items()))
        simulated = self.simulated_now.strftime("%Y-%m-%dT%H:%MZ")
        return (
            f"records={self.records} invalid={self.invalid} elapsed={self.elapsed:.1f}s"
            f" simulated={simulated} | {topics} | {personas}"
        )


async def run_simulation(
    bootstrap: str,
    *,
    users: int,
    rate: float,
    duration: float,
    seed: int,
    topics: Sequence[str] = INPUT_TOPICS,
    time_scale: float = DEFAULT_TIME_SCALE,
    invalid_fraction: float = DEFAULT_INVALID_FRACTION,
    progress: Callable[[SimulationStats], None] | None = None,
    producer_options: Mapping[str, Any] | None = None,
) -> SimulationStats:
    """Produce ``rate`` records a second for ``duration`` seconds, then stop.

    Records are keyed by user id and partitioned by aiokafka's default partitioner
    (murmur2, as lineguard requires). Record ``i`` is sent no earlier than ``i / rate``
    seconds into the run and stamped with the simulated time of that moment (see the module
    docstring). The run stops after ``rate × duration`` records, or 2 seconds past
    ``duration`` if the broker cannot keep up, and the producer is flushed and stopped in
    every case.

    Args:
        bootstrap: Kafka ``host:port`` list.
        users: Number of simulated users.
        rate: Records per wall second.
        duration: Wall seconds to run.
        seed: Seed of the traffic: the same seed gives the same users and plans; which
            records come when also follows the wall clock the run keeps pace with.
        topics: The five input topics, in the contract's order.
        time_scale: Simulated seconds per wall second.
        invalid_fraction: Share of deliberately invalid records.
        progress: Called with the running totals about once a second and once at the end.
        producer_options: Extra ``AIOKafkaProducer`` settings, such as SASL or SSL.

    Returns:
        The totals of what was produced.

    Raises:
        ValueError: A rate, duration or time scale that is not a positive finite number.
    """
    if not all(0 < number < math.inf for number in (rate, duration, time_scale)):  # nan too
        raise ValueError("rate, duration and time_scale must be positive and finite")
    simulator = Simulator(users, seed, invalid_fraction=invalid_fraction, topics=topics)
    clock = SimulatedClock.ending_at(datetime.now(UTC), duration, time_scale)
    stats = SimulationStats(clock.start, clock.start)
    loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, **(producer_options or {})
    )
    await producer.start()
    started = loop.time()
    try:
        next_progress = _PROGRESS_INTERVAL
        deliveries: list[asyncio.Future[Any]] = []
        for index in range(int(rate * duration)):
            scheduled = index / rate
            stats.elapsed = loop.time() - started
            if stats.elapsed > duration + _OVERRUN_SECONDS:
                break
            if scheduled > stats.elapsed:
                await asyncio.sleep(scheduled - stats.elapsed)
            stats.simulated_now = clock.at(scheduled)
            record = simulator.next_record(stats.simulated_now)
            deliveries.append(await producer.send(record.topic, record.value, key=record.key))
            stats.count(record)
            if stats.elapsed >= next_progress:
                await asyncio.gather(*deliveries)
                deliveries.clear()
                next_progress += _PROGRESS_INTERVAL
                if progress is not None:
                    progress(stats)
        await producer.flush()
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    stats.elapsed = loop.time() - started
    if progress is not None:
        progress(stats)
    return stats
