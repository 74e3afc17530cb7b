"""`lineguard replay` reads a file twice: the second time, exactly what it read the first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from risk.policy import load_policy
from risk.replay import ReplayResult, parse_records, replay
from streams.app import _replay_run

from builders import application, purchase, repayment, ts

UNTIL = "2026-06-01T00:00:00Z"
NOW = "2030-01-01T00:00:00Z"
# An overdue purchase, then an application: the application finds the user frozen.
BOOK = [
    purchase("2026-03-01T00:00:00Z", 1000, first_due="2026-03-02T00:00:00Z", event_id="p-1"),
    application("2026-03-20T00:00:00Z", 500_000, event_id="a-1"),
]
# What an export still being written adds: a repayment before the purchase fell overdue.
APPENDED = repayment("2026-03-03T00:00:00Z", 1000, event_id="r-1")


def _lines(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _replay_with(path: Path, change: Any) -> ReplayResult:
    """Replay ``path`` as the command does, calling ``change`` between the two passes."""
    run = _replay_run(str(path), 1, UNTIL, NOW, as_read=True)
    assert run.earliest is not None  # a regular file: read twice
    change()
    return replay(
        run.records, load_policy(), partitions=1, until=run.until, now=run.now,
        topics=run.topics, earliest=run.earliest,
    )  # fmt: skip


def _held(lines: list[dict[str, Any]]) -> list[bytes]:
    records = list(parse_records(_lines(lines).splitlines()))
    result = replay(records, load_policy(), partitions=1, until=ts(UNTIL), now=ts(NOW))
    return [d.to_json(0) for d in result.decisions]


def test_lines_appended_between_the_passes_are_left_out_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(_lines(BOOK))

    def append() -> None:
        with path.open("ab") as file:
            file.write(_lines([APPENDED]))

    result = _replay_with(path, append)
    assert [d.to_json(0) for d in result.decisions] == _held(BOOK)
    assert _held(BOOK) != _held([*BOOK, APPENDED])  # the appended line would change them
    assert result.records == 2
    assert f"{path}: the lines added after its first reading (line 3 on)" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["shrank", "replaced"])
def test_a_file_cut_short_or_replaced_between_the_passes_stops_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(_lines(BOOK))

    def change() -> None:
        if how == "shrank":
            path.write_bytes(_lines(BOOK[:1]))
        else:
            other = tmp_path / "other.jsonl"
            other.write_bytes(_lines([BOOK[0], APPENDED]))
            os.replace(other, path)

    with pytest.raises(SystemExit) as stopped:
        _replay_with(path, change)
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()
    assert len(message) == 1
    expected = "was replaced by another file" if how == "replaced" else "shrank from"
    assert message[0].startswith(f"lineguard: {path}: {expected}"), message
