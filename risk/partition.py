"""One partition group: per-user states, the timer index and the watermark.

Users without traffic have their timers fired by the partition's watermark. The
index is a heap of (time, user) with lazy invalidation, so firing costs
O(log n) per due timer and nothing per idle user.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, MutableMapping
from enum import StrEnum
from typing import Literal, cast

from risk.contract import Event, Rejection
from risk.decision import Decision
from risk.engine import (
    admit_keyed,
    apply_keyed,
    event_key,
    fire_timers_and_next,
    new_state,
    next_timer,
)
from risk.limits import status
from risk.policy import Policy
from risk.state import UserState


class Outcome(StrEnum):
    """What became of an input record; each has a metric."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


class PartitionProcessor:
    """Applies one partition group's events in order and fires its users' timers.

    ``clock`` is ``stream`` (the watermark is the latest accepted event time minus
    ``watermark_delay``) or ``wall`` (:meth:`tick` also advances it from the wall clock,
    for live traffic on quiet partitions).

    ``store`` maps user ids to states; it is a dict in replay and a Faust table in
    the worker. Every changed state is written back with ``store[user] = state``
    so a changelog-backed table records one update per change.
    """

    def __init__(
        self,
        policy: Policy,
        store: MutableMapping[str, UserState],
        clock: Literal["stream", "wall"] = "stream",
    ) -> None:
        self.policy = policy
        self.store = store
        self.clock = clock
        self.watermark: int | None = None
        self._max_event_at: int | None = None
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}
        self.users: Counter[str] = Counter()
        """Users of this partition by limit status (:func:`~risk.engine.status`)."""
        self.created = 0
        """States :meth:`handle` created: once per user and partition, far rarer than events,
        so the shell checks a new user's partition then (RELIABILITY.md, defect 49)."""

    def recover(self, states: Iterable[UserState]) -> None:
        """Rebuild the timer index and the watermark from recovered states.

        After a restart or a rebalance, the latest accepted event time of the
        partition is the latest ``last_activity`` of its users.
        """
        for state in states:
            self._schedule(state, next_timer(state, self.policy))
            self.users[status(state)] += 1
            if self._max_event_at is None or state.last_activity > self._max_event_at:
                self._max_event_at = state.last_activity
        if self._max_event_at is not None:
            self.watermark = self._max_event_at - self.policy.watermark_delay

    def resume(self, max_event_at: int | None) -> None:
        """Resume from a committed input position, whose latest event time was ``max_event_at``.

        States written after that position (a worker stopped between writing states and
        committing offsets) put :meth:`recover`'s watermark ahead of it; the records from
        the position on are read again and move the watermark as they did the first time,
        except a record now ``too_late`` (RELIABILITY.md, defect 34).
        """
        self._max_event_at = max_event_at
        self.watermark = (
            None if max_event_at is None else max_event_at - self.policy.watermark_delay
        )

    @property
    def max_event_at(self) -> int | None:
        """The latest event time this partition accepted; the watermark trails it by the delay."""
        return self._max_event_at

    def handle(self, event: Event, now: int) -> tuple[Outcome, Rejection | None, list[Decision]]:
        """Admit and apply one decoded event; ``now`` is the wall clock, for ``in_future``."""
        user_id, at, policy = event.user_id, event.at, self.policy
        state = self.store.get(user_id)
        key = event_key(event.event_id)
        verdict = admit_keyed(state, event, policy, now, key)
        if verdict is not None:
            if isinstance(verdict, Rejection):
                # Read again after a crash, a record accepted the first time whose id the
                # written state has since forgotten is too late now, and moves nothing where
                # it moved the watermark then; counting its own time instead would move it
                # for a retry re-stamped later than its forgotten original, which one pass
                # counted as a duplicate. Neither can be told apart (RELIABILITY.md, 34).
                return Outcome.DEAD_LETTERED, verdict, []
            # A duplicate (the only other verdict) was accepted once, and moved the watermark
            # then. It moves it again, to where its original did: a worker stopped after
            # writing some of its states but before committing their offsets reads those
            # events again as duplicates, and the partition's timers must fire at the same
            # points as in one uninterrupted pass. It counts the earlier of its own time and
            # its original's: a copy re-stamped later (a producer's retry) must not count its
            # own, nor, read again, a record rejected the first time whose id a later retry
            # brought in (RELIABILITY.md, 33). In one pass it moves the watermark nowhere new.
            original_at = cast(UserState, state).seen[key]  # only a known user has duplicates
            return Outcome.DUPLICATE, None, self._observe(min(original_at, at))
        # The accepted event moves the watermark first, so that other users' timers due
        # before it come out before its own decisions. That changes only the order across
        # users: the new watermark never passes the event, so its user sees the same timers.
        decisions = self._observe(at)
        if state is not None:
            state = self.store.get(user_id)  # its timers may have fired
        if state is None:
            state = new_state(event)
            self.created += 1
            before = None
            timers_due = False
        else:
            before = status(state)
            # The index holds the user's next timer whenever it has one; a user missing from
            # it may have none, or be unknown to this processor, so look then.
            scheduled = self._scheduled.get(user_id)
            timers_due = scheduled is None or scheduled <= at
        decisions += apply_keyed(state, event, policy, key, timers_due=timers_due)
        self.store[user_id] = state
        after = status(state)
        if after != before:
            if before is not None:
                self.users[before] -= 1
            self.users[after] += 1
        self._schedule(state, next_timer(state, policy))
        return Outcome.PROCESSED, None, decisions

    def _observe(self, at: int) -> list[Decision]:
        """Move the watermark to the latest event time so far (``at`` included) minus the delay."""
        if self._max_event_at is None or at > self._max_event_at:
            self._max_event_at = at
        to = self._max_event_at - self.policy.watermark_delay
        heap = self._heap
        if heap and heap[0][0] <= max(to, self.watermark if self.watermark is not None else to):
            return self.advance_watermark(to)
        if self.watermark is None or to > self.watermark:
            self.watermark = to  # advance_watermark(to) would fire nothing
        return []

    def tick(self, now: int) -> list[Decision]:
        """The ``wall`` mode's periodic sweep: the watermark follows ``now - watermark_delay``.

        In ``stream`` mode only accepted events move the watermark, so decisions depend
        on the partition's log alone; a tick changes nothing.
        """
        if self.clock != "wall":
            return []
        return self.advance_watermark(now - self.policy.watermark_delay)

    def advance_watermark(self, to: int) -> list[Decision]:
        """Move the watermark forward (never back) and fire every timer at or before it."""
        if self.watermark is None or to > self.watermark:
            self.watermark = to
        decisions: list[Decision] = []
        heap, watermark, scheduled = self._heap, self.watermark, self._scheduled
        while heap and heap[0][0] <= watermark:
            at, user_id = heapq.heappop(heap)
            if scheduled.get(user_id) != at:
                continue  # superseded by a later schedule of the same user
            del scheduled[user_id]
            state = self.store[user_id]
            before = status(state)
            fired, timer = fire_timers_and_next(state, at, self.policy)
            decisions += fired
            self.store[user_id] = state
            if status(state) != before:
                self.users[before] -= 1
                self.users[status(state)] += 1
            self._schedule(state, timer)
        return decisions

    def _schedule(self, state: UserState, timer: tuple[int, int] | None) -> None:
        """Index the user's next timer: ``timer`` is ``next_timer(state)``, already looked up."""
        if timer is None:
            self._scheduled.pop(state.user_id, None)
            return
        if self._scheduled.get(state.user_id) == timer[0]:
            return
        self._scheduled[state.user_id] = timer[0]
        heapq.heappush(self._heap, (timer[0], state.user_id))
        if len(self._heap) > 2 * len(self._scheduled) + 1024:
            self._heap = [(at, user) for user, at in self._scheduled.items()]
            heapq.heapify(self._heap)

    @property
    def pending_timers(self) -> int:
        """Users with a timer in the index."""
        return len(self._scheduled)
