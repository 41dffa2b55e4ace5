"""The coordinator's care of the job's queues: a fresh job starts from empty work queues, an
ending one takes back the tasks nobody started, and the dead-letter queue (which has x-expires)
is touched hourly so it does not expire mid-job."""

from __future__ import annotations

import logging
import time

from common.amqp import Broker
from common.codec import Codec
from common.topology import Topology
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore

log = logging.getLogger("fedmq.coordinator")
TOUCH_SECONDS = 3600


class Housekeeping:
    def __init__(self, topology: Topology, codec: Codec, core: CoordinatorCore,
                 commit: Commit) -> None:
        self.topology, self.codec, self.core, self.commit = topology, codec, core, commit
        self.touched = time.monotonic()  # the dead-letter queue's last use

    def purge_leftovers(self, broker: Broker) -> None:
        """A fresh job starts from empty work queues: leftovers belong to an earlier job."""
        for queue in (self.topology.tasks, self.topology.updates, self.topology.eval_reports):
            dropped = broker.purge(queue)
            if dropped:
                log.warning("purged %d leftover messages from %s", dropped, queue)

    def take_back_tasks(self, broker: Broker) -> None:
        """Remove the tasks still queued (they will not be trained) from the tasks in flight."""
        while (delivery := broker.get(self.topology.tasks)) is not None:
            self.core.take_back(self.codec.task_of(delivery.body))
            broker.ack(delivery)
            self.commit.changed()

    def touch_dead_letters(self, broker: Broker) -> None:
        """Hourly: a passive declare counts as a use of the dead-letter queue."""
        if time.monotonic() - self.touched > TOUCH_SECONDS:
            broker.queue_depth(self.topology.dead)
            self.touched = time.monotonic()
