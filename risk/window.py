"""Event-time sliding windows with bounded memory.

A window of length W at time t covers (t - W, t]: an entry at e counts up to,
but not at, e + W. The newest ``exact_cap`` entries are kept exactly; older ones
fold into one-hour buckets that remember their latest entry and leave the window
with it. A count rule "count >= K" with K <= ``exact_cap`` is therefore decided
exactly, because the K newest entries are always exact; only features that count
past the cap (or sum amounts past it) can run up to one hour long.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import msgspec

from risk.clock import HOUR
from risk.contract import MAX_MONEY


class Window(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """Entries (time, value) sorted by time; bucket entries are all older than exact ones.

    Buckets are sorted by hour, so their latest times are sorted too.
    """

    times: list[int] = []
    values: list[int] = []
    bucket_hours: list[int] = []
    bucket_latest: list[int] = []
    bucket_values: list[int] = []

    def add(self, at: int, value: int, exact_cap: int) -> None:
        """Insert an entry, folding the oldest exact one into a bucket past the cap."""
        if self.bucket_hours and at < (self.times[0] if self.times else self.bucket_latest[-1]):
            self._add_to_bucket(at, value)
            return
        index = bisect_right(self.times, at)
        self.times.insert(index, at)
        self.values.insert(index, value)
        if len(self.times) > exact_cap:
            self._add_to_bucket(self.times.pop(0), self.values.pop(0))

    def _add_to_bucket(self, at: int, value: int) -> None:
        hour = at // HOUR
        index = bisect_left(self.bucket_hours, hour)
        if index < len(self.bucket_hours) and self.bucket_hours[index] == hour:
            total = self.bucket_values[index] + value  # saturates, like every stored sum
            self.bucket_values[index] = total if total < MAX_MONEY else MAX_MONEY
            self.bucket_latest[index] = max(self.bucket_latest[index], at)
            return
        self.bucket_hours.insert(index, hour)
        self.bucket_latest.insert(index, at)
        self.bucket_values.insert(index, value)

    def prune(self, horizon_start: int) -> None:
        """Forget what no window can see any more: entries at or before ``horizon_start``."""
        if self.bucket_latest and self.bucket_latest[0] <= horizon_start:
            cut = bisect_right(self.bucket_latest, horizon_start)
            del self.bucket_hours[:cut]
            del self.bucket_latest[:cut]
            del self.bucket_values[:cut]
        if self.times and self.times[0] <= horizon_start:
            cut = bisect_right(self.times, horizon_start)
            del self.times[:cut]
            del self.values[:cut]

    def total(self, start: int) -> int:
        """Sum of the values of the entries after ``start`` (the window's open end)."""
        times, latest = self.times, self.bucket_latest
        if not times:
            exact = 0
        elif times[0] > start:  # all inside: bisect_right would give 0
            exact = sum(self.values)
        else:
            exact = sum(self.values[bisect_right(times, start) :])
        if not latest:
            return exact
        return exact + sum(self.bucket_values[bisect_right(latest, start) :])

    def oldest_after(self, start: int) -> int | None:
        """Time of the oldest entry after ``start``: the next one to leave the window."""
        cut = bisect_right(self.bucket_latest, start)
        if cut < len(self.bucket_latest):
            return self.bucket_latest[cut]
        cut = bisect_right(self.times, start)
        return self.times[cut] if cut < len(self.times) else None

    def __len__(self) -> int:
        return len(self.times) + len(self.bucket_hours)
