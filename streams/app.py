"""The Faust app and the ``lineguard`` command line.

One click-based program: Faust's own CLI (``worker`` and friends) plus the
lineguard verbs added with ``@app.command``. The app is configured only from
:class:`~streams.settings.Settings`; Faust's own environment is emptied.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import itertools
import logging
import math
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import click
import colorlog
import faust
import structlog
from click.core import ParameterSource
from faust.cli import AppCommand, argument, option
from pydantic import ValidationError

from risk.backtest import backtest, render_text
from risk.clock import parse_timestamp
from risk.policy import Policy, PolicyError, load_policy
from risk.replay import (
    EarliestTimes,
    InputRecord,
    ReplayInputError,
    earliest_times,
    parse_records,
    replay,
)
from streams.assignor import EvenPartitionAssignor, standby_replicas
from streams.preflight import PRODUCER_MAX_REQUEST_SIZE, kafka_credentials
from streams.recovery import PromptTableManager, install_changelog_fast_path
from streams.runtime import wall_micros
from streams.settings import Settings


def _fail(message: str, code: int = 2) -> None:
    print(f"lineguard: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_settings() -> Settings:
    """Read the settings, or stop with a message naming the bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        _fail(f"invalid settings: {settings_problems(error)}")
        raise AssertionError from error  # unreachable: _fail exits


def settings_problems(error: ValidationError) -> str:
    """One line: each field's error after its variable; a check across fields names its own."""
    problems = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        location = "_".join(map(str, problem["loc"])).upper()
        problems.append(f"LINEGUARD_{location}: {message}" if location else message)
    return "; ".join(problems)


FAUST_STREAM_IDLE = ("Stream has not started processing", "Stream stopped processing, or is slow")
"""Faust's stream-idle errors (``stream_processing_timeout``), which misfire here."""


def not_faust_stream_idle(record: logging.LogRecord) -> bool:
    """Drop Faust's check that its stream takes each partition's fetched records.

    lineguard takes them out of each fetch itself (:mod:`streams.fetch`), so Faust's
    stream sees few or none, and a healthy worker under traffic logged this ERROR many
    times a minute. Faust's other checks of the same loop (no fetch sent, no fetch
    answered, no commit) stay: they tell a stalled broker.
    """
    message = str(record.msg)
    return not any(idle in message for idle in FAUST_STREAM_IDLE)


