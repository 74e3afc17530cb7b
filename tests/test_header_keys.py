"""Records whose header keys are not UTF-8, as a producer in another language can send them.

aiokafka's producer takes only ``str`` header keys, so the records are built with its batch
builder under a placeholder key, which is then overwritten with bytes that are not UTF-8
(the batch compressed afterwards if asked, and its CRC computed again).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords, _MemoryRecordsPy
from aiokafka.record.util import calc_crc32c
from structlog.testing import capture_logs
from test_worker import PARTITIONS, records_of, start_worker, topics
from worker_harness import Topics, Worker, consume_all, create_topics, wait_for

from risk.partitioner import partition_for
from streams import header_keys
from streams.header_keys import TolerantBatch, TolerantRecords, tolerate_header_keys

from builders import purchase

__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

PLACEHOLDER = "\x01\x02\x03\x04"
BAD_KEY = b"\xff\xfebd"
"""Not UTF-8: 0xff and 0xfe never occur in it."""
ESCAPED = "\\xff\\xfebd"
"""How the worker reads :data:`BAD_KEY`: Python's ``backslashreplace``."""

ENCODE = {"gzip": gzip_encode, "snappy": snappy_encode, "lz4": lz4_encode, "zstd": zstd_encode}
CODEC = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

Record = tuple[bytes, bytes, list[tuple[str, bytes | None]]]


def forge(built: bytes | bytearray, compression: str | None = None) -> bytearray:
    """A v2 batch built uncompressed, its placeholder header keys made :data:`BAD_KEY`."""
    raw = bytearray(built.replace(PLACEHOLDER.encode(), BAD_KEY))
    if compression is not None:
        attributes = struct.unpack_from(">h", raw, 21)[0] | CODEC[compression]
        raw = raw[:61] + ENCODE[compression](bytes(raw[61:]))
        struct.pack_into(">h", raw, 21, attributes)
        struct.pack_into(">i", raw, 8, len(raw) - 12)
    struct.pack_into(">I", raw, 17, calc_crc32c(bytes(raw[21:])))
    return raw


def build(records: list[Record], compression: str | None = None) -> bytearray:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for offset, (key, value, headers) in enumerate(records):
        builder.append(offset, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                       headers=headers)  # fmt: skip
    return forge(builder.build(), compression)


RECORDS: list[Record] = [
    (b"u-1", b'{"a": 0}', [("trace", b"t0")]),
    (b"u-1", b'{"a": 1}', [("trace", b"t1"), (PLACEHOLDER, b"v1"), ("x", None)]),
    (b"u-2", b'{"a": 2}', [("trace", b"t2")]),
    (b"u-3", b"", [(PLACEHOLDER, None), ("y", b"")]),
]


def _read(records: Any) -> Iterator[tuple[int, int, bytes, bytes, list[Any]]]:
    while records.has_next():
        for record in records.next_batch():
            yield record.offset, record.timestamp, record.key, record.value, list(record.headers)


def _expected() -> list[tuple[int, int, bytes, bytes, list[Any]]]:
    return [
        (offset, 1_700_000_000_000 + offset, key, value,
         [(ESCAPED if name == PLACEHOLDER else name, header) for name, header in headers])
        for offset, (key, value, headers) in enumerate(RECORDS)
    ]  # fmt: skip


def test_aiokafka_stops_at_a_header_key_that_is_not_utf8() -> None:
    """The defect, in aiokafka's parser: its fetch raised this out of the worker's consumer."""
    with pytest.raises(UnicodeDecodeError):
        list(_read(MemoryRecords(bytes(build(RECORDS)))))


@pytest.mark.parametrize("compression", [None, "gzip", "snappy", "lz4", "zstd"])
def test_every_record_is_read_with_such_a_key_escaped_and_the_rest_unchanged(
    compression: str | None,
) -> None:
    assert list(_read(TolerantRecords(bytes(build(RECORDS, compression))))) == _expected()


def test_with_aiokafka_s_pure_python_parser_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """It wraps the decoding error in a ``CorruptRecordException``."""
    monkeypatch.setattr(header_keys, "MemoryRecords", _MemoryRecordsPy)
    assert list(_read(TolerantRecords(bytes(build(RECORDS, "gzip"))))) == _expected()


