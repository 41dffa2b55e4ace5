"""Prometheus metrics of the coordinator, in a registry of its own (no global state).

Names follow Prometheus conventions: counters end in `_total`, durations are in seconds. The HTTP
endpoint serves `/metrics` on `--metrics-port` (0: no endpoint; the metrics are still counted).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("fedmq.metrics")
STALENESS_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
TRAIN_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CoordinatorMetrics:
    """Counters, gauges and histograms of one coordinator."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("fedmq_updates_received", "Updates taken from the updates queue.",
                                registry=r)
        self.applied = Counter("fedmq_updates_applied", "Updates folded into the global model.",
                               registry=r)
        self.rejected = Counter("fedmq_updates_rejected", "Updates rejected, by reason code.",
                                ["reason"], registry=r)
        self.duplicates = Counter("fedmq_updates_duplicate",
                                  "Redelivered updates recognised and ignored.", registry=r)
        self.staleness = Histogram("fedmq_update_staleness",
                                   "Staleness (versions behind) of applied updates.",
                                   buckets=STALENESS_BUCKETS, registry=r)
        self.train_seconds = Histogram("fedmq_worker_train_seconds",
                                       "Local training time reported by workers in their updates.",
                                       buckets=TRAIN_SECONDS_BUCKETS, registry=r)
        self.version = Gauge("fedmq_global_version", "Version of the global model.", registry=r)
        self.accuracy = Gauge("fedmq_eval_accuracy", "Held-out accuracy of the global model.",
                              registry=r)
        self.loss = Gauge("fedmq_eval_loss", "Held-out loss of the global model.", registry=r)
        self._server: Any = None

    def serve(self, port: int, address: str) -> None:
        """Start the /metrics endpoint in a daemon thread."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        log.info("Prometheus metrics on http://%s:%d/metrics", address, port)

    def linger(self, seconds: float, stop: threading.Event) -> None:
        """Keep the endpoint up for `seconds` (or until `stop`), then shut it down."""
        if self._server is None:
            return
        if seconds > 0:
            log.info("serving final metrics for %.0fs", seconds)
            stop.wait(seconds)
        self._server.shutdown()
        self._server.server_close()
        self._server = None
