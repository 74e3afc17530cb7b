"""Adversarial load on the core path: does the cost per event stay flat as a flood goes on?

Two floods go through a :class:`~risk.group.PartitionGroup`, as in the worker and replay:
one user with a flood of purchases, applications and pennies (every structure of its state
reaches its cap), and a flood of users with one purchase each (the timer index grows by
one entry a user). ``tests/test_adversarial.py`` checks the caps and sizes on the same
floods; this module measures the CPU time per event of the first and the last tenth of
each, which a test must not assert on. ``python -m bench.adversarial [--events N]``
prints the table RELIABILITY.md quotes. Times are CPU time of this process
(``time.process_time``), each tenth cut into chunks. Each tenth gives its cheapest chunk,
the noise floor (other processes on the machine slow some chunks down, through caches and
frequency, but never speed one up), and its median chunk. The cheapest alone would hide a
cost that comes periodically, in some chunks only (a table resized, a cap's eviction, the
collector): a flood is flat only if both stay flat.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from risk.clock import DAY, MINUTE, SECOND, format_timestamp
from risk.group import PartitionGroup, never_more
from risk.partition import Outcome
from risk.policy import Policy, load_policy
from risk.state import STATE_ENCODER, UserState

START: Final = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z in epoch microseconds."""
NOW: Final = 1_893_456_000_000_000
"""2030-01-01T00:00:00Z: the wall clock, past every event of both floods."""
CHUNKS: Final = 20

Record = tuple[int, bytes, bytes]


def busy_user_record(index: int) -> Record:
    """The busy user's event ``index``: purchases never fully repaid, applications, pennies.

    Order ids have the longest length allowed, 128 characters, since each open instalment
    keeps its order's id: this is the largest state the caps allow for this traffic.
    """
    at = format_timestamp(START + index * MINUTE).encode()
    kind = index % 10
    if kind < 5:
        return 0, b"u-1", (
            b'{"event_id":"p-%d","user_id":"u-1","occurred_at":"%s","order_id":"%s",'
            b'"amount":%d,"installments":24,"first_due_at":"%s"}'
            % (index, at, b"%0128d" % index, 10_000 + index, at)
        )  # fmt: skip
    if kind < 8:
        return 2, b"u-1", (
            b'{"event_id":"a-%d","user_id":"u-1","occurred_at":"%s","requested_amount":50000,'
            b'"declared_monthly_income":%d}' % (index, at, 900_000 + index)
        )  # fmt: skip
    return 1, b"u-1", b'{"event_id":"r-%d","user_id":"u-1","occurred_at":"%s","amount":1}' % (
        index, at,
    )  # fmt: skip


def new_user_record(index: int) -> Record:
    """User ``index``'s only event: a purchase in 3 instalments, its first due a day later.

    Users come 100 ms apart, so even a million of them take 28 hours and no timer falls due
    (due + 3 days' grace): every event costs the same work, and the timer index holds a
    timer for every user.
    """
    user = b"n-%d" % index
    at = START + index * SECOND // 10
    return 0, user, (
        b'{"event_id":"p-%d","user_id":"%s","occurred_at":"%s","order_id":"o-1","amount":90000,'
        b'"installments":3,"first_due_at":"%s"}'
        % (index, user, format_timestamp(at).encode(), format_timestamp(at + DAY).encode())
    )  # fmt: skip


def feed(group: PartitionGroup[int], make: Callable[[int], Record], start: int, stop: int) -> None:
    """Push and apply records ``start``..``stop`` one at a time, each of which must apply."""
    for index in range(start, stop):
        topic, key, value = make(index)
        group.push(topic, key, value, index)
        for applied in group.drain(never_more, NOW):
            if applied.outcome is not Outcome.PROCESSED:
                raise AssertionError(f"record {index}: {applied.outcome} {applied.rejection}")


@dataclass(frozen=True)
class Tenth:
    """CPU seconds per event of one tenth of a flood, over its chunks."""

    cheapest: float
    """The noise floor: what the work costs when nothing else gets in the way."""
    median: float
    """What a typical chunk cost, periodic costs included."""


def cpu_per_event(
    group: PartitionGroup[int], make: Callable[[int], Record], start: int, stop: int
) -> Tenth:
    """:func:`feed` in chunks; CPU seconds per record of the cheapest and the median chunk."""
    size = max(1, (stop - start) // CHUNKS)
    chunks = []
    for chunk in range(start, stop, size):
        end = min(chunk + size, stop)
        began = time.process_time()
        feed(group, make, chunk, end)
        chunks.append((time.process_time() - began) / (end - chunk))
    return Tenth(min(chunks), statistics.median(chunks))


def flood(
    policy: Policy, make: Callable[[int], Record], events: int
) -> tuple[list[Tenth], dict[str, UserState]]:
    """CPU seconds per event of each tenth of a flood of ``events``, and the final store."""
    store: dict[str, UserState] = {}
    group: PartitionGroup[int] = PartitionGroup(policy, store, 5)
    tenth = events // 10
    return [cpu_per_event(group, make, k * tenth, (k + 1) * tenth) for k in range(10)], store


def first_to_last(tenths: list[Tenth]) -> str:
    """The first and last tenths' µs per event: cheapest chunk | median chunk."""
    first, last = tenths[0], tenths[-1]
    return (
        f"{first.cheapest * 1e6:.0f} → {last.cheapest * 1e6:.0f} |"
        f" {first.median * 1e6:.0f} → {last.median * 1e6:.0f}"
    )


def main() -> None:
    """Print the first and last tenths' CPU µs per event of both floods, cheapest and median."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    events = parser.parse_args().events
    policy = load_policy()
    print(
        "| flood | events | state | CPU µs/event, first → last tenth, cheapest chunk (noise"
        " floor) | the same, median chunk |\n|---|---|---|---|---|"
    )
    per_event, store = flood(policy, busy_user_record, events)
    size = len(STATE_ENCODER.encode(store["u-1"]))
    print(
        f"| one busy user | {events:,} | {size:,} bytes at the end | {first_to_last(per_event)} |"
    )
    per_event, store = flood(policy, new_user_record, events)
    sizes = [len(STATE_ENCODER.encode(state)) for state in store.values()]
    print(f"| distinct users, one purchase each | {events:,} |"
          f" {sum(sizes) / len(sizes):.0f} bytes per user | {first_to_last(per_event)} |")  # fmt: skip


if __name__ == "__main__":
    main()