def test_batches_aiokafka_reads_are_read_by_aiokafka_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    good = [
        (key, value, [h for h in headers if h[0] != PLACEHOLDER]) for key, value, headers in RECORDS
    ]
    data = bytes(build(good) + build(good[:2]))
    monkeypatch.setattr(header_keys, "parse_batch", None)  # would raise if called
    assert list(_read(TolerantRecords(data))) == list(_read(MemoryRecords(data)))
    assert len(list(_read(TolerantRecords(data)))) == len(good) + 2


def test_other_parse_errors_still_stop_the_fetch() -> None:
    class Broken:
        compression_type = 0

        def __iter__(self) -> Iterator[Any]:
            raise CorruptRecordException("Invalid record size")

    with pytest.raises(CorruptRecordException, match="Invalid record size"):
        list(TolerantBatch(Broken(), memoryview(b""), None))


def test_the_warning_names_the_topic_partition_and_offsets_never_a_key() -> None:
    records = TolerantRecords(bytes(build(RECORDS)))
    records.tp = type("TP", (), {"topic": "warned.purchases", "partition": 4})()
    with capture_logs() as logs:
        list(_read(records))
    assert logs == [
        {"event": "input_header_key_not_utf8", "log_level": "warning",
         "topic": "warned.purchases", "partition": 4, "first_offset": 1, "last_offset": 3,
         "records": 2}
    ]  # fmt: skip


@pytest.mark.integration
def test_a_worker_applies_records_with_such_keys_and_dead_letters_them_with_their_headers(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    """The worker crashed at the fetch (status 1, in Faust's fetcher: ``UnicodeDecodeError``)
    and again after each restart. Now a valid purchase with such a key is applied, a record
    that is not JSON goes to the ``.dlt`` with its headers in order, that key escaped, and
    the records after them, in a gzip batch too, are applied."""
    purchases = topics.name("credit.purchases.v1")
    user = next(f"u{n}" for n in range(100) if partition_for(f"u{n}".encode(), PARTITIONS) == 1)
    valid = [
        r.value
        for r in records_of(
            [purchase(f"2026-03-0{day}T00:00:00Z", 100, user=user, order=f"o{day}")
             for day in range(1, 4)]
        )
    ]  # fmt: skip
    first: list[Record] = [
        (user.encode(), valid[0], [("trace", b"t0"), (PLACEHOLDER, b"v0")]),
        (user.encode(), b"{not json", [("trace", b"t1"), (PLACEHOLDER, b"v1"), ("x", None)]),
        (user.encode(), valid[1], [("trace", b"t2")]),
    ]
    second: list[Record] = [(user.encode(), valid[2], [(PLACEHOLDER, b"v3")])]
    asyncio.run(create_topics(kafka_bootstrap, topics, PARTITIONS))
    worker = start_worker()
    worker.wait_ready()
    asyncio.run(_send(kafka_bootstrap, purchases, 1, [(first, None), (second, "gzip")]))
    wait_for(lambda: worker.metric("lineguard_events_total") >= 4, 60, "all four records")
    assert worker.metric("lineguard_events_total", outcome="processed") == 3
    letters = asyncio.run(consume_all(kafka_bootstrap, f"{purchases}.dlt", expected=1))
    assert list(letters) == [1]
    (letter,) = letters[1]
    assert (letter.key, letter.value) == (user.encode(), b"{not json")
    assert dict(letter.headers)["dlt.reason"] == b"invalid_json"
    assert list(letter.headers[5:]) == [("trace", b"t1"), (ESCAPED, b"v1"), ("x", None)]
    assert worker.metric("lineguard_dead_letters_total", reason="invalid_json") == 1
    assert worker.process is not None and worker.process.poll() is None
    warning = next(
        line for line in worker.log().splitlines() if "input_header_key_not_utf8" in line
    )
    assert f'"topic": "{purchases}", "partition": 1, "first_offset": 0, "last_offset": 1' in warning
    assert user not in warning


async def _send(
    bootstrap: str, topic: str, partition: int, batches: list[tuple[list[Record], str | None]]
) -> None:
    """Each batch as built here, in order, with aiokafka's producer."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for records, compression in batches:
            batch = producer.create_batch()
            for key, value, headers in records:
                batch.append(timestamp=None, key=key, value=value, headers=headers)
            batch.close()
            batch._buffer = forge(batch._builder.build(), compression)  # sent as it stands
            await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


def test_installing_twice_wraps_aiokafka_s_fetcher_once() -> None:
    from aiokafka.consumer import fetcher

    tolerate_header_keys()
    installed = fetcher.PartitionRecords
    tolerate_header_keys()
    assert fetcher.MemoryRecords is TolerantRecords
    assert fetcher.PartitionRecords is installed
