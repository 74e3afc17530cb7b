"""The chaos check: its comparison catches what it must, and a short run inside ``make test``.

The short run is ``python -m chaos`` itself with a small plan: two workers, 300 records a
second for 20 seconds, one worker SIGKILLed after 12 seconds and restarted at once. The
full plan is ``make chaos`` (see RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import orjson
import pytest

from chaos import check, workers
from chaos import run as run_module
from chaos.check import (
    CheckError,
    DeadLetter,
    StoredRecord,
    compare_dead_letters,
    compare_decisions,
    write_replay_input,
)
from chaos.run import Plan, Report, _check_stops
from chaos.workers import WorkerSlot, scan_log
from risk.partitioner import partition_for
from risk.replay import INPUT_TOPICS

REPO = Path(__file__).resolve().parents[1]
SHORT_PLAN = ["--duration", "20", "--rate", "300", "--users", "500", "--kill-every", "12",
              "--sigterm-at", "0", "--catch-up-timeout", "45"]  # fmt: skip
RUN_TIMEOUT = 420


def _decision(event_id: str, user: str, **changes: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "type": "limit.freeze", **changes}


def test_the_comparison_counts_losses_copies_and_differences() -> None:
    expected = [_decision("a", "u-1"), _decision("b", "u-1"), _decision("c", "u-2")]
    online = [
        _decision("a", "u-1"),
        _decision("a", "u-1"),  # a repeat after a crash: allowed
        _decision("c", "u-2", type="limit.restore"),  # different content
        _decision("x", "u-3"),  # replay has no such decision
    ]
    counts = compare_decisions(expected, online)
    assert (counts.expected, counts.found, counts.lost) == (3, 2, 1)
    assert (counts.duplicated, counts.mismatched, counts.unexpected) == (1, 1, 1)
    assert not counts.ok
    assert compare_decisions(expected, [*expected, expected[0]]).ok


def test_the_comparison_sees_a_users_decisions_out_of_order() -> None:
    expected = [_decision("a", "u-1"), _decision("b", "u-1"), _decision("c", "u-2")]
    swapped = [expected[1], expected[0], expected[2]]
    counts = compare_decisions(expected, swapped)
    assert counts.reordered_users == 1
    assert not counts.ok
    # Another user's decisions in between change nothing, and neither does a late repeat.
    assert compare_decisions(expected, [expected[0], expected[2], expected[1], expected[0]]).ok


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """Run ``python -m chaos`` with the short plan once; its report and its output."""
    workdir = tmp_path_factory.mktemp("chaos")
    report_path, log = workdir / "chaos.json", workdir / "chaos.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chaos", *SHORT_PLAN, "--report", str(report_path)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
        try:
            code = process.wait(RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # it stops its workers and its broker
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    output = log.read_text(errors="replace")
    assert report_path.exists(), output
    report: dict[str, Any] = orjson.loads(report_path.read_bytes())
    assert (code == 0) == report["passed"], output
    assert not report["error"], output
    return report, output


@pytest.mark.integration
def test_a_short_chaos_run_emits_only_replayed_decisions(
    short_run: tuple[dict[str, Any], str],
) -> None:
    report, output = short_run
    decisions = report["decisions"]
    assert [f["signal"] for f in report["faults"]] == ["SIGKILL"], output
    assert report["produced"] == 6000
    assert decisions["expected"] >= 15, output  # 19 with this plan and seed
    assert decisions["unexpected"] == 0, output
    assert decisions["mismatched"] == 0, output
    assert decisions["reordered_users"] == 0, output
    assert report["dead_letters_unexpected"] == 0, output


@pytest.mark.integration
def test_a_short_chaos_run_loses_no_decision(short_run: tuple[dict[str, Any], str]) -> None:
    report, output = short_run
    assert report["decisions"]["lost"] == 0, output
    assert report["dead_letters_lost"] == 0, output
    assert report["stalled"] == [], output
    assert report["unexpected_exits"] == 0, output
    assert report["unclean_stops"] == [], output
    assert report["log_problems"] == {}, output
    # Nothing extra or different: the test above (with the fixture's check for an error,
    # the two make up report["passed"]).


def test_the_replay_input_refuses_a_record_off_its_keys_partition(tmp_path: Path) -> None:
    key = b"u-1"
    home = partition_for(key, 6)
    path = tmp_path / "input.jsonl"
    write_replay_input([StoredRecord(0, home, 0, key, b"{}")], path, partitions=6)
    assert orjson.loads(path.read_bytes()) == {
        "topic": INPUT_TOPICS[0], "key": "u-1", "value_base64": "e30="
    }  # fmt: skip
    stray = StoredRecord(1, (home + 1) % 6, 5, key, b"{}")
    with pytest.raises(CheckError, match=r"offset 5 is stored on partition"):
        write_replay_input([stray], path, partitions=6)


TOPICS = ["p.purchases", "p.repayments", "p.apps", "p.inc", "p.ovr"]
BAD = StoredRecord(0, 3, 41, b"u-1", b"{not json")


def _headers(topic: str = "p.purchases", partition: str = "3", offset: str = "41",
             reason: str = "invalid_json", error: str = "bad") -> tuple[tuple[str, bytes], ...]:  # fmt: skip
    return tuple(
        (f"dlt.{name}", value.encode())
        for name, value in (("original.topic", topic), ("original.partition", partition),
                            ("original.offset", offset), ("reason", reason), ("error", error))
    )  # fmt: skip


def _letter(topic_index: int = 0, partition: int = 3, key: bytes | None = b"u-1",
            value: bytes | None = b"{not json", **headers: str) -> DeadLetter:  # fmt: skip
    return DeadLetter(topic_index, partition, 0, key, value, _headers(**headers))


def _compare(*online: DeadLetter, error: str = "bad") -> Any:
    expected = [{"topic": 0, "partition": 3, "offset": 41, "reason": "invalid_json",
                 "error": error}]  # fmt: skip
    return compare_dead_letters(expected, online, TOPICS, [BAD])


def test_a_dead_letter_as_the_worker_writes_it_is_found_and_a_copy_is_a_duplicate() -> None:
    counts = _compare(_letter(), _letter())
    assert (counts.expected, counts.found, counts.lost, counts.unexpected) == (1, 1, 0, 0)
    assert (counts.duplicated, counts.malformed) == (1, 0)
    # The worker sends at most 500 characters of the error.
    assert _compare(_letter(error="e" * 500), error="e" * 600).found == 1


@pytest.mark.parametrize(
    "letter",
    [
        # The audit's probe: a purchases letter, its value empty, on the repayments .dlt topic.
        _letter(topic_index=1, partition=0, value=b""),
        _letter(topic_index=1),  # on another input's .dlt topic
        _letter(partition=0),  # on another .dlt partition than the original
        _letter(value=b""),  # not the input's value
        _letter(key=b"u-2"),  # not the input's key
        _letter(offset="42"),  # no such input record
        _letter(topic="p.unknown"),  # once a ValueError
        _letter(partition=3, offset="x"),
        DeadLetter(0, 3, 0, b"u-1", b"{not json", _headers()[1:]),  # once a KeyError
        DeadLetter(0, 3, 0, b"u-1", b"{not json", (*_headers(), ("dlt.reason", b"too_late"))),
        DeadLetter(0, 3, 0, b"u-1", b"{not json", (*_headers()[:-1], ("dlt.error", b"\xff"))),
        DeadLetter(0, 3, 0, b"u-1", b"{not json", (*_headers()[:-1], ("dlt.error", None))),
    ],
)
def test_a_malformed_dead_letter_is_unexpected_and_the_real_one_lost(letter: DeadLetter) -> None:
    counts = _compare(letter)
    assert (counts.found, counts.lost, counts.unexpected, counts.malformed) == (0, 1, 1, 1)
    assert len(counts.problems) == 1


OWN = (("traceparent", b"00-ab-01"), ("empty", None), ("traceparent", b"twice"))
"""A producer's own headers: a null value and a repeated name, as Kafka allows."""


