"""The broker side of federated evaluation (the math is in federated_eval.py): publish requests,
consume the workers' reports, write each round into the history, events and TensorBoard, and at
the end ask every worker for the final version and wait for them (up to --federated-eval-wait).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import DecodeError
from common.messages import EvalReport, EvalRequest
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator.admission import Admission
from coordinator.federated_eval import FederatedEvaluation, RoundSummary, primary
from coordinator.history import History
from coordinator.lifecycle import JobRecord
from coordinator.outbox import Outbox
from coordinator.progress import Progress

log = logging.getLogger("fedmq.coordinator")


class FederatedLoop:
    """One job's federated evaluation; `judges` says the target is checked on it (the
    coordinator holds no data of its own)."""

    def __init__(self, settings: CoordinatorSettings, topology: Topology, codec: Codec,
                 admission: Admission, outbox: Outbox, progress: Progress, record: JobRecord,
                 history: Callable[[], History], higher_is_better: Callable[[str], bool],
                 judges: bool) -> None:
        self.settings, self.topology, self.codec = settings, topology, codec
        self.admission, self.outbox, self.progress, self.record = (admission, outbox, progress,
                                                                   record)
        self.history = history
        self.judges = judges
        self.higher_is_better = higher_is_better
        self.rounds = FederatedEvaluation(higher_is_better)

    def consume(self, broker: Broker) -> None:
        broker.consume(self.topology.eval_reports, lambda d: self.on_report(broker, d),
                       prefetch=32)

    def request(self, broker: Broker, version: int, sample: float | None = None) -> None:
        share = self.settings.federated_eval_sample if sample is None else sample
        broker.publish(self.topology.evaluations, "",
                       self.codec.encode(EvalRequest(version=version, sample=share)),
                       persistent=False)

    def on_report(self, broker: Broker, delivery: Delivery) -> None:
        try:
            opened = self.codec.decode(delivery.body, EvalReport, self.admission.trusted())
        except DecodeError as exc:
            self.rounds.refused += 1
            log.warning("evaluation report that cannot be opened dropped: %s", exc.reason)
            broker.ack(delivery)
            return
        report, seal = opened.message, opened.seal
        if seal is not None and seal.signer != report.worker_id:
            # a registered site must not report (and weigh) under another site's name
            self.rounds.refused += 1
            log.warning("evaluation report dropped: signed by %r but names worker %r",
                        seal.signer, report.worker_id)
            broker.ack(delivery)
            return
        summary = self.rounds.add(report)
        broker.ack(delivery)  # metrics only: a report lost in a crash costs one worker's row
        if summary is not None:
            self._record(broker, summary)

    def _record(self, broker: Broker, summary: RoundSummary) -> None:
        metric = primary(summary.mean, self.settings.target_metric)
        worst, worker = summary.worst[metric]
        self.history().federated(summary.version, self.record.elapsed(), summary.mean[metric],
                                 summary.mean["loss"], worst, worker, summary.workers)
        self.progress.federated(summary.version, {f"federated_{metric}": summary.mean[metric],
                                                  f"worst_worker_{metric}": worst})
        wanted = self.settings.target_metric  # judged on it only (never on the loss fallback)
        if self.judges and wanted in summary.mean:
            self.record.scored(summary.mean[wanted], self.settings.target_accuracy,
                               higher_is_better=self.higher_is_better(wanted))
        self.outbox.event(broker, self.settings.job, "federated_evaluation",
                          version=summary.version, metric=metric,
                          value=round(summary.mean[metric], 6), worst=round(worst, 6),
                          worst_worker=worker, workers=summary.workers)

    def final(self, version: int, broker: Broker, expected: int,
              pump: Callable[[float], None]) -> None:
        """Ask every worker for `version` and wait for `expected` reports (or the timeout)."""
        self.request(broker, version, sample=1.0)
        deadline = time.monotonic() + self.settings.federated_eval_wait
        while time.monotonic() < deadline:
            summary = self.rounds.summary(version)
            if summary is not None and summary.workers >= expected:
                return
            pump(0.25)
        log.warning("final federated evaluation: %d of %d workers reported",
                    0 if self.rounds.summary(version) is None else
                    self.rounds.summary(version).workers, expected)  # type: ignore[union-attr]

    def results(self) -> dict[str, Any] | None:
        """summary.json's "federated": the last round, its mean, worst worker and each worker."""
        last = self.rounds.latest()
        if last is None:
            return None
        return {"version": last.version, "workers": last.workers, "examples": last.examples,
                "metric": primary(last.mean, self.settings.target_metric), "mean": last.mean,
                "worst": {name: {"value": value, "worker": worker}
                          for name, (value, worker) in last.worst.items()},
                "per_worker": last.per_worker, "refused_reports": self.rounds.refused}
