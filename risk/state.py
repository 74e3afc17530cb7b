"""Per-user state: the instalment ledger, overdue episodes, windows, income and dedup memory.

Every structure is bounded whatever the traffic (see the caps below and the
README), because one user's state is one Faust table record.
"""

from __future__ import annotations

from typing import Final

import msgspec

from risk.window import Window

INSTALMENTS_CAP: Final = 1024
"""Open instalments per user; past it the two latest-due ones merge (earlier due date kept)."""
DEDUP_CAP: Final = 2048
"""Event-id hashes remembered per user; past it the oldest are forgotten and ``dedup_floor`` set."""


class Instalment(msgspec.Struct, array_like=True, gc=False):
    """One unpaid instalment. ``number`` counts from 1 within its order."""

    order_id: str
    number: int
    due_at: int
    amount: int
    paid: int = 0
    overdue: bool = False

    @property
    def unpaid(self) -> int:
        """Amount still owed."""
        return self.amount - self.paid


class Episode(msgspec.Struct, array_like=True, gc=False):
    """One delinquency spell; ``max_dpd`` covers instalments settled so far, final once ended."""

    start: int
    end: int | None = None
    max_dpd: int = 0


class LastDecision(msgspec.Struct, array_like=True, gc=False):
    """The latest limit event emitted for the user."""

    type: str
    event_id: str
    occurred_at: int
    caused_by: str


class UserState(msgspec.Struct, omit_defaults=True, gc=False):
    """Everything lineguard knows about one user. Times are epoch microseconds (UTC)."""

    user_id: str
    first_seen: int
    clock: int
    last_activity: int
    frozen: bool = False
    freeze_reasons: list[str] = []
    """Codes the freeze was made or kept for; ``MANUAL_OVERRIDE`` for an operator's freeze."""
    frozen_since: int = 0
    freeze_peak_dpd: int = 0
    """Largest DPD any overdue episode reached during the running freeze."""
    probation: bool = False
    probation_streak: int = 0
    """Instalments paid on time in a row since probation began."""
    reduce_reasons: list[str] = []
    waived: dict[str, float] = {}
    """Rule codes an operator's restore set aside, with the best measured value since (the
    score: the one set aside). Each lapses once its rule stops holding or its value gets
    worse: new evidence freezes again."""
    waived_spend: tuple[int, int] | None = None
    """Spend and income of the best spend-to-income ratio since the operator's restore, while
    ``SPEND_INCOME_MISMATCH`` is set aside: its exact measure, where ``waived`` has its
    reason's value, rounded to 4 decimals. ``None`` with a waiver an earlier version made,
    which kept that only."""
    automatic_restores: list[int] = []
    """Times of automatic restores from a freeze within ``restore.window`` (anti-flapping)."""
    cure_shortened_by: int = 0
    """How much income verifications cut from the running cure period, in microseconds."""
    last_decision: LastDecision | None = None
    instalments: list[Instalment] = []
    overdue_count: int = 0
    """Overdue instalments: always a prefix of ``instalments``, which is sorted by due date."""
    credit: int = 0
    paid_on_time: int = 0
    paid_late: int = 0
    episodes: list[Episode] = []
    cure_until: int = 0
    income: int | None = None
    income_at: int = 0
    verified_income: int | None = None
    verified_income_at: int = 0
    applications: Window = msgspec.field(default_factory=Window)
    small_applications: Window = msgspec.field(default_factory=Window)
    spend: Window = msgspec.field(default_factory=Window)
    other_lender_applications: Window = msgspec.field(default_factory=Window)
    active_days: list[int] = []
    """Distinct days (epoch day numbers) with a purchase or repayment, within the score's window."""
    seen: dict[int, int] = {}
    dedup_floor: int | None = None

    @property
    def effective_income(self) -> int | None:
        """Verified income supersedes the declared one: it is evidence, not a claim."""
        return self.income if self.verified_income is None else self.verified_income

    @property
    def open_episode(self) -> Episode | None:
        """The running delinquency spell, if any."""
        if self.episodes and self.episodes[-1].end is None:
            return self.episodes[-1]
        return None


STATE_ENCODER: Final = msgspec.msgpack.Encoder()
STATE_DECODER: Final = msgspec.msgpack.Decoder(UserState)