def test_a_dead_letter_carries_its_record_own_headers_after_the_rejection() -> None:
    record = StoredRecord(0, 3, 41, b"u-1", b"{not json", (("dlt.reason", b"stale"), *OWN))
    expected = [{"topic": 0, "partition": 3, "offset": 41, "reason": "invalid_json",
                 "error": "bad"}]  # fmt: skip
    letter = DeadLetter(0, 3, 0, b"u-1", b"{not json", (*_headers(), *OWN))
    counts = compare_dead_letters(expected, [letter], TOPICS, [record])
    assert (counts.found, counts.unexpected, counts.malformed) == (1, 0, 0)
    for headers in (
        _headers(),  # the record's own headers lost
        (*_headers(), *OWN[:2]),  # one of them lost
        (*_headers(), *reversed(OWN)),  # out of order
        (*_headers(), ("dlt.reason", b"stale"), *OWN),  # the stale rejection kept
        (*OWN, *_headers()),  # before the rejection
    ):
        letter = DeadLetter(0, 3, 0, b"u-1", b"{not json", headers)
        counts = compare_dead_letters(expected, [letter], TOPICS, [record])
        assert (counts.found, counts.unexpected, counts.malformed) == (0, 1, 1), headers


def test_a_dead_letter_with_another_reason_or_error_is_unexpected() -> None:
    for letter in (_letter(reason="too_late"), _letter(error="other")):
        counts = _compare(letter)
        assert (counts.lost, counts.unexpected, counts.malformed) == (1, 1, 0)


