"""Worker processes for the chaos run: started, signalled, restarted, always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from streams.devbroker import free_port

_TERM_GRACE_SECONDS = 30.0
"""A SIGTERM'd worker commits and leaves the group; past this it is killed."""
_KILL_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.2

LOG_PROBLEMS = {
    "traceback": "Traceback (most recent call last)",
    # mode's Service.crash logs "Crashed reason=…" for a crashed agent (faust.agents.agent
    # _execute_actor calls aref.crash), its supervisor "Restarting dead …" when it
    # restarts one, and faust "Restarting on rebalance" for an actor cancelled mid-run.
    "agent crashed": "Crashed reason=",
    "agent restarted": "Restarting dead",
    "agent restarted on rebalance": "Restarting on rebalance",
    "state not persisted": "StateNotPersistedError",
}
"""What a worker's log must never hold, by the name the report counts it under. A clean
run's logs hold none (the reconnect and rebalance warnings a kill causes are other lines)."""


def scan_log(text: str) -> Counter[str]:
    """How many lines of a worker log hold each of :data:`LOG_PROBLEMS`."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        for name, needle in LOG_PROBLEMS.items():
            if needle in line:
                found[name] += 1
    return found


@dataclass(frozen=True, slots=True)
class Exit:
    """How one worker process ended."""

    pid: int
    signal: str
    """``SIGTERM`` or ``SIGKILL`` when this slot stopped it; empty when it had exited first."""
    code: int | None
    """Its exit status (negative: the signal that ended it); None if it never ended."""
    forced: bool = False
    """SIGTERM did not end it within the grace, so it was SIGKILLed."""

    @property
    def clean(self) -> bool:
        """A SIGTERM ended it with status 0 by itself, or the SIGKILL it was sent."""
        if self.signal == "SIGTERM":
            return self.code == 0 and not self.forced
        return self.signal == "SIGKILL" and self.code == -signal.SIGKILL

    def describe(self) -> str:
        """One phrase for the report."""
        how = f"after {self.signal}" if self.signal else "by itself, before it was stopped"
        forced = ", SIGKILLed when the SIGTERM grace ran out" if self.forced else ""
        return f"pid {self.pid} exited with {self.code} {how}{forced}"


@dataclass
class WorkerSlot:
    """One place in the consumer group, filled by successive ``lineguard worker`` processes.

    Each start gets a fresh web port, so a restarted worker never races its predecessor
    for the port. Every process is ended by :meth:`stop` through its own ``Popen`` handle.
    """

    name: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    history: list[int] = field(default_factory=list)
    """PIDs of every process this slot has started, for the log."""
    exits: list[Exit] = field(default_factory=list)
    """How each process this slot signalled or found dead ended, in order."""

    def start(self) -> int:
        """Start a worker process and return its PID (readiness is :meth:`wait_ready`)."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
        env.update(self.env)
        env.update(
            LINEGUARD_WEB_PORT=str(self.port),
            LINEGUARD_DATADIR=str(self.workdir / f"data-{self.name}"),
        )
        with (self.workdir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from streams.entry import main; main()", "worker",
                 "-l", "info"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )  # fmt: skip
        self.starts += 1
        self.history.append(self.process.pid)
        return self.process.pid

    def signal(self, sig: signal.Signals) -> float:
        """Send ``sig`` and wait for the process to exit; return the seconds it took.

        How it ended goes to :attr:`exits`, once per process: also a process that had
        already exited by itself, which nothing else would see.
        """
        process = self.process
        if process is None or (self.exits and self.exits[-1].pid == process.pid):
            return 0.0
        if process.poll() is not None:
            self.exits.append(Exit(process.pid, "", process.returncode))
            return 0.0
        started = time.monotonic()
        process.send_signal(sig)
        grace = _TERM_GRACE_SECONDS if sig == signal.SIGTERM else _KILL_WAIT_SECONDS
        forced = False
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            forced = sig != signal.SIGKILL
            process.kill()
            process.wait(_KILL_WAIT_SECONDS)
        self.exits.append(Exit(process.pid, sig.name, process.returncode, forced))
        return time.monotonic() - started

    def alive(self) -> bool:
        """Whether the current process is running."""
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """``/readyz`` answers 200: partitions assigned and the table recovered."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # refused, or 503 (HTTPError) while recovering
            return False

    def wait_ready(self, timeout: float) -> float:
        """Seconds until ready; raises if the process exits or ``timeout`` passes first."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}")
            if self.ready():
                return time.monotonic() - started
            time.sleep(_POLL_SECONDS)
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """End the current process: SIGTERM, then SIGKILL. Safe to call twice."""
        self.signal(signal.SIGTERM)

    @property
    def log_path(self) -> Path:
        """Where every process of this slot appends its output."""
        return self.workdir / f"{self.name}.log"
