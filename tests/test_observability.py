"""Dashboards, alert rules and Alertmanager routing, checked against the service and by the real tools.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages. A
test that needs one fails, saying how to install it, when it is missing: these checks never
pass by being skipped.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prom_tools import (
    PROMETHEUS_OWN_METRICS,
    ROOT,
    dashboard_queries,
    exposed_series_names,
    exposition,
    load_dashboards,
    metric_names,
    panels,
    run_tool,
)

PROMETHEUS = ROOT / "prometheus"
REQUIRED_ALERTS = {
    "LineguardWorkerDown",
    "LineguardConsumerLagHigh",
    "LineguardDeadLetterRateHigh",
    "LineguardFreezeRateSpike",
    "LineguardDecisionLagHigh",
    "LineguardNotConsuming",
    "LineguardBrokerLagHigh",
    "LineguardKafkaExporterDown",
    "LineguardPolicyDiverged",
    "LineguardPolicyVersionsMixed",
    "LineguardInputMisrouted",
    "LineguardStalled",
}
KAFKA_EXPORTER_METRICS = frozenset({"kafka_consumergroup_lag_sum"})
"""Names kafka-exporter exports (danielqsj/kafka-exporter v1.8.0, pinned in
docker-compose.yml; its README's "Consumer Groups"), which an alert reads from job="kafka"."""
SEVERITIES = {"critical", "warning"}
GRAFANA_UNITS = {"none", "short", "s", "ms", "cps", "ops", "percent", "percentunit", "bytes"}
"""Grafana unit ids this project uses; a typo such as ``seconds`` renders as a bare number."""


@pytest.fixture(scope="module")
def exposed() -> str:
    return exposition()


@pytest.fixture(scope="module")
def service_names(exposed: str) -> set[str]:
    return exposed_series_names(exposed)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def all_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard query and alert expression."""
    queries = [
        (f"{path.name}: {where}", expr)
        for path, dashboard in load_dashboards().items()
        for where, expr in dashboard_queries(dashboard)
    ]
    return queries + [(f"alerts.yml: {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE)
    }


# Dashboards


def test_there_is_an_overview_dashboard() -> None:
    uids = {dashboard.get("uid") for dashboard in load_dashboards().values()}
    assert "lineguard-overview" in uids


def test_every_dashboard_has_a_pinned_uid_and_a_datasource_variable() -> None:
    uids = []
    for path, dashboard in load_dashboards().items():
        uids.append(dashboard["uid"])
        assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), path
        assert dashboard.get("title"), path
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", path
        assert variables["datasource"]["query"] == "prometheus", path
        assert variables["datasource"].get("current") in ({}, None), f"{path}: pinned to one"
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            for source in sources:
                assert source == {"type": "prometheus", "uid": "${datasource}"}, (
                    f"{path}: panel {panel['title']}"
                )
    assert len(uids) == len(set(uids)), "dashboard uids must be unique"


def test_every_panel_has_a_unit_and_a_unique_id() -> None:
    for path, dashboard in load_dashboards().items():
        ids = []
        for panel in panels(dashboard):
            ids.append(panel["id"])
            if panel["type"] == "row":
                continue
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert unit in GRAFANA_UNITS, f"{path}: panel {panel['title']} has unit {unit!r}"
            assert panel["targets"], f"{path}: panel {panel['title']} has no query"
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"


def test_the_overview_shows_what_the_design_asks_for() -> None:
    overview = next(d for d in load_dashboards().values() if d["uid"] == "lineguard-overview")
    exprs = " ".join(expr for _, expr in dashboard_queries(overview))
    for needle in (
        "sum by (topic) (rate(lineguard_events_total",  # throughput by topic
        'type="limit.freeze"',  # freezes by reason
        'type="limit.restore"',  # restores by reason
        'status="frozen"',  # frozen users
        "sum by (reason) (rate(lineguard_dead_letters_total",  # dead letters by reason
        "histogram_quantile(0.5, sum by (le) (rate(lineguard_processing_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(lineguard_processing_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(lineguard_batch_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(lineguard_decision_lag_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(lineguard_decision_lag_seconds_bucket",
        "lineguard_consumer_lag_records",
        'up{job="lineguard"',  # worker up/down
        "sum by (instance) (rate(process_cpu_seconds_total",  # CPU by worker
        "sum by (instance) (process_resident_memory_bytes",  # memory by worker
    ):
        assert needle in exprs, needle


def test_every_dashboard_panel_is_explained_in_the_docs() -> None:
    explained = github_anchors((ROOT / "docs" / "dashboards.md").read_text())
    for path, dashboard in load_dashboards().items():
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert github_anchors(f"### {panel['title']}") <= explained, (
                    f"{path}: panel {panel['title']!r} has no section in docs/dashboards.md"
                )


# Every PromQL expression, in dashboards and alerts


def test_every_metric_in_a_query_exists_in_the_service(service_names: set[str]) -> None:
    known = service_names | PROMETHEUS_OWN_METRICS
    queries = all_queries()
    for where, expr in queries:
        if metric_names(expr) & KAFKA_EXPORTER_METRICS:
            assert 'job="kafka"' in expr, f"{where}: kafka-exporter's metrics come from job kafka"
    known |= KAFKA_EXPORTER_METRICS
    assert len(queries) > 10
    unknown = {
        f"{where}: {name}"
        for where, expr in queries
        for name in metric_names(expr)
        if name not in known
    }
    assert not unknown, "metrics the service does not export:\n" + "\n".join(sorted(unknown))


def test_the_metric_check_sees_names_the_service_does_not_export(
    service_names: set[str],
) -> None:
    expr = 'sum(rate(lineguard_decisons_total[5m])) / on() group_left {__name__="lineguard_userz"}'
    assert metric_names(expr) - service_names == {"lineguard_decisons_total", "lineguard_userz"}
    assert "lineguard_consumer_lag_records" in service_names  # a family with no sample yet
    assert "lineguard_decision_lag_seconds_bucket" in service_names


def test_a_dashboard_variable_without_a_test_value_is_refused() -> None:
    dashboard = {
        "panels": [{"id": 1, "title": "t", "targets": [{"refId": "A", "expr": "up{x=~'$nope'}"}]}]
    }
    with pytest.raises(AssertionError, match=r"\$nope"):
        list(dashboard_queries(dashboard))


def write_recording_rules(queries: list[tuple[str, str]], path: Path) -> Path:
    """One recording rule per query, so that promtool parses every expression."""
    rules = [
        {"record": f"lineguard_check:query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(queries)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    return path


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    queries = all_queries()
    try:
        output = run_tool(
            "promtool", "check", "rules", write_recording_rules(queries, tmp_path / "q.yml")
        )
    except AssertionError as error:
        index = "\n".join(f"query_{n}: {where}" for n, (where, _) in enumerate(queries))
        raise AssertionError(f"{error}\nwhere each query comes from:\n{index}") from None
    assert f"SUCCESS: {len(queries)} rules found" in output


def test_promtool_refuses_a_query_that_does_not_parse(tmp_path: Path) -> None:
    path = write_recording_rules(
        [("bad", "sum(rate(lineguard_events_total[5m])")], tmp_path / "q.yml"
    )
    with pytest.raises(AssertionError, match="exited 1"):
        run_tool("promtool", "check", "rules", path)


# Prometheus and Alertmanager configuration, with the real tools


def test_promtool_check_config() -> None:
    output = run_tool("promtool", "check", "config", PROMETHEUS / "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_check_rules() -> None:
    output = run_tool("promtool", "check", "rules", PROMETHEUS / "alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_test_rules() -> None:
    output = run_tool("promtool", "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in output


def test_promtool_test_rules_fails_when_a_threshold_changes(tmp_path: Path) -> None:
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    assert "for: 2m" in alerts
    (tmp_path / "alerts.yml").write_text(alerts.replace("for: 2m", "for: 1m"))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    with pytest.raises(AssertionError, match="LineguardWorkerDown"):
        run_tool("promtool", "test", "rules", "alerts_test.yml", cwd=tmp_path)


MUTATIONS = {
    # name: (alert, text in its rule, what it becomes)
    "dead letters without rate()": (
        "LineguardDeadLetterRateHigh",
        "re:rate\\((lineguard_\\w+_total\\{[^}]*\\})\\[10m\\]\\)",
        r"\1",
    ),
    "dead letters over processed only": (
        "LineguardDeadLetterRateHigh",
        'lineguard_events_total{job="lineguard"}',
        'lineguard_events_total{job="lineguard", outcome="processed"}',
    ),
    "dead letters for 5m": ("LineguardDeadLetterRateHigh", "for: 10m", "for: 5m"),
    "dead letters for 20m": ("LineguardDeadLetterRateHigh", "for: 10m", "for: 20m"),
    "dead letters over 1m": ("LineguardDeadLetterRateHigh", "[10m]", "[1m]"),
    "dead letters over 5%": (
        "LineguardDeadLetterRateHigh",
        "re:(\\[10m\\]\\)\\)\\n\\s*)> 0.01",
        r"\1> 0.05",
    ),
    "dead letters without a minimum rate": (
        "LineguardDeadLetterRateHigh",
        "re:\\n\\s*and\\n\\s*sum by \\(topic\\) \\(rate\\(lineguard_dead_letters_total[^\\n]*> 0.01",
        "",
    ),
    "dead letters over a minimum rate of 0.001": (
        "LineguardDeadLetterRateHigh",
        "re:(lineguard_dead_letters_total[^\\n]*\\[10m\\]\\)\\) )> 0.01",
        r"\1> 0.001",
    ),
    "dead letters over a minimum rate of 0.05": (
        "LineguardDeadLetterRateHigh",
        "re:(lineguard_dead_letters_total[^\\n]*\\[10m\\]\\)\\) )> 0.01",
        r"\1> 0.05",
    ),
    "decision lag for 10m": ("LineguardDecisionLagHigh", "for: 15m", "for: 10m"),
    "decision lag for 20m": ("LineguardDecisionLagHigh", "for: 15m", "for: 20m"),
    "decision lag over 1m": ("LineguardDecisionLagHigh", "[10m]", "[1m]"),
    "decision lag per worker": ("LineguardDecisionLagHigh", "sum by (le)", "sum by (le, instance)"),
    "consumer lag for 10m": ("LineguardConsumerLagHigh", "for: 15m", "for: 10m"),
    "consumer lag for 20m": ("LineguardConsumerLagHigh", "for: 15m", "for: 20m"),
    "consumer lag max by topic": ("LineguardConsumerLagHigh", "sum by (topic)", "max by (topic)"),
    "freezes for 2m": ("LineguardFreezeRateSpike", "for: 5m", "for: 2m"),
    "freezes for 10m": ("LineguardFreezeRateSpike", "for: 5m", "for: 10m"),
    "freezes over 30m": (
        "LineguardFreezeRateSpike",
        'type="limit.freeze"}[10m]))\n              >',
        'type="limit.freeze"}[30m]))\n              >',
    ),
    "freezes without 6h of history": (
        "LineguardFreezeRateSpike",
        "re:\\n\\s*and\\n\\s*count by \\(reason\\) \\([^\\n]*offset 6h\\)",
        "",
    ),
    "worker down in any job": ("LineguardWorkerDown", 'up{job="lineguard"} == 0', "up == 0"),
    "worker down for 3m": ("LineguardWorkerDown", "for: 2m", "for: 3m"),
    "not consuming for 5m": ("LineguardNotConsuming", "for: 10m", "for: 5m"),
    "not consuming for 15m": ("LineguardNotConsuming", "for: 10m", "for: 15m"),
    "not consuming in any job": ("LineguardNotConsuming", '{job="lineguard"}', ""),
    "not consuming on any one worker": ("LineguardNotConsuming", "sum(1 - ", "min(1 - "),
    "broker lag of any group and topic": (
        "LineguardBrokerLagHigh",
        r"re:\s*\* on \(consumergroup, topic\) group_left \(\)\s*max by"
        r' \(consumergroup, topic\) \(last_over_time\(lineguard_input_info\{job="lineguard"\}\[6h\]\)\)',
        "",
    ),
    "broker lag without the join's memory": (
        "LineguardBrokerLagHigh",
        'last_over_time(lineguard_input_info{job="lineguard"}[6h])',
        'lineguard_input_info{job="lineguard"}',
    ),
    "broker lag joined for a day": ("LineguardBrokerLagHigh", "[6h]", "[1d]"),
    "broker lag joined for 10m": ("LineguardBrokerLagHigh", "[6h]", "[10m]"),
    "broker lag of any job's input info": (
        "LineguardBrokerLagHigh",
        'info{job="lineguard"}',
        "info",
    ),
    "broker lag for 5m": ("LineguardBrokerLagHigh", "for: 15m", "for: 5m"),
    "broker lag for 20m": ("LineguardBrokerLagHigh", "for: 15m", "for: 20m"),
    "kafka-exporter down for 2m": ("LineguardKafkaExporterDown", "for: 5m", "for: 2m"),
    "kafka-exporter down for 10m": ("LineguardKafkaExporterDown", "for: 5m", "for: 10m"),
    "kafka-exporter down in any job": (
        "LineguardKafkaExporterDown",
        'up{job="kafka"} == 0',
        "up == 0",
    ),
    "kafka-exporter down without absent()": (
        "LineguardKafkaExporterDown",
        're:\\n\\s*or\\n\\s*absent\\(up\\{job="kafka"\\}\\)',
        "",
    ),
    "policy diverged without a day's memory": (
        "LineguardPolicyDiverged",
        'max_over_time(lineguard_build_info{job="lineguard"}[1d])',
        'lineguard_build_info{job="lineguard"}',
    ),
    "policy diverged over 1h": ("LineguardPolicyDiverged", "[1d]", "[1h]"),
    "policy diverged over 2d": ("LineguardPolicyDiverged", "[1d]", "[2d]"),
    "policy diverged for 5m": ("LineguardPolicyDiverged", "for: 1m", "for: 5m"),
    "policy diverged per worker": (
        "LineguardPolicyDiverged",
        "count by (policy_version, version, policy_fingerprint)",
        "count by (instance, policy_version, version, policy_fingerprint)",
    ),
    "policy diverged across lineguard releases": (
        "LineguardPolicyDiverged",
        "count by (policy_version, version) (",
        "count by (policy_version) (",
    ),
    "policy diverged in any job": ("LineguardPolicyDiverged", '{job="lineguard"}', ""),
    "policy versions mixed for 10m": ("LineguardPolicyVersionsMixed", "for: 30m", "for: 10m"),
    "policy versions mixed for 60m": ("LineguardPolicyVersionsMixed", "for: 30m", "for: 60m"),
    "policy versions mixed in any job": (
        "LineguardPolicyVersionsMixed",
        'lineguard_build_info{job="lineguard"}',
        "lineguard_build_info",
    ),
    "policy versions mixed across groups": (
        "LineguardPolicyVersionsMixed",
        "count by (consumergroup) (",
        "count by (job) (",
    ),
    "misrouted without increase()": (
        "LineguardInputMisrouted",
        'increase(lineguard_input_misrouted_users_total{job="lineguard"}[10m])',
        'lineguard_input_misrouted_users_total{job="lineguard"}',
    ),
    "misrouted over 1m": ("LineguardInputMisrouted", "[10m]", "[1m]"),
    "misrouted over 30m": ("LineguardInputMisrouted", "[10m]", "[30m]"),
    "misrouted for 5m": ("LineguardInputMisrouted", "for: 1m", "for: 5m"),
    "misrouted from 2 users": ("LineguardInputMisrouted", "[10m])) > 0", "[10m])) > 1"),
    "misrouted per worker": (
        "LineguardInputMisrouted",
        "sum by (topic)",
        "sum by (topic, instance)",
    ),
    "misrouted in any job": ("LineguardInputMisrouted", '{job="lineguard"}', ""),
    "stalled for 2m": ("LineguardStalled", "for: 5m", "for: 2m"),
    "stalled for 10m": ("LineguardStalled", "for: 5m", "for: 10m"),
    "stalled over 1m": ("LineguardStalled", "[5m]", "[1m]"),
    "stalled over 10m": ("LineguardStalled", "[5m]", "[10m]"),
    "stalled without records waiting": (
        "LineguardStalled",
        're:sum\\(lineguard_consumer_lag_records\\{job="lineguard"\\} > 1\\) > 0\\n\\s*and\\n\\s*',
        "",
    ),
    "stalled without the rate of records applied": (
        "LineguardStalled",
        "re:\\n\\s*and\\n\\s*sum\\(rate\\(lineguard_events_total[^\\n]*== 0",
        "",
    ),
    "stalled on processed records only": (
        "LineguardStalled",
        'lineguard_events_total{job="lineguard"}',
        'lineguard_events_total{job="lineguard", outcome="processed"}',
    ),
    "stalled per worker": ("LineguardStalled", "sum(", "sum by (instance) ("),
    "stalled on a commit marker's lag": (
        "LineguardStalled",
        '{job="lineguard"} > 1)',
        '{job="lineguard"})',
    ),
    "stalled with any job's lag": (
        "LineguardStalled",
        'lineguard_consumer_lag_records{job="lineguard"}',
        "lineguard_consumer_lag_records",
    ),
    "stalled with any job's records applied": (
        "LineguardStalled",
        'lineguard_events_total{job="lineguard"}',
        "lineguard_events_total",
    ),
}
"""Rule changes that ``alerts_test.yml`` must catch: each `for:` and window pinned, and
the selectors that keep other jobs and other series out."""


def mutate(alerts: str, alert: str, old: str, new: str) -> str:
    """``alerts`` with ``old`` replaced by ``new`` inside one alert's rule (``re:`` for a regex)."""
    start = alerts.index(f"- alert: {alert}\n")
    end = alerts.find("- alert: ", start + 1)
    end = len(alerts) if end < 0 else end
    rule = alerts[start:end]
    if old.startswith("re:"):
        mutated, count = re.subn(old[3:], new, rule)
    else:
        mutated, count = rule.replace(old, new), rule.count(old)
    assert count, f"{old!r} is not in {alert}"
    return alerts[:start] + mutated + alerts[end:]


@pytest.mark.parametrize("name", MUTATIONS)
def test_promtool_test_rules_fails_for_a_broken_rule(name: str, tmp_path: Path) -> None:
    alert, old, new = MUTATIONS[name]
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(mutate(alerts, alert, old, new))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    with pytest.raises(AssertionError, match="exited 1"):
        run_tool("promtool", "test", "rules", "alerts_test.yml", cwd=tmp_path)


def test_amtool_check_config() -> None:
    output = run_tool("amtool", "check-config", PROMETHEUS / "alertmanager.yml")
    assert "SUCCESS" in output


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=LineguardWorkerDown"], "lineguard-critical"),
        (["severity=warning", "alertname=LineguardConsumerLagHigh"], "lineguard-warning"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    config = PROMETHEUS / "alertmanager.yml"
    output = run_tool("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
    assert output.splitlines()[0] == receiver


def test_every_severity_has_a_webhook_receiver() -> None:
    config = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    routed = {tuple(route["matchers"]): route["receiver"] for route in config["route"]["routes"]}
    for severity in SEVERITIES:
        receiver = receivers[routed[(f'severity="{severity}"',)]]
        assert [hook["url"] for hook in receiver["webhook_configs"]], severity


# Alert rules in the monitoring-mixins style


def test_the_required_alerts_exist() -> None:
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS


def test_every_alert_follows_the_mixin_guidelines() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Lineguard(?:[A-Z][a-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path).is_file(), f"{name}: {path}"
        assert anchor == name.lower() and anchor in github_anchors(runbook), f"{name}: {anchor}"
        assert "for" in rule, f"{name}: fires on a single evaluation"


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    assert tests
    fires: set[str] = set()
    must_not: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else must_not).add(check["alertname"])
        if "must not fire" in case["name"]:
            assert all(not check["exp_alerts"] for check in case["alert_rule_test"]), case["name"]
    named_must_not = {
        check["alertname"]
        for case in tests
        if "must not fire" in case["name"]
        for check in case["alert_rule_test"]
    }
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts <= fires, f"no case where it fires: {alerts - fires}"
    assert alerts <= named_must_not, f"no 'must not fire' case: {alerts - named_must_not}"
    assert named_must_not <= must_not


# The README and the compose stack's webhook receiver


def test_the_readme_lists_every_metric_and_every_alert(exposed: str) -> None:
    readme = (ROOT / "README.md").read_text()
    families = {line.split()[2] for line in exposed.splitlines() if line.startswith("# HELP ")}
    assert len(families) >= 11
    for family in families:
        assert f"`{family}" in readme, f"README has no row for {family}"
    for rule in alert_rules():
        assert f"[{rule['alert']}]({rule['annotations']['runbook_url']})" in readme, rule["alert"]


def test_the_alert_log_prints_every_alert_of_a_notification(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("alert_log", PROMETHEUS / "alert_log.py")
    assert spec is not None and spec.loader is not None
    alert_log = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(alert_log)
    server = alert_log.ThreadingHTTPServer(("127.0.0.1", 0), alert_log.AlertLog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/critical"
        body = {"alerts": [
            {"status": "firing", "labels": {"alertname": "LineguardWorkerDown", "severity": "critical"},
             "annotations": {"summary": "A lineguard worker is down.",
                             "description": "Prometheus has failed to scrape\n  worker-1:6066.",
                             "runbook_url": "docs/runbook.md#lineguardworkerdown"}},
            {"status": "resolved", "labels": {"alertname": "LineguardFreezeRateSpike"}},
        ]}  # fmt: skip
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            assert response.status == 200
        bad = urllib.request.Request(url, data=b"{", method="POST")
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(bad, timeout=10)  # noqa: S310 - loopback
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("critical firing LineguardWorkerDown {")
    assert lines[0].endswith(
        "} A lineguard worker is down. | Prometheus has failed to scrape worker-1:6066."
        " | runbook: docs/runbook.md#lineguardworkerdown"
    )
    assert lines[1].startswith("critical resolved LineguardFreezeRateSpike")
    assert lines[1].endswith("} - | - | runbook: -")
    assert len(lines) == 2
