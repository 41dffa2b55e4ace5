"""The coordinator's settings for the job's queues on the broker: the dead-letter queue's bounds,
how long unused job queues live (docs/reliability.md, "Dead letters and old queues") and how many
nodes of a cluster hold a copy of each (docs/deploy.md, "A cluster")."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.limits import MiB
from common.topology import QueueLimits

HOUR_MS = 3600 * 1000


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)

    dead_letter_max_messages: int = Field(100_000, ge=1, description="The dead-letter queue "
                                          "keeps at most this many messages (the oldest go).")
    dead_letter_max_bytes: int = Field(256 * MiB, ge=1, description="The dead-letter queue "
                                       "keeps at most this many bytes of bodies (the oldest go).")
    dead_letter_ttl_hours: float = Field(168.0, gt=0, description="A dead letter is dropped "
                                         "after this many hours.")
    dead_letter_body_bytes: int = Field(64 * 1024, ge=0, description="A rejected body larger "
                                        "than this is dead-lettered cut to this size (its "
                                        "reason and size kept in headers).")
    queue_expiry_hours: float = Field(168.0, gt=0, description="The broker deletes a job's "
                                      "queue once nobody has used it for this many hours.")
    queue_replicas: int | None = Field(None, ge=1, description="Nodes holding a copy of each "
                                       "of the job's quorum queues (x-quorum-initial-group-size; "
                                       "odd: 3 survives one lost node); unset: the broker's "
                                       "default.")

    def queue_limits(self) -> QueueLimits:
        return QueueLimits(dead_max_messages=self.dead_letter_max_messages,
                           dead_max_bytes=self.dead_letter_max_bytes,
                           dead_ttl_ms=int(self.dead_letter_ttl_hours * HOUR_MS),
                           expires_ms=int(self.queue_expiry_hours * HOUR_MS),
                           replicas=self.queue_replicas)
