"""Backtest: two policies over the same records, and what changes between them.

Each policy runs through :func:`risk.replay.replay` (the worker's own core) once, over
the same parsed records, partitions, ``until`` and ``now``. The result counts the
decisions per type and per reason code under each policy, the users frozen, reduced or on
probation at the end, the decisions that differ, matched by user and cause, the matched
decisions that agree but report different features (a changed score, a longer window), and
any record that one policy dead-letters and the other does not. It is plain typed data, so a notebook or a CI job
that gates policy changes can read it without parsing text; :meth:`BacktestResult.document`
is its JSON form and :func:`render_text` a table for a person.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from risk.clock import format_timestamp
from risk.decision import FREEZE, REDUCE, RESTORE, Decision
from risk.policy import Policy
from risk.replay import INPUT_TOPICS, InputRecord, ReplayResult, replay

DECISION_TYPES: Final = (FREEZE, REDUCE, RESTORE)
"""The decision types always listed, even when neither policy emits one."""


@dataclass(frozen=True, slots=True)
class RecordCounts:
    """What one policy's replay did with the input records."""

    records: int
    processed: int
    duplicates: int
    dead_lettered: int
    dead_letters_by_reason: dict[str, int]

    @property
    def balanced(self) -> bool:
        """Every record processed, counted as a duplicate, or dead-lettered."""
        return self.processed + self.duplicates + self.dead_lettered == self.records


@dataclass(frozen=True, slots=True)
class CountDiff:
    """Decisions of one type (``reason`` None) or reasons of one code, under each policy.

    A decision with several reasons counts once for each of its reason codes.
    """

    type: str
    reason: str | None
    baseline: int
    candidate: int

    @property
    def difference(self) -> int:
        """Candidate minus baseline."""
        return self.candidate - self.baseline


@dataclass(frozen=True, slots=True)
class UsersAtEnd:
    """The users whose last decision left them in one status, under each policy, sorted."""

    baseline: tuple[str, ...]
    candidate: tuple[str, ...]

    @property
    def only_baseline(self) -> tuple[str, ...]:
        """In the status at the end under the baseline but not under the candidate."""
        return tuple(sorted(set(self.baseline) - set(self.candidate)))

    @property
    def only_candidate(self) -> tuple[str, ...]:
        """In the status at the end under the candidate but not under the baseline."""
        return tuple(sorted(set(self.candidate) - set(self.baseline)))


@dataclass(frozen=True, slots=True)
class DecisionChange:
    """A decision that one policy makes and the other does not, or makes differently.

    Decisions are matched by ``(user_id, caused_by)``: the same input event or the same
    timer. Not by ``event_id``, which also hashes the policy version. Two matched
    decisions differ when their type, status or reason codes differ; what else they report
    differently is a :class:`FeatureChange`.
    """

    user_id: str
    caused_by: str
    baseline: Decision | None
    candidate: Decision | None

    @property
    def occurred_at(self) -> int:
        """When the decision was made: the baseline's if it made one, else the candidate's."""
        decision = self.baseline or self.candidate
        assert decision is not None  # noqa: S101 - a change has at least one side
        return decision.occurred_at

    @property
    def kind(self) -> str:
        """``baseline_only``, ``candidate_only`` or ``changed``."""
        if self.candidate is None:
            return "baseline_only"
        if self.baseline is None:
            return "candidate_only"
        return "changed"


@dataclass(frozen=True, slots=True)
class FeatureChange:
    """A decision both policies make alike (type, status, reason codes), reported differently.

    A scorecard's points or a window's length change what a decision reports without
    changing the decision: the analyst backtesting them needs to see that too.
    """

    user_id: str
    caused_by: str
    occurred_at: int
    features: dict[str, tuple[Any, Any]]
    """Each differing feature, reason value or threshold (``<CODE>.value``, ``<CODE>.threshold``)
    and the restore path (``restore_path``): (baseline value, candidate value)."""


