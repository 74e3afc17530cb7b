"""Offline replay: JSON-lines Kafka records in, limit events and dead letters out.

Records are grouped by partition exactly as Kafka's default partitioner would,
and each partition group runs through the same merger and processor as the
worker, so an online run and a replay of the same logs agree decision for decision.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Final

import msgspec

from risk.clock import parse_timestamp
from risk.contract import Rejection
from risk.decision import Decision
from risk.group import Applied, PartitionGroup, never_more
from risk.partition import Outcome
from risk.partitioner import partition_for
from risk.policy import Policy

INPUT_TOPICS: Final = (
    "credit.purchases.v1",
    "credit.repayments.v1",
    "credit.loan-applications.v1",
    "credit.income-verifications.v1",
    "credit.limit-overrides.v1",
)


class ReplayInputError(ValueError):
    """A line of the replay file that is not a Kafka record; the message names the line."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One Kafka record of the replay file."""

    line: int
    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class ReplayResult:
    """Decisions in emission order, dead letters, and the counts that must add up."""

    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    processed: int = 0
    duplicates: int = 0

    @property
    def dead_lettered(self) -> int:
        """Records sent to the dead-letter output."""
        return len(self.dead_letters)


def parse_records(
    lines: Iterable[bytes | str], topics: Sequence[str] = INPUT_TOPICS
) -> Iterator[InputRecord]:
    """Parse replay lines; blank lines are skipped, anything else malformed is an error.

    ``topics`` are the input topics' names in the contract's order, when the settings
    rename them. A byte order mark before the first line is skipped: a file saved as
    "UTF-8 with BOM", as some Windows editors and exporters save it, begins with one.
    """
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = _without_bom(line)
        if not line.strip():
            continue
        try:
            doc = msgspec.json.decode(line)
        except msgspec.DecodeError as error:
            raise ReplayInputError(f"line {number}: not valid JSON: {error}") from error
        if not isinstance(doc, dict):
            raise ReplayInputError(f"line {number}: not a JSON object")
        if "topic" not in doc:
            raise ReplayInputError(
                f"line {number}: no `topic`: each line is a Kafka record, like"
                ' {"topic": ..., "key": ..., "value": {...}}, not a record\'s value alone'
                " (as kafka-console-consumer prints it)"
            )
        topic = doc["topic"]
        if not isinstance(topic, str) or topic not in topics:
            raise ReplayInputError(
                f"line {number}: unknown topic {topic!r}; expected one of {', '.join(topics)}"
            )
        key = doc.get("key")
        if key is not None and not isinstance(key, str):
            raise ReplayInputError(f"line {number}: `key` must be a string or null")
        yield InputRecord(number, topic, None if key is None else key.encode(), _value(doc, number))


def _without_bom(line: bytes | str) -> bytes | str:
    if isinstance(line, bytes):
        return line.removeprefix(codecs.BOM_UTF8)
    return line.removeprefix("\ufeff")


