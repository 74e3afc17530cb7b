"""Every dashboard query, run by a real Prometheus that scrapes two real workers, one restarted.

The static checks (tests/test_observability.py) see that each query parses and names metrics
the service exports; this one sees what each query returns: data, for every panel, in the
panel's unit, summed over both workers and across a worker's restart (its counters start
again at 0). The runbook's queries run there too, and the dashboard is checked for what
Grafana needs to load it: its panels tile the grid, and its data source is the provisioned one.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prom_tools import ROOT, dashboard_queries, load_dashboards, panels
from test_deploy_runbook import runbook_queries
from test_prometheus_scrape import BURST_USERS, Prometheus, scrape_config, start_prometheus, traffic
from test_worker import PARTITIONS, start_worker, topics
from worker_harness import Topics, Worker, produce, wait_for

__all__ = ["start_prometheus", "start_worker", "topics"]

pytestmark = pytest.mark.integration

RATE_WINDOW = "15s"
"""$__rate_interval at the test's 1 s scrape interval: long enough for a few scrapes."""


def overview() -> dict[str, Any]:
    return next(d for d in load_dashboards().values() if d["uid"] == "lineguard-overview")


def panel_queries() -> list[tuple[dict[str, Any], str, str]]:
    """(panel, where, PromQL) of every panel target, Grafana's variables filled in."""
    dashboard = overview()
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    queries = []
    for where, expr in dashboard_queries(dashboard):
        if not where.startswith("panel "):
            continue
        title = where.split("(", 1)[1].rsplit(") target", 1)[0]
        queries.append((by_title[title], where, expr.replace("[1m]", f"[{RATE_WINDOW}]")))
    return queries


def unit(panel: dict[str, Any]) -> str:
    return str(panel["fieldConfig"]["defaults"]["unit"])


def evaluate(prometheus: Prometheus) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each panel query's result now: its series' labels and values."""
    results = {}
    for _, where, expr in panel_queries():
        result = prometheus.api("query", query=expr)["result"]
        results[where] = [(r["metric"], float(r["value"][1])) for r in result]
    return results


def expected_units(expr: str) -> set[str]:
    """The Grafana units a query's result can be shown in: seconds, bytes, a rate or a count.

    The rate of a ``_seconds_total`` counter is seconds a second, a share of one CPU.
    """
    if "_seconds_bucket" in expr:
        return {"s"}
    if "_bytes" in expr:
        return {"bytes"}
    if "rate(" in expr and "_seconds_total" in expr:
        return {"percentunit"}
    if "rate(" in expr:
        return {"cps", "ops"}
    return {"short", "none"}


def test_the_unit_check_refuses_a_panel_in_the_wrong_unit() -> None:
    lag = "histogram_quantile(0.99, sum by (le) (rate(lineguard_decision_lag_seconds_bucket[1m])))"
    assert "ms" not in expected_units(lag)
    assert "short" not in expected_units("sum(rate(lineguard_events_total[1m]))")
    assert "cps" not in expected_units("sum(lineguard_users)")
    assert "cps" not in expected_units("rate(process_cpu_seconds_total[1m])")
    assert "short" not in expected_units("process_resident_memory_bytes")


def test_every_panel_is_in_the_unit_of_its_queries() -> None:
    for panel, where, expr in panel_queries():
        assert unit(panel) in expected_units(expr), f"{where}: unit {unit(panel)} for {expr}"


def check_units(results: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    """Every panel has data, and each value fits the panel's unit."""
    for panel, where, _ in panel_queries():
        series = results[where]
        assert series, f"{where}: no data"
        for labels, value in series:
            assert not math.isnan(value), f"{where} {labels}: NaN"
            assert value >= 0, f"{where} {labels}: {value} < 0"
            if unit(panel) in ("none", "short", "bytes"):
                assert value == int(value), f"{where} {labels}: {value} is no count"
            if unit(panel) == "percentunit":  # of one CPU: a process uses at most them all
                assert value <= (os.cpu_count() or 1) + 0.5, f"{where} {labels}: {value} CPUs"
            if unit(panel) == "s":
                assert value < 2592000 + 1, f"{where} {labels}: {value} s"


def test_every_panel_query_returns_data_in_its_unit_from_two_workers_and_a_restart(
    kafka_bootstrap: str,
    topics: Topics,
    start_worker: Callable[..., Worker],
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
) -> None:
    first, second = start_worker(), start_worker()
    first.wait_ready()
    second.wait_ready()
    config = scrape_config(f"127.0.0.1:{first.port}")
    job = config["scrape_configs"][0]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{w.port}" for w in (first, second)]}]
    prometheus = start_prometheus(config)
    wait_for(prometheus.ready, 30, "prometheus ready")
    up = 'sum(up{job="lineguard"})'
    wait_for(lambda: prometheus.value(up) == 2, 30, "both workers scraped and up")

    asyncio.run(produce(kafka_bootstrap, topics, traffic(), PARTITIONS))
    freezes = 'sum(lineguard_decisions_total{job="lineguard", type="limit.freeze"})'
    wait_for(lambda: prometheus.value(freezes) == BURST_USERS, 60, "freezes in prometheus")
    serving = 'sum(1 - lineguard_recovery_in_progress{job="lineguard"})'
    wait_for(lambda: prometheus.value(serving) == 2, 60, "both workers serving")
    results = evaluate(prometheus)
    check_units(results)
    workers_up = next(s for w, s in results.items() if "(Workers up) target A" in w)
    assert workers_up == [({}, 2.0)]
    tracked = next(s for w, s in results.items() if "(Tracked users) target A" in w)
    assert tracked == [({}, float(BURST_USERS))]  # dead-lettered records create no state
    frozen = next(s for w, s in results.items() if "(Frozen users) target A" in w)
    assert frozen == [({}, float(BURST_USERS))]
    for query in runbook_queries():  # Prometheus answers an error with a 400, which raises
        prometheus.api("query", query=query)

    # One worker restarts on the same port: its counters begin again at 0.
    first.stop()
    restarted = start_worker(port=first.port)
    restarted.wait_ready()
    wait_for(lambda: prometheus.value(up) == 2, 30, "the restarted worker scraped")
    wait_for(lambda: prometheus.value(serving) == 2, 60, "both workers serving again")
    check_units(evaluate(prometheus))


def test_the_panels_tile_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(overview()):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_dashboard_picks_the_provisioned_data_source_type() -> None:
    provisioning = ROOT / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    default = next(s for s in sources["datasources"] if s.get("isDefault"))
    dashboard = overview()
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == default["type"]
    assert isinstance(dashboard["version"], int) and dashboard["schemaVersion"] >= 36
    providers = yaml.safe_load((provisioning / "dashboards" / "lineguard.yml").read_text())
    assert [p["options"]["path"] for p in providers["providers"]] == ["/etc/grafana/dashboards"]