def configure_logging() -> None:
    """Structured JSON log lines through the standard library, which Faust's worker owns.

    Log events carry partition numbers, offsets and reason codes, never user data.
    """
    logging.getLogger("faust.transport.drivers.aiokafka").addFilter(not_faust_stream_idle)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def cache_log_colors(logger: logging.Logger | None = None) -> None:
    """Let the colour formatters of ``logger``'s handlers (the root's) build their codes once.

    Faust's worker logs through colorlog, which rebuilds its whole map of escape codes,
    about 200 entries, then blanks it when the stream is not a terminal, for every line:
    a third of the cost of a decision's log line. The map depends only on the level
    and on settings fixed for the life of the process, so it is kept per level; the
    lines are unchanged. Call once the worker has set up its logging.
    """
    for handler in (logger or logging.getLogger()).handlers:
        formatter = handler.formatter
        if isinstance(formatter, colorlog.ColoredFormatter) and "_escape_code_map" not in vars(
            formatter
        ):
            build = formatter._escape_code_map
            built: dict[str, Mapping[str, str]] = {}

            def escape_codes(
                level: str,
                build: Callable[[str], Mapping[str, str]] = build,
                built: dict[str, Mapping[str, str]] = built,
            ) -> Mapping[str, str]:
                codes = built.get(level)
                if codes is None:
                    codes = built[level] = build(level)
                return codes

            formatter._escape_code_map = escape_codes  # type: ignore[method-assign,assignment]  # this one formatter


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app from lineguard's settings and nothing else."""
    if settings.dev_broker == "tansu":
        from streams.devbroker import apply_tansu_shims

        apply_tansu_shims()
    timeouts = settings.broker_timeouts()
    app = faust.App(
        settings.app_id,
        env={},  # Faust's unprefixed variables (BROKER_URL ...) must not override settings
        broker=settings.broker_url,
        broker_credentials=kafka_credentials(settings),
        store=settings.store,
        processing_guarantee=settings.processing_guarantee,
        datadir=str(settings.datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_commit_interval=settings.broker_commit_interval,
        web_bind=settings.web_host,  # Faust would listen on every interface otherwise
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.worker_url(),
        web_tables_enabled=False,  # /table serves table data without authentication
        web_router_enabled=False,  # so does /router
        web_graph_enabled=False,
        autodiscover=["agents", "streams.web"],
        origin="streams",
        broker_session_timeout=timeouts["broker_session_timeout"],
        broker_heartbeat_interval=timeouts["broker_heartbeat_interval"],
        broker_rebalance_timeout=timeouts["broker_rebalance_timeout"],
        producer_linger_ms=round(settings.producer_linger * 1000),
        producer_compression_type=settings.producer_compression_type(),
        producer_max_request_size=PRODUCER_MAX_REQUEST_SIZE,  # a dead letter is its record and more
        TableManager=PromptTableManager,  # starts the tables without Faust's 1 s sleep
        PartitionAssignor=EvenPartitionAssignor,  # a joining worker gets partitions, standbys kept
        table_standby_replicas=standby_replicas(settings.store),
    )
    install_changelog_fast_path(app)  # recovery reads the changelog a fetch at a time
    tune_worker_consumer(app, settings.fetch_max_wait())
    return app


PREFETCH_BACKOFF: Final = 0.005
"""Seconds aiokafka's fetcher holds back, after a fetch that brought records, before it
fetches the other partitions of that broker again while those records wait to be handed
over; 0.1 s by default.

Faust pauses the changelog partitions only in its own bookkeeping, so aiokafka fetches
them too and keeps their records, which are never handed over: each fetch of them
stalled every input partition for the full 0.1 s. Input records stall the others for as
long as the batch before them takes. The event-time merge waits for a fetch response of
the empty partitions, so those stalls went straight into the decision lag: p99 85–89 ms
at 5,000 events/s, 63–70 ms with 5 ms (``bench.lag``, 2026-12-03).
"""


def tune_worker_consumer(app: faust.App, seconds: float) -> None:
    """Give the worker's consumer this fetch wait, in place of the 1.5 s Faust hard-codes.

    And a prompt prefetch backoff (:data:`PREFETCH_BACKOFF`).
    """
    wait_ms = round(seconds * 1000)

    def install(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]
        create = thread._create_worker_consumer

        def create_worker_consumer(transport: Any) -> Any:
            consumer = create(transport)
            consumer._fetch_max_wait_ms = wait_ms  # read by start(), which builds the fetcher
            start = consumer.start

            async def start_with_prompt_prefetch() -> None:
                await start()
                consumer._fetcher._prefetch_backoff = PREFETCH_BACKOFF

            consumer.start = start_with_prompt_prefetch
            return consumer

        thread._create_worker_consumer = create_worker_consumer

    app.on_worker_init.connect(install)


settings = load_settings()
configure_logging()
app = create_app(settings)


def _timestamp_option(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    parsed = parse_timestamp(text)
    if isinstance(parsed, str):
        _fail(f"{name}: {parsed}")
        raise AssertionError  # unreachable: _fail exits
    return parsed


@functools.cache
def worker_policy() -> Policy:
    """The worker's policy, ``LINEGUARD_POLICY_FILE`` or the packaged one, loaded once.

    The worker checks it before it contacts the broker, and its agent reuses it. A bad
    file stops the process, naming the variable, the file and the field.
    """
    path = settings.policy_file
    try:
        return load_policy(path)
    except PolicyError as error:
        _fail(f"LINEGUARD_POLICY_FILE={path}: {error}" if path else str(error), code=1)
        raise AssertionError from error  # unreachable: _fail exits


AGENTLESS_COMMANDS: Final = frozenset({"replay", "backtest", "check-policy", "simulate", "demo"})
"""lineguard's own verbs that run no agent and serve no view: they skip Faust's
autodiscovery, so the worker's policy (``LINEGUARD_POLICY_FILE``), which the agent module
loads, neither stops them nor is used by them. Each takes its policy as an option."""


def _policy_option(path: str | None) -> Policy:
    """The policy in ``path``, or the packaged one; a bad file stops naming it and the field."""
    try:
        return load_policy(Path(path) if path else None)
    except PolicyError as error:
        _fail(f"{path}: {error}" if path else str(error))
        raise AssertionError from error  # unreachable: _fail exits


@dataclass(frozen=True, slots=True)
class _ReplayRun:
    """What ``replay`` and ``backtest`` hand to the core besides the policy."""

    records: Iterable[InputRecord]
    """A list, or with ``earliest`` the file read again as the core takes its records."""
    partitions: int
    until: int | None
    now: int
    topics: tuple[str, ...]
    """The input topics' names from the settings, in the contract's order."""
    earliest: EarliestTimes | None = None
    """What the merge needs of the records not read yet, found by a first pass."""


_REPLAY_OPTIONS: Final = (
    option(
        "--partitions",
        default=None,
        type=int,
        help="Partition count to group records by (default: LINEGUARD_TOPIC_PARTITIONS, as the"
        " worker).",
    ),
    option("--until", default=None, help="After the input, advance every watermark to TIME."),
    option("--now", default=None, help="Wall clock for the in_future check (default: now)."),
)
"""The options ``replay`` and ``backtest`` share, read by :func:`_replay_run`."""


def _partitions_option(partitions: int | None) -> int:
    """``--partitions``, by default the worker's count.

    The watermark is per partition, so the count decides whose events fire whose timers.
    """
    if partitions is None:
        return settings.topic_partitions
    if not 1 <= partitions <= 10_000:
        _fail("--partitions must be from 1 to 10000")
    return partitions


def _note_policy_file_unused(command: str, given: str | None, option: str) -> None:
    """Say so when the worker's policy file is set but the packaged policy is used instead."""
    if given is None and settings.policy_file is not None:
        print(
            f"lineguard: note: {command} uses the packaged policy, not LINEGUARD_POLICY_FILE"
            f" ({settings.policy_file}); pass {option} {settings.policy_file} for the worker's",
            file=sys.stderr,
        )


GZIP_MAGIC: Final = b"\x1f\x8b"


@contextlib.contextmanager
def _input_lines(input_file: str) -> Iterator[io.BufferedIOBase]:
    """The input file (``-``: stdin), decompressed if it is gzip, whatever its name.

    Exports of topics are often kept compressed; read as text, one stopped at
    ``line 1: not valid JSON ... (byte 0)``.
    """
    stdin = cast(io.BufferedReader, sys.stdin.buffer)  # a buffered reader, which can peek
    raw = stdin if input_file == "-" else open(input_file, "rb")  # noqa: SIM115 - closed below
    try:
        if raw.peek(len(GZIP_MAGIC)).startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield unpacked
        else:
            yield raw
    finally:
        if raw is not stdin:
            raw.close()


def _replay_run(
    input_file: str,
    partitions: int | None,
    until: str | None,
    now: str | None,
    *,
    as_read: bool = False,
) -> _ReplayRun:
    """Read the input file (``-``: stdin) and the shared options; a bad line stops naming it.

    ``as_read``: a regular file is read twice, first for :func:`earliest_times`, so that the
    core then holds only the records the merge must wait behind, not the whole input. Stdin
    and a pipe (``<(zcat ...)``) can be read only once, and are held.
    """
    count = _partitions_option(partitions)
    until_at = _timestamp_option(until, "--until")
    now_at = _timestamp_option(now, "--now")
    if settings.clock == "wall":
        print(
            "lineguard: note: LINEGUARD_CLOCK=wall, but replay runs the stream clock; a"
            " wall-clock worker also fires timers as real time passes (--until stands in for"
            " that)",
            file=sys.stderr,
        )
    topics = settings.input_topics
    earliest = None
    records: Iterable[InputRecord]
    with _input_errors(input_file), _input_lines(input_file) as lines:
        if as_read and input_file != "-" and Path(input_file).is_file():  # not a pipe
            first = _Counted(lines)
            earliest = earliest_times(parse_records(first, topics), count, topics)
            records = _read_again(input_file, first.count, os.fstat(lines.fileno()))
        else:
            records = list(parse_records(lines, topics))
    return _ReplayRun(
        records, count, until_at, wall_micros() if now_at is None else now_at, topics, earliest
    )


@contextlib.contextmanager
def _input_errors(input_file: str) -> Iterator[None]:
    """Stop naming the input file, and its line when a line is not a Kafka record."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        _fail(f"{input_file}: a damaged gzip file: {error}")
    except (OSError, ReplayInputError) as error:
        _fail(f"{input_file}: {error}")


class _Counted:
    """Lines, counted as they are taken."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            self.count += 1
            yield line


def _read_again(input_file: str, count: int, first: os.stat_result) -> Iterator[InputRecord]:
    """The input file's records, parsed again as they are taken (a second pass).

    Exactly the ``count`` lines the first pass read, of the file ``first`` describes: lines
    appended since (an export still being written) are left out, with a note, and a file
    replaced or cut short since stops the command, as the first pass no longer describes it.
    """
    with _input_errors(input_file), _input_lines(input_file) as lines:
        file = os.fstat(lines.fileno())
        if (file.st_dev, file.st_ino) != (first.st_dev, first.st_ino):
            _changed(input_file, "was replaced by another file")
        if file.st_size < first.st_size:
            _changed(input_file, f"shrank from {first.st_size} to {file.st_size} bytes")
        again = _Counted(itertools.islice(lines, count))
        yield from parse_records(again, settings.input_topics)
        if again.count < count:
            _changed(input_file, f"shrank from {count} to {again.count} lines")
        if lines.readline():
            print(
                f"lineguard: note: {input_file}: the lines added after its first reading"
                f" (line {count + 1} on) were not replayed",
                file=sys.stderr,
            )


def _changed(input_file: str, how: str) -> None:
    _fail(
        f"{input_file}: {how} between replay's two readings of it; replay a file that is"
        " no longer written"
    )


class _Output:
    """An output file (``-``: stdout), opened before the run so a bad path fails at once.

    A reader that stops early (``| head``) ends the command quietly, as Unix tools do; a
    failed write stops it naming the file.
    """

    def __init__(self, path: str, *inputs: str) -> None:
        self.path = path
        if path == "-":
            self._stream: Any = sys.stdout.buffer
            return
        for other in inputs:
            if other != "-" and _same_file(path, other):
                _fail(f"{path}: is {other}, an input of this command; it would be overwritten")
        try:
            self._stream = open(path, "wb")  # noqa: SIM115 - closed by write_lines
        except OSError as error:
            _fail(f"{path}: {error.strerror or error}")

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Write one line per item, then close (or flush stdout)."""
        stream = self._stream
        try:
            for line in lines:
                stream.write(line + b"\n")
            stream.flush()
        except BrokenPipeError:
            # Python's own recipe: stdout must not be flushed again at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell reports it
        except OSError as error:
            _fail(f"{self.path}: {error.strerror or error}")
        finally:
            if stream is not sys.stdout.buffer:
                stream.close()


def _same_file(path: str, other: str) -> bool:
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)  # hard links
    except OSError:
        return False  # one of them does not exist yet


@app.command(
    argument("input_file", metavar="INPUT"),
    option("--output", "-o", default="-", help="Limit events, one JSON per line ('-': stdout)."),
    option("--dead-letters", default=None, help="Dead-letter records, one JSON per line."),
    option("--policy", default=None, help="Policy TOML file (default: the packaged policy)."),
    *_REPLAY_OPTIONS,
)
async def replay_command(
    self: AppCommand,
    input_file: str,
    output: str,
    dead_letters: str | None,
    policy: str | None,
    partitions: int | None,
    until: str | None,
    now: str | None,
) -> None:
    """Replay a JSON-lines file of Kafka records through the risk core."""
    _note_policy_file_unused("replay", policy, "--policy")
    loaded = _policy_option(policy)
    if dead_letters is not None and (
        dead_letters == output == "-" or (dead_letters != "-" and _same_file(dead_letters, output))
    ):
        _fail(f"--dead-letters {dead_letters} is also --output: one would be read as the other")
    limit_events = _Output(output, input_file)
    dead_letter_lines = None if dead_letters is None else _Output(dead_letters, input_file)
    run = _replay_run(input_file, partitions, until, now, as_read=True)
    with _input_errors(input_file):  # the second pass's, which the core may find too
        result = replay(
            run.records, loaded, partitions=run.partitions, until=run.until, now=run.now,
            topics=run.topics, earliest=run.earliest,
        )  # fmt: skip
    limit_events.write_lines(d.to_json(wall_micros()) for d in result.decisions)
    if dead_letter_lines is not None:
        import orjson

        dead_letter_lines.write_lines(orjson.dumps(letter) for letter in result.dead_letters)
    total = result.processed + result.duplicates + result.dead_lettered
    print(
        f"records={result.records} processed={result.processed}"
        f" duplicates={result.duplicates} dead_lettered={result.dead_lettered}"
        f" decisions={len(result.decisions)}"
        f" {'balanced' if total == result.records else 'UNBALANCED'}",
        file=sys.stderr,
    )
    if total != result.records:
        raise SystemExit(1)


@app.command(
    argument("input_file", metavar="INPUT"),
    option("--candidate", required=True, help="The candidate policy TOML file."),
    option(
        "--baseline", default=None,
        help="The baseline policy TOML file (default: the packaged policy).",
    ),
    *_REPLAY_OPTIONS,
    option("--output", "-o", default="-", help="The report ('-': stdout)."),
    option(
        "--format", "report_format", type=click.Choice(["text", "json"]), default="text",
        help="text: tables for a person; json: one document for machines.",
    ),
    option(
        "--show", default=20, type=click.IntRange(min=0),
        help="Differing decisions, and as many alike ones reported differently, listed in the"
        " text report (0: their counts only).",
    ),
)  # fmt: skip
async def backtest_command(
    self: AppCommand,
    input_file: str,
    candidate: str,
    baseline: str | None,
    partitions: int | None,
    until: str | None,
    now: str | None,
    output: str,
    report_format: str,
    show: int,
) -> None:
    """Replay a JSON-lines file under two policies and compare their decisions."""
    _note_policy_file_unused("backtest", baseline, "--baseline")
    baseline_policy = _policy_option(baseline)
    candidate_policy = _policy_option(candidate)
    report_output = _Output(output, input_file, candidate, *([baseline] if baseline else []))
    run = _replay_run(input_file, partitions, until, now)
    result = backtest(
        run.records, baseline_policy, candidate_policy, partitions=run.partitions,
        until=run.until, now=run.now, topics=run.topics,
    )  # fmt: skip
    if report_format == "json":
        import orjson

        report = orjson.dumps(result.document(), option=orjson.OPT_INDENT_2)
    else:
        report = render_text(result, show=show).rstrip("\n").encode()
    for warning in result.warnings:
        print(f"lineguard: warning: {warning}", file=sys.stderr)
    report_output.write_lines([report])
    if not (result.baseline_records.balanced and result.candidate_records.balanced):
        _fail("the record counts do not add up (UNBALANCED): a bug in the core", code=1)


@app.command(argument("policy_file", metavar="FILE"))
async def check_policy(self: AppCommand, policy_file: str) -> None:
    """Validate a policy file; exit non-zero with the bad field named."""
    try:
        policy = load_policy(Path(policy_file))
    except PolicyError as error:
        _fail(f"{policy_file}: {error}", code=1)
        return
    print(
        f"{policy_file}: valid policy, version {policy.version}, fingerprint {policy.fingerprint}"
    )


class _Bounded(click.FloatRange):
    """A range of numbers that also refuses ``nan``, which no comparison with a bound catches."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or click's usage error naming the option."""
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


SIMULATE_MAX_USERS: Final = 1_000_000
SIMULATE_MAX_RATE: Final = 100_000.0
SIMULATE_MAX_DURATION: Final = 86_400.0
"""A day: compressed 14,400 times, the simulated clock then starts 39 years before the run,
still after 1970; much further and it would stamp records the contract refuses, or
overflow. Each bound also keeps the run's memory and time bounded: the simulator holds
every user, and stops only when the duration is over."""
_SIMULATED_USERS: Final = click.IntRange(1, SIMULATE_MAX_USERS)
_SIMULATED_RATE: Final = _Bounded(0, SIMULATE_MAX_RATE, min_open=True)
_SIMULATED_DURATION: Final = _Bounded(0, SIMULATE_MAX_DURATION, min_open=True)
"""``simulate`` and ``demo`` check their numbers with click, before anything starts: the
demo runs the same simulator, so the same bounds hold for it."""


@app.command(
    option("--users", default=1000, type=_SIMULATED_USERS, help="Simulated users."),
    option("--rate", default=200.0, type=_SIMULATED_RATE, help="Records per second."),
    option("--duration", default=60.0, type=_SIMULATED_DURATION,
           help="Seconds to run (at most a day)."),
    option("--seed", default=1, type=int, help="Seed: the same seed gives the same records."),
)  # fmt: skip
async def simulate(self: AppCommand, users: int, rate: float, duration: float, seed: int) -> None:
    """Produce persona traffic (see streams/simulate.py) to the configured input topics."""
    if rate * duration < 1:
        _fail(f"--rate {rate:g} for --duration {duration:g} s is less than one record")
    from aiokafka.errors import KafkaConnectionError

    from streams.preflight import bootstrap_servers, client_options
    from streams.simulate import run_simulation

    options = client_options(settings)
    bootstrap = ",".join(bootstrap_servers(settings.broker_url))
    try:
        stats = await run_simulation(
            bootstrap, users=users, rate=rate, duration=duration, seed=seed,
            topics=settings.input_topics,
            progress=lambda s: print(s.summary(), file=sys.stderr, flush=True),
            producer_options={k: v for k, v in options.items() if k != "bootstrap_servers"},
        )  # fmt: skip
    except KafkaConnectionError as error:
        _fail(f"cannot reach Kafka at {settings.broker_url}: {error}", code=4)
        return
    print(stats.summary())


@app.command(
    option("--duration", default=60.0, type=_SIMULATED_DURATION,
           help="Seconds to run before stopping (at most a day)."),
    option("--users", default=1000, type=_SIMULATED_USERS, help="Simulated users."),
    option("--rate", default=200.0, type=_SIMULATED_RATE, help="Records per second."),
    option("--seed", default=1, type=int, help="Simulator seed."),
)  # fmt: skip
async def demo(self: AppCommand, duration: float, users: int, rate: float, seed: int) -> None:
    """Start an embedded broker, a worker and the simulator, and show live figures."""
    from streams.demo import run_demo

    await run_demo(duration=duration, users=users, rate=rate, seed=seed)


CLI_HELP: Final = """lineguard: a real-time credit-line risk monitor.

Settings come from LINEGUARD_* environment variables (README, Settings); the commands
below take their own options (COMMAND --help). Start with `lineguard demo`.
"""

FAUST_WEB_OPTIONS: Final = ("web_host", "web_bind", "web_port", "web_transport")
"""Faust's worker options for its web server. They would override LINEGUARD_WEB_HOST and
LINEGUARD_WEB_PORT, and Faust's banner would name another address than the one it binds."""


REFUSED_COMMANDS: Final = {
    "agents": "it fails on lineguard's agent, which reads several topics; the worker's"
    " topics are in README, Settings",
    "clean-versions": "lineguard's app has one version, so there is no older one to delete",
    "completion": "it needs click_completion, which lineguard does not install",
    "livecheck": "lineguard has no LiveCheck app",
    "model": "lineguard's records are JSON, not Faust models (README, The contract)",
    "models": "lineguard's records are JSON, not Faust models (README, The contract)",
    "send": "produce test records with `lineguard simulate`, or with any Kafka client, keyed"
    " by user_id and partitioned by murmur2 (README, The contract)",
}
"""Faust's commands that fail or mean nothing in lineguard: hidden, and refused with a reason."""

FAUST_COMMAND_HELP: Final = {
    "worker": "Run the worker; its settings are LINEGUARD_* (README, Settings).",
    "reset": "Delete the local RocksDB state, unless a worker holds it.",
    "tables": "List the worker's tables.",
}
"""What Faust's commands that lineguard keeps do here, for ``--help``."""

REFUSED_OPTIONS: Final = {
    "app": "lineguard runs its own app; Faust's {option} would load another",
    "datadir": "the data directory is LINEGUARD_DATADIR; Faust's {option} would be ignored,"
    " and its lock and checks with it",
}
"""Faust's top-level options that have no meaning in lineguard, by parameter name."""


@dataclass(frozen=True, slots=True)
class _CommandLine:
    """The command a ``lineguard`` command line runs, found past Faust's top-level options."""

    name: str
    root: click.Context
    command: click.Context

    def given(self, *names: str) -> list[str]:
        """The options among ``names`` (parameter names) given on the command line."""
        return [
            "/".join(param.opts)
            for context in (self.root, self.command)
            for param in context.command.params
            if param.name in names
            and context.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
        ]


def _command_line(argv: list[str]) -> _CommandLine | None:
    """Parse ``argv`` as click will, without side effects; None if click will refuse it.

    Faust's top-level options (``-l info``, ``-D dir``, ``--json`` ...) may come before the
    command: the checks that ``worker`` needs must not depend on it coming first.
    """
    from faust.cli.faust import cli

    try:
        root = click.Group.make_context(cli, "lineguard", list(argv), resilient_parsing=True)
        name, *rest = [*root.protected_args, *root.args]
        command = cli.commands[name]
        context = command.make_context(name, rest, parent=root, resilient_parsing=True)
    except (click.ClickException, ValueError, KeyError):
        return None
    return _CommandLine(name, root, context)


_DATADIR_CLAIM: list[Any] = []
"""The open lock file of the data directory this worker claimed, held until it exits."""


def _claim_datadir(
    datadir: Path, advice: str = "give each worker a data directory of its own"
) -> None:
    """Refuse a RocksDB data directory another live worker holds, before joining the group.

    Faust would join, take partitions, retry RocksDB's own lock for 30 s and crash, and the
    group would rebalance twice for nothing, again at every restart. ``reset`` takes the
    same lock, so that it never deletes the state under a running worker. The lock goes
    with the process, however it ends.
    """
    import fcntl

    datadir.mkdir(parents=True, exist_ok=True)
    claim = (datadir / "worker.lock").open("a+")
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        claim.seek(0)
        holder = claim.read().strip() or "unknown"
        claim.close()
        _fail(
            f"LINEGUARD_DATADIR {datadir} is in use by another lineguard worker (pid {holder}):"
            f" {advice}"
        )
    claim.truncate(0)
    claim.write(f"{os.getpid()}\n")
    claim.flush()
    _DATADIR_CLAIM.append(claim)


def _check_web_port(host: str, port: int) -> None:
    """Stop, naming the setting, if the web server could not listen there.

    Faust would fail later, with a traceback, after joining the group.
    """
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        _fail(f"LINEGUARD_WEB_HOST: cannot resolve {host}: {error}")
    for family, kind, proto, _, address in addresses[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                _fail(
                    f"LINEGUARD_WEB_PORT: cannot listen on {host}:{port} ({error.strerror}):"
                    " another process may be using it; choose another port"
                )


def _absolute_workdir(argv: list[str], absolute: str) -> None:
    """Give Faust's ``-W``/``--workdir`` (or ``F_WORKDIR``) as an absolute path, in place.

    Faust changes into it twice, when it looks for the app and again when it prepares the
    command, so a relative one was taken from itself the second time (``sub/sub``) and
    ended in a traceback.
    """
    os.environ["F_WORKDIR"] = absolute  # Faust's default for the option, and its record
    for index, arg in enumerate(argv):
        if arg in ("-W", "--workdir") and index + 1 < len(argv):
            argv[index + 1] = absolute
        elif arg.startswith("--workdir="):
            argv[index] = f"--workdir={absolute}"
        elif arg.startswith("-W") and arg != "-W":
            argv[index] = f"-W{absolute}"


def main() -> None:
    """Console entry point: ``lineguard``.

    Before ``worker`` starts Faust, the topics are created and checked, so that a
    cluster with differently partitioned inputs is refused with a clear message. A
    cluster that cannot be reached stops it too (status 4), for its supervisor to retry.
    Faust's commands and options that fail or mean nothing here are refused in one line
    (status 2) rather than left to end in a traceback or to be ignored.
    """
    if sys.argv[1:2] == ["--version"]:
        from importlib.metadata import version

        print(f"lineguard {version('lineguard')} (faust-streaming {faust.__version__})")
        return
    from faust.cli.faust import cli

    cli.help = CLI_HELP
    for name in REFUSED_COMMANDS:
        cli.commands[name].hidden = True
    for name, text in FAUST_COMMAND_HELP.items():
        cli.commands[name].help = cli.commands[name].short_help = text
    refused = {*FAUST_WEB_OPTIONS, "with_web", *REFUSED_OPTIONS}
    for command in (cli, cli.commands["worker"]):
        for param in command.params:
            if param.name in refused and isinstance(param, click.Option):
                param.hidden = True  # refused below: --help does not offer them
    line = _command_line(sys.argv[1:])
    if line is not None and line.name in REFUSED_COMMANDS:
        _fail(f"{line.name} is Faust's, and not lineguard's: {REFUSED_COMMANDS[line.name]}")
    for name, why in REFUSED_OPTIONS.items():
        for given in [] if line is None else line.given(name):
            _fail(why.format(option=given))
    workdir = None if line is None else line.root.params.get("workdir")
    if workdir and not Path(workdir).is_dir():  # Faust would chdir there, with a traceback
        _fail(f"-W/--workdir {workdir}: no such directory")
    if workdir and not Path(workdir).is_absolute():
        _absolute_workdir(sys.argv, str(Path(workdir).absolute()))
    if line is not None and line.name == "worker":
        faust_web = line.given(*FAUST_WEB_OPTIONS)
        if faust_web:
            _fail(
                "lineguard worker takes its web address from LINEGUARD_WEB_HOST and"
                f" LINEGUARD_WEB_PORT, not Faust's {', '.join(faust_web)} (--help for help)"
            )
        if line.command.params.get("with_web") is False:
            _fail(
                "lineguard worker always serves HTTP: the other workers forward /users to"
                " it, and /readyz and /metrics are its health (--without-web refused)"
            )
    asks_for_help = "--help" in sys.argv
    if line is not None and line.name in AGENTLESS_COMMANDS:
        # Faust declares each setting with a decorated getter, which mypy takes for a method.
        app.conf.autodiscover = False  # type: ignore[misc]
    if line is not None and line.name == "reset" and not asks_for_help:
        if not settings.store.startswith("rocksdb"):
            print(f"lineguard: LINEGUARD_STORE={settings.store} keeps no local state to delete")
            return
        _claim_datadir(settings.datadir, "stop it before lineguard reset")
    if line is not None and line.name == "worker" and not asks_for_help:
        import asyncio

        from aiokafka.errors import KafkaError

        from streams.preflight import PreflightError, prepare_topics

        worker_policy()  # a bad policy stops the worker before it contacts the broker
        if settings.store.startswith("rocksdb"):
            _claim_datadir(settings.datadir)
        _check_web_port(settings.web_host, settings.web_port)
        try:
            asyncio.run(prepare_topics(settings))
        except PreflightError as error:
            _fail(str(error), code=3)
        except KafkaError as error:
            _fail(f"cannot reach Kafka at {settings.broker_url}: {error}", code=4)
    app.main()
