"""Federated evaluation on the worker's side: evaluate global versions on the local validation
split when the coordinator asks (coordinator/federated_eval.py has the other side).

Requests arrive on a private queue bound to the evaluations fanout. A worker evaluates a request
only if the sample picks it (a hash of its id and the version, so the coordinator's share holds
across the fleet without any coordination). Evaluations never build a backlog nor wait for
training, which runs in its own thread on another model instance: a request that comes while an
evaluation runs waits in one slot, where a newer one replaces it, and is evaluated next (as the
coordinator's own evaluation does), so the final version's request is never lost behind an
earlier one. The report (metrics and the validation size) goes to the inbox.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from common import learning_task
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import BrokerUnavailable, DecodeError
from common.learning_task import LearningTask
from common.messages import EvalReport, EvalRequest
from common.topology import EVAL_REPORT_KEY, Topology
from worker.model_source import ModelSource

log = logging.getLogger("fedmq.worker")


def sampled(worker_id: str, version: int, share: float) -> bool:
    """Whether this worker evaluates `version`: a uniform draw from a hash, below `share`."""
    digest = hashlib.sha256(f"{worker_id}:{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < share


class LocalEvaluation:
    """A second model instance, compiled with the task's loss and metrics, and the split."""

    def __init__(self, worker_id: str, task: LearningTask | None, build: Callable[[], Any],
                 x_val: np.ndarray, y_val: np.ndarray, topology: Topology, codec: Codec,
                 trusted: Mapping[str, Any] | None, recipients: Mapping[str, Any] | None,
                 models: ModelSource, stop: threading.Event) -> None:
        self.worker_id, self.x_val, self.y_val = worker_id, x_val, y_val
        self.topology, self.codec, self.trusted, self.recipients = (topology, codec, trusted,
                                                                    recipients)
        self.models, self.stop = models, stop
        self.model = build()
        # the built-in classifiers' loss and accuracy are LearningTask's defaults
        learning_task.compile_model(self.model, task or LearningTask(build_model=build),
                                    learning_rate=0.1)
        self.lock = threading.Lock()
        self.running: int | None = None  # the version the evaluation thread evaluates, if any
        self.pending: EvalRequest | None = None  # the newest request waiting
        self.broker: Broker | None = None  # the current connection (set again on a reconnect)
        self.done = 0
        self.skipped = 0  # requests not evaluated: a newer (or the same) version ran or waited

    def subscribe(self, broker: Broker) -> None:
        self.broker = broker
        queue = broker.private_queue(self.topology.evaluations)
        broker.consume(queue, self.on_request, auto_ack=True)

    def on_request(self, delivery: Delivery) -> None:
        try:
            request = self.codec.decode(delivery.body, EvalRequest, self.trusted).message
        except DecodeError as exc:
            log.warning("ignored an evaluation request that cannot be opened: %s", exc.reason)
            return
        if not sampled(self.worker_id, request.version, request.sample):
            return
        with self.lock:
            if self.running is not None:
                waiting = self.pending
                if request.version <= self.running or (
                        waiting is not None and request.version <= waiting.version):
                    self.skipped += 1  # that version, or a newer one, is evaluated already
                    return
                if waiting is not None:
                    self.skipped += 1  # the one waiting is replaced by this newer one
                self.pending = request
                return
            self.running = request.version
        try:
            threading.Thread(target=self._run, args=(request,), daemon=True).start()
        except RuntimeError:
            with self.lock:
                self.running = None
            raise

    @property
    def busy(self) -> bool:
        """An evaluation thread is running."""
        return self.running is not None

    def _run(self, request: EvalRequest) -> None:
        """Evaluation thread: this request, then the one waiting, until none is."""
        job: EvalRequest | None = request
        try:
            while job is not None:
                if not self.stop.is_set():
                    self._evaluate(job)
                with self.lock:  # taking the one waiting and going idle are one step
                    job, self.pending = self.pending, None
                    self.running = None if job is None else job.version
        except BaseException:
            with self.lock:
                self.running, self.pending = None, None
            raise

    def _evaluate(self, request: EvalRequest) -> None:
        """Evaluation thread: touches the broker only through call_threadsafe, on the connection
        current when it asks (a request kept over a reconnect reports on the new one)."""
        try:
            broker = self.broker
            assert broker is not None, "requests come only once subscribed"
            model = self.models.at_least(broker, request.version, self.stop)
            self.model.set_weights(list(model.weights))
            scores = self.model.evaluate(self.x_val, self.y_val, verbose=0, return_dict=True)
            report = EvalReport(worker_id=self.worker_id, request_version=request.version,
                                version=model.version, num_examples=len(self.y_val),
                                metrics={k: float(v) for k, v in scores.items()})
            body = self.codec.encode(report, self.recipients)
            sender = self.broker
            assert sender is not None
            sender.call_threadsafe(lambda: self._send(sender, body))
        except BrokerUnavailable:
            log.info("connection lost during an evaluation; it is not reported")
        except Exception:
            log.exception("evaluation of version %d failed", request.version)

    def _send(self, broker: Broker, body: bytes) -> None:
        broker.publish(self.topology.inbox, EVAL_REPORT_KEY, body)
        self.done += 1
