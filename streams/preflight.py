"""Start-up checks against the cluster, before the worker's consumer subscribes.

The input topics must be co-partitioned, or one user's events would be split
between workers, and have ``LINEGUARD_TOPIC_PARTITIONS`` partitions: each user's
state lives on the partition murmur2 of the user id picks among that many, so the
count of an existing deployment cannot change in place (:func:`refuse_other_counts`).
Missing topics are created with the configured partition count first, so that no
broker auto-creates them with its own default, and missing dead-letter topics with
room for the largest record their input topic takes plus the dead letter's headers
(:func:`dead_letter_max_bytes`). A dead letter goes to its record's partition of the
dead-letter topic, so an existing one needs at least its input's partitions
(:func:`refuse_small_dead_letter_topics`). The limit events may have any count: the
producer spreads them by user over the topic's own partitions, and consumers rely on
per-user order only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import faust
import structlog
from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.settings import Settings, tls_context

log = structlog.get_logger(__name__)

KAFKA_MAX_MESSAGE_BYTES: Final = 1_048_588
"""Kafka's default ``message.max.bytes``: the largest record batch a topic takes unless its
``max.message.bytes`` or the broker's setting says otherwise."""

DEAD_LETTER_HEADROOM: Final = 64 * 1024
"""Bytes a dead letter may take beyond its input record: the ``dlt.*`` headers (the error
is cut at 500 characters, the topic name at Kafka's 249) and a record batch's framing come
to a few KB at most."""

PRODUCER_MAX_REQUEST_SIZE: Final = 64 * 1024 * 1024
"""The worker's producer ``max_request_size``: the largest record it sends.

aiokafka checks it on each record before queueing it, and raises
``MessageSizeTooLargeError`` then; Faust's default, 1,000,000, is below Kafka's own record
limit, so a dead letter of a record the input topic took could not be sent and the worker
stopped, again after each restart. 64 MiB is sixty times Kafka's default limit and below
the broker's default request limit (``socket.request.max.bytes``, 100 MiB). The broker's
``max.message.bytes`` still decides; a dead letter above either limit is sent with a note
for its value (``streams.runtime.Runtime._dead_letter_without_value``)."""


class PreflightError(RuntimeError):
    """The cluster is not fit to run lineguard on; the message says how."""


def bootstrap_servers(broker_url: str) -> list[str]:
    """``kafka://h1:9092;h2:9092`` to ``["h1:9092", "h2:9092"]``."""
    hosts = broker_url.split("://", 1)[-1]
    return [host for host in hosts.replace(",", ";").split(";") if host]


def kafka_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured security protocol; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = tls_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL"):
        assert settings.kafka_sasl_username and settings.kafka_sasl_password  # noqa: S101
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username.get_secret_value(),
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return faust.SSLCredentials(context)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options for a plain aiokafka client.

    They come from Faust's own mapping of the worker's credentials, so the admin client
    and the simulator connect exactly as the worker's consumer and producer do.
    """
    return {
        "bootstrap_servers": bootstrap_servers(settings.broker_url),
        **credentials_to_aiokafka_auth(kafka_credentials(settings)),
    }


def required_topics(settings: Settings) -> list[str]:
    """Every topic the worker reads or writes, apart from Faust's internal ones."""
    return [
        *settings.input_topics,
        settings.tick_topic,
        settings.limit_events_topic,
        *dead_letter_topics(settings),
    ]


def partitioned_topics(settings: Settings) -> list[str]:
    """The topics that must have ``LINEGUARD_TOPIC_PARTITIONS`` partitions, as the users do.

    The inputs, the ticks and the table's changelog (Faust names it
    ``<app id>-<table>-changelog``; the table is ``users``) are co-partitioned: partition *p*
    of each holds the same users.
    """
    return [*settings.input_topics, settings.tick_topic, f"{settings.app_id}-users-changelog"]


