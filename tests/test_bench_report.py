"""The benchmark harness's pure parts, without a broker: its bounds and the report's verdicts.

The figures themselves are ``make bench``'s; nothing here asserts on a speed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from bench import adversarial, core, e2e, harness, recovery, report, scale
from chaos import check
from chaos.workers import WorkerSlot
from risk.decision import Decision
from risk.policy import load_policy
from risk.replay import INPUT_TOPICS, InputRecord, replay
from streams.runtime import wall_micros

ENDS = {TopicPartition("t", 0): 10, TopicPartition("t", 1): 5}


class _Coordinator:
    def __init__(self, committed: list[int] | None) -> None:
        self.committed = committed
        self.fetches = 0

    async def fetch_committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.fetches += 1
        if self.committed is None:  # as aiokafka when the coordinator never answers
            await asyncio.Event().wait()
        assert self.committed is not None
        return {
            tp: OffsetAndMetadata(n, "") for tp, n in zip(partitions, self.committed, strict=True)
        }


class _Consumer:
    """A stand-in for the AIOKafkaConsumer ``wait_committed`` makes."""

    coordinator = _Coordinator(None)
    stopped = False

    def __init__(self, **_: Any) -> None:
        self._coordinator = type(self).coordinator

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        type(self).stopped = True


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> type[_Consumer]:
    monkeypatch.setattr(harness, "AIOKafkaConsumer", _Consumer)
    _Consumer.stopped = False
    return _Consumer


async def test_wait_committed_returns_at_the_bound_when_a_fetch_never_answers(
    consumer: type[_Consumer],
) -> None:
    consumer.coordinator = _Coordinator(None)
    done, seconds = await asyncio.wait_for(harness.wait_committed("x", "g", ENDS, 0.5), 30)
    assert (done, consumer.coordinator.fetches, consumer.stopped) == (0, 1, True)
    assert seconds >= 0.5


async def test_wait_committed_counts_from_the_start_it_is_given(consumer: type[_Consumer]) -> None:
    consumer.coordinator = _Coordinator([10, 5])
    started = time.monotonic() - 3.0
    done, seconds = await harness.wait_committed("x", "g", ENDS, 60, started=started)
    assert done == 15
    assert seconds >= 3.0


async def test_wait_committed_raises_at_once_when_the_worker_has_exited(
    consumer: type[_Consumer], tmp_path: Path
) -> None:
    consumer.coordinator = _Coordinator([0, 0])
    slot = WorkerSlot("dead", {}, tmp_path)  # never started: no process
    with pytest.raises(RuntimeError, match="dead exited"):
        await asyncio.wait_for(harness.wait_committed("x", "g", ENDS, 60, slots=[slot]), 30)
    assert (consumer.coordinator.fetches, consumer.stopped) == (0, True)


class _Clock:
    """``harness.time`` on a fake clock: ``sleep`` moves it on, nothing else does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Slot(WorkerSlot):
    """A worker slot whose ``/readyz`` answers 200 from its ``answers``-th request on."""

    def __init__(self, workdir: Path, answers: int, clock: _Clock, *, alive: bool = True) -> None:
        super().__init__("w", {}, workdir)
        self.answers, self.asked, self.clock, self.running = answers, 0, clock, alive
        self.responded_at = 0.0

    def alive(self) -> bool:
        return self.running

    def ready(self) -> bool:
        self.asked += 1
        self.clock.now += 0.01  # the request's round trip
        self.responded_at = self.clock.now
        return self.asked >= self.answers


async def test_wait_ready_returns_the_time_of_the_200_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(harness, "time", clock)
    slot = _Slot(tmp_path, 3, clock)
    ready_at = await harness.Workers(tmp_path).wait_ready(slot, 30)
    assert (slot.asked, ready_at) == (3, slot.responded_at)


async def test_wait_ready_raises_when_the_worker_has_exited(tmp_path: Path) -> None:
    slot = _Slot(tmp_path, 1, _Clock(), alive=False)
    with pytest.raises(RuntimeError, match="w exited"):
        await harness.Workers(tmp_path).wait_ready(slot, 30)


def _replayed(records: int = 4000) -> list[Decision]:
    generated, _ = core.generate(records, 300, 7)
    return replay(
        (InputRecord(i, INPUT_TOPICS[t], k, v) for i, (t, k, v) in enumerate(generated)),
        load_policy(),
        partitions=harness.PARTITIONS,
        now=wall_micros(),
    ).decisions


