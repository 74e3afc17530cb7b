"""Start-up checks against the cluster, before the worker's consumer subscribes.

The input topics must be co-partitioned, or one user's events would be split
between workers. Missing topics are created with the configured partition
count first, so that no broker auto-creates them with its own default.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.settings import Settings


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
    context: ssl.SSLContext | None = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
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
        *(f"{topic}.dlt" for topic in settings.input_topics),
    ]


async def prepare_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics, then refuse to run unless the inputs are co-partitioned."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in required_topics(settings) if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                    )
                    for name in missing
                ]
            )
            _refuse_creation_errors(response.topic_errors)
        described = await admin.describe_topics([*settings.input_topics, settings.tick_topic])
    finally:
        await admin.close()
    counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
    absent = [name for name, count in counts.items() if count == 0]
    if absent:
        raise PreflightError(
            f"the topics {', '.join(absent)} have no partitions: they do not exist, and the"
            " cluster did not create them. Create them, or let lineguard's client create topics."
        )
    if len(set(counts.values())) != 1:
        listing = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise PreflightError(
            "the input topics must have the same number of partitions (co-partitioned, all"
            f" keyed by user_id with murmur2), but they have {listing}. Repartition them, or"
            " point LINEGUARD_*_TOPIC at co-partitioned topics."
        )
    return counts


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
