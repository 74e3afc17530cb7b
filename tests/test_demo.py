"""`lineguard demo` starts everything, shows live freezes and restores, and stops it all."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.demo import _workdir, sample_user
from streams.simulate import Simulator

own_broker = pytest.mark.skipif(
    bool(os.environ.get("LINEGUARD_TEST_BOOTSTRAP")),
    reason="the demo always runs its own embedded broker",
)
USER_LINE = re.compile(
    r"^a user   curl -H 'Authorization: Bearer (\S+)' (http://127\.0\.0\.1:\d+/\S+)$"
)


def _status(url: str, token: str | None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url)  # noqa: S310 - the demo's loopback URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _children(pid: int) -> dict[int, bytes]:
    """The processes whose parent is ``pid``, with their command lines."""
    found: dict[int, bytes] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces; the fields after it start with the state.
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
    return found


def _alive(pid: int, cmdline: bytes) -> bool:
    """Whether ``pid`` still runs the command it ran (not a zombie, not a reused PID)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and (Path("/proc") / str(pid) / "cmdline").read_bytes() == cmdline
    except OSError:
        return False


def _stop(demo: subprocess.Popen[str], children: dict[int, bytes]) -> None:
    """Ctrl-C, as a reader would, so the demo stops the broker and the worker it started.

    If it does not exit, it is killed, and so is each of its ``children`` still running, by
    PID: they run in sessions of their own, which a signal to its group does not reach.
    """
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(30)
    if demo.poll() is None:
        demo.kill()
        demo.wait()
    for pid, cmdline in children.items():
        if _alive(pid, cmdline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _demo(
    tmp_path: Path, *, duration: int
) -> Iterator[tuple[subprocess.Popen[str], dict[int, bytes], Path]]:
    """The demo with 300 users in a session of its own, its children, and its TMPDIR.

    The demo and its children are stopped whatever happens, after 180 s at the latest.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    temp = tmp_path / "tmp"
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    children: dict[int, bytes] = {}
    with subprocess.Popen(
        [sys.executable, "-c", "from streams.entry import main; main()", "demo",
         "--duration", str(duration), "--users", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    ) as demo:  # fmt: skip
        watchdog = threading.Timer(180, _stop, [demo, children])
        watchdog.start()
        try:
            yield demo, children, temp
        finally:
            watchdog.cancel()
            _stop(demo, children)


def _output(demo: subprocess.Popen[str], children: dict[int, bytes]) -> Iterator[str]:
    """The demo's lines as they come; its children are noted once it starts simulating."""
    assert demo.stdout is not None
    for line in demo.stdout:
        if line.startswith("simulating "):
            children.update(_children(demo.pid))
        yield line.rstrip("\n")


@pytest.mark.parametrize(("users", "seed"), [(1000, 1), (300, 1), (5, 2), (1, 9)])
def test_the_printed_user_is_the_one_the_simulator_sends_first(users: int, seed: int) -> None:
    simulator = Simulator(users, seed)
    first = orjson.loads(simulator.next_record(datetime.now(UTC)).value)["user_id"]
    assert sample_user(users, seed) == first
    assert first in simulator.users


@pytest.mark.integration
@own_broker
def test_the_demo_shows_decisions_live_and_cleans_up(tmp_path: Path) -> None:
    lines: list[str] = []
    asked: dict[str, tuple[int, dict[str, str]]] = {}
    user: tuple[str, str] | None = None
    with _demo(tmp_path, duration=20) as (demo, children, temp):
        for line in _output(demo, children):
            lines.append(line)
            printed = USER_LINE.match(line)
            if printed:
                user = printed[1], printed[2]
            if user and not asked and sum(line.startswith("[") for line in lines) >= 3:
                # The printed command is what a reader copies while the figures run:
                # it must let them in and show a user the simulator has sent.
                token, url = user
                asked = {"with": _status(url, token), "without": _status(url, None)}
        assert demo.wait(30) == 0, "\n".join(lines)
    assert len(children) == 2, children  # the broker and the worker
    assert not [pid for pid, cmdline in children.items() if _alive(pid, cmdline)]
    assert any(line.startswith("metrics  http://127.0.0.1:") for line in lines)
    assert asked, "no 'a user' line with a curl command: " + "\n".join(lines)
    status, body = asked["with"]
    assert status == 200, body
    assert body["user_id"] == sample_user(300, 1)
    assert asked["without"][0] == 401
    live = [line for line in lines if line.startswith("[")]
    assert len(live) >= 10
    freezes = live[-1].split("| freezes ")[1].split(" | ")[0]
    assert "SMALL_LOAN_BURST=" in freezes  # only reasons that happened are shown
    assert "frozen=" in live[-1].split("| users ")[1]
    assert "stopped the worker and the broker" in lines[-1]
    assert not list(temp.iterdir())  # its working directory is gone, the broker's log too


def test_the_readme_gives_the_demos_default_durations() -> None:
    """``lineguard demo`` and ``make demo`` have different defaults; the README gives both."""
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(
        [sys.executable, "-c", "from streams.entry import main; main()", "demo", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    helped = re.search(r"--duration FLOAT(?: RANGE)? [^[]*\[default: (\d+)(?:\.0)?[;\]]", shown)
    made = re.search(
        r"lineguard demo --duration \$\$\{DURATION:-(\d+)\}", (root / "Makefile").read_text()
    )
    assert helped and made, (shown, "Makefile")
    readme = (root / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `lineguard demo "))
    assert f"default {helped[1]};" in row
    assert f"`make demo` passes {made[1]}" in row
    assert f"`lineguard demo --duration ${{DURATION:-{made[1]}}}`, so {made[1]} s" in readme
    assert f"`lineguard demo` on its own runs {helped[1]} s" in readme


def _printed_pid(lines: list[str], prefix: str) -> int:
    line = next(line for line in lines if line.startswith(prefix))
    found = re.search(r"\bpid (\d+)\b", line)
    assert found, line
    return int(found[1])


@pytest.mark.integration
@own_broker
def test_ctrl_c_stops_everything_in_order_quietly_and_exits_130(tmp_path: Path) -> None:
    lines: list[str] = []
    interrupted = 0.0
    with _demo(tmp_path, duration=120) as (demo, children, temp):
        for line in _output(demo, children):
            lines.append(line)
            if not interrupted and sum(line.startswith("[") for line in lines) >= 3:
                # What a terminal does on Ctrl-C: SIGINT to its foreground group.
                os.killpg(demo.pid, signal.SIGINT)
                interrupted = time.monotonic()
        status = demo.wait(30)
        took = time.monotonic() - interrupted
    output = "\n".join(lines)
    assert interrupted, output
    assert status == 130, output
    assert took < 15, output
    printed = {_printed_pid(lines, "broker   "), _printed_pid(lines, "worker   ")}
    assert set(children) == printed, (children, output)
    assert not [pid for pid, cmdline in children.items() if _alive(pid, cmdline)], output
    assert "NodeNotReadyError" not in output
    assert "Traceback" not in output
    assert "ERROR" not in output
    tail = lines[lines.index("SIGINT: stopping the simulator, the worker and the broker") :]
    assert tail[1].startswith("simulator: records="), output
    assert tail[2:] == ["stopped the worker and the broker"], output
    assert not list(temp.iterdir())


@pytest.mark.parametrize("end", [None, asyncio.CancelledError, KeyboardInterrupt])
def test_the_working_directory_goes_at_the_end_and_on_a_signal(
    end: type[BaseException] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = io.StringIO()
    with contextlib.suppress(BaseException), _workdir(out) as workdir:
        (workdir / "worker.log").write_text("started\n")
        if end is not None:
            raise end
    assert workdir.name.startswith("lineguard-demo-")
    assert not list(tmp_path.iterdir())
    assert out.getvalue() == ""


def test_a_failed_demo_keeps_its_working_directory_for_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = io.StringIO()
    with pytest.raises(RuntimeError), _workdir(out) as workdir:
        (workdir / "worker.log").write_text("crashed\n")
        raise RuntimeError("the worker exited with 1")
    assert (workdir / "worker.log").read_text() == "crashed\n"
    assert out.getvalue() == f"kept {workdir} for the worker's log\n"
