"""The instalment ledger and overdue episodes: state changes made at the user's clock.

Every change happens at ``state.clock``: a late repayment is allocated when it
is applied and never rewrites an episode that has already happened.
"""

from __future__ import annotations

from bisect import bisect_right

from risk.clock import DAY, monthly
from risk.contract import MAX_MONEY, Purchase
from risk.policy import EPISODES_CAP, Policy
from risk.state import INSTALMENTS_CAP, Episode, Instalment, UserState


def add_purchase(state: UserState, purchase: Purchase, policy: Policy) -> None:
    """Split a purchase into instalments, pay them from any credit at once, mark overdue ones.

    A late or back-dated purchase can hold instalments already past due + grace:
    they are overdue at once, at the user's clock.
    """
    share, remainder = divmod(purchase.amount, purchase.installments)
    instalments = state.instalments
    lowest = len(instalments)
    for number, due_at in enumerate(monthly(purchase.first_due, purchase.installments)):
        instalment = Instalment(purchase.order_id, number + 1, due_at, share)
        if not number:
            instalment.amount += remainder
        if state.credit:
            payment = min(state.credit, instalment.amount)
            instalment.paid = payment
            state.credit -= payment
        if instalment.amount > instalment.paid:
            if not instalments or instalments[-1].due_at <= due_at:
                index = len(instalments)  # bisect_right's answer, without the search
                instalments.append(instalment)
            else:
                index = bisect_right(instalments, due_at, key=_due)
                instalments.insert(index, instalment)
            if index < lowest:
                lowest = index
        elif instalment.amount:  # paid ahead from credit; an instalment of 0 is no payment
            state.paid_on_time += 1
    while len(state.instalments) > INSTALMENTS_CAP:
        _merge_latest(state)
    mark_overdue(state, policy, from_index=lowest)


def _due(instalment: Instalment) -> int:
    return instalment.due_at


def _merge_latest(state: UserState) -> None:
    """Fold the latest-due instalment into the one before it, keeping the earlier due date.

    Amount and unpaid saturate at :data:`MAX_MONEY`, so the state stays msgpack-encodable;
    what is owed is kept exact below the ceiling, so ``0 <= paid < amount`` still holds.
    """
    latest = state.instalments.pop()
    kept = state.instalments[-1]
    if latest.overdue:
        state.overdue_count -= 1
    amount = kept.amount + latest.amount
    unpaid = amount - kept.paid - latest.paid
    kept.amount = amount if amount < MAX_MONEY else MAX_MONEY
    kept.paid = kept.amount - (unpaid if unpaid < MAX_MONEY else MAX_MONEY)


def repay(state: UserState, amount: int, order_id: str | None) -> None:
    """Allocate a repayment: the named order first, then everything by due date; rest is credit."""
    ordered = state.instalments
    if order_id is not None:
        ordered = [i for i in ordered if i.order_id == order_id] + [
            i for i in ordered if i.order_id != order_id
        ]
    episode = state.open_episode
    settled_overdue = 0
    for instalment in ordered:
        if not amount:
            break
        unpaid = instalment.amount - instalment.paid
        payment = min(amount, unpaid)
        instalment.paid += payment
        amount -= payment
        if payment < unpaid:
            continue  # still owed
        if instalment.overdue:
            settled_overdue += 1
            state.paid_late += 1
            if episode is not None:
                episode.max_dpd = max(episode.max_dpd, (state.clock - instalment.due_at) // DAY)
        else:
            state.paid_on_time += 1
    state.instalments = [i for i in state.instalments if i.amount != i.paid]
    state.overdue_count -= settled_overdue
    if amount:
        credit = state.credit + amount  # saturates: past 2**64 the state cannot be encoded
        state.credit = credit if credit < MAX_MONEY else MAX_MONEY


def mark_overdue(state: UserState, policy: Policy, from_index: int | None = None) -> None:
    """Mark instalments past due + grace at the clock, starting an episode if none runs.

    Only the unmarked tail after the overdue prefix is scanned, unless an insert
    at ``from_index`` may have put an unmarked instalment inside the prefix.
    """
    instalments = state.instalments
    index = state.overdue_count if from_index is None else min(from_index, state.overdue_count)
    last_due = state.clock - policy.grace
    while index < len(instalments) and instalments[index].due_at <= last_due:
        instalment = instalments[index]
        if not instalment.overdue:
            instalment.overdue = True
            if state.open_episode is None:
                state.episodes.append(Episode(start=state.clock))
                _bound_episodes(state, policy)
        index += 1
    state.overdue_count = max(state.overdue_count, index)


def close_episode_if_cured(state: UserState, policy: Policy) -> None:
    """End the spell once nothing is overdue, and fix the cure period's length.

    A cure period still running from an earlier spell is never cut short: its length was
    fixed when that spell ended, and a minor spell after it starts a shorter one.
    """
    episode = state.open_episode
    if episode is None or state.overdue_count:
        return
    episode.end = state.clock
    minor = episode.max_dpd <= policy.minor_max_dpd
    alone = episodes_since(state, state.clock - policy.episode_window) <= 1
    cure_until = state.clock + (0 if minor and alone else policy.cure)
    if cure_until >= state.cure_until:
        state.cure_until = cure_until
        state.cure_shortened_by = 0  # a new cure period: earlier proof of income cut another


def current_max_dpd(state: UserState) -> int:
    """Largest DPD reached in the running spell so far; 0 when none runs."""
    episode = state.open_episode
    if episode is None:
        return 0
    running = (state.clock - state.instalments[0].due_at) // DAY if state.overdue_count else 0
    return max(episode.max_dpd, running)


def max_dpd_since(state: UserState, since: int) -> int:
    """Largest DPD of the spells running at or after ``since``, the running one at the clock too."""
    settled: int | None = None
    for episode in state.episodes:
        if (episode.end is None or episode.end >= since) and (
            settled is None or episode.max_dpd > settled
        ):
            settled = episode.max_dpd
    return max(0 if settled is None else settled, current_max_dpd(state))


def overdue_amount(state: UserState) -> int:
    """Unpaid amount of the overdue instalments."""
    return sum(i.amount - i.paid for i in state.instalments[: state.overdue_count])


def episodes_since(state: UserState, start: int) -> int:
    """Episodes whose start lies after ``start``."""
    count = 0
    for episode in state.episodes:  # at most EPISODES_CAP, and mostly none
        if episode.start > start:
            count += 1
    return count


def next_overdue_at(state: UserState, policy: Policy) -> int | None:
    """When the next instalment goes overdue (instalments are sorted by due date)."""
    if state.overdue_count < len(state.instalments):
        return state.instalments[state.overdue_count].due_at + policy.grace
    return None


def prune_episodes(state: UserState, policy: Policy) -> None:
    """Forget episodes that ended before the episode window: no rule nor score sees them.

    One that started before the window but ended in it still counts in the score's largest
    DPD. Spells follow one another, so their ends are in order like their starts.
    """
    horizon = state.clock - policy.episode_window
    first = state.episodes[0] if state.episodes else None
    if first is not None and first.end is not None and first.end <= horizon:
        state.episodes = [e for e in state.episodes if e.end is None or e.end > horizon]


def _bound_episodes(state: UserState, policy: Policy) -> None:
    prune_episodes(state, policy)
    if len(state.episodes) > EPISODES_CAP:
        del state.episodes[: len(state.episodes) - EPISODES_CAP]
