r"""Fetched records whose header keys are not UTF-8 are read, not a crash.

Kafka's protocol calls a header key a string, but a broker stores whatever bytes a producer
sends, and a producer in another language can send any (librdkafka takes a C string).
aiokafka decodes each header key as UTF-8 as it parses a fetched record batch, and its
``UnicodeDecodeError`` (``CorruptRecordException`` from the pure-Python parser) came out of
the consumer's fetch: Faust's fetcher crashed, the worker exited with status 1, and after
each restart it fetched the same record and exited again (RELIABILITY.md, defect 114).

lineguard reads only an input record's key and value (DESIGN.md §1); its headers are
copied into its dead letter, if it has one. So such a record is applied as its key and
value say, as Java's consumer reads it too (it decodes header keys lossily). aiokafka
parses every batch as before; only a batch that fails on a header key is parsed again here,
each key that is not UTF-8 written with Python's ``backslashreplace`` (a byte 0xff as the
four characters ``\xff``), so that a dead letter can carry it, and a warning names the
topic, partition and offsets.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

log = structlog.get_logger(__name__)

LOG_INTERVAL: Final = 60.0
"""Seconds between two ``input_header_key_not_utf8`` warnings of one topic-partition."""

_LENGTH: Final = struct.Struct(">i")
_BATCH_LENGTH_AT: Final = 8
"""A record batch starts with its base offset (int64) and its length (int32): the bytes after
these 12."""
_MAGIC_AT: Final = 16
_COUNT_AT: Final = 57
_RECORDS_AT: Final = 61
"""Where a v2 batch's record count and records are (Kafka's ``DefaultRecordBatch``)."""
_LOG_APPEND_TIME: Final = 1

_DECOMPRESS: Final[dict[int, Callable[[bytes], bytes]]] = {
    1: codec.gzip_decode,
    2: codec.snappy_decode,
    3: codec.lz4_decode,
    4: codec.zstd_decode,
}


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a batch parsed here, with what aiokafka's consumer reads of a record."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


class _Warnings:
    """At most one warning per topic-partition and :data:`LOG_INTERVAL`, with a count.

    It names the first and last offset of the batch that brought it, not each: a producer
    that puts such a key on every record made a line of 29,000 bytes for one batch.
    """

    def __init__(self) -> None:
        self._logged: dict[Any, float] = {}
        self._unlogged: Counter[Any] = Counter()

    def found(self, tp: Any, offsets: list[int]) -> None:
        self._unlogged[tp] += len(offsets)
        now = time.monotonic()
        logged = self._logged.get(tp)
        if logged is not None and now - logged < LOG_INTERVAL:
            return
        self._logged[tp] = now
        log.warning(
            "input_header_key_not_utf8", topic=getattr(tp, "topic", None),
            partition=getattr(tp, "partition", None), first_offset=offsets[0],
            last_offset=offsets[-1], records=self._unlogged.pop(tp),
        )  # fmt: skip


_warnings = _Warnings()


class TolerantRecords:
    """One partition's fetched bytes, as aiokafka's ``MemoryRecords`` reads them.

    Each v2 batch of data comes wrapped in a :class:`TolerantBatch`.
    """

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = memoryview(data)
        self._pos = 0
        self.tp: Any = None
        """The topic-partition, for the warning (:func:`tolerate_header_keys`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def has_next(self) -> bool:
        """Whether a whole batch is left."""
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        """The next batch, a v2 one of data as a :class:`TolerantBatch`; None at the end."""
        batch = self._records.next_batch()
        if batch is None:
            return None
        # MemoryRecords hands out the batches in order, each its 12 bytes and its length.
        start = self._pos
        (length,) = _LENGTH.unpack_from(self._data, start + _BATCH_LENGTH_AT)
        self._pos = start + _BATCH_LENGTH_AT + _LENGTH.size + length
        if self._data[start + _MAGIC_AT] < 2 or batch.is_control_batch:
            return batch  # no headers before v2; control batches are aiokafka's own
        return TolerantBatch(batch, self._data[start : self._pos], self.tp)


class TolerantBatch:
    """A v2 record batch that aiokafka parses, parsed here once that fails on a header key.

    See :func:`parse_batch`.
    """

    def __init__(self, batch: Any, data: memoryview, tp: Any) -> None:
        self._batch = batch
        self._data = data
        self._tp = tp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._batch
        except (UnicodeDecodeError, CorruptRecordException) as error:
            if not _is_header_key_error(error):
                raise
            # aiokafka stopped at the first record with such a key; the ones before it are
            # taken already, and every later one is parsed here too.
            records = parse_batch(self._data, self._batch.compression_type)
            first = next((i for i, (_, bad) in enumerate(records) if bad), None)
            if first is None:
                raise
            _warnings.found(self._tp, [record.offset for record, bad in records if bad])
            yield from (record for record, _ in records[first:])


def _is_header_key_error(error: BaseException) -> bool:
    """Whether aiokafka failed to decode a header key.

    Its C parser raises the decoding error, its Python one wraps it.
    """
    return isinstance(error, UnicodeDecodeError) or isinstance(error.__cause__, UnicodeDecodeError)


def parse_batch(data: memoryview, compression: int) -> list[tuple[Record, bool]]:
    """Each record of a v2 batch, and whether a header key of it is not UTF-8.

    ``data`` is the whole batch, its CRC checked by aiokafka's fetcher. Such a key is
    written with backslash escapes; the record is otherwise as aiokafka reads it.
    """
    base_offset, _length = struct.unpack_from(">qi", data)
    timestamp_type = (struct.unpack_from(">h", data, 21)[0] >> 3) & 1
    first_timestamp, max_timestamp = struct.unpack_from(">qq", data, 27)
    (count,) = _LENGTH.unpack_from(data, _COUNT_AT)
    body = bytes(data[_RECORDS_AT:])
    if compression:
        body = _DECOMPRESS[compression](body)
    records: list[tuple[Record, bool]] = []
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(body, pos)
        start = pos
        pos += 1  # attributes (int8), unused
        timestamp_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _nullable_bytes(body, pos)
        value, pos = _nullable_bytes(body, pos)
        header_count, pos = decode_varint(body, pos)
        headers: list[tuple[str, bytes | None]] = []
        bad = False
        for _ in range(header_count):
            name, pos = _nullable_bytes(body, pos)
            if name is None:
                raise CorruptRecordException("a header key of length -1")
            header_value, pos = _nullable_bytes(body, pos)
            try:
                text = name.decode()
            except UnicodeDecodeError:
                text, bad = name.decode(errors="backslashreplace"), True
            headers.append((text, header_value))
        if pos - start != length:
            raise CorruptRecordException(f"a record of {length} bytes read as {pos - start}")
        timestamp = (
            max_timestamp
            if timestamp_type == _LOG_APPEND_TIME
            else first_timestamp + timestamp_delta
        )
        record = Record(base_offset + offset_delta, timestamp, timestamp_type, key, value, headers)
        records.append((record, bad))
    return records


def _nullable_bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(body, pos)
    if size < 0:
        return None, pos
    if pos + size > len(body):
        raise CorruptRecordException(f"a field of {size} bytes past the batch's end")
    return body[pos : pos + size], pos + size


def tolerate_header_keys() -> None:
    """Make aiokafka's fetcher read its batches through :class:`TolerantRecords`.

    The fetcher builds ``MemoryRecords`` and then ``PartitionRecords`` for each partition of
    a fetch response, looking both names up in its module at each response; the second
    gives the records their topic-partition. Idempotent.
    """
    if fetcher.MemoryRecords is TolerantRecords:
        return
    partition_records = fetcher.PartitionRecords

    class TolerantPartitionRecords(partition_records):  # type: ignore[misc,valid-type]
        def __init__(self, tp: Any, records: Any, *args: Any) -> None:
            if isinstance(records, TolerantRecords):
                records.tp = tp
            super().__init__(tp, records, *args)

    fetcher.MemoryRecords = TolerantRecords
    fetcher.PartitionRecords = TolerantPartitionRecords