def refuse_other_counts(settings: Settings, counts: Mapping[str, int]) -> None:
    """Stop start-up, in one line, unless the co-partitioned topics have the setting's count.

    ``counts`` holds the partition counts of topics of :func:`partitioned_topics`. A worker
    that ran on topics of another count than the setting's disagreed with ``lineguard
    replay``, whose default is the setting, and the topics it created later (a new input,
    the ticks of a new app id) got the setting's count, which the next start refused.
    """
    refuse_partitionless(counts)
    wanted = settings.topic_partitions
    listing = ", ".join(f"{name}: {count}" for name, count in counts.items())
    if len(set(counts.values())) > 1:
        raise PreflightError(
            f"the input topics, {settings.tick_topic} and {settings.app_id}-users-changelog"
            " must have the same number of partitions (co-partitioned, all keyed by user_id"
            f" with murmur2), but they have {listing} (LINEGUARD_TOPIC_PARTITIONS is"
            f" {wanted}). Partitions added in place split each user's state: see README,"
            " Changing the partition count." + _ticks_alone(settings, counts)
        )
    found = next(iter(counts.values()), wanted)
    if found != wanted:
        raise PreflightError(
            f"LINEGUARD_TOPIC_PARTITIONS is {wanted}, but the existing topics have {found}"
            f" partitions ({listing}). A user's state lives on the partition murmur2 of the"
            " user id picks among that count, so the count of a deployment cannot change in"
            f" place: set LINEGUARD_TOPIC_PARTITIONS={found}, or migrate (README, Changing the"
            " partition count)."
        )


def refuse_partitionless(counts: Mapping[str, int]) -> None:
    """Stop start-up, in one line, if an existing topic lists no partitions.

    A topic being deleted does: counted as 0 partitions, it was taken for a deployment of 0
    (``set LINEGUARD_TOPIC_PARTITIONS=0``), or for a too small dead-letter topic.
    """
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise PreflightError(
            f"the topics {', '.join(empty)} exist but have no partitions, as a topic being"
            " deleted has: start lineguard again once the deletion is done."
        )


def _ticks_alone(settings: Settings, counts: Mapping[str, int]) -> str:
    """A hint when only the ticks topic differs: it holds no state, so it can go."""
    others = {count for name, count in counts.items() if name != settings.tick_topic}
    if settings.tick_topic not in counts or len(others) != 1:
        return ""
    (count,) = others
    then = "." if count == settings.topic_partitions else f", which must then be {count}."
    return (
        f" Only {settings.tick_topic} differs: it holds ticks, no state, so with every worker"
        " stopped it can be deleted; start-up creates it again with LINEGUARD_TOPIC_PARTITIONS"
        " partitions" + then
    )


def refuse_small_dead_letter_topics(settings: Settings, counts: Mapping[str, int]) -> None:
    """Stop start-up, in one line, if an existing ``.dlt`` topic is smaller than its input.

    ``counts`` holds the partition counts of existing ``.dlt`` topics. A dead letter goes to
    its record's partition; aiokafka raised ``AssertionError: Unrecognized partition`` for
    one beyond the topic's count, and the worker stopped, read the record again after each
    restart and stopped again. More partitions than the input are harmless: the extra ones
    stay empty. The inputs have ``LINEGUARD_TOPIC_PARTITIONS`` (:func:`refuse_other_counts`).
    """
    refuse_partitionless(counts)
    wanted = settings.topic_partitions
    small = [
        f"{topic}.dlt has {counts[f'{topic}.dlt']} partitions and needs at least {wanted},"
        f" those of {topic}"
        for topic in settings.input_topics
        if counts.get(f"{topic}.dlt", wanted) < wanted
    ]
    if small:
        raise PreflightError(
            "a dead-letter topic has fewer partitions than its input topic: "
            + "; ".join(small)
            + ". A rejected record goes to its own partition number there. Add partitions to"
            " it (kafka-topics --alter --partitions), or delete it and let lineguard create it."
        )


def dead_letter_topics(settings: Settings) -> list[str]:
    """Each input topic's dead-letter topic."""
    return [f"{topic}.dlt" for topic in settings.input_topics]


def dead_letter_max_bytes(input_limits: Mapping[str, int | None]) -> int:
    """``max.message.bytes`` for the dead-letter topics: room for any input record's dead letter.

    ``input_limits`` is each input topic's ``max.message.bytes``, None where the cluster did
    not say (then Kafka's default is assumed).
    """
    largest = max((limit or KAFKA_MAX_MESSAGE_BYTES for limit in input_limits.values()), default=0)
    return max(largest, KAFKA_MAX_MESSAGE_BYTES) + DEAD_LETTER_HEADROOM


