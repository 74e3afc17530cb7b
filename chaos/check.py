"""Read the topics back and hold the decisions found online against ``lineguard replay``.

The oracle is the project's own: the online decisions must equal an offline replay of
the same input logs, decision for decision. Here they are compared as a set of
``event_id``s with identical content (``decided_at`` aside), because a crash may repeat
a decision; a repeat must carry the same ``event_id`` and the same content.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from risk.clock import format_timestamp
from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS

_READ_TIMEOUT_SECONDS = 300.0
_REPLAY_TIMEOUT_SECONDS = 900.0

Isolation = Literal["read_uncommitted", "read_committed"]


class CheckError(RuntimeError):
    """The stored data cannot be checked as it is: the verdict must be a failure."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An input record as the broker stored it."""

    topic_index: int
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionCounts:
    """How the online decisions compare with replay's.

    ``duplicated`` counts extra copies of an ``event_id`` (allowed: a crash repeats a
    decision); ``mismatched`` counts ``event_id``s with a copy whose content differs.
    ``reordered_users`` counts users whose decisions first appeared online in another
    order than replay's.
    """

    expected: int
    found: int
    lost: int
    unexpected: int
    mismatched: int
    duplicated: int
    reordered_users: int

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing extra, and every copy identical to replay's."""
        return not (self.lost or self.unexpected or self.mismatched or self.reordered_users)


def compare_decisions(
    expected: Sequence[dict[str, Any]], online: Sequence[dict[str, Any]]
) -> DecisionCounts:
    """Compare decisions without ``decided_at``; ``online`` is in log order per partition."""
    by_id = {doc["event_id"]: doc for doc in expected}
    copies = Counter(doc["event_id"] for doc in online)
    mismatched = {
        doc["event_id"]
        for doc in online
        if doc["event_id"] in by_id and doc != by_id[doc["event_id"]]
    }
    found = sum(1 for event_id in by_id if event_id in copies)
    return DecisionCounts(
        expected=len(by_id),
        found=found,
        lost=len(by_id) - found,
        unexpected=sum(1 for event_id in copies if event_id not in by_id),
        mismatched=len(mismatched),
        duplicated=sum(copies.values()) - len(copies),
        reordered_users=_reordered_users(expected, online),
    )


def _reordered_users(expected: Sequence[dict[str, Any]], online: Sequence[dict[str, Any]]) -> int:
    """Users whose decisions, each at its first copy online, are not in replay's order.

    Each user's decisions share one partition of the limit-events topic, so consumers can
    rely on their order; a repeat after a crash comes again later, which is harmless.
    """
    wanted: dict[str, list[str]] = {}
    for doc in expected:
        wanted.setdefault(doc["user_id"], []).append(doc["event_id"])
    seen: set[str] = set()
    got: dict[str, list[str]] = {}
    for doc in online:
        if doc["event_id"] not in seen:
            seen.add(doc["event_id"])
            got.setdefault(doc["user_id"], []).append(doc["event_id"])
    reordered = 0
    for user, ids in wanted.items():
        mine = set(ids)
        if [i for i in got.get(user, []) if i in mine] != [i for i in ids if i in seen]:
            reordered += 1
    return reordered


async def read_topic(
    bootstrap: str,
    topic: str,
    isolation: Isolation = "read_uncommitted",
    *,
    partitions: int | None = None,
) -> dict[int, list[Any]]:
    """Every record of ``topic`` up to its end offsets, by partition, in log order.

    Raises :class:`CheckError` when the topic does not exist, or has other partitions than
    ``0 … partitions - 1`` when ``partitions`` is given: a topic read as empty, or read in
    part, would check nothing.
    """
    stored, _ = await _read_topic(bootstrap, topic, isolation, partitions)
    return stored


