"""The build-info metric carries the installed package's version, not a literal."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

from prometheus_client.parser import text_string_to_metric_families

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
