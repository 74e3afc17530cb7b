"""Helpers for the observability tests: Prometheus's tools, the service's metric names, PromQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "Install Debian's Prometheus packages, which .ci/run does too:\n"
    "    sudo apt-get update && sudo apt-get install -y prometheus prometheus-alertmanager"
)
PROMETHEUS_OWN_METRICS = frozenset({"up"})
"""Series Prometheus makes itself, the only names allowed besides the service's own."""

_EXPOSE = (
    "import agents.assess;"
    "from prometheus_client import generate_latest;"
    "from streams.metrics import REGISTRY;"
    "print(generate_latest(REGISTRY).decode())"
)


def require(tool: str) -> str:
    """The tool's path; a missing tool fails the test, with how to install it, never skips."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"{tool} is not on PATH, so this check cannot run.\n{INSTALL_HINT}", pytrace=False
        )
    return path


def run_tool(*args: str | Path, cwd: Path = ROOT) -> str:
    """Run one of Prometheus's tools; a non-zero exit fails with its output."""
    command = [require(str(args[0])), *map(str, args[1:])]
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


def exposition() -> str:
    """The service registry in the text format, from a fresh process that has loaded the agent."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", _EXPOSE], env=clean, capture_output=True, text=True, timeout=60,
        check=True, cwd=ROOT,
    )  # fmt: skip
    return done.stdout


def exposed_series_names(text: str) -> set[str]:
    """Every series name a scrape of this exposition can carry, samples or not.

    The consumer lag family has no sample before partitions are assigned, so the names
    come from the ``# TYPE`` lines, with a histogram's ``_bucket``, ``_sum`` and ``_count``.
    """
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; a ``__name__`` regex cannot be checked."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name:
            names.add(node.name)
        matchers = [node.matchers.matchers, *node.matchers.or_matchers]
        for matcher in (m for group in matchers for m in group if m.name == "__name__"):
            assert matcher.op == promql_parser.MatchOp.Equal, f"unverifiable {matcher} in {expr}"
            names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
"""Values for Grafana's own variables, so that a dashboard query can be parsed as PromQL."""


def load_dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON under ``grafana/dashboards``, by path."""
    return {
        path: json.loads(path.read_text())
        for path in sorted((ROOT / "grafana" / "dashboards").glob("**/*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable, variables filled in.

    ``label_values(selector, label)`` variables contribute their selector. A variable this
    function has no value for fails, so that no query goes unchecked.
    """
    variables = dict(GRAFANA_BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] in ("query", "custom", "interval", "textbox"):
            variables[variable["name"]] = variable.get("allValue") or ".*"

    def fill(text: str, where: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            assert name in variables, f"{where}: no test value for Grafana variable ${name}"
            return variables[name]

        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, text)

    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        where = f"variable {variable['name']}"
        match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query)
        assert match, f"{where}: only label_values(selector, label) is checked, not {query!r}"
        yield where, fill(match.group(1), where)
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} ({panel['title']}) target {target['refId']}"
            yield where, fill(target["expr"], where)
