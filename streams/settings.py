"""Service settings: ``LINEGUARD_``-prefixed environment variables, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the worker reads from its environment; a bad value stops start-up."""

    model_config = SettingsConfigDict(env_prefix="LINEGUARD_", extra="ignore")

    broker_url: str = "kafka://localhost:9092"
    store: str = Field("memory://", pattern=r"^(memory|rocksdb)://")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    clock: Literal["stream", "wall"] = "stream"
    policy_file: Path | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    api_token: SecretStr | None = None
    topic_partitions: int = Field(6, ge=1, le=10000)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: SecretStr | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