@dataclass(frozen=True, slots=True)
class DeadLetterChange:
    """An input line that one policy dead-letters and the other does not, or for another reason."""

    line: int
    topic: str
    baseline_reason: str | None
    candidate_reason: str | None


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Baseline against candidate over the same records."""

    baseline_version: str
    candidate_version: str
    baseline_fingerprint: str
    candidate_fingerprint: str
    baseline_records: RecordCounts
    candidate_records: RecordCounts
    decisions: tuple[CountDiff, ...]
    """Per decision type: freeze, reduce and restore first, then any other in name order."""
    reasons: tuple[CountDiff, ...]
    """Per decision type and reason code, for the codes either policy gave."""
    frozen_at_end: UsersAtEnd
    reduced_at_end: UsersAtEnd
    probation_at_end: UsersAtEnd
    changes: tuple[DecisionChange, ...]
    """The differing decisions in (occurred_at, user_id, caused_by) order."""
    feature_changes: tuple[FeatureChange, ...]
    """The same decisions with different features, in the same order."""
    dead_letter_changes: tuple[DeadLetterChange, ...]
    """Input lines dead-lettered differently, in line order."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """What makes the comparison, or the candidate's rollout, misleading."""
        if (
            self.baseline_version == self.candidate_version
            and self.baseline_fingerprint != self.candidate_fingerprint
        ):
            return (
                f"both policies are version {self.baseline_version}, but they differ"
                f" (fingerprints {self.baseline_fingerprint} and {self.candidate_fingerprint}):"
                " bump the candidate's version, or its decisions get the event_ids of the"
                " baseline's and a consumer deduplicating by event_id keeps the old ones",
            )
        return ()

    @property
    def records_agree(self) -> bool:
        """Both policies processed, deduplicated and dead-lettered the same numbers of records."""
        return self.baseline_records == self.candidate_records and not self.dead_letter_changes

    @property
    def features_changed(self) -> dict[str, int]:
        """How many matched decisions each feature differs in, by feature name."""
        counts = Counter(name for change in self.feature_changes for name in change.features)
        return dict(sorted(counts.items()))

    @property
    def identical(self) -> bool:
        """No count, final status, decision, feature or dead letter differs."""
        return (
            self.records_agree
            and not self.changes
            and not self.feature_changes
            and all(row.difference == 0 for row in (*self.decisions, *self.reasons))
            and all(
                users.baseline == users.candidate
                for users in (self.frozen_at_end, self.reduced_at_end, self.probation_at_end)
            )
        )

    def document(self) -> dict[str, Any]:
        """The result as plain JSON types; decisions in their ``credit.limit-events.v1`` form.

        The wall-clock ``decided_at`` is left out of each decision, so the same run gives
        the same document.
        """
        return {
            "baseline": _side(
                self.baseline_version, self.baseline_fingerprint, self.baseline_records
            ),
            "candidate": _side(
                self.candidate_version, self.candidate_fingerprint, self.candidate_records
            ),
            "warnings": list(self.warnings),
            "records_agree": self.records_agree,
            "identical": self.identical,
            "decisions": [_count_row(row) for row in self.decisions],
            "reasons": [_count_row(row) for row in self.reasons],
            "frozen_at_end": _users_at_end(self.frozen_at_end),
            "reduced_at_end": _users_at_end(self.reduced_at_end),
            "probation_at_end": _users_at_end(self.probation_at_end),
            "changes": [
                {
                    "user_id": change.user_id,
                    "caused_by": change.caused_by,
                    "occurred_at": format_timestamp(change.occurred_at),
                    "kind": change.kind,
                    "baseline": _event(change.baseline),
                    "candidate": _event(change.candidate),
                }
                for change in self.changes
            ],
            "features_changed": self.features_changed,
            "feature_changes": [
                {
                    "user_id": change.user_id,
                    "caused_by": change.caused_by,
                    "occurred_at": format_timestamp(change.occurred_at),
                    "features": {
                        name: {"baseline": old, "candidate": new}
                        for name, (old, new) in change.features.items()
                    },
                }
                for change in self.feature_changes
            ],
            "dead_letter_changes": [
                {
                    "line": letter.line,
                    "topic": letter.topic,
                    "baseline_reason": letter.baseline_reason,
                    "candidate_reason": letter.candidate_reason,
                }
                for letter in self.dead_letter_changes
            ],
        }


