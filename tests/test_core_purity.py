"""The risk core stays pure: no Kafka client, no Faust, no I/O framework inside it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "risk"
FORBIDDEN = {"faust", "aiokafka", "mode", "kafka", "streams", "agents", "asyncio"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_core_module_imports_faust_or_aiokafka() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) > 5
    offenders = {m.name: _imported_roots(m) & FORBIDDEN for m in modules}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_importing_the_whole_core_loads_neither() -> None:
    code = (
        "import sys, risk.replay, risk.partition, risk.engine, risk.contract;"
        "print(sorted(m for m in ('faust', 'aiokafka', 'mode') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