async def _read_topic(
    bootstrap: str, topic: str, isolation: Isolation, partitions: int | None
) -> tuple[dict[int, list[Any]], dict[int, int]]:
    """:func:`read_topic`, with each partition's span (end offset minus beginning offset)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level=isolation, max_partition_fetch_bytes=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()  # metadata for every topic
        found = sorted(consumer.partitions_for_topic(topic) or ())
        if not found:
            raise CheckError(f"{topic} does not exist, or has no partitions")
        if partitions is not None and found != list(range(partitions)):
            raise CheckError(f"{topic} has partitions {found}; the plan has {partitions}")
        tps = [TopicPartition(topic, p) for p in found]
        out: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + _READ_TIMEOUT_SECONDS
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {end}")
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition] += messages
        return out, {tp.partition: end[tp] - begin[tp] for tp in tps}
    finally:
        await consumer.stop()


async def read_inputs(
    bootstrap: str, topics: Sequence[str], *, partitions: int
) -> list[StoredRecord]:
    """The input topics as stored: topic by topic, partition by partition, in log order.

    Each partition must yield a record for every offset between its beginning and end
    offsets (the inputs are written without transactions, so there is no marker between),
    or :class:`CheckError` is raised.
    """
    records: list[StoredRecord] = []
    for index, topic in enumerate(topics):
        stored, spans = await _read_topic(bootstrap, topic, "read_uncommitted", partitions)
        for partition in sorted(stored):
            if len(stored[partition]) != spans[partition]:
                raise CheckError(
                    f"{topic}[{partition}]: read {len(stored[partition])} records,"
                    f" but its offsets span {spans[partition]}"
                )
            records += [
                StoredRecord(index, partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                for m in stored[partition]
            ]
    return records


def decision_docs(stored: dict[int, list[Any]]) -> list[dict[str, Any]]:
    """Limit events read by :func:`read_topic`, without ``decided_at``, in partition order."""
    docs = []
    for partition in sorted(stored):
        for message in stored[partition]:
            doc = orjson.loads(message.value)
            del doc["decided_at"]
            docs.append(doc)
    return docs


async def read_decisions(bootstrap: str, topic: str, isolation: Isolation) -> list[dict[str, Any]]:
    """Limit events without ``decided_at``, partition by partition in log order."""
    return decision_docs(await read_topic(bootstrap, topic, isolation))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record as stored on a ``.dlt`` topic: where it was read, its bytes and headers."""

    topic_index: int
    """The input whose ``.dlt`` topic it was read from."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


LetterKey = tuple[int, int, int, str, str]
"""What must agree between a dead letter online and in replay: the input topic's index,
partition and offset, the reason and the error (as the worker truncates it)."""

_HEADERS = (
    "dlt.original.topic", "dlt.original.partition", "dlt.original.offset", "dlt.reason",
    "dlt.error",
)  # fmt: skip
_ERROR_CHARS = 500
"""The worker sends at most this much of a rejection's error (``streams.runtime``)."""


