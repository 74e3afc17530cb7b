"""The worker's registry carries the standard process and GC families, and no ``_created`` series."""

from __future__ import annotations

from prom_tools import exposition


def sample_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_the_process_and_its_garbage_collector_are_measured() -> None:
    values = sample_values(exposition())
    assert values["process_resident_memory_bytes"] > 10 * 2**20
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_open_fds"] >= 3
    assert any(name.startswith("python_gc_collections_total{") for name in values)
    assert any(name.startswith("python_info{") for name in values)


def test_no_counter_or_histogram_exposes_a_created_series() -> None:
    text = exposition()
    assert "lineguard_events_total{" in text
    assert [line for line in text.splitlines() if "_created" in line.split("{")[0]] == []
