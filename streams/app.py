"""The Faust app and the ``lineguard`` command line.

One click-based program: Faust's own CLI (``worker`` and friends) plus the
lineguard verbs added with ``@app.command``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import faust
from faust.cli import AppCommand, argument, option

from risk.clock import SECOND, parse_timestamp
from risk.policy import PolicyError, load_policy
from risk.replay import ReplayInputError, parse_records, replay
from streams.settings import Settings

settings = Settings()
app = faust.App(
    "lineguard",
    broker=settings.broker_url,
    store=settings.store,
    autodiscover=["agents"],
    origin="streams",
)


def _now() -> int:
    return time.time_ns() // 1000


def _fail(message: str, code: int = 2) -> None:
    print(f"lineguard: {message}", file=sys.stderr)
    raise SystemExit(code)


def _timestamp_option(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    parsed = parse_timestamp(text)
    if isinstance(parsed, str):
        _fail(f"{name}: {parsed}")
        raise AssertionError  # unreachable: _fail exits
    return parsed


@app.command(
    argument("input_file", metavar="INPUT"),
    option("--output", "-o", default="-", help="Limit events, one JSON per line ('-': stdout)."),
    option("--dead-letters", default=None, help="Dead-letter records, one JSON per line."),
    option("--policy", default=None, help="Policy TOML file (default: the packaged policy)."),
    option("--partitions", default=1, type=int, help="Partition count to group records by."),
    option("--until", default=None, help="After the input, advance every watermark to TIME."),
    option("--now", default=None, help="Wall clock for the in_future check (default: now)."),
)
async def replay_command(
    self: AppCommand,
    input_file: str,
    output: str,
    dead_letters: str | None,
    policy: str | None,
    partitions: int,
    until: str | None,
    now: str | None,
) -> None:
    """Replay a JSON-lines file of Kafka records through the risk core."""
    if partitions < 1:
        _fail("--partitions must be at least 1")
    try:
        loaded = load_policy(Path(policy) if policy else None)
    except PolicyError as error:
        _fail(str(error))
        return
    until_at = _timestamp_option(until, "--until")
    now_at = _timestamp_option(now, "--now") or _now()
    try:
        with open(input_file, "rb") as lines:  # noqa: ASYNC230 - a CLI run, no loop to block
            result = replay(
                list(parse_records(lines)), loaded, partitions=partitions, until=until_at,
                now=now_at,
            )  # fmt: skip
    except (OSError, ReplayInputError) as error:
        _fail(f"{input_file}: {error}")
        return
    _write_lines(output, (d.to_json(_now()) for d in result.decisions))
    if dead_letters is not None:
        import orjson

        _write_lines(dead_letters, (orjson.dumps(letter) for letter in result.dead_letters))
    total = result.processed + result.duplicates + result.dead_lettered
    print(
        f"records={result.records} processed={result.processed}"
        f" duplicates={result.duplicates} dead_lettered={result.dead_lettered}"
        f" decisions={len(result.decisions)}"
        f" {'balanced' if total == result.records else 'UNBALANCED'}",
        file=sys.stderr,
    )
    if total != result.records:
        raise SystemExit(1)


def _write_lines(path: str, lines: Any) -> None:
    stream = sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115
    try:
        for line in lines:
            stream.write(line + b"\n")
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()
        else:
            stream.flush()


@app.command(argument("policy_file", metavar="FILE"))
async def check_policy(self: AppCommand, policy_file: str) -> None:
    """Validate a policy file; exit non-zero with the bad field named."""
    try:
        policy = load_policy(Path(policy_file))
    except PolicyError as error:
        _fail(f"{policy_file}: {error}", code=1)
        return
    print(f"{policy_file}: valid policy, version {policy.version}")


def main() -> None:
    """Console entry point: ``lineguard``."""
    app.main()


__all__ = ["SECOND", "app", "main"]