def backtest(
    records: Iterable[InputRecord],
    baseline: Policy,
    candidate: Policy,
    *,
    partitions: int = 1,
    until: int | None = None,
    now: int,
    topics: Sequence[str] = INPUT_TOPICS,
) -> BacktestResult:
    """Replay ``records`` under each policy, as ``lineguard replay`` would, and compare."""
    records = list(records)
    ran = [
        replay(records, policy, partitions=partitions, until=until, now=now, topics=topics)
        for policy in (baseline, candidate)
    ]
    before, after = ran
    changes, feature_changes = _changes(before.decisions, after.decisions)
    return BacktestResult(
        baseline_version=baseline.version,
        candidate_version=candidate.version,
        baseline_fingerprint=baseline.fingerprint,
        candidate_fingerprint=candidate.fingerprint,
        baseline_records=_record_counts(before),
        candidate_records=_record_counts(after),
        decisions=_count_diffs(*(Counter(d.type for d in r.decisions) for r in ran)),
        reasons=_reason_diffs(before.decisions, after.decisions),
        frozen_at_end=_at_end(before.decisions, after.decisions, "frozen"),
        reduced_at_end=_at_end(before.decisions, after.decisions, "reduced"),
        probation_at_end=_at_end(before.decisions, after.decisions, "probation"),
        changes=changes,
        feature_changes=feature_changes,
        dead_letter_changes=_dead_letter_changes(before, after),
    )


def _record_counts(result: ReplayResult) -> RecordCounts:
    by_reason = Counter(str(letter["reason"]) for letter in result.dead_letters)
    return RecordCounts(
        records=result.records,
        processed=result.processed,
        duplicates=result.duplicates,
        dead_lettered=result.dead_lettered,
        dead_letters_by_reason=dict(sorted(by_reason.items())),
    )


def _type_order(kind: str) -> tuple[int, str]:
    return (
        (DECISION_TYPES.index(kind), "") if kind in DECISION_TYPES else (len(DECISION_TYPES), kind)
    )


def _count_diffs(before: Counter[str], after: Counter[str]) -> tuple[CountDiff, ...]:
    kinds = sorted({*DECISION_TYPES, *before, *after}, key=_type_order)
    return tuple(CountDiff(kind, None, before[kind], after[kind]) for kind in kinds)


def _reason_diffs(before: list[Decision], after: list[Decision]) -> tuple[CountDiff, ...]:
    counts = [
        Counter((d.type, r.code) for d in side for r in d.reasons) for side in (before, after)
    ]
    keys = sorted({*counts[0], *counts[1]}, key=lambda key: (_type_order(key[0]), key[1]))
    return tuple(
        CountDiff(kind, code, counts[0][kind, code], counts[1][kind, code]) for kind, code in keys
    )


def _at_end(before: list[Decision], after: list[Decision], status: str) -> UsersAtEnd:
    """Users whose last decision left them in ``status``: a replay emits each user's in order."""
    lasts = [{d.user_id: d.status for d in side} for side in (before, after)]
    baseline, candidate = (
        tuple(sorted(user for user, last in side.items() if last == status)) for side in lasts
    )
    return UsersAtEnd(baseline, candidate)


def _by_cause(decisions: list[Decision]) -> dict[tuple[str, str], list[Decision]]:
    grouped: dict[tuple[str, str], list[Decision]] = defaultdict(list)
    for decision in decisions:
        grouped[decision.user_id, decision.caused_by].append(decision)
    return grouped


