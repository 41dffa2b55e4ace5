"""The end of a job: stop issuing, take back the tasks nobody started, wait for the updates of
tasks in hand, then refuse late ones (`job_finished`, so every update is decided), fold in what a
strategy still buffers and, with secure aggregation, wait for the helper's sums of the buffers
sealed last."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common.amqp import Broker
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore
from coordinator.housekeeping import Housekeeping
from coordinator.receiving import Receiver, VersionMade
from coordinator.secure_link import SecureLink

log = logging.getLogger("fedmq.coordinator")


class Drain:
    def __init__(self, settings: CoordinatorSettings, topology: Topology, core: CoordinatorCore,
                 receiver: Receiver, housekeeping: Housekeeping, commit: Commit,
                 secure: SecureLink | None, pump: Callable[[Broker, float], None],
                 version_made: VersionMade) -> None:
        self.settings, self.topology, self.core, self.receiver = settings, topology, core, receiver
        self.housekeeping, self.commit, self.secure = housekeeping, commit, secure
        self.pump, self.version_made = pump, version_made

    def run(self, broker: Broker) -> None:
        """Stop issuing; take back the tasks nobody started and wait (up to drain_seconds) for
        the updates of tasks in hand and for the updates queue to empty, so the job ends with
        its queues empty.

        A task can be in a worker's hands without being in flight: one redelivered because its
        first worker died after sending the update but before acking the task. So once nothing
        is in flight the drain still waits for a quiet spell as long as the longest training
        seen (plus a second) before it ends.
        """
        deadline = time.monotonic() + self.settings.drain_seconds
        while time.monotonic() < deadline:
            self.housekeeping.take_back_tasks(broker)
            if not self.core.tasks_in_flight and \
                    broker.queue_depth(self.topology.updates)[0] == 0 and \
                    self.receiver.quiet() and not (self.secure and self.secure.waiting()):
                break
            self.pump(broker, 0.25)
        self.housekeeping.take_back_tasks(broker)
        self.receiver.closed = True  # from now on an update is refused (job_finished), decided
        abandoned = self.core.abandon_in_flight()
        if abandoned:
            log.warning("%d tasks still in flight at the end; their updates will not count",
                        abandoned)
        if self.core.flush():
            self.version_made(None, "")
        self.commit.changed()
        self.commit.flush(broker)
        if self.secure is not None:  # flush sealed the partial buffer: ask for its sum too
            deadline = time.monotonic() + self.settings.drain_seconds
            while self.secure.waiting() and time.monotonic() < deadline:
                self.pump(broker, 0.25)
            self.commit.changed()
            self.commit.flush(broker)