class _FakeConsumer:
    """Enough of ``AIOKafkaConsumer`` for ``read_topic``: one topic's stored partitions."""

    stored: ClassVar[dict[int, list[Any]]] = {}
    begin: ClassVar[int] = 0

    def __init__(self, **_: Any) -> None:
        self.positions: dict[Any, int] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.stored) if topic == "t" and self.stored else None

    def assign(self, tps: list[Any]) -> None:
        self.positions = dict.fromkeys(tps, self.begin)

    async def seek_to_beginning(self, *_: Any) -> None:
        pass

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, self.begin)

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.stored[tp.partition]) for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    async def getmany(self, timeout_ms: int) -> dict[Any, list[Any]]:
        out = {}
        for tp, at in self.positions.items():
            out[tp] = [m for m in self.stored[tp.partition] if m.offset >= at]
            self.positions[tp] = len(self.stored[tp.partition])
        return out


def _message(offset: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=b"k", value=b"v", headers=[])


@pytest.fixture
def fake_consumer(monkeypatch: pytest.MonkeyPatch) -> type[_FakeConsumer]:
    monkeypatch.setattr(check, "AIOKafkaConsumer", _FakeConsumer)
    monkeypatch.setattr(_FakeConsumer, "stored", {0: [_message(0)], 1: [_message(0)]})
    monkeypatch.setattr(_FakeConsumer, "begin", 0)
    return _FakeConsumer


def test_a_topic_is_read_whole_or_not_at_all(fake_consumer: type[_FakeConsumer]) -> None:
    stored = asyncio.run(check.read_topic("b", "t", partitions=2))
    assert {p: len(m) for p, m in stored.items()} == {0: 1, 1: 1}
    with pytest.raises(CheckError, match=r"has partitions \[0, 1\]; the plan has 6"):
        asyncio.run(check.read_topic("b", "t", partitions=6))
    with pytest.raises(CheckError, match="does not exist"):  # once read as empty
        asyncio.run(check.read_topic("b", "missing", partitions=2))
    with pytest.raises(CheckError, match="does not exist"):
        asyncio.run(check.read_decisions("b", "missing", "read_uncommitted"))


def test_an_input_partition_read_short_of_its_offsets_is_an_error(
    fake_consumer: type[_FakeConsumer],
) -> None:
    assert len(asyncio.run(check.read_inputs("b", ["t"], partitions=2))) == 2
    fake_consumer.begin = -1  # one offset more than the records read
    with pytest.raises(CheckError, match=r"t\[0\]: read 1 records, but its offsets span 2"):
        asyncio.run(check.read_inputs("b", ["t"], partitions=2))


def test_a_run_that_checked_nothing_fails() -> None:
    ok = compare_decisions([_decision("a", "u-1")], [_decision("a", "u-1")])
    report = Report({}, "", "", produced=10, decisions=ok)
    assert report.passed
    assert not replace(report, produced=0).passed
    assert not replace(report, decisions=compare_decisions([], [])).passed


def test_repeats_under_exactly_once_are_a_warning_not_a_failure() -> None:
    expected = [_decision("a", "u-1")]
    repeated = compare_decisions(expected, [*expected, *expected])
    plan = {"guarantee": "exactly_once"}
    report = Report(plan, "", "", produced=10, decisions=repeated)
    assert report.passed  # a documented limitation (README)
    assert report.warnings == [
        "exactly_once repeated 1 decisions and 0 dead letters: lineguard sends them with"
        " Faust's plain producer, outside the transaction (a known limitation, README)"
    ]
    assert any(line.startswith("warning") for line in report.lines())
    assert report.as_json()["warnings"] == report.warnings
    assert replace(report, decisions=compare_decisions(expected, expected)).warnings == []
    assert replace(report, plan={"guarantee": "at_least_once"}).warnings == []
    assert replace(report, decisions=compare_decisions(expected, expected),
                   dead_letters_duplicated=2).warnings  # fmt: skip


