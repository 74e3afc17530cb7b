"""The build-info metric carries the installed package's version, not a literal, and the policy's
version and fingerprint, which the worker also logs at start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from importlib.metadata import version
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from risk.policy import load_policy

PROBE = (
    "import importlib.metadata as m;"
    "real = m.version;"
    "m.version = lambda name: '9.9.9+probe' if name == 'lineguard' else real(name);"
    "import agents.assess;"
    "from prometheus_client import generate_latest;"
    "from streams.metrics import REGISTRY;"
    "print(generate_latest(REGISTRY).decode())"
)


def _build_info(code: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    for family in text_string_to_metric_families(done.stdout):
        for sample in family.samples:
            if sample.name == "lineguard_build_info":
                return dict(sample.labels)
    raise AssertionError("no lineguard_build_info")


def test_the_build_info_version_is_the_installed_packages() -> None:
    assert _build_info(PROBE)["version"] == "9.9.9+probe"
    unpatched = PROBE.split("import agents.assess;", 1)[1]
    assert _build_info("import agents.assess;" + unpatched)["version"] == version("lineguard")


ANNOUNCE = (
    "import asyncio, json;"
    "from structlog.testing import capture_logs;"
    "import agents.assess;"
    "from prometheus_client import generate_latest;"
    "from streams.metrics import REGISTRY;"
    "print(generate_latest(REGISTRY).decode());"
    "logs = capture_logs();"
    "entries = logs.__enter__();"
    "asyncio.run(agents.assess.announce_policy());"
    "print('#LOG', json.dumps(entries))"
)


def _worker_start(policy: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The build-info labels and the start-up log of a worker on ``policy``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", ANNOUNCE], env={**clean, "LINEGUARD_POLICY_FILE": str(policy)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    exposition, _, logged = done.stdout.partition("#LOG ")
    labels = next(
        dict(sample.labels)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "lineguard_build_info"
    )
    return labels, json.loads(logged)


def test_a_policy_edited_without_a_new_version_shows_in_build_info_and_the_log(
    tmp_path: Path,
) -> None:
    packaged = resources.files("risk").joinpath("default_policy.toml").read_text("utf-8")
    edited = packaged.replace("after_dpd_above = 30", "after_dpd_above = 5")
    assert edited != packaged
    (tmp_path / "old.toml").write_text(packaged)
    (tmp_path / "new.toml").write_text(edited)
    old, old_log = _worker_start(tmp_path / "old.toml")
    new, new_log = _worker_start(tmp_path / "new.toml")
    assert old["policy_version"] == new["policy_version"] == load_policy().version
    assert old["policy_fingerprint"] == load_policy().fingerprint
    assert re.fullmatch(r"[0-9a-f]{12}", new["policy_fingerprint"])
    assert new["policy_fingerprint"] != old["policy_fingerprint"]
    for labels, log in ((old, old_log), (new, new_log)):
        assert {
            "event": "policy",
            "log_level": "info",
            "policy_version": labels["policy_version"],
            "policy_fingerprint": labels["policy_fingerprint"],
        } in log
