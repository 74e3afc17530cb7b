"""What `lineguard replay` and `backtest` take as input, past the documented line format."""

from __future__ import annotations

import codecs
from pathlib import Path

import orjson
from test_cli import _lineguard

from risk.replay import parse_records

from builders import repayment

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
