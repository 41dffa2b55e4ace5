"""Where the coordinator reports progress besides its log: Prometheus metrics and TensorBoard.

The service calls one method per happening (an update received, its outcome, an evaluation, the
end); this module fans it out, so the broker loop stays free of observability code.
`tensorboard --logdir <out>/tensorboard` shows the scalars live while the job runs: evaluation
accuracy and loss by version, staleness and reported training time by accepted update.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from common.messages import WeightUpdate
from common.settings import CoordinatorSettings
from coordinator.core import Outcome
from coordinator.evaluation import Score
from coordinator.metrics import CoordinatorMetrics

TENSORBOARD_DIR = "tensorboard"


class ScalarLog:
    """TensorBoard event files (the scalar plugin's tensor summaries, as tf.summary writes them),
    built as protocol buffers and written by tensorboard's own event-file writer on its thread.

    Not through tf.summary: its eager ops and a flush per accepted update took 15 % of the
    coordinator's time at 4 MB (`fedmq bench scale`). The writer flushes every FLUSH_SECONDS
    (TensorBoard stays live) and at `close`."""

    FLUSH_SECONDS = 1

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(directory), flush_secs=self.FLUSH_SECONDS)

    def write(self, step: int, **values: float) -> None:
        for name, value in values.items():
            self._writer.add_event(Event(wall_time=time.time(), step=step,
                                         summary=scalar_pb(name, float(value))))

    def close(self) -> None:
        self._writer.close()


class Progress:
    """Metrics and TensorBoard scalars of one coordinator run."""

    def __init__(self, settings: CoordinatorSettings, scalars: ScalarLog | None = None) -> None:
        self.settings = settings
        self.metrics = CoordinatorMetrics()
        self.scalars = scalars or ScalarLog(settings.out / TENSORBOARD_DIR)
        self.accepted = 0  # updates accepted so far: the step of per-update scalars
        self.applied = 0
        if settings.metrics_port:
            self.metrics.serve(settings.metrics_port, settings.metrics_address)

    def received(self) -> None:
        self.metrics.received.inc()

    def outcome(self, outcome: Outcome, update: WeightUpdate | None) -> None:
        """One update's fate: rejected, duplicate, or accepted (applied now or buffered)."""
        if update is not None:
            self.metrics.train_seconds.observe(update.train_seconds)
        if outcome.kind == "rejected":
            self.metrics.rejected.labels(reason=outcome.code or "unknown").inc()
        elif outcome.kind == "duplicate":
            self.metrics.duplicates.inc()
        elif update is not None:
            self.accepted += 1
            staleness = outcome.staleness or 0
            self.metrics.staleness.observe(staleness)
            self.scalars.write(self.accepted, staleness=staleness,
                               worker_train_seconds=update.train_seconds)

    def new_version(self, version: int, applied_total: int) -> None:
        """A new global version, reflecting `applied_total` updates in all (a FedBuff flush
        applies several at once)."""
        self.metrics.applied.inc(applied_total - self.applied)
        self.applied = applied_total
        self.metrics.version.set(version)

    def evaluated(self, version: int, score: Score) -> None:
        if score.accuracy is not None:
            self.metrics.accuracy.set(score.accuracy)
        self.metrics.loss.set(score.loss)
        self.scalars.write(version, **{f"eval_{name}": value
                                       for name, value in score.metrics.items()})

    def federated(self, version: int, values: dict[str, float]) -> None:
        """A federated evaluation round's mean and worst worker's metrics (TensorBoard)."""
        self.scalars.write(version, **values)

    def finish(self, stop: threading.Event) -> None:
        """Close the event files; keep /metrics up for --metrics-linger-seconds."""
        self.scalars.close()
        self.metrics.linger(self.settings.metrics_linger_seconds, stop)
