"""Service settings: ``LINEGUARD_``-prefixed environment variables, validated at start-up.

Faust reads its own unprefixed variables (``BROKER_URL`` ...) and lets them
override code. The app is built with an empty Faust environment instead, so
these settings are the only source of configuration.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.devbroker import TANSU_FAST_JOIN, TANSU_FETCH_MAX_WAIT

MIN_API_TOKEN_LENGTH = 16
TOPIC_NAME = r"^[A-Za-z0-9._-]{1,245}$"
"""A name Kafka accepts (at most 249 characters), with room for the ``.dlt`` suffix."""
FAUST_REQUEST_TIMEOUT: Final = 90.0
"""Faust's ``broker_request_timeout``, which lineguard leaves at its default. Faust refuses a
session timeout above it, and a JoinGroup request waits up to the rebalance timeout."""
HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
"""A host name (RFC 1123 labels), as opposed to an IP address."""
PREFIX: Final = "LINEGUARD_"
NOT_SETTINGS: Final = frozenset({"LINEGUARD_TEST_BOOTSTRAP", "LINEGUARD_FULL_ADVERSARIAL"})
"""``LINEGUARD_`` variables the tests read (a real Kafka for the integration tests, the long
adversarial runs), which the worker ignores."""


SASL_FIELDS: Final = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
TLS_FIELDS: Final = (
    "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password",
)  # fmt: skip


class Settings(BaseSettings):
    """Everything the worker reads from its environment; a bad value stops start-up."""

    # Pydantic puts every input value in its errors, secrets included: only messages are shown.
    model_config = SettingsConfigDict(
        env_prefix="LINEGUARD_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    app_id: str = Field("lineguard", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    broker_url: str = Field("kafka://localhost:9092", pattern=r"^(kafka|aiokafka)://\S+$")
    store: str = Field("memory://", pattern=r"^(memory|rocksdb)://")
    rocksdb_block_cache_mib: int = Field(64, ge=1, le=65536)
    """RocksDB's block cache of each partition's database, in MiB (Faust's default is 2 GiB
    each, which holds a state larger than memory in memory after all)."""
    rocksdb_write_buffer_mib: int = Field(64, ge=1, le=4096)
    """Each of the three write buffers of each partition's database, in MiB."""
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    clock: Literal["stream", "wall"] = "stream"
    policy_file: Path | None = None
    datadir: Path = Path("lineguard-data")
    web_host: str = "127.0.0.1"
    """The interface the web server listens on, loopback unless told otherwise."""
    web_port: int = Field(6066, ge=1, le=65535)
    canonical_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$")
    """How the other workers reach this one, for forwarding ``/users/{id}``. By default the
    web host, or this machine's hostname when the web host is a wildcard such as 0.0.0.0,
    which names no host the others could use."""

    @field_validator("web_host")
    @classmethod
    def _one_interface(cls, host: str) -> str:
        """An IP address or a host name: an empty host would listen on every interface."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if HOSTNAME.fullmatch(host) is None:
                raise ValueError(
                    f"{host!r} is neither an IP address nor a host name; listen on every"
                    " interface only with an explicit 0.0.0.0 or ::"
                ) from None
        return host

    def rocksdb_options(self) -> dict[str, int]:
        """Faust's RocksDB options for the table, from these settings."""
        return {
            "block_cache_size": self.rocksdb_block_cache_mib << 20,
            "write_buffer_size": self.rocksdb_write_buffer_mib << 20,
        }

    def worker_url(self) -> str:
        """The URL other workers forward ``/users/{id}`` requests to."""
        if self.canonical_url is not None:
            return self.canonical_url
        wildcard = self.web_host in ("0.0.0.0", "::")  # noqa: S104 - compared, not bound
        host = socket.gethostname() if wildcard else self.web_host
        if ":" in host:  # an IPv6 address goes in brackets, or its colons read as a port
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    api_token: SecretStr | None = None
    """Bearer token for ``/users/{id}``, which serves personal data."""
    api_allow_anonymous: bool = False
    """Serve ``/users/{id}`` without a token. Off: a worker with no token refuses it."""
    topic_partitions: int = Field(6, ge=1, le=10000)
    topic_replication_factor: int = Field(1, ge=1, le=10)
    purchases_topic: str = Field("credit.purchases.v1", pattern=TOPIC_NAME)
    repayments_topic: str = Field("credit.repayments.v1", pattern=TOPIC_NAME)
    loan_applications_topic: str = Field("credit.loan-applications.v1", pattern=TOPIC_NAME)
    income_verifications_topic: str = Field("credit.income-verifications.v1", pattern=TOPIC_NAME)
    limit_overrides_topic: str = Field("credit.limit-overrides.v1", pattern=TOPIC_NAME)
    limit_events_topic: str = Field("credit.limit-events.v1", pattern=TOPIC_NAME)
    max_idle: float = Field(1.0, ge=0, le=60, allow_inf_nan=False)
    """Seconds an empty input partition whose lag is not known yet may hold back the event-time
    merge; one the broker still has unread data for holds it until the data arrives."""
    batch_max_records: int = Field(4000, ge=1, le=100_000)
    """The most records applied, emitted, written and acked as one batch. Each batch waits
    for the broker twice (its limit events, then its changelog records), about 15 ms on
    the development broker whatever its size: with 4,000 a worker catching up ran about
    15% faster than with 1,000 (2026-12-03). Live traffic makes small batches anyway; a
    backlog's batch takes about 0.3 s, which a rebalance waits for."""
    producer_linger: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    """Seconds the producer waits to fill a request with more records. A batch's limit
    events are sent together and then awaited, so they fill requests while the first is in
    flight; waiting longer only delays the batch (5 ms of linger cost p50 decision lag about
    10 ms at 5,000 events/s, and no throughput). The changelog goes in closed batches."""
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    """The codec of the record batches the worker writes: limit events, dead letters, the
    changelog and ticks. Consumers decompress them by themselves; none by default, as
    before, since compressing costs the worker CPU for every batch."""
    wall_sweep_interval: float = Field(1.0, gt=0, le=3600, allow_inf_nan=False)
    broker_session_timeout: float = Field(60.0, gt=0, le=FAUST_REQUEST_TIMEOUT, allow_inf_nan=False)
    """At most Faust's request timeout (90 s), which Faust would refuse only once topics exist."""
    broker_heartbeat_interval: float = Field(3.0, gt=0, allow_inf_nan=False)
    """Below the session timeout, checked below."""
    broker_rebalance_timeout: float = Field(
        60.0, gt=0, le=FAUST_REQUEST_TIMEOUT, allow_inf_nan=False
    )
    """At most Faust's request timeout (90 s): the JoinGroup request waits that long at most."""
    broker_commit_interval: float = Field(2.8, gt=0, le=60, allow_inf_nan=False)
    """At most a minute: a crash redelivers the records applied since the last commit."""
    consumer_fetch_max_wait: float = Field(0.5, gt=0, le=30, allow_inf_nan=False)
    """Seconds the broker may hold a Fetch with nothing to return (Kafka's ``fetch.max.wait.ms``;
    Faust would fix it at 1.5). It bounds how stale a caught-up partition's lag is, which
    the event-time merge waits on."""
    dev_broker: Literal["tansu"] | None = None
    """``tansu``: the embedded development broker; enables its shims and fast joins."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: SecretStr | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    """The password of an encrypted ``kafka_ssl_keyfile``."""
    _tls_context: ssl.SSLContext | None = PrivateAttr(None)
    """Built once, while the settings are checked, and shared by every Kafka client."""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: Any) -> Any:
        """A misspelt variable must not leave its setting silently at the default."""
        problem = unknown_variable(os.environ, cls.variables())
        if problem is not None:
            raise ValueError(problem)
        return data

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile", "kafka_ssl_certfile",
        "kafka_ssl_keyfile", "kafka_ssl_key_password", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable is no setting: a template may list every one it leaves unset."""
        return None if value == "" else value

    @field_validator("datadir", "policy_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Made absolute where the command started, so that it names what the user meant.

        Faust's command line may change directory later (``-W``/``--workdir``,
        ``F_WORKDIR``): the state would move, and the agent, which loads the policy once
        Faust has changed directory, would read another file or none.
        """
        return None if path is None else path.absolute()

    @classmethod
    def variables(cls) -> list[str]:
        """The environment variable of every setting."""
        return [PREFIX + name.upper() for name in cls.model_fields]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self._check_api_access()
        self._check_kafka_security()
        if self.processing_guarantee == "exactly_once" and self.store.startswith("rocksdb"):
            # Faust's table writes RocksDB before the transaction that holds the changelog
            # records commits: after an abort, a restart on the same data directory keeps
            # states the changelog never got, and the records read again are duplicates.
            raise ValueError(
                f"{PREFIX}STORE={self.store} cannot be used with"
                f" {PREFIX}PROCESSING_GUARANTEE=exactly_once: RocksDB would keep the states of"
                " aborted transactions; use memory://, which recovers from the changelog"
            )
        if self.policy_file is not None and not self.policy_file.is_file():
            raise ValueError(f"LINEGUARD_POLICY_FILE: no such file: {self.policy_file}")
        self._check_topics_distinct()
        if self.broker_heartbeat_interval >= self.broker_session_timeout:
            raise ValueError(
                "LINEGUARD_BROKER_HEARTBEAT_INTERVAL must be below LINEGUARD_BROKER_SESSION_TIMEOUT"
            )
        return self

    def _check_kafka_security(self) -> None:
        """The protocol's credentials are there and usable, and nothing is set that it ignores.

        Ignored, a CA file or SASL credentials set without the protocol that uses them would
        leave every connection unencrypted or anonymous without a word.
        """
        protocol = self.kafka_security_protocol
        chosen = f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}"
        if protocol.startswith("SASL"):
            if not (self.kafka_sasl_username and self.kafka_sasl_password):
                raise ValueError(
                    f"{PREFIX}KAFKA_SASL_USERNAME and {PREFIX}KAFKA_SASL_PASSWORD are required"
                    f" with {chosen}"
                )
        else:
            self._refuse_ignored(
                SASL_FIELDS, f"{chosen} uses no SASL: set SASL_PLAINTEXT or SASL_SSL"
            )
        if not protocol.endswith("SSL"):
            self._refuse_ignored(TLS_FIELDS, f"{chosen} uses no TLS: set SSL or SASL_SSL")
            return
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                f"{PREFIX}KAFKA_SSL_CERTFILE and {PREFIX}KAFKA_SSL_KEYFILE go together"
            )
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_keyfile is None:
            raise ValueError(f"{PREFIX}KAFKA_SSL_KEY_PASSWORD is set without a key file")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{PREFIX}{name.upper()}: no such file: {path}")
        # A file it cannot use stops start-up here, naming its variable.
        self._tls_context = _load_tls_context(self)

    def _refuse_ignored(self, fields: tuple[str, ...], why: str) -> None:
        """Refuse a setting the protocol ignores; its default is no setting."""
        for name in fields:
            value = getattr(self, name)
            if value is not None and value != type(self).model_fields[name].default:
                raise ValueError(f"{PREFIX}{name.upper()} is set, but {why}, or unset it")

    def _check_topics_distinct(self) -> None:
        """Every topic the worker reads or writes has a name of its own.

        Two inputs of one name would be merged as one; limit events or dead letters written
        to an input would be consumed again as input.
        """
        fields = (
            "purchases_topic", "repayments_topic", "loan_applications_topic",
            "income_verifications_topic", "limit_overrides_topic",
        )  # fmt: skip
        named: dict[str, str] = {}
        topics = [(getattr(self, field), f"{PREFIX}{field.upper()}") for field in fields]
        topics.append((self.limit_events_topic, f"{PREFIX}LIMIT_EVENTS_TOPIC"))
        topics += [
            (f"{getattr(self, field)}.dlt", f"the dead letters of {PREFIX}{field.upper()}")
            for field in fields
        ]
        topics.append((self.tick_topic, f"the ticks topic of {PREFIX}APP_ID"))
        # Faust names a table's changelog <app id>-<table>-changelog; the table is `users`.
        topics.append((f"{self.app_id}-users-changelog", f"the state changelog of {PREFIX}APP_ID"))
        for topic, variable in topics:
            if topic in named:
                raise ValueError(
                    f"{named[topic]} and {variable} both name the topic {topic!r}: every"
                    " topic the worker reads or writes needs a name of its own"
                )
            named[topic] = variable

    def _check_api_access(self) -> None:
        """An empty or short token would let a guess in; a token and anonymous access clash."""
        if self.api_token is None:
            return
        token = self.api_token.get_secret_value()
        if len(token) < MIN_API_TOKEN_LENGTH or any(char.isspace() for char in token):
            raise ValueError(
                f"LINEGUARD_API_TOKEN must be at least {MIN_API_TOKEN_LENGTH} characters,"
                " without spaces: a short token can be guessed"
            )
        if self.api_allow_anonymous:
            raise ValueError(
                "LINEGUARD_API_ALLOW_ANONYMOUS=true contradicts LINEGUARD_API_TOKEN: set one"
            )

    @property
    def tick_topic(self) -> str:
        """Internal topic, co-partitioned with the inputs, that wakes partitions for timers."""
        return f"{self.app_id}-ticks"

    @property
    def input_topics(self) -> tuple[str, str, str, str, str]:
        """The input topics in the contract's order, which breaks event-time ties."""
        return (
            self.purchases_topic,
            self.repayments_topic,
            self.loan_applications_topic,
            self.income_verifications_topic,
            self.limit_overrides_topic,
        )

    def broker_timeouts(self) -> dict[str, float]:
        """Session, heartbeat and rebalance timeouts; the dev broker's fast joins unless set."""
        return {
            name: self._dev_broker_default(name, fast) for name, fast in TANSU_FAST_JOIN.items()
        }

    def producer_compression_type(self) -> str | None:
        """The producer's ``compression_type``: None, not ``"none"``, for no compression."""
        return None if self.producer_compression == "none" else self.producer_compression

    def fetch_max_wait(self) -> float:
        """The consumer's fetch wait: short on the dev broker unless set, as it waits it out."""
        return self._dev_broker_default("consumer_fetch_max_wait", TANSU_FETCH_MAX_WAIT)

    def _dev_broker_default(self, name: str, tansu: float) -> float:
        """Setting ``name``, or ``tansu`` on the development broker when it was not set."""
        if self.dev_broker == "tansu" and name not in self.model_fields_set:
            return tansu
        value: float = getattr(self, name)
        return value


