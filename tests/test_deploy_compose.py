"""The lineguard commands the compose stack and its README run are ones the CLI accepts.

Each ``build: .`` service's command, and the README's ``docker compose run ... simulator``
line, are parsed by the real ``lineguard`` command line (click), with its types and ranges,
without running anything. The image's HEALTHCHECK command runs against a real worker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable

import click
import pytest
import yaml
from prom_tools import ROOT
from test_worker import start_worker, topics
from worker_harness import Worker

__all__ = ["start_worker", "topics"]


def lineguard_cli() -> click.Group:
    """The ``lineguard`` command group as ``lineguard`` runs it, with Faust's commands."""
    from faust.cli.faust import cli

    import streams.app  # noqa: F401 - registers lineguard's commands on Faust's CLI

    assert isinstance(cli, click.Group)
    return cli


def accepted(args: list[str]) -> None:
    """Raise click's usage error unless ``lineguard ARGS`` parses, options and values included."""
    cli = lineguard_cli()
    command = cli.commands[args[0]]
    command.make_context(args[0], list(args[1:]), parent=click.Context(cli))


def compose_commands() -> list[list[str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return [
        service["command"]
        for service in compose["services"].values()
        if "build" in service and "entrypoint" not in service
    ]


def test_every_lineguard_service_command_is_accepted() -> None:
    commands = compose_commands()
    assert {command[0] for command in commands} == {"worker", "simulate"}
    for command in commands:
        accepted(command)


def test_the_readmes_compose_run_of_the_simulator_is_accepted() -> None:
    readme = (ROOT / "README.md").read_text()
    runs = re.findall(r"docker compose run --rm simulator ([^`]+)`", readme)
    assert runs
    for run in runs:
        accepted(shlex.split(" ".join(run.split())))


def test_a_command_with_a_bad_value_is_refused() -> None:
    with pytest.raises(click.UsageError):
        accepted(["simulate", "--users", "0"])
    with pytest.raises(click.UsageError):
        accepted(["simulate", "--user", "5"])


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK, the exec form's arguments."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    command = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def healthy(port: int, host: str) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env.update(LINEGUARD_WEB_HOST=host, LINEGUARD_WEB_PORT=str(port))
    done = subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=30)
    return done.returncode == 0


@pytest.mark.integration
def test_the_image_healthcheck_passes_on_a_running_worker_and_fails_once_it_stops(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker()
    worker.wait_ready()
    # The image listens on 0.0.0.0, compose on the container's hostname; here both are loopback.
    assert healthy(worker.port, "0.0.0.0")  # noqa: S104 - the image's setting, mapped to loopback
    assert healthy(worker.port, "127.0.0.1")
    worker.stop()
    assert not healthy(worker.port, "127.0.0.1")
