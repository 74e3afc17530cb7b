"""`lineguard demo` starts everything, shows live freezes and restores, and stops it all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get("LINEGUARD_TEST_BOOTSTRAP")),
        reason="the demo always runs its own embedded broker",
    ),
]


def test_the_demo_shows_decisions_live_and_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", "from streams.app import main; main()", "demo",
         "--duration", "20", "--users", "300"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("metrics  http://127.0.0.1:") for line in lines)
    live = [line for line in lines if line.startswith("[")]
    assert len(live) >= 10
    freezes = live[-1].split("| freezes ")[1].split(" | ")[0]
    assert "SMALL_LOAN_BURST=" in freezes  # only reasons that happened are shown
    assert "frozen=" in live[-1].split("| users ")[1]
    assert "stopped the worker and the broker" in lines[-1]
