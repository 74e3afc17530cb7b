"""Start-up's topic checks when the cluster does not do what was asked.

The development broker creates any topic it is asked for, so the refusals a real Kafka
gives (no permission to create topics, a replication factor above the broker count) are
played by a fake admin client with the same answers as aiokafka's.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams import preflight
from streams.preflight import (
    DEAD_LETTER_HEADROOM,
    KAFKA_MAX_MESSAGE_BYTES,
    PreflightError,
    dead_letter_max_bytes,
    prepare_topics,
    refuse_other_counts,
    refuse_small_dead_letter_topics,
    required_topics,
)
from streams.settings import Settings

SETTINGS = Settings()


class FakeAdmin:
    """``list_topics``, ``create_topics`` and ``describe_topics`` as aiokafka answers them."""

    refusal: tuple[int, str] | None = None
    """The error code and message ``create_topics`` gives every topic; None creates them."""

    def __init__(self, **_options: Any) -> None:
        self.partitions: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_topics(self) -> list[str]:
        return list(self.partitions)

    async def create_topics(self, new_topics: list[Any]) -> Any:
        errors = []
        for topic in new_topics:
            if self.refusal is None:
                self.partitions[topic.name] = topic.num_partitions
                errors.append((topic.name, 0, None))
            else:
                errors.append((topic.name, *self.refusal))
        return SimpleNamespace(topic_errors=errors)

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        # A topic that does not exist comes back with no partitions, as in Kafka's metadata.
        return [{"topic": t, "partitions": list(range(self.partitions.get(t, 0)))} for t in topics]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        raise KafkaError("no DescribeConfigs here")  # as a cluster that denies it


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    class Admin(FakeAdmin):
        pass

    monkeypatch.setattr(preflight, "AIOKafkaAdminClient", Admin)
    return Admin


def test_created_topics_pass_with_the_configured_partition_count(admin: type[FakeAdmin]) -> None:
    counts = asyncio.run(prepare_topics(SETTINGS))
    assert counts == dict.fromkeys([*SETTINGS.input_topics, SETTINGS.tick_topic], 6)


def test_a_topic_the_cluster_refuses_to_create_stops_start_up_naming_it(
    admin: type[FakeAdmin],
) -> None:
    admin.refusal = (38, "Replication factor: 3 larger than available brokers: 1.")
    with pytest.raises(PreflightError) as refused:
        asyncio.run(prepare_topics(SETTINGS))
    message = str(refused.value)
    assert all(topic in message for topic in required_topics(SETTINGS))
    assert "InvalidReplicationFactorError (Replication factor: 3 larger" in message
    assert "LINEGUARD_TOPIC_REPLICATION_FACTOR" in message


def test_a_topic_another_worker_created_first_is_not_an_error(admin: type[FakeAdmin]) -> None:
    admin.refusal = (36, "Topic already exists.")

    class CreatedMeanwhile(admin):  # type: ignore[valid-type,misc]
        async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
            return [{"topic": t, "partitions": list(range(6))} for t in topics]

    preflight.AIOKafkaAdminClient = CreatedMeanwhile  # type: ignore[misc]  # undone by monkeypatch
    assert set(asyncio.run(prepare_topics(SETTINGS)).values()) == {6}


def test_topics_another_worker_created_with_another_count_meanwhile_stop_start_up(
    admin: type[FakeAdmin],
) -> None:
    admin.refusal = (36, "Topic already exists.")

    class CreatedMeanwhile(admin):  # type: ignore[valid-type,misc]
        async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
            return [{"topic": t, "partitions": [0, 1, 2]} for t in topics]

    preflight.AIOKafkaAdminClient = CreatedMeanwhile  # type: ignore[misc]  # undone by monkeypatch
    with pytest.raises(PreflightError, match="LINEGUARD_TOPIC_PARTITIONS is 6, but the existing"):
        asyncio.run(prepare_topics(SETTINGS))


def _existing(admin: type[FakeAdmin], counts: dict[str, int]) -> type[FakeAdmin]:
    """``admin`` on a cluster that already holds ``counts``' topics with those counts."""

    class Existing(admin):  # type: ignore[valid-type,misc]
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.partitions.update(counts)

    preflight.AIOKafkaAdminClient = Existing  # type: ignore[misc]  # undone by monkeypatch
    return Existing