def unknown_variable(environ: Mapping[str, str], variables: list[str]) -> str | None:
    """The first ``LINEGUARD_`` variable in ``environ`` that is no setting, with a suggestion."""
    known = set(variables) | NOT_SETTINGS
    for name in sorted(environ):
        upper = name.upper()  # the settings are read case-insensitively
        if upper.startswith(PREFIX) and upper not in known:
            # Compared without the prefix, which every name shares and would make any close.
            close = difflib.get_close_matches(
                upper.removeprefix(PREFIX), [v.removeprefix(PREFIX) for v in variables], n=1
            )
            hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
            return f"{name} is not a lineguard setting{hint} (see the README, Settings)"
    return None


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of every Kafka client, loaded once when the settings were checked."""
    context = settings._tls_context
    assert context is not None, "only a protocol with TLS has one"  # noqa: S101
    return context


def _load_tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the settings' files; a file it cannot use names its variable.

    An encrypted key without ``kafka_ssl_key_password`` is refused rather than prompted
    for: OpenSSL would ask on the terminal, and a worker has none to answer on.
    """
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"{PREFIX}KAFKA_SSL_CAFILE: not usable as CA certificates: {error}"
        ) from None
    certfile, keyfile = settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
    if certfile is None or keyfile is None:
        return context
    secret = settings.kafka_ssl_key_password

    def key_password() -> str:
        if secret is None:
            raise ValueError(
                f"{PREFIX}KAFKA_SSL_KEYFILE is encrypted: set {PREFIX}KAFKA_SSL_KEY_PASSWORD"
            )
        return secret.get_secret_value()

    try:
        context.load_cert_chain(certfile, keyfile, password=key_password)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"{PREFIX}KAFKA_SSL_CERTFILE and {PREFIX}KAFKA_SSL_KEYFILE: not usable as a client"
            f" certificate and its key (or {PREFIX}KAFKA_SSL_KEY_PASSWORD is wrong): {error}"
        ) from None
    return context
