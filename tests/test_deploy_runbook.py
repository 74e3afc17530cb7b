"""The runbook, as the one who is paged reads it: every name in it is real.

Each alert's section says how to confirm the alert with an exact query; every PromQL query
in the runbook selects metrics the service (or kafka-exporter) exports; every panel, setting
and ``lineguard`` command it names exists. tests/test_deploy_dashboard.py runs the queries
against a real Prometheus.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml
from prom_tools import ROOT, exposed_series_names, exposition, load_dashboards, metric_names, panels

from streams.devbroker import free_port
from streams.settings import Settings

RUNBOOK = ROOT / "docs" / "runbook.md"
KAFKA_EXPORTER_METRICS = frozenset(
    {"kafka_consumergroup_lag", "kafka_consumergroup_lag_sum", "kafka_consumergroup_members"}
)
"""kafka-exporter v1.8.0's consumer group metrics (its README), which the runbook names."""
NOT_PANELS = frozenset({"Status → Targets"})
"""Emphasised names in the runbook that are Prometheus's pages, not the dashboard's panels."""


def sections() -> dict[str, str]:
    """Each ``## `` section of the runbook by its heading."""
    parts = re.split(r"(?m)^## ", RUNBOOK.read_text())[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def alerts() -> list[str]:
    groups = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def promql(text: str) -> list[str]:
    """The code spans of ``text`` that are PromQL over lineguard's, kafka's, process or ``up``."""
    queries = []
    for span in re.findall(r"`([^`\n]+)`", text):
        try:
            names = metric_names(span)
        except (ValueError, AssertionError):
            continue
        known = r"lineguard_|kafka_|process_|python_|up$"
        if names and all(re.match(known, name) for name in names):
            queries.append(span)
    return queries


def runbook_queries() -> list[str]:
    return promql(RUNBOOK.read_text())


def test_every_alert_section_says_how_to_confirm_it_with_a_query() -> None:
    by_heading = sections()
    for alert in alerts():
        confirm = re.search(r"\*\*Confirm\.\*\*(.+?)\n\n", by_heading[alert], re.DOTALL)
        assert confirm, f"{alert}: no **Confirm.** paragraph in docs/runbook.md"
        assert promql(confirm.group(1)), f"{alert}: its Confirm paragraph has no query"


def test_the_query_finder_sees_queries_and_only_them() -> None:
    text = '`up{job="x"} == 0`, `LINEGUARD_APP_ID`, `dead_letter`, `sum(rate(lineguard_a[5m])`'
    assert promql(text) == ['up{job="x"} == 0']
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(lineguard_a[5m])")


def test_every_runbook_query_selects_metrics_that_exist() -> None:
    known = exposed_series_names(exposition()) | KAFKA_EXPORTER_METRICS | {"up"}
    queries = runbook_queries()
    assert len(queries) > len(alerts())
    unknown = {f"{q}: {name}" for q in queries for name in metric_names(q) if name not in known}
    assert not unknown, "metrics nobody exports:\n" + "\n".join(sorted(unknown))


def test_every_panel_the_runbook_names_exists() -> None:
    titles = {p["title"] for d in load_dashboards().values() for p in panels(d)}
    named = set(re.findall(r"(?<![*\w])\*([A-Z][^*\n]{2,40})\*(?![*\w])", RUNBOOK.read_text()))
    assert named
    assert named - NOT_PANELS <= titles, f"no such panel: {named - NOT_PANELS - titles}"


def test_every_setting_and_command_the_runbook_names_exists() -> None:
    text = RUNBOOK.read_text()
    fields = set(Settings.model_fields)
    settings = set(re.findall(r"LINEGUARD_([A-Z_]+)", text))
    assert settings
    assert {s for s in settings if s.lower() not in fields} == set()
    help_text = subprocess.run(
        [sys.executable, "-c", "from streams.entry import main; main()", "--help"],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    commands = set(re.findall(r"^  ([a-z-]+)  ", help_text, re.MULTILINE))
    assert "replay" in commands
    used = set(re.findall(r"`lineguard ([a-z-]+)", text))
    assert used
    assert used <= commands, f"no such command: {used - commands}"


def exit_statuses() -> dict[int, list[re.Pattern[str]]]:
    """The LineguardWorkerDown section's start-up exit statuses, each with its stderr lines."""
    section = sections()["LineguardWorkerDown"]
    statuses: dict[int, list[re.Pattern[str]]] = {}
    for code, text in re.findall(r"^- status (\d): (.+?)(?=^- |^\n|\Z)", section, re.M | re.S):
        lines = [" ".join(span.split()) for span in re.findall(r"`(lineguard: [^`]+)`", text)]
        statuses[int(code)] = [
            re.compile(re.escape(line).replace(r"\.\.\.", ".*")) for line in lines
        ]
    return statuses


def start_worker_and_fail(tmp_path: Path, **settings: str) -> tuple[int, str]:
    """Exit status and last stderr line of a ``lineguard worker`` that stops at start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env.update(LINEGUARD_API_ALLOW_ANONYMOUS="true", LINEGUARD_DATADIR=str(tmp_path / "data"))
    env["LINEGUARD_WEB_PORT"] = str(free_port())
    env.update(settings)
    done = subprocess.run(
        [sys.executable, "-c", "from streams.entry import main; main()", "worker"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    return done.returncode, done.stderr.strip().splitlines()[-1]


def test_the_runbook_explains_each_start_up_failure_by_its_status(tmp_path: Path) -> None:
    statuses = exit_statuses()
    assert set(statuses) == {1, 2, 3, 4}
    bad_policy = tmp_path / "policy.toml"
    bad_policy.write_text('version = "x"\nbogus = 1\n')
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    closed = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        failures = [
            start_worker_and_fail(tmp_path, LINEGUARD_POLICY_FILE=str(bad_policy)),
            start_worker_and_fail(tmp_path, LINEGUARD_WEB_PORT="0"),
            start_worker_and_fail(tmp_path, LINEGUARD_WEB_PORT=str(taken.getsockname()[1])),
            start_worker_and_fail(tmp_path, LINEGUARD_BROKER_URL=closed),
        ]
    finally:
        taken.close()
    assert [code for code, _ in failures] == [1, 2, 2, 4]
    for code, line in failures:
        assert any(p.fullmatch(line) for p in statuses[code]), f"status {code}: {line!r}"