def _refused_before_creating(admin: type[FakeAdmin], counts: dict[str, int]) -> str:
    """The one line start-up stops with on a cluster holding ``counts``, having created nothing."""
    existing = _existing(admin, counts)
    made: list[str] = []

    async def create_topics(self: FakeAdmin, new_topics: list[Any]) -> Any:
        made.extend(topic.name for topic in new_topics)
        return await FakeAdmin.create_topics(self, new_topics)

    existing.create_topics = create_topics  # type: ignore[method-assign]
    with pytest.raises(PreflightError) as refused:
        asyncio.run(prepare_topics(SETTINGS))
    assert made == []
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_existing_inputs_of_another_count_than_the_setting_stop_start_up_before_any_creation(
    admin: type[FakeAdmin],
) -> None:
    """Inputs of 3 partitions and the setting's 6: the ticks topic, created with 6, was
    refused as if the inputs disagreed, and stayed behind to refuse the corrected setting."""
    message = _refused_before_creating(admin, dict.fromkeys(SETTINGS.input_topics, 3))
    assert message.startswith("LINEGUARD_TOPIC_PARTITIONS is 6, but the existing topics have 3")
    assert f"{SETTINGS.purchases_topic}: 3" in message
    assert "set LINEGUARD_TOPIC_PARTITIONS=3" in message


def test_a_changelog_of_another_count_than_the_inputs_stops_start_up(
    admin: type[FakeAdmin],
) -> None:
    """Inputs and ticks repartitioned to the setting, the state's changelog left behind: each
    user's state would stay on the partition the old count picked, apart from the records."""
    changelog = f"{SETTINGS.app_id}-users-changelog"
    _existing(
        admin, {**dict.fromkeys([*SETTINGS.input_topics, SETTINGS.tick_topic], 6), changelog: 3}
    )
    with pytest.raises(PreflightError) as refused:
        asyncio.run(prepare_topics(SETTINGS))
    assert "must have the same number of partitions" in str(refused.value)
    assert f"{changelog}: 3" in str(refused.value)


def test_a_ticks_topic_left_at_another_count_is_named_as_deletable_and_the_others_not(
    admin: type[FakeAdmin],
) -> None:
    changelog = f"{SETTINGS.app_id}-users-changelog"
    _existing(
        admin, {**dict.fromkeys([*SETTINGS.input_topics, changelog], 6), SETTINGS.tick_topic: 3}
    )
    with pytest.raises(PreflightError) as refused:
        asyncio.run(prepare_topics(SETTINGS))
    message = str(refused.value)
    assert f"{SETTINGS.tick_topic}: 3" in message
    assert f"Only {SETTINGS.tick_topic} differs" in message
    assert "Changing the partition count" in message
    assert "\n" not in message
    _existing(
        admin, {**dict.fromkeys([*SETTINGS.input_topics, SETTINGS.tick_topic], 6), changelog: 3}
    )
    with pytest.raises(PreflightError) as refused:
        asyncio.run(prepare_topics(SETTINGS))
    assert "can be deleted" not in str(refused.value)  # the changelog holds the state


@pytest.mark.parametrize(
    "topic", [SETTINGS.tick_topic, f"{SETTINGS.app_id}-users-changelog", SETTINGS.purchases_topic]
)
def test_a_topic_without_partitions_is_refused_as_being_deleted_not_as_a_count_of_zero(
    topic: str,
) -> None:
    """A topic being deleted lists with no partitions: no ``LINEGUARD_TOPIC_PARTITIONS=0``,
    and no start without the changelog."""
    counts = dict.fromkeys(SETTINGS.input_topics, 6) | {topic: 0}
    with pytest.raises(PreflightError) as refused:
        refuse_other_counts(SETTINGS, counts)
    assert str(refused.value) == (
        f"the topics {topic} exist but have no partitions, as a topic being deleted has:"
        " start lineguard again once the deletion is done."
    )


def test_a_dead_letter_topic_being_deleted_is_not_called_too_small() -> None:
    dead_letters = f"{SETTINGS.purchases_topic}.dlt"
    with pytest.raises(PreflightError, match=f"{dead_letters} exist but have no partitions"):
        refuse_small_dead_letter_topics(SETTINGS, {dead_letters: 0})