def test_the_log_scan_counts_crashes_and_not_the_warnings_of_a_kill() -> None:
    log = "\n".join([
        "[2026-12-03 07:37:50,748] [1448] [WARNING] Heartbeat failed for group g because it is"
        " rebalancing ",
        "[2026-12-03 07:37:51,000] [1448] [ERROR] Unable connect to node with id 0: ...",
        "[2026-12-03 07:38:14,737] [1448] [INFO] [^---ProducerBuffer]: Stopping... ",
        "[...] [ERROR] [^---Agent*: agents.limits.process]: Crashed reason=KeyError('x')",
        "Traceback (most recent call last):",
        "streams.runtime.StateNotPersistedError: 3 table writes still buffered",
        "[...] [INFO] [^---Agent*: agents.limits.process]: Restarting dead <ActorRef>!",
        "[...] [INFO] [^---Agent*: agents.limits.process]: Restarting on rebalance",
    ])  # fmt: skip
    assert scan_log(log) == {
        "agent crashed": 1, "traceback": 1, "state not persisted": 1, "agent restarted": 1,
        "agent restarted on rebalance": 1,
    }  # fmt: skip
    assert scan_log("\n".join(log.splitlines()[:3])) == {}


_TERM_EXITS_0 = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))"
_TERM_IGNORED = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"


def _slot_running(tmp_path: Path, code: str) -> WorkerSlot:
    slot = WorkerSlot("worker-1", {}, tmp_path)
    ready = tmp_path / f"ready-{len(list(tmp_path.glob('ready-*')))}"
    script = f"{code}; open({str(ready)!r}, 'w').close(); time.sleep(60)"
    slot.process = subprocess.Popen([sys.executable, "-c", script])
    while not ready.exists() and slot.process.poll() is None:
        time.sleep(0.05)
    return slot


def test_each_stop_is_recorded_with_its_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "_TERM_GRACE_SECONDS", 1.0)
    clean = _slot_running(tmp_path, _TERM_EXITS_0)
    clean.stop()
    clean.stop()  # safe to call twice: recorded once
    assert [(e.signal, e.code, e.forced, e.clean) for e in clean.exits] == [
        ("SIGTERM", 0, False, True)
    ]
    killed = _slot_running(tmp_path, "import time")
    killed.signal(signal.SIGKILL)
    assert killed.exits[-1].clean
    died = _slot_running(tmp_path, "import time")  # the default SIGTERM: no clean shutdown
    died.stop()
    assert (died.exits[-1].code, died.exits[-1].clean) == (-signal.SIGTERM, False)
    stuck = _slot_running(tmp_path, _TERM_IGNORED)
    stuck.stop()
    assert (stuck.exits[-1].forced, stuck.exits[-1].clean) == (True, False)
    gone = WorkerSlot("worker-2", {}, tmp_path)
    gone.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    gone.process.wait(30)
    gone.stop()  # it had exited by itself, which no poll saw
    assert [(e.signal, e.code) for e in gone.exits] == [("", 3)]
    report = Report({}, "", "", produced=10)
    (tmp_path / "worker-2.log").write_text("Traceback (most recent call last):\n")
    _check_stops([clean, killed, died, stuck, gone], report)
    assert report.unexpected_exits == 1
    assert len(report.unclean_stops) == 3
    assert report.log_problems == {"traceback": 1}
    lines = list(report.lines())
    assert "unclean stops         3" in lines
    assert "worker log problems   1 traceback" in lines
    assert lines[-1] == "FAIL"
    ok = compare_decisions([_decision("a", "u-1")], [_decision("a", "u-1")])
    assert Report({}, "", "", produced=10, decisions=ok).passed
    assert not Report({}, "", "", produced=10, decisions=ok, unclean_stops=["x"]).passed
    assert not Report({}, "", "", produced=10, decisions=ok, log_problems={"traceback": 1}).passed


class _StuckGroupConsumer:
    """A group consumer whose committed-offset fetch never returns, as aiokafka's can."""

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, 5)

    async def committed(self, tp: Any) -> int:
        await asyncio.Event().wait()  # the coordinator lookup retrying for ever
        return 0


def test_the_catch_up_wait_is_bounded_even_when_no_offset_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "AIOKafkaConsumer", _StuckGroupConsumer)
    monkeypatch.setattr(run_module, "_MIN_STEP_SECONDS", 0.1)
    plan = Plan(partitions=2, catch_up_timeout=0.5)
    report = Report({}, "", "")
    started = time.monotonic()
    asyncio.run(run_module._catch_up(plan, "b", "g", ["t"], [], report, lambda _: None))
    assert time.monotonic() - started < 5
    assert report.caught_up_after is None
    assert report.stalled == [
        "all 2 input partitions: the committed offsets could not be fetched within the 0.5 s"
        " catch-up bound"
    ]