async def prepare_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics, then refuse to run unless the inputs are co-partitioned.

    Existing co-partitioned topics of another count than the setting's, and existing
    dead-letter topics of fewer, stop start-up before anything is created
    (:func:`refuse_other_counts`, :func:`refuse_small_dead_letter_topics`).

    The dead-letter topics are created after the others, once the input topics'
    ``max.message.bytes`` can be read (:func:`dead_letter_max_bytes`). An existing
    dead-letter topic is left as it is, with a warning if it allows less.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Before anything is created: a topic made with the wrong count would stay behind.
        refuse_other_counts(
            settings, await _partition_counts(
                admin, [t for t in partitioned_topics(settings) if t in existing]
            ),
        )  # fmt: skip
        dead_letters = dead_letter_topics(settings)
        refuse_small_dead_letter_topics(
            settings, await _partition_counts(admin, [t for t in dead_letters if t in existing])
        )
        missing = [name for name in required_topics(settings) if name not in existing]
        refused = await _create(admin, settings, [t for t in missing if t not in dead_letters])
        limits = await _max_message_bytes(
            admin, [*settings.input_topics, *(t for t in dead_letters if t in existing)]
        )
        room = dead_letter_max_bytes({topic: limits.get(topic) for topic in settings.input_topics})
        for topic in dead_letters:
            limit = limits.get(topic)
            if topic in existing and limit is not None and limit < room:
                log.warning(
                    "dead_letter_topic_too_small", topic=topic, max_message_bytes=limit,
                    needed=room,
                )  # fmt: skip
        refused += await _create(
            admin, settings, [t for t in missing if t in dead_letters],
            {"max.message.bytes": str(room)},
        )  # fmt: skip
        _refuse_creation_errors(refused)
        counts = await _partition_counts(admin, [*settings.input_topics, settings.tick_topic])
    finally:
        await admin.close()
    absent = [name for name, count in counts.items() if count == 0]
    if absent:
        raise PreflightError(
            f"the topics {', '.join(absent)} have no partitions: they do not exist, and the"
            " cluster did not create them. Create them, or let lineguard's client create topics."
        )
    refuse_other_counts(settings, counts)  # another worker may have created them meanwhile
    return counts


async def _partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Each topic's partition count, 0 for one that does not exist."""
    if not topics:
        return {}
    described = await admin.describe_topics(topics)
    return {topic["topic"]: len(topic["partitions"]) for topic in described}


async def _create(
    admin: Any, settings: Settings, topics: list[str], configs: dict[str, str] | None = None
) -> list[tuple[Any, ...]]:
    """Create ``topics``; each one's creation error, as aiokafka returns them."""
    if not topics:
        return []
    response = await admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=configs or {},
            )
            for name in topics
        ]
    )
    return list(response.topic_errors)


async def _max_message_bytes(admin: Any, topics: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes``, where the cluster says.

    Kafka reports it for every topic, its default included; the development broker, Tansu,
    only where a topic was created with it (and does not enforce it: measured with Tansu
    0.6.0, a 5,000-byte record went into a topic of ``max.message.bytes`` 2,000). A cluster
    that refuses DescribeConfigs (no permission) leaves Kafka's default assumed.
    """
    # Every config, unfiltered: Tansu closes the connection on a DescribeConfigs that names
    # the configs it wants (measured with Tansu 0.6.0).
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    try:
        responses = await admin.describe_configs(resources)
    except errors.KafkaError as error:
        log.warning("topic_configs_unreadable", error=type(error).__name__)
        return {}
    limits: dict[str, int] = {}
    for response in responses:
        for code, _message, _type, name, entries, *_ in response.resources:
            if code:
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                    limits[name] = int(entry[1])
    return limits


def _refuse_creation_errors(topic_errors: list[tuple[Any, ...]]) -> None:
    """Stop start-up on a topic the cluster refused to create, naming it and the error.

    aiokafka's admin client returns per-topic errors without raising; unread, a refused
    creation left the worker subscribed to topics that do not exist, unready for good.
    """
    refused = [
        f"{topic}: {errors.for_code(code).__name__}" + (f" ({rest[0]})" if rest and rest[0] else "")
        for topic, code, *rest in topic_errors
        if code not in (0, errors.TopicAlreadyExistsError.errno)  # another worker was first
    ]
    if refused:
        raise PreflightError(
            "the cluster refused to create the topics lineguard needs: "
            + "; ".join(refused)
            + ". Check LINEGUARD_TOPIC_PARTITIONS, LINEGUARD_TOPIC_REPLICATION_FACTOR and the"
            " client's permission to create topics, or create them beforehand."
        )