async def test_e2e_compares_the_output_topic_with_replay_as_chaos_check_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decisions = _replayed()
    assert decisions
    wanted = [e2e.without_decided_at(d.to_json(0)) for d in decisions]
    written = [SimpleNamespace(value=d.to_json(wall_micros())) for d in decisions]

    async def topic(bootstrap: str, name: str, isolation: str) -> dict[int, list[Any]]:
        return {0: written[1:] + written[:1]}  # one decision re-sent after the others

    monkeypatch.setattr(check, "read_topic", topic)
    online = await check.read_decisions("x", "out", "read_uncommitted")
    counts = check.compare_decisions(wanted, online)
    assert (counts.lost, counts.unexpected, counts.mismatched) == (0, 0, 0)
    assert counts.found == len(wanted)
    lost = check.compare_decisions(wanted, online[1:])
    assert (lost.lost, lost.unexpected) == (1, 0)


def _counts(
    expected: int, *, lost: int = 0, unexpected: int = 0, mismatched: int = 0, reordered: int = 0
) -> Any:
    return check.DecisionCounts(
        expected, expected - lost, lost, unexpected, mismatched, 0, reordered
    )


def _run(
    committed: int = 500_000, seconds: float = 10.0, decisions: check.DecisionCounts | None = None
) -> e2e.WorkerRun:
    return e2e.WorkerRun(2.0, 500_000, seconds, committed, 27_047, 500_000.0, decisions)


def _e2e_report(*runs: e2e.WorkerRun, expected: int | None = 27_047) -> str:
    x = e2e.E2EResult(
        500_000, 100_000, 6, 1.0, expected, 492_525, harness.spread([300_000.0] * 3), list(runs), 45
    )
    return report.render(report.Results(argv=[], started=report.now(), load_before=0.0, e2e=x))


def test_the_report_gives_each_checked_run_its_counts_against_replay() -> None:
    text = _e2e_report(
        _run(decisions=_counts(27_047)), _run(decisions=_counts(27_047, lost=27_000, mismatched=3))
    )
    assert (
        "- Run 1 committed everything; its output topic against `risk.replay` of the same"
        " records, event by event (`decided_at` aside): 27,047 expected, 27,047 found, 0 lost,"
        " 0 unexpected, 0 different (0 repeated copies, 0 users in another order): **passed**."
    ) in text
    assert "27,000 lost, 0 unexpected, 3 different" in text
    assert text.count("**FAILED**") == 1
    assert "commits every 0.5 s (`LINEGUARD_BROKER_COMMIT_INTERVAL`)" in text


def _worker_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("| worker ", "- Worker"))]


def test_runs_that_lost_decisions_or_hit_the_bound_give_no_figure_and_no_verdict() -> None:
    # The audit's case: two runs committed everything but wrote 47 of 27,047 decisions, one
    # hit the bound. Their rates would pass the target; the report must not say so.
    text = _e2e_report(
        _run(decisions=_counts(27_047, lost=27_000)),
        _run(decisions=_counts(27_047, lost=27_000)),
        _run(committed=400_000, seconds=45.0),
    )
    rows = _worker_rows(text)
    assert len(rows) == 3
    assert not any("met**" in row for row in rows)
    reason = "0 of 3 runs complete; 1 hit the time bound of 45 s, 2 did not match replay"
    assert all(reason in row for row in rows)
    assert rows[0].endswith("| **incomplete** |")
    assert "- Run 3 hit the time bound of 45 s with 400,000 of 500,000 records committed" in text
    assert text.count("**FAILED**") == 2
    assert "No estimate from the worker end to end" in text
    assert "workers needed" not in text


def test_a_run_that_hit_the_bound_leaves_the_others_without_a_figure() -> None:
    text = _e2e_report(_run(decisions=_counts(27_047)), _run(committed=1, seconds=45.0))
    rows = _worker_rows(text)
    assert all("1 of 2 runs complete; 1 hit the time bound of 45 s" in row for row in rows)
    assert not any("met**" in row for row in rows)


def test_no_run_committed_everything() -> None:
    text = _e2e_report(_run(committed=1, seconds=45.0), expected=None)
    assert "0 of 1 runs complete; 1 hit the time bound of 45 s" in text
    assert "so it was skipped" in text
    assert not any("met**" in row for row in _worker_rows(text))