def _value(doc: dict[str, Any], number: int) -> bytes | None:
    if "value_base64" in doc:
        try:
            return base64.b64decode(doc["value_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise ReplayInputError(f"line {number}: `value_base64` is not base64") from error
    if "value" not in doc and "payload" in doc:
        return _payload(doc["payload"], number)
    if "value" not in doc:
        raise ReplayInputError(f"line {number}: needs `value` or `value_base64`")
    value = doc["value"]
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    # msgspec, not orjson: it keeps integers past 64 bits exact, and its bytes are allocated
    # to size, where orjson's keep a 4 KiB block each, which a replay holds per record.
    return msgspec.json.encode(value)


def _payload(payload: Any, number: int) -> bytes | None:
    """``kcat -C -J``'s name for the value: the record's bytes as a JSON string, or null.

    Its other fields (``partition``, ``offset``, ``ts`` ...) are not needed: records are
    grouped by their keys, as Kafka's partitioner grouped them.
    """
    if payload is not None and not isinstance(payload, str):
        raise ReplayInputError(f"line {number}: `payload` must be a string or null")
    return None if payload is None else payload.encode("utf-8", "surrogatepass")


def dead_letter(record: InputRecord, rejection: Rejection) -> dict[str, Any]:
    """The dead-letter line of a rejected record: the original bytes, the reason and a message."""
    letter: dict[str, Any] = {
        "topic": record.topic,
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "reason": str(rejection.reason),
        "error": rejection.error,
        "line": record.line,
    }
    if record.value is None:
        letter["value"] = None
    else:
        try:
            letter["value"] = record.value.decode("utf-8")
        except UnicodeDecodeError:
            letter["value_base64"] = base64.b64encode(record.value).decode("ascii")
    return letter


@dataclass(frozen=True, slots=True)
class EarliestTimes:
    """What the merge needs of a file's records that it has not read yet.

    For each partition and topic, one number a record, in the file's order: the earliest
    event time of that record and the topic's later ones, among those that may be applied
    (a record whose time cannot be read is certainly dead-lettered), then
    :data:`_NOTHING_LATER`. Arrays, not objects: 8 bytes a record.
    """

    times: list[list[array[int]]]
    """By partition, then topic index."""


_NOTHING_LATER: Final = 2**63 - 1
"""The bound of a topic with nothing left that could be applied: later than any event."""
_ANY_TIME: Final = -(2**63)


class _Timed(msgspec.Struct):
    occurred_at: str


_timed: Final = msgspec.json.Decoder(_Timed)


def _event_time(value: bytes | None) -> int:
    """The time the record would be applied at, or :data:`_NOTHING_LATER` if it cannot be.

    Only ``occurred_at`` is read, cheaply: a value without a valid one is rejected by the
    contract's decoders too. One that they may reject for another reason keeps its time,
    so the merge may wait for it needlessly, never wrongly.
    """
    if value is None:
        return _NOTHING_LATER
    try:
        text = _timed.decode(value).occurred_at
    except msgspec.DecodeError:
        return _NOTHING_LATER
    except RecursionError:  # the contract's decoders may yet read it: wait for it
        return _ANY_TIME
    at = parse_timestamp(text)
    return _NOTHING_LATER if isinstance(at, str) else at


def earliest_times(
    records: Iterable[InputRecord], partitions: int, topics: Sequence[str] = INPUT_TOPICS
) -> EarliestTimes:
    """A first pass over a file, for :func:`replay` to apply the records as it reads them again."""
    topic_index = {topic: index for index, topic in enumerate(topics)}
    count = len(INPUT_TOPICS)
    columns = [array("q") for _ in range(partitions * count)]
    for record in records:
        partition = partition_for(record.key, partitions)
        columns[partition * count + topic_index[record.topic]].append(_event_time(record.value))
    for index, column in enumerate(columns):
        earliest = array("q", accumulate(reversed(column), min))
        earliest.reverse()
        earliest.append(_NOTHING_LATER)
        columns[index] = earliest
    return EarliestTimes(
        [columns[partition * count : (partition + 1) * count] for partition in range(partitions)]
    )


def replay(
    records: Iterable[InputRecord],
    policy: Policy,
    *,
    partitions: int = 1,
    until: int | None = None,
    now: int,
    topics: Sequence[str] = INPUT_TOPICS,
    earliest: EarliestTimes | None = None,
) -> ReplayResult:
    """Run records through the core as ``partitions`` partition groups would.

    ``topics`` name the input topics in the contract's order, as :func:`parse_records` got them.
    With ``earliest``, the :func:`earliest_times` of the same records, each record is applied
    as soon as the merge allows, as a worker applies it, and only the records the merge must
    wait behind are held: the merge waits for a topic with no record buffered only while its
    partition has a record of it later in the input that may sort before the next record to
    apply. Without, every record is held first. Either way the decisions are the same, in
    the same order.
    """
    topic_index = {topic: index for index, topic in enumerate(topics)}
    if earliest is not None:
        return _replay_as_read(records, policy, partitions, until, now, topic_index, earliest)
    groups: list[list[InputRecord]] = [[] for _ in range(partitions)]
    for record in records:
        groups[partition_for(record.key, partitions)].append(record)
    result = ReplayResult()
    for group in groups:
        _replay_partition(group, policy, until, now, topic_index, result)
    return result


def _replay_partition(
    records: list[InputRecord],
    policy: Policy,
    until: int | None,
    now: int,
    topic_index: dict[str, int],
    result: ReplayResult,
) -> None:
    group: PartitionGroup[InputRecord] = PartitionGroup(policy, {}, len(INPUT_TOPICS))
    for record in records:
        group.push(topic_index[record.topic], record.key, record.value, record)
    result.records += len(records)
    _count(group.drain(never_more, now), result)
    if until is not None:
        result.decisions += group.processor.advance_watermark(until)


def _replay_as_read(
    records: Iterable[InputRecord],
    policy: Policy,
    partitions: int,
    until: int | None,
    now: int,
    topic_index: dict[str, int],
    earliest: EarliestTimes,
) -> ReplayResult:
    """:func:`replay` applying records as they are read.

    Each partition's results are kept apart, so that they come out in partition order, as
    from a replay that holds every record first.
    """
    groups = [PartitionGroup[InputRecord](policy, {}, len(INPUT_TOPICS)) for _ in range(partitions)]
    readers = [_Reader(times, topic_index) for times in earliest.times]
    results = [ReplayResult() for _ in range(partitions)]
    for record in records:
        partition = partition_for(record.key, partitions)
        topic = topic_index[record.topic]
        reader = readers[partition]
        reader.read(topic, record.line)
        groups[partition].push(topic, record.key, record.value, record)
        results[partition].records += 1
        _count(groups[partition].drain(reader.may_receive, now), results[partition])
    result = ReplayResult()
    for group, part in zip(groups, results, strict=True):
        _count(group.drain(never_more, now), part)
        if until is not None:
            part.decisions += group.processor.advance_watermark(until)
        result.decisions += part.decisions
        result.dead_letters += part.dead_letters
        result.records += part.records
        result.processed += part.processed
        result.duplicates += part.duplicates
    return result


class _Reader:
    """How far a partition's records have been read, topic by topic, against the first pass."""

    __slots__ = ("_candidate", "_read", "_times", "_topic_index")

    def __init__(self, times: list[array[int]], topic_index: dict[str, int]) -> None:
        self._times = times
        self._read = [0] * len(times)
        self._topic_index = topic_index
        self._candidate = (0, 0)
        """The line and event time of the last candidate asked about: one is asked about
        again after each record read until it is applied."""

    def read(self, topic: int, line: int) -> None:
        """Count a record of ``topic`` read; one the first pass did not count is an error."""
        self._read[topic] += 1
        if self._read[topic] == len(self._times[topic]):
            raise ReplayInputError(
                f"line {line}: not in the file when it was first read: it changed since"
            )

    def may_receive(self, empty: list[int], candidate: InputRecord) -> bool:
        """Whether an empty topic's next records may sort before ``candidate``.

        The candidate's (event time, topic index) is compared as the merge orders records.
        """
        times, read = self._times, self._read
        if all(times[topic][read[topic]] == _NOTHING_LATER for topic in empty):
            return False
        line, at = self._candidate
        if line != candidate.line:
            at = _event_time(candidate.value)
            self._candidate = (candidate.line, at)
        order = (at, self._topic_index[candidate.topic])
        return any((times[topic][read[topic]], topic) < order for topic in empty)


def _count(applied_records: Iterable[Applied[InputRecord]], result: ReplayResult) -> None:
    for applied in applied_records:
        if applied.outcome is Outcome.PROCESSED:
            result.processed += 1
        elif applied.outcome is Outcome.DUPLICATE:
            result.duplicates += 1
        else:
            assert applied.rejection is not None  # noqa: S101 - DEAD_LETTERED always carries one
            result.dead_letters.append(dead_letter(applied.record, applied.rejection))
        result.decisions += applied.decisions
