"""``python -m chaos`` (``make chaos``): run the chaos plan and print its figures.

Exits 0 when every decision and dead letter was found with replay's content and nothing
else appeared, 1 otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click
import orjson

from chaos.run import Plan, run

_DEFAULTS = Plan()


@click.command()
@click.option(
    "--duration", default=_DEFAULTS.duration, show_default=True, help="Seconds of traffic."
)
@click.option("--rate", default=_DEFAULTS.rate, show_default=True, help="Records per second.")
@click.option("--users", default=_DEFAULTS.users, show_default=True, help="Simulated users.")
@click.option(
    "--workers", default=_DEFAULTS.workers, show_default=True, help="Workers in the group."
)
@click.option(
    "--partitions", default=_DEFAULTS.partitions, show_default=True, help="Partitions per topic."
)
@click.option(
    "--kill-every", default=_DEFAULTS.kill_every, show_default=True, help="Seconds between faults."
)
@click.option(
    "--sigterm-at",
    default=_DEFAULTS.sigterm_at,
    show_default=True,
    help="Which fault is a SIGTERM (0: none).",
)
@click.option(
    "--seed", default=_DEFAULTS.seed, show_default=True, help="Seeds the traffic and the victims."
)
@click.option(
    "--time-scale",
    default=_DEFAULTS.time_scale,
    show_default=True,
    help="Simulated seconds per wall second.",
)
@click.option(
    "--grace-days",
    default=_DEFAULTS.grace_days,
    show_default=True,
    help="The policy's overdue.grace_days, for workers and replay.",
)
@click.option(
    "--watermark-delay",
    default=_DEFAULTS.watermark_delay,
    show_default=True,
    help="The policy's time.watermark_delay, for workers and replay.",
)
@click.option(
    "--guarantee",
    type=click.Choice(["at_least_once", "exactly_once"]),
    default=_DEFAULTS.guarantee,
    show_default=True,
    help="exactly_once needs a broker with transactions (--bootstrap).",
)
@click.option("--store", default=_DEFAULTS.store, show_default=True, help="memory:// or rocksdb://")
@click.option(
    "--bootstrap",
    default=lambda: os.environ.get("LINEGUARD_TEST_BOOTSTRAP") or None,
    help="host:port of a Kafka to use instead of an embedded Tansu"
    " [default: $LINEGUARD_TEST_BOOTSTRAP].",
)
@click.option(
    "--catch-up-timeout",
    default=_DEFAULTS.catch_up_timeout,
    show_default=True,
    help="Seconds the workers may take to commit everything after the traffic.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the figures as JSON to this file.",
)
@click.option("--keep", is_flag=True, help="Keep the working directory even after a pass.")
def main(report_path: Path | None, keep: bool, **options: object) -> None:
    """Kill and restart workers under load, then check every decision against replay."""
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every worker and the broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = Plan(**options)  # type: ignore[arg-type]  # click has checked each option's type
    try:
        report = run(plan, say=lambda line: click.echo(line), keep=keep)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    for line in report.lines():
        click.echo(line)
    if report_path is not None:
        report_path.write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