@pytest.mark.parametrize(("seconds", "met"), [(10.0, "**met**"), (50.0, "**not met**")])
def test_complete_runs_get_a_figure_and_a_verdict(seconds: float, met: str) -> None:
    text = _e2e_report(*(_run(seconds=seconds, decisions=_counts(27_047)) for _ in range(3)))
    rate = 500_000 / seconds
    summary = _worker_rows(text)[0]
    assert summary == (
        f"| worker end to end, events/s (one worker) | ≥ 30,000 |"
        f" {rate:,.0f} (min {rate:,.0f}, max {rate:,.0f}; 3 runs) | {met} |"
    )
    assert f"- Worker: {rate:,.0f} (min" in text
    assert "**incomplete**" not in text
    assert "workers needed" in text


def test_a_run_that_gave_a_user_its_decisions_in_another_order_is_not_complete() -> None:
    # A consumer of the user's partition would see a restore before the freeze it lifts.
    text = _e2e_report(_run(decisions=_counts(27_047, reordered=1)))
    assert "1 users in another order): **FAILED**." in text
    assert "0 of 1 runs complete; 1 did not match replay" in text
    assert not any("met**" in row for row in _worker_rows(text))


def test_a_run_not_checked_against_replay_is_not_complete() -> None:
    text = _e2e_report(_run(), _run(decisions=_counts(27_047)))
    assert "1 of 2 runs complete; 1 not checked against replay" in text
    assert "- Run 1 committed everything but was not checked against replay." in text
    assert not any("met**" in row for row in _worker_rows(text))


def test_recovery_counts_only_a_worker_that_reports_every_user() -> None:
    recovery.check_users("w", {"lineguard_users": 1_000_000.0, "x": 3.0}, 1_000_000)
    recovery.check_users("idle", {"lineguard_users": 0.0}, 0)
    with pytest.raises(RuntimeError, match=r"lineguard_users 999999.0 .* not the 1,000,000 users"):
        recovery.check_users("w", {"lineguard_users": 999_999.0}, 1_000_000)
    with pytest.raises(RuntimeError, match="lineguard_users None"):
        recovery.check_users("w", {}, 0)


@pytest.mark.parametrize("committed", [20_000, 12_000])
def test_scale_out_reports_the_split_and_no_rate(committed: int) -> None:
    shares = [
        scale.WorkerShare("scale-1", [0, 1, 2], 10_010.0),
        scale.WorkerShare("scale-2", [3, 4, 5], 9_990.0),
    ]
    s = scale.ScaleResult(20_000, 6, committed >= 20_000, 4.2, committed, 20_000, shares)
    text = report.render(report.Results(argv=[], started=report.now(), load_before=0.0, scale=s))
    section = text.split("## 7. Scale-out", 1)[1]
    assert "events/s" not in section.replace("the pair's events/s would say little", "")
    assert "It reports the split, not a rate" in section
    assert "| scale-1 | 0, 1, 2 | 10,010 |" in section
    if committed == 20_000:
        assert (
            "all 20,000 input records were committed within 4.2 s of the first one produced"
            in section
        )
    else:
        assert "**incomplete**: the time bound ran out with 12,000 of 20,000" in section


def test_adversarial_tenths_keep_the_median_chunk_beside_the_noise_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = [0.0]
    every_other = [1.0]  # CPU seconds per record of the odd chunks

    def feed(group: Any, make: Any, start: int, stop: int) -> None:
        odd = (start // 50) % 2 == 1
        cpu[0] += (stop - start) * (every_other[0] if odd else 1.0)

    monkeypatch.setattr(adversarial, "feed", feed)
    monkeypatch.setattr(adversarial, "time", SimpleNamespace(process_time=lambda: cpu[0]))
    flat = adversarial.cpu_per_event(Any, Any, 0, 1000)  # 20 chunks of 50
    assert (flat.cheapest, flat.median) == (1.0, 1.0)
    every_other[0] = 10.0  # a periodic cost the cheapest chunk does not see
    periodic = adversarial.cpu_per_event(Any, Any, 0, 1000)
    assert (periodic.cheapest, periodic.median) == (1.0, 5.5)
    assert adversarial.first_to_last([flat, periodic]) == "1000000 → 1000000 | 1000000 → 5500000"
