"""Alertmanager routes every alert of alerts.yml, by its own labels, to its severity's receiver.

tests/test_observability.py routes one alert of each severity; this routes each alert, with
the labels its rule gives it, through ``amtool config routes test``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prom_tools import ROOT, run_tool

PROMETHEUS = ROOT / "prometheus"
RECEIVERS = {"critical": "lineguard-critical", "warning": "lineguard-warning"}
"""The receiver of each severity, as the README's Alerts section and alertmanager.yml say."""


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_reaches_the_receiver_of_its_severity(rule: dict[str, Any]) -> None:
    labels = [f"alertname={rule['alert']}"] + [f"{k}={v}" for k, v in rule["labels"].items()]
    config = PROMETHEUS / "alertmanager.yml"
    output = run_tool("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
    assert output.splitlines()[0] == RECEIVERS[rule["labels"]["severity"]], rule["alert"]


def test_each_receiver_posts_to_the_alert_log_path_of_its_severity() -> None:
    config = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        severity = next(s for s, name in RECEIVERS.items() if name == receiver["name"])
        urls = [hook["url"] for hook in receiver["webhook_configs"]]
        assert urls == [f"http://alert-log:9099/{severity}"], receiver["name"]