async def read_dead_letters(
    bootstrap: str, topics: Sequence[str], isolation: Isolation, *, partitions: int | None = None
) -> list[DeadLetter]:
    """Every record of every input's ``.dlt`` topic, copies included, as stored."""
    letters = []
    for index, topic in enumerate(topics):
        stored = await read_topic(bootstrap, f"{topic}.dlt", isolation, partitions=partitions)
        for partition in sorted(stored):
            letters += [
                DeadLetter(index, partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                for m in stored[partition]
            ]
    return letters


def locate_letter(
    letter: DeadLetter,
    topics: Sequence[str],
    inputs: Mapping[tuple[int, int, int], StoredRecord],
) -> LetterKey | str:
    """The input record a dead letter stands for, or why it is malformed.

    As ``streams.runtime`` writes them (DESIGN §1, Dead-letter records): on the ``.dlt``
    topic of the input named by ``dlt.original.topic``, on the original partition, with the
    input's key and value unchanged, each ``dlt.*`` header once, and after them the input's
    own headers but its ``dlt.*`` ones, unchanged and in order.
    """
    where = f"{topics[letter.topic_index]}.dlt[{letter.partition}]@{letter.offset}"
    rejection = letter.headers[: len(_HEADERS)]
    names = [name for name, _ in rejection]
    if sorted(names) != sorted(_HEADERS):
        return f"{where}: headers {names}, not one each of {list(_HEADERS)} first"
    if any(value is None for _, value in rejection):
        return f"{where}: a dlt.* header without a value"
    try:
        headers = {name: bytes(value or b"").decode() for name, value in rejection}
        partition = int(headers["dlt.original.partition"])
        offset = int(headers["dlt.original.offset"])
    except (UnicodeDecodeError, ValueError) as error:  # not UTF-8, no int
        return f"{where}: unreadable headers: {error}"
    if headers["dlt.original.topic"] != topics[letter.topic_index]:
        return f"{where}: names {headers['dlt.original.topic']!r} as its original topic"
    if partition != letter.partition:
        return f"{where}: names partition {partition} as its original partition"
    record = inputs.get((letter.topic_index, partition, offset))
    if record is None:
        return f"{where}: names offset {offset}, which the input partition does not hold"
    if (letter.key, letter.value) != (record.key, record.value):
        return f"{where}: its key or value differs from the input record's"
    own = tuple((name, value) for name, value in record.headers if not name.startswith("dlt."))
    if letter.headers[len(_HEADERS) :] != own:
        return f"{where}: its headers after the dlt.* ones are not the input record's own"
    return letter.topic_index, partition, offset, headers["dlt.reason"], headers["dlt.error"]


def letter_key(letter: dict[str, Any]) -> LetterKey:
    """A replay dead letter located by :func:`expected_dead_letters`, as the worker sends it."""
    return (
        letter["topic"], letter["partition"], letter["offset"], letter["reason"],
        letter["error"][:_ERROR_CHARS],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeadLetterCounts:
    """How the dead letters online compare with replay's.

    ``unexpected`` counts letters replay does not have, malformed ones included (each
    malformed letter is also counted in ``malformed``, and its problem is in ``problems``);
    ``duplicated`` counts extra copies of a well-formed letter (allowed, as for decisions).
    """

    expected: int
    found: int
    lost: int
    unexpected: int
    malformed: int
    duplicated: int
    problems: list[str]


def compare_dead_letters(
    expected: Sequence[dict[str, Any]],
    online: Sequence[DeadLetter],
    topics: Sequence[str],
    records: Sequence[StoredRecord],
) -> DeadLetterCounts:
    """Compare the letters read online with replay's, located by :func:`expected_dead_letters`."""
    inputs = {(r.topic_index, r.partition, r.offset): r for r in records}
    wanted = Counter(map(letter_key, expected))
    got: Counter[LetterKey] = Counter()
    problems = []
    for letter in online:
        located = locate_letter(letter, topics, inputs)
        if isinstance(located, str):
            problems.append(located)
        else:
            got[located] += 1
    return DeadLetterCounts(
        expected=sum(wanted.values()),
        found=sum(1 for key in wanted if key in got),
        lost=sum(1 for key in wanted if key not in got),
        unexpected=sum(1 for key in got if key not in wanted) + len(problems),
        malformed=len(problems),
        duplicated=sum(got.values()) - len(got),
        problems=problems,
    )


def write_replay_input(records: Iterable[StoredRecord], path: Path, *, partitions: int) -> None:
    """The stored records as ``lineguard replay`` input, under the contract's topic names.

    Values go as ``value_base64``, so the bytes replayed are exactly the bytes stored.
    Replay re-derives each record's partition from its key, so a record stored on another
    partition than its key's (a producer with another partitioner) would be replayed in
    another group than the worker applied it in: that raises :class:`CheckError`.
    """
    with path.open("wb") as out:
        for record in records:
            derived = partition_for(record.key, partitions)
            if derived != record.partition:
                raise CheckError(
                    f"{INPUT_TOPICS[record.topic_index]} offset {record.offset} is stored on"
                    f" partition {record.partition}, but its key {record.key!r} hashes to"
                    f" partition {derived} of {partitions}: replay would apply it elsewhere"
                )
            line: dict[str, Any] = {
                "topic": INPUT_TOPICS[record.topic_index],
                "key": None if record.key is None else record.key.decode(),
            }
            if record.value is None:
                line["value"] = None
            else:
                line["value_base64"] = base64.b64encode(record.value).decode("ascii")
            out.write(orjson.dumps(line) + b"\n")


@dataclass(frozen=True, slots=True)
class Replayed:
    """What ``lineguard replay`` made of the input file."""

    decisions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    summary: str


def run_replay(
    input_path: Path, partitions: int, now: int, workdir: Path, policy: Path
) -> Replayed:
    """Run the ``lineguard replay`` command over ``input_path`` with the workers' policy.

    ``now`` only matters for the ``in_future`` check; the caller passes the end of the run,
    which is no earlier than any wall clock the workers checked against.
    """
    output, dead = workdir / "replay-decisions.jsonl", workdir / "replay-dead-letters.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    completed = subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-c", "from streams.entry import main; main()", "replay",
         str(input_path), "--output", str(output), "--dead-letters", str(dead),
         "--partitions", str(partitions), "--now", format_timestamp(now), "--policy", str(policy)],
        env=env, capture_output=True, timeout=_REPLAY_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    summary = completed.stderr.decode(errors="replace").strip().splitlines()
    if completed.returncode != 0:
        raise RuntimeError(f"lineguard replay failed ({completed.returncode}): {summary[-5:]}")
    decisions = []
    for line in output.read_bytes().splitlines():
        doc = orjson.loads(line)
        del doc["decided_at"]
        decisions.append(doc)
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    return Replayed(decisions, letters, summary[-1] if summary else "")


def expected_dead_letters(
    replayed: Replayed, records: Sequence[StoredRecord]
) -> list[dict[str, Any]]:
    """Replay's dead letters located in the logs: its ``line`` numbers the input file."""
    located = []
    for letter in replayed.dead_letters:
        record = records[letter["line"] - 1]
        located.append({"topic": record.topic_index, "partition": record.partition,
                        "offset": record.offset, "reason": letter["reason"],
                        "error": letter["error"]})  # fmt: skip
    return located


def write_lines(path: Path, docs: Iterable[Any]) -> None:
    """One JSON document per line, for a look at what differed."""
    with path.open("wb") as out:
        for doc in docs:
            out.write(orjson.dumps(doc) + b"\n")
