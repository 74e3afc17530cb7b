"""What `lineguard replay` and `backtest` take as input, past the documented line format."""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path
from typing import Any

import orjson
from test_cli import _lineguard

from risk.replay import parse_records

from builders import repayment

POLICY = Path(__file__).resolve().parent.parent / "risk" / "default_policy.toml"
RECORD = orjson.dumps(repayment("2026-03-06T00:00:00Z", 1))


def test_a_byte_order_mark_before_the_first_line_is_skipped(tmp_path: Path) -> None:
    lines = [codecs.BOM_UTF8 + RECORD + b"\r\n", RECORD + b"\r\n"]
    assert [record.line for record in parse_records(lines)] == [1, 2]
    assert [r.line for r in parse_records([line.decode() for line in lines])] == [1, 2]
    source = tmp_path / "excel.jsonl"
    source.write_bytes(b"".join(lines))
    done = _lineguard("replay", source, "--partitions", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "records=2 processed=1 duplicates=1" in done.stderr


def test_a_gzip_file_is_read_decompressed_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "in.jsonl"
    plain.write_bytes(RECORD + b"\n" + RECORD + b"\n")
    packed = tmp_path / "export"  # the magic bytes tell, not the name
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert packed.read_bytes().startswith(b"\x1f\x8b")
    runs = [
        _lineguard(command, packed, *more, "--partitions", "1", cwd=tmp_path)
        for command, *more in (("replay",), ("backtest", "--candidate", POLICY))
    ]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert "records=2 processed=1 duplicates=1" in runs[0].stderr
    assert "records=2 processed=1 duplicates=1" in runs[1].stdout
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(packed.read_bytes()[:-12])
    done = _lineguard("replay", damaged, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"lineguard: {damaged}: a damaged gzip file: ")
    assert len(done.stderr.splitlines()) == 1


def test_a_dump_of_values_alone_is_refused_saying_what_a_line_needs(tmp_path: Path) -> None:
    source = tmp_path / "console.jsonl"  # kafka-console-consumer prints each value alone
    source.write_bytes(orjson.dumps(orjson.loads(RECORD)["value"]) + b"\n")
    done = _lineguard("replay", source, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"lineguard: {source}: line 1: no `topic`: each line is a Kafka record, like"
        ' {"topic": ..., "key": ..., "value": {...}}, not a record\'s value alone'
        " (as kafka-console-consumer prints it)\n"
    )


def _kcat(offset: int, record: dict[str, Any]) -> bytes:
    """A line of ``kcat -C -J``: the value is ``payload``, a string or null."""
    value = record["value"]
    return orjson.dumps(
        {"topic": record["topic"], "partition": 2, "offset": offset, "tstype": "create",
         "ts": 1772755200000, "broker": 1, "key": record["key"],
         "payload": None if value is None else orjson.dumps(value).decode()}
    )  # fmt: skip


def test_a_kcat_json_dump_is_read_with_its_payload_as_the_value(tmp_path: Path) -> None:
    good = orjson.loads(RECORD)
    bad = {**good, "value": {**good["value"], "amount": 1.5}}
    source = tmp_path / "kcat.jsonl"
    lines = [
        _kcat(offset, record) for offset, record in enumerate((good, bad, {**good, "value": None}))
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    done = _lineguard("replay", source, "--dead-letters", "dlt.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "records=3 processed=1 duplicates=0 dead_lettered=2" in done.stderr
    letters = [orjson.loads(line) for line in (tmp_path / "dlt.jsonl").read_bytes().splitlines()]
    assert [(letter["line"], letter["reason"]) for letter in letters] == [
        (2, "schema_violation"),
        (3, "invalid_json"),  # as a worker rejects a tombstone
    ]
    assert orjson.loads(letters[0]["value"]) == bad["value"]
    assert letters[1]["value"] is None  # a tombstone: kcat's null payload