def _same(a: Decision, b: Decision) -> bool:
    return (
        a.type == b.type
        and a.status == b.status
        and [r.code for r in a.reasons] == [r.code for r in b.reasons]
    )


def _details_that_differ(a: Decision, b: Decision) -> dict[str, tuple[Any, Any]]:
    """What two alike decisions report differently, by name.

    Features by their own names, reasons' ``<CODE>.value`` and ``<CODE>.threshold``, and
    ``restore_path``. A bar moved on either side of a freeze leaves the decision alike, but changes its
    threshold or what its restore waits for: a gate on ``identical`` must see that too.
    """
    details = {
        name: (a.features.get(name), b.features.get(name))
        for name in sorted(a.features.keys() | b.features.keys())
        if a.features.get(name) != b.features.get(name)
    }
    for old, new in zip(a.reasons, b.reasons, strict=True):  # the same codes, in order
        if old.value != new.value:
            details[f"{old.code}.value"] = (old.value, new.value)
        if old.threshold != new.threshold:
            details[f"{old.code}.threshold"] = (old.threshold, new.threshold)
    if a.restore_path != b.restore_path:
        details["restore_path"] = ("; ".join(a.restore_path), "; ".join(b.restore_path))
    return details


def _changes(
    before: list[Decision], after: list[Decision]
) -> tuple[tuple[DecisionChange, ...], tuple[FeatureChange, ...]]:
    """Pair decisions by (user, cause); a cause seen twice (an id past the dedup horizon) pairs in order.

    A pair that differs is a :class:`DecisionChange`; one that agrees but for its features
    is a :class:`FeatureChange`.
    """
    old, new = _by_cause(before), _by_cause(after)
    changes: list[DecisionChange] = []
    feature_changes: list[FeatureChange] = []
    for key in old.keys() | new.keys():
        for a, b in itertools.zip_longest(old.get(key, ()), new.get(key, ())):
            if a is None or b is None or not _same(a, b):
                changes.append(DecisionChange(key[0], key[1], a, b))
                continue
            features = _details_that_differ(a, b)
            if features:
                feature_changes.append(FeatureChange(key[0], key[1], a.occurred_at, features))
    changes.sort(key=lambda c: (c.occurred_at, c.user_id, c.caused_by))
    feature_changes.sort(key=lambda c: (c.occurred_at, c.user_id, c.caused_by))
    return tuple(changes), tuple(feature_changes)


def _dead_letter_changes(before: ReplayResult, after: ReplayResult) -> tuple[DeadLetterChange, ...]:
    old = {int(letter["line"]): letter for letter in before.dead_letters}
    new = {int(letter["line"]): letter for letter in after.dead_letters}
    changes = []
    for line in sorted(old.keys() | new.keys()):
        a, b = old.get(line), new.get(line)
        reasons = (None if a is None else str(a["reason"]), None if b is None else str(b["reason"]))
        if reasons[0] != reasons[1]:
            topic = str((a or b or {})["topic"])
            changes.append(DeadLetterChange(line, topic, *reasons))
    return tuple(changes)


def _side(version: str, fingerprint: str, counts: RecordCounts) -> dict[str, Any]:
    return {
        "policy_version": version,
        "policy_fingerprint": fingerprint,
        "records": counts.records,
        "processed": counts.processed,
        "duplicates": counts.duplicates,
        "dead_lettered": counts.dead_lettered,
        "dead_letters_by_reason": counts.dead_letters_by_reason,
        "balanced": counts.balanced,
    }


def _users_at_end(users: UsersAtEnd) -> dict[str, Any]:
    return {
        "baseline": len(users.baseline),
        "candidate": len(users.candidate),
        "only_baseline": list(users.only_baseline),
        "only_candidate": list(users.only_candidate),
    }


def _count_row(row: CountDiff) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": row.type}
    if row.reason is not None:
        doc["reason"] = row.reason
    doc |= {"baseline": row.baseline, "candidate": row.candidate, "difference": row.difference}
    return doc


