"""The commit protocol: checkpoint, then publish, then ack; the order that loses nothing.

What the updates received since the last commit changed is written to the checkpoint first; only
then are the new tasks published, the new versions announced and the updates acked. A crash at
any moment therefore loses nothing that was acked, and an update applied but not yet acked is
redelivered and recognised by its id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.amqp import Broker, Delivery
from common.messages import TrainTask


@dataclass
class Commit:
    """What is decided but not yet carried out; `run` carries it out in the safe order."""

    save: Callable[[], None] | None  # None: no checkpoint (acks go out at once)
    publish_task: Callable[[Broker, TrainTask], None]
    announce: Callable[[Broker, list[dict[str, Any]]], None]
    dirty: bool = False
    tasks: list[TrainTask] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)  # "version" event fields
    acks: list[Delivery] = field(default_factory=list)

    def changed(self) -> None:
        """Something the checkpoint holds has changed."""
        self.dirty = True

    def task(self, task: TrainTask) -> None:
        self.tasks.append(task)
        self.dirty = True

    def version(self, fields: dict[str, Any]) -> None:
        self.versions.append(fields)
        self.dirty = True

    def ack(self, broker: Broker, delivery: Delivery) -> None:
        """Ack once the checkpoint holds what the delivery changed (at once without one)."""
        self.dirty = True
        if self.save is None:
            broker.ack(delivery)
        else:
            self.acks.append(delivery)

    def forget_acks(self) -> None:
        """A new connection: the deliveries of the lost one are redelivered by the broker."""
        self.acks = []

    def run(self, broker: Broker) -> None:
        """Checkpoint what changed, then publish tasks, announce versions and ack updates."""
        if not self.dirty:
            return
        if self.save is not None:
            self.save()
        self.dirty = False
        while self.tasks:
            self.publish_task(broker, self.tasks[0])
            self.tasks.pop(0)
        if self.versions:
            self.announce(broker, self.versions)
            self.versions = []
        for delivery in self.acks:
            broker.ack(delivery)
        self.acks = []