def test_the_ticks_hint_says_which_count_the_setting_must_then_have() -> None:
    """Defect 101's case: the setting is the ticks topic's count, the others another."""
    settings = Settings(topic_partitions=3)
    counts = {**dict.fromkeys([*SETTINGS.input_topics, f"{SETTINGS.app_id}-users-changelog"], 6)}
    with pytest.raises(PreflightError) as refused:
        refuse_other_counts(settings, counts | {SETTINGS.tick_topic: 3})
    assert str(refused.value).endswith(
        "LINEGUARD_TOPIC_PARTITIONS partitions, which must then be 6."
    )


def test_topics_that_still_do_not_exist_stop_start_up(admin: type[FakeAdmin]) -> None:
    admin.refusal = (0, "")  # accepted, yet never created (a broker that ignores the request)
    with pytest.raises(PreflightError, match="have no partitions: they do not exist"):
        asyncio.run(prepare_topics(SETTINGS))


def test_dead_letter_topics_take_the_largest_input_record_and_its_headers() -> None:
    assert dead_letter_max_bytes({"a": None, "b": None}) == (
        KAFKA_MAX_MESSAGE_BYTES + DEAD_LETTER_HEADROOM
    )
    assert dead_letter_max_bytes({"a": 5_000_000, "b": None}) == 5_000_000 + DEAD_LETTER_HEADROOM
    assert dead_letter_max_bytes({"a": 1_000}) == KAFKA_MAX_MESSAGE_BYTES + DEAD_LETTER_HEADROOM


@pytest.mark.integration
def test_dead_letter_topics_are_created_with_room_for_their_inputs_largest_record(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """A dead letter is its record plus about 150 bytes of headers: a ``.dlt`` topic with the
    input's own limit would refuse the dead letter of a record just under it.

    Tansu stores and reports topic configs given at creation (it does not enforce
    ``max.message.bytes``); Kafka reports every topic's, defaults included.
    """
    fields = ("purchases", "repayments", "loan_applications", "income_verifications")
    topics = {
        f"{field}_topic": f"{unique_prefix}.{field}" for field in (*fields, "limit_overrides")
    }
    settings = Settings(
        broker_url=f"kafka://{kafka_bootstrap}",
        app_id=unique_prefix,
        limit_events_topic=f"{unique_prefix}.limits",
        **topics,
    )
    purchases = settings.input_topics[0]

    async def run() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            configs = {"max.message.bytes": "5000000"}
            await admin.create_topics([NewTopic(purchases, 6, 1, topic_configs=configs)])
            await prepare_topics(settings)
            dlts = [f"{topic}.dlt" for topic in settings.input_topics]
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in dlts]
            )
        finally:
            await admin.close()
        return {
            resource[3]: entry[1]
            for response in responses
            for resource in response.resources
            for entry in resource[4]
            if entry[0] == "max.message.bytes"
        }

    limits = asyncio.run(run())
    expected = str(5_000_000 + DEAD_LETTER_HEADROOM)
    assert limits == {f"{topic}.dlt": expected for topic in settings.input_topics}


def test_an_existing_dead_letter_topic_of_fewer_partitions_than_its_input_stops_start_up(
    admin: type[FakeAdmin],
) -> None:
    """A dead letter goes to its record's partition: a ``.dlt`` topic of 2 partitions beside an
    input of 6 stopped the worker at the first rejected record of partitions 2 to 5."""
    purchases, repayments = SETTINGS.input_topics[:2]
    message = _refused_before_creating(admin, {f"{purchases}.dlt": 2, f"{repayments}.dlt": 9})
    assert (
        f"{purchases}.dlt has 2 partitions and needs at least 6, those of {purchases}." in message
    )
    assert repayments not in message  # more partitions than the input are harmless


def test_dead_letter_topics_of_as_many_partitions_as_their_inputs_or_more_pass(
    admin: type[FakeAdmin],
) -> None:
    purchases, repayments = SETTINGS.input_topics[:2]
    _existing(admin, {f"{purchases}.dlt": 6, f"{repayments}.dlt": 12})
    assert set(asyncio.run(prepare_topics(SETTINGS)).values()) == {6}
