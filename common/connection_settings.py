"""The settings of the connection to the broker, shared by every role and operator tool: the AMQP
URLs (one, or a cluster's nodes), the job id, heartbeat, message, chunk and body size limits, and
the TLS files. Part of common/settings.py."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.broker_urls import split_urls
from common.limits import BROKER_HARD_LIMIT, DEFAULT_CHUNK_BYTES, GiB, MiB


class ConnectionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)

    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F",
                          description="AMQP URL of the RabbitMQ broker (amqps:// for TLS); for "
                                      "a cluster, its nodes' URLs separated by commas: the "
                                      "first that answers is used, the next after a loss.")
    job: str = Field("", pattern=r"^[A-Za-z0-9_-]*$",
                     description="Job id (letters, digits, - and _); queues become "
                                 "fedmq.<job>.tasks etc. Empty: the plain fedmq.* names.")
    heartbeat: int = Field(30, ge=0, description="AMQP heartbeat interval in seconds.")
    max_message_bytes: int = Field(16 * MiB, gt=0,
                                   description="Largest message (one chunk) accepted or sent; at "
                                               "most the broker's max_message_size (RabbitMQ 3.x: "
                                               "128 MiB, 4.x: 16 MiB) and never above 512 MiB.")
    chunk_bytes: int | None = Field(None, gt=0,
                                    description="Bodies larger than this travel as chunks of this "
                                                "size; at most --max-message-bytes. Unset: 4 MiB, "
                                                "or --max-message-bytes if that is smaller.")
    max_body_bytes: int = Field(2 * GiB, gt=0,
                                description="Largest whole body (a model or an update, however "
                                            "many chunks) accepted or sent.")
    log_level: str = Field("INFO", description="Python logging level.")
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the broker's "
                                     "certificate (amqps:// URLs); unset: the system CAs.")
    tls_cert_file: Path | None = Field(None, description="Client certificate (PEM) for brokers "
                                       "that require one (mutual TLS).")
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of --tls-cert-file.")

    @field_validator("amqp_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return ",".join(split_urls(value))

    @property
    def amqp_urls(self) -> list[str]:
        """The broker URLs of --amqp-url (one, or a cluster's nodes)."""
        return self.amqp_url.split(",")

    @field_validator("max_message_bytes")
    @classmethod
    def _within_broker_limit(cls, value: int) -> int:
        if value > BROKER_HARD_LIMIT:
            raise ValueError(f"{value} bytes is over 512 MiB ({BROKER_HARD_LIMIT}), which "
                             f"RabbitMQ refuses whatever its max_message_size")
        return value

    @model_validator(mode="after")
    def _chunk_fits_a_message(self) -> ConnectionSettings:
        if self.chunk_bytes is not None and self.chunk_bytes > self.max_message_bytes:
            raise ValueError(f"chunk_bytes ({self.chunk_bytes}) is over max_message_bytes "
                             f"({self.max_message_bytes}): every chunk is one message; lower "
                             f"--chunk-bytes or raise --max-message-bytes")
        return self

    @property
    def chunk_size(self) -> int:
        """The chunk size in use: --chunk-bytes, or 4 MiB capped by --max-message-bytes."""
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        return min(DEFAULT_CHUNK_BYTES, self.max_message_bytes)

    @model_validator(mode="after")
    def _tls_files_need_amqps(self) -> ConnectionSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        uses_tls = self.tls_ca_file or self.tls_cert_file
        if uses_tls and not self.amqp_url.startswith("amqps://"):
            raise ValueError("TLS files are set but amqp_url is not amqps://")
        return self
