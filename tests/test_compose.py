"""docker-compose.yml and the Dockerfile, checked statically: no Docker engine runs here."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from prom_tools import ROOT
from worker_harness import Topics

from streams.preflight import required_topics
from streams.settings import Settings

COMPOSE_SCHEMA = ROOT / "vendor" / "compose-spec" / "compose-spec.json"
VERSION_TAG = re.compile(r"v?\d+(\.\d+)+(-[\w.-]+)?")
"""A tag that names one release, such as ``3.9.0``, ``v2.53.3`` or ``3.11.11-slim-bookworm``."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def lineguard_services(services: dict[str, dict[str, Any]], verb: str) -> dict[str, Any]:
    """The services that run ``lineguard VERB`` from the image this repository builds."""
    return {
        name: service
        for name, service in services.items()
        if "build" in service and service.get("command", ["worker"])[0] == verb
    }


SHELL = {"LINEGUARD_API_TOKEN": "compose-test-token-0123456789"}
"""What the user's shell or .env gives ``docker compose up``."""
_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::([?-])([^}]*))?\}")


def interpolated(environment: dict[str, Any], shell: dict[str, str] = SHELL) -> dict[str, str]:
    """An environment with ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` filled in."""

    def fill(match: re.Match[str]) -> str:
        name, kind, text = match.groups()
        if shell.get(name):
            return shell[name]
        if kind == "?":
            raise ValueError(f"compose refuses to start: {name}: {text}")
        return text or ""

    return {key: _VARIABLE.sub(fill, str(value)) for key, value in environment.items()}


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container with this environment would start with."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("LINEGUARD_")]:
            patch.delenv(key)
        for key, value in interpolated(environment).items():
            patch.setenv(key, value)
        return Settings()


def test_compose_refuses_to_start_without_an_api_token(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker-1"]["environment"]
    with pytest.raises(ValueError, match="LINEGUARD_API_TOKEN"):
        interpolated(worker, shell={})
    assert interpolated(worker)["LINEGUARD_API_TOKEN"] == SHELL["LINEGUARD_API_TOKEN"]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount, short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def host_of(target: str) -> str:
    return urlsplit(target if "//" in target else f"//{target}").hostname or ""


# The file as a whole


def test_the_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_the_compose_spec_refuses_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["kafka"]["enviroment"] = broken["services"]["kafka"].pop("environment")
    with pytest.raises(jsonschema.ValidationError, match="enviroment"):
        jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text())).validate(broken)


def test_the_vendored_schema_keeps_its_attribution() -> None:
    notes = (COMPOSE_SCHEMA.parent / "README.md").read_text()
    assert "compose-spec/compose-spec" in notes and "Apache License 2.0" in notes
    assert "Apache License" in (COMPOSE_SCHEMA.parent / "LICENSE").read_text()


def test_the_stack_has_every_service_the_design_asks_for(
    services: dict[str, dict[str, Any]],
) -> None:
    assert len(lineguard_services(services, "worker")) == 2
    assert len(lineguard_services(services, "simulate")) == 1
    images = {service["image"].split(":")[0] for service in services.values()}
    assert images >= {
        "apache/kafka", "danielqsj/kafka-exporter", "prom/prometheus", "prom/alertmanager",
        "grafana/grafana",
    }  # fmt: skip
    init = [s for s in services.values() if "prepare_topics" in str(s.get("command"))]
    assert len(init) == 1, "one topic-init job"