def _event(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    doc: dict[str, Any] = orjson.loads(decision.to_json(0))
    del doc["decided_at"]
    return doc


def render_text(result: BacktestResult, *, show: int = 20) -> str:
    """A table for a person: counts per type and reason, frozen at the end, then changes.

    At most ``show`` differing decisions are listed; the total is always given.
    """
    return "\n".join(_text_lines(result, show)) + "\n"


def _text_lines(result: BacktestResult, show: int) -> Iterator[str]:
    yield f"baseline  policy {result.baseline_version}: {_counts_text(result.baseline_records)}"
    yield f"candidate policy {result.candidate_version}: {_counts_text(result.candidate_records)}"
    for warning in result.warnings:
        yield f"WARNING: {warning}"
    if not result.records_agree:
        yield "RECORD COUNTS DIFFER: the policies do not accept the same records"
        for letter in result.dead_letter_changes:
            yield (
                f"  line {letter.line} ({letter.topic}): baseline"
                f" {letter.baseline_reason or 'accepted'}, candidate"
                f" {letter.candidate_reason or 'accepted'}"
            )
    yield ""
    rows = sorted(
        [*result.decisions, *result.reasons],
        key=lambda row: (_type_order(row.type), row.reason is not None, row.reason or ""),
    )
    table = [("type", "reason", "baseline", "candidate", "difference")]
    table += [
        (
            row.type,
            row.reason or "(decisions)",
            str(row.baseline),
            str(row.candidate),
            f"{row.difference:+d}" if row.difference else "0",
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in table) for i in range(5)]
    for cells in table:
        left = [cells[i].ljust(widths[i]) for i in range(2)]
        right = [cells[i].rjust(widths[i]) for i in range(2, 5)]
        yield "  ".join(left + right).rstrip()
    yield ""
    for status, users in (
        ("frozen", result.frozen_at_end),
        ("reduced", result.reduced_at_end),
        ("on probation", result.probation_at_end),
    ):
        yield (
            f"{status} at end: baseline {len(users.baseline)}, candidate {len(users.candidate)};"
            f" only baseline {len(users.only_baseline)}, only candidate"
            f" {len(users.only_candidate)}"
        )
    yield ""
    listed_features = result.feature_changes[: max(show, 0)]
    total = len(result.feature_changes)
    shown = f", first {len(listed_features)} shown" if len(listed_features) < total else ""
    yield f"same decisions with other features, reason values or restore path: {total}{shown}"
    if result.features_changed:
        counts = ", ".join(f"{name} {count}" for name, count in result.features_changed.items())
        yield f"  by feature: {counts}"
    for feature_change in listed_features:
        values = ", ".join(
            f"{name} {_value_text(old)} -> {_value_text(new)}"
            for name, (old, new) in feature_change.features.items()
        )
        yield (
            f"  {format_timestamp(feature_change.occurred_at)}  {feature_change.user_id}"
            f"  {feature_change.caused_by}: {values}"
        )

    yield ""
    listed = result.changes[: max(show, 0)]
    shown = f", first {len(listed)} shown" if len(listed) < len(result.changes) else ""
    yield f"differing decisions: {len(result.changes)}{shown}"
    for change in listed:
        yield (
            f"  {format_timestamp(change.occurred_at)}  {change.user_id}  {change.caused_by}:"
            f" {_decision_text(change.baseline)} -> {_decision_text(change.candidate)}"
        )


def _counts_text(counts: RecordCounts) -> str:
    text = (
        f"records={counts.records} processed={counts.processed}"
        f" duplicates={counts.duplicates} dead_lettered={counts.dead_lettered}"
    )
    return text if counts.balanced else f"{text} UNBALANCED"


def _value_text(value: Any) -> str:
    return "none" if value is None else str(value)


def _decision_text(decision: Decision | None) -> str:
    if decision is None:
        return "none"
    codes = ",".join(r.code for r in decision.reasons)
    return f"{decision.type} {decision.status} [{codes}]"
