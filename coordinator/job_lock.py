"""The broker-level lock on a job: one coordinator at a time, whatever its machine or --out.

The file lock on --out (checkpoint.lock) stops a second coordinator on the same directory only.
Before it purges, refills or publishes anything, a coordinator takes the one exclusive consumer
of the job's control queue `fedmq.<job>.coordinator` (Broker.claim). The broker refuses it to a
second coordinator, and frees it the moment the holder's connection dies (at once for a killed
process, within two heartbeats for a lost machine). A coordinator that cannot take it within that
time stops with one message and exit code 4 (JobInUse); a --standby waits for it instead.
docs/reliability.md, "A second coordinator".
"""

from __future__ import annotations

import logging
import threading
import time

from common.amqp import Broker
from common.errors import BrokerUnavailable, ConfigError
from common.topology import Topology

log = logging.getLogger("fedmq.coordinator")


class JobInUse(ConfigError):
    """Another coordinator holds the job."""

    exit_code = 4


class JobLock:
    """Take (and keep checking) the job's control queue for this coordinator's connection."""

    def __init__(self, topology: Topology, heartbeat: int, standby: bool) -> None:
        self.topology = topology
        self.grace = 2.0 * heartbeat + 5.0  # long enough for the broker to drop a dead holder
        self.standby = standby
        self.lost = threading.Event()

    def take(self, broker: Broker, stop: threading.Event) -> bool:
        """Hold the lock on `broker`'s connection; False if `stop` came first."""
        broker.declare_queue(self.topology.lock_queue(self.topology.control))
        self.lost.clear()
        deadline, logged = time.monotonic() + self.grace, False
        while not broker.claim(self.topology.control, on_lost=self.lost.set):
            if stop.is_set():
                return False
            if not self.standby and time.monotonic() > deadline:
                raise JobInUse(
                    f"job {self.topology.job!r} already has a coordinator (it holds "
                    f"{self.topology.control}); this one touches nothing and stops. Use another "
                    f"--job for a new job, or --standby to take this one over when it ends")
            if not logged:
                log.warning("job %r has another coordinator; waiting %s for it to go",
                            self.topology.job, "as a standby" if self.standby
                            else f"up to {self.grace:.0f}s")
                logged = True
            broker.process(1.0)
            # (a lost cluster node takes the transient queue with it: common/topology.py)
            broker.declare_queue(self.topology.lock_queue(self.topology.control))
        return True

    def check(self) -> None:
        """Start the session over (and take the lock again) if the control queue went away."""
        if self.lost.is_set():
            raise BrokerUnavailable(f"{self.topology.control} was deleted: taking the job lock "
                                    "again")
