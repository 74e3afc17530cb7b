"""What `lineguard replay` and `backtest` write, and where."""

from __future__ import annotations

from pathlib import Path

import orjson
from test_cli import _lineguard

from builders import repayment

POLICY = Path(__file__).resolve().parent.parent / "risk" / "default_policy.toml"


def test_dead_letters_and_limit_events_are_never_mixed_on_stdout(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(orjson.dumps(repayment("2026-03-06T00:00:00Z", 1)) + b"\n")
    for given in (("--dead-letters", "-"), ("-o", "-", "--dead-letters", "-")):
        done = _lineguard("replay", source, *given, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr == (
            "lineguard: --dead-letters - is also --output: one would be read as the other\n"
        )
    apart = _lineguard("replay", source, "-o", "events.jsonl", "--dead-letters", "-", cwd=tmp_path)
    assert apart.returncode == 0, apart.stderr


def test_backtest_refuses_a_negative_number_of_changes_to_show(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(orjson.dumps(repayment("2026-03-06T00:00:00Z", 1)) + b"\n")
    done = _lineguard("backtest", source, "--candidate", POLICY, "--show", "-1", cwd=tmp_path)
    assert done.returncode == 2
    assert "Invalid value for '--show': -1 is not in the range x>=0." in done.stderr
    assert done.stdout == ""