def test_every_image_is_pinned_to_a_release(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service["image"]
        assert "@sha256:" in image or ":" in image, f"{name}: {image} has no tag"
        if "@sha256:" not in image:
            tag = image.rsplit(":", 1)[1]
            assert VERSION_TAG.fullmatch(tag), f"{name}: {image} is not pinned to a release"
        if "build" in service:
            assert image == f"lineguard:{version}", f"{name}: built image tagged {image}"


def test_prometheus_and_alertmanager_mount_their_config_directory(
    services: dict[str, dict[str, Any]],
) -> None:
    """An editor that replaces a file leaves a single-file bind mount on the old inode."""
    for name in ("prometheus", "alertmanager"):
        config = Path(flag(services[name], "config.file"))
        mounts = {target: source for source, target in bind_mounts(services[name])}
        assert str(config) not in mounts, f"{name}: mount {config.parent}, not {config}"
        assert (ROOT / mounts[str(config.parent)]).is_dir(), name


def test_every_mounted_host_path_exists_in_the_repository(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    mounted = 0
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            assert not source.startswith("/"), f"{name}: {source} is outside the repository"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            mounted += 1
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/")):
                assert volume.split(":")[0] in compose["volumes"], f"{name}: {volume}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name
    assert mounted >= 5


# How the services refer to each other


def test_every_service_prometheus_scrapes_or_alerts_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = [
        target
        for section in [*config["scrape_configs"], *config["alerting"]["alertmanagers"]]
        for static in section["static_configs"]
        for target in static["targets"]
    ]
    assert targets
    for target in targets:
        assert host_of(target) in services, f"prometheus.yml: {target} is not a compose service"
    workers = lineguard_services(services, "worker")
    lineguard_job = next(c for c in config["scrape_configs"] if c["job_name"] == "lineguard")
    scraped = {t for s in lineguard_job["static_configs"] for t in s["targets"]}
    assert scraped == {
        f"{name}:{w['environment']['LINEGUARD_WEB_PORT']}" for name, w in workers.items()
    }


def test_every_worker_listens_on_its_own_name(services: dict[str, dict[str, Any]]) -> None:
    """The URL each worker gives the others to forward /users/{id}/ to is its own name.

    The compose file sets LINEGUARD_WEB_HOST to the hostname; 0.0.0.0 would give the same
    URL through the hostname (Settings.worker_url), which must be the service name either way.
    """
    for name, worker in lineguard_services(services, "worker").items():
        assert worker["hostname"] == name
        assert worker["environment"]["LINEGUARD_WEB_HOST"] == name


def test_every_url_the_monitoring_stack_calls_is_a_compose_service(
    services: dict[str, dict[str, Any]],
) -> None:
    alertmanager = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text())
    urls = [h["url"] for r in alertmanager["receivers"] for h in r.get("webhook_configs", [])]
    datasources = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    urls += [d["url"] for d in yaml.safe_load(datasources.read_text())["datasources"]]
    assert len(urls) >= 3
    for url in urls:
        assert host_of(url) in services, url


def host_file(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a bind mount shows at ``container_path``, if one does."""
    for source, target in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target:
            return (ROOT / source).resolve()
        if container_path.startswith(f"{target}/"):
            return (ROOT / source / container_path.removeprefix(f"{target}/")).resolve()
    return None


def flag(service: dict[str, Any], name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"--{name}="))


def test_prometheus_and_grafana_find_their_mounted_files(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config_path = flag(services["prometheus"], "config.file")
    assert host_file(services["prometheus"], config_path) == ROOT / "prometheus" / "prometheus.yml"
    for rule_file in config["rule_files"]:
        container_path = str(Path(config_path).parent / rule_file)
        mounted = host_file(services["prometheus"], container_path)
        assert mounted is not None and mounted.is_file(), f"{rule_file} is not mounted"
    alertmanager = services["alertmanager"]
    assert (
        host_file(alertmanager, flag(alertmanager, "config.file"))
        == ROOT / "prometheus" / "alertmanager.yml"
    )
    grafana = dict(bind_mounts(services["grafana"]))
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = ROOT / "grafana" / "provisioning" / "dashboards" / "lineguard.yml"
    for provider in yaml.safe_load(providers.read_text())["providers"]:
        assert grafana["./grafana/dashboards"] == provider["options"]["path"]


def test_prometheus_and_alertmanager_link_to_where_a_browser_reaches_them(
    services: dict[str, dict[str, Any]],
) -> None:
    """Alert "source" and silence links use --web.external-url, else the container's name."""
    for name in ("prometheus", "alertmanager"):
        url = urlsplit(flag(services[name], "web.external-url"))
        published = {p.rsplit(":", 2)[-2] for p in services[name]["ports"]}
        assert url.hostname == "localhost" and str(url.port) in published, f"{name}: {url}"
        assert url.path in ("", "/"), f"{name}: a path moves every route"


# The lineguard containers


def test_lineguard_containers_set_only_real_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = set(Settings.model_fields)
    checked = {name: service for name, service in services.items() if "build" in service}
    assert len(checked) == 4  # two workers, the simulator and topic-init
    for name, service in checked.items():
        environment = service["environment"]
        for key in environment:
            assert key.startswith("LINEGUARD_"), f"{name}: {key} is not a lineguard setting"
            assert key.removeprefix("LINEGUARD_").lower() in fields, f"{name}: unknown {key}"
        settings = settings_from(environment, monkeypatch)
        assert settings.dev_broker is None, f"{name}: the Tansu shims against a real Kafka"


def test_workers_get_the_time_to_stop_cleanly(services: dict[str, dict[str, Any]]) -> None:
    """A clean stop takes up to 30 s after SIGTERM; Docker SIGKILLs after 10 s by default."""
    for name, worker in lineguard_services(services, "worker").items():
        grace = re.fullmatch(r"(\d+)s", str(worker.get("stop_grace_period", "10s")))
        assert grace and int(grace.group(1)) > 30, f"{name}: {worker.get('stop_grace_period')}"


def test_topic_init_runs_first_with_the_workers_topics_and_partitions(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["topic-init"]
    assert "prepare_topics(Settings())" in init["command"][0]
    for name, worker in lineguard_services(services, "worker").items():
        different = {
            key
            for key in init["environment"].keys() | worker["environment"].keys()
            if init["environment"].get(key) != worker["environment"].get(key)
        }
        assert different <= {"LINEGUARD_WEB_HOST"}, f"{name}: {different}"
        assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"


@pytest.mark.integration
def test_topic_init_creates_every_topic_with_one_partition_count(
    services: dict[str, dict[str, Any]],
    kafka_bootstrap: str,
    unique_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's own script, run on the test broker with this test's topic names."""
    init = services["topic-init"]
    topics = Topics(unique_prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env |= interpolated(init["environment"]) | topics.env()
    env |= {"LINEGUARD_BROKER_URL": f"kafka://{kafka_bootstrap}", "LINEGUARD_APP_ID": unique_prefix}
    assert init["entrypoint"] == ["python", "-c"]
    done = subprocess.run(
        [sys.executable, "-c", init["command"][0]], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    settings = settings_from(
        {k: v for k, v in env.items() if k.startswith("LINEGUARD_")}, monkeypatch
    )
    counts = asyncio.run(partition_counts(kafka_bootstrap, required_topics(settings)))
    assert set(counts) == set(required_topics(settings))
    assert set(counts.values()) == {int(init["environment"]["LINEGUARD_TOPIC_PARTITIONS"])}


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


def test_kafka_runs_in_kraft_mode_with_two_client_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env).upper()
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    advertised = {entry.split("://")[0] for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert listeners == advertised | {controller}
    assert len(advertised) == 2
    brokers = {
        urlsplit(w["environment"]["LINEGUARD_BROKER_URL"]).netloc
        for w in lineguard_services(services, "worker").values()
    }
    internal = next(
        e
        for e in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        if e.startswith(env["KAFKA_INTER_BROKER_LISTENER_NAME"])
    )
    assert brokers == {internal.split("://")[1]}


def test_the_image_can_run_a_rocksdb_store_on_a_volume_per_worker(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    default = re.search(r'^ARG EXTRAS="([^"]*)"', dockerfile, re.MULTILINE)
    assert default, "the Dockerfile has no EXTRAS default"
    assert "rocksdb" in default.group(1).split(",") and "rocksdb" in extras
    assert any(dep.startswith("rocksdict") for dep in extras["rocksdb"])
    datadir = re.search(r"LINEGUARD_DATADIR=(\S+)", dockerfile)
    assert datadir, "the Dockerfile sets no LINEGUARD_DATADIR"
    assert f"install -d -o 10001 -g 10001 -m 0750 {datadir.group(1)}" in dockerfile
    volumes = []
    for name, worker in lineguard_services(services, "worker").items():
        assert "LINEGUARD_DATADIR" not in worker["environment"], name
        mounted = {v.split(":")[1]: v.split(":")[0] for v in worker.get("volumes", [])}
        assert datadir.group(1) in mounted, f"{name}: no volume at {datadir.group(1)}"
        volumes.append(mounted[datadir.group(1)])
        assert volumes[-1] in compose["volumes"], f"{name}: {volumes[-1]} is not a named volume"
    assert len(volumes) == len(set(volumes)), "two workers share a data volume"


def test_the_dockerfile_is_slim_non_root_and_checks_healthz() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert bases
    for base in bases:
        tag = base.split(":")[1]
        assert "slim" in tag and VERSION_TAG.fullmatch(tag), base
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*", dockerfile, re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    assert "LINEGUARD_WEB_HOST=0.0.0.0" in dockerfile
