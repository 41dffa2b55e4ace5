"""The coordinator's broker loop: consume updates, apply them, broadcast versions, evaluate, finish.

Everything runs on the pika I/O thread (evaluation of a small model takes milliseconds); decisions
are made by `CoordinatorCore`, this module only moves messages and writes results.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import leases, models, wire
from common.amqp import Broker, Delivery, connect, run_with_reconnect
from common.errors import DecodeError, RejectedUpdate
from common.messages import Event, GlobalModel, ModelRequest, WeightUpdate
from common.settings import CoordinatorSettings, TrainingSettings
from common.topology import Topology
from coordinator.core import CoordinatorCore, Outcome
from coordinator.evaluation import Evaluator, Score, held_out
from coordinator.intake import Intake
from coordinator.progress import Progress
from coordinator.results import History, plot_curves, write_history, write_summary
from coordinator.robust import RobustConfig
from coordinator.strategies import FedAsync, FedAvg, FedBuff, Strategy, make_staleness

log = logging.getLogger("fedmq.coordinator")
UPDATE_PREFETCH = 16
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to"


def make_strategy(settings: CoordinatorSettings) -> Strategy:
    if settings.strategy == "fedbuff":
        robust = RobustConfig(settings.aggregator, settings.byzantine_f, settings.norm_bound)
        return FedBuff(buffer_size=settings.buffer_size, server_lr=settings.server_lr,
                       momentum=settings.server_momentum,
                       weight_by_examples=settings.weight_by_examples,
                       robust=None if robust.is_plain_mean else robust)
    if settings.strategy == "fedavg":
        return FedAvg(cohort=settings.concurrency)
    staleness = make_staleness(settings.staleness, settings.staleness_a, settings.staleness_b)
    return FedAsync(alpha=settings.alpha, staleness_fn=staleness)


def task_options(settings: CoordinatorSettings) -> dict[str, Any]:
    """TrainTask fields beyond the training settings: local differential privacy."""
    return {"dp_clip_norm": settings.dp_clip_norm,
            "dp_noise_multiplier": settings.dp_noise_multiplier}


class CoordinatorService:
    """One job's coordinator; `run()` blocks until the job ends and returns its summary."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings.job)
        self.model_name = models.resolve_name(settings.model, settings.dataset)
        model = models.build(self.model_name, settings.seed)
        x_test, y_test = held_out(settings)
        models.check_compatible(model, x_test, y_test)
        self.evaluator = Evaluator(model, x_test, y_test)
        self.progress = Progress(settings)
        weights = [np.array(w) for w in model.get_weights()]
        self.fingerprint = models.fingerprint(weights)
        training = TrainingSettings(local_epochs=settings.local_epochs,
                                    batch_size=settings.batch_size,
                                    learning_rate=settings.learning_rate)
        strategy = make_strategy(settings)
        self.core = CoordinatorCore(weights=weights, strategy=strategy,
                                    max_staleness=0 if strategy.synchronous
                                    else settings.max_staleness,
                                    training=training, job=settings.job,
                                    task_options=task_options(settings))
        self.intake = Intake.from_settings(settings)
        self.stop_reason: str | None = None
        self.history = History()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.last_score: Score | None = None
        self.time_to_target: float | None = None
        self.bytes_received = 0
        self.purged_at_start = False
        self.workers_ready = settings.wait_for_workers == 0

    # ------------------------------------------------------------ lifecycle

    def run(self) -> dict[str, Any]:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        self.settings.out.mkdir(parents=True, exist_ok=True)
        self._evaluate()
        run_with_reconnect(self._session, self.stop)
        summary = self._write_results()
        self.progress.finish(self.stop)
        return summary

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _session(self) -> None:
        broker = connect(self.settings, "fedmq-coordinator")
        try:
            if not self.purged_at_start:  # before declaring, so no worker attaches to old leases
                leases.refill(broker, self.topology, self.settings.num_shards)
            broker.declare(self.topology)
            if not self.purged_at_start:
                self._purge_leftovers(broker)
            self._broadcast(broker)
            broker.consume(self.topology.updates, lambda d: self._on_update(broker, d),
                           prefetch=UPDATE_PREFETCH)
            broker.consume(self.topology.model_requests,
                           lambda d: self._on_model_request(broker, d), prefetch=8)
            self._wait_for_workers(broker)
            self._top_up(broker)
            while not self._done() and not self.stop.is_set():
                broker.process(0.25)
            if not self.stop.is_set():
                self._drain(broker)
                self._event(broker, "finished", version=self.core.version,
                            applied=self.core.applied, rejected=self.core.rejected_total)
        finally:
            broker.close()

    def _purge_leftovers(self, broker: Broker) -> None:
        """A fresh job starts from empty work queues: leftovers belong to an earlier job."""
        for queue in (self.topology.tasks, self.topology.updates):
            dropped = broker.purge(queue)
            if dropped:
                log.warning("purged %d leftover messages from %s", dropped, queue)
        self.purged_at_start = True

    def _wait_for_workers(self, broker: Broker) -> None:
        """With --wait-for-workers N: hold tasks (and the clock) until N workers consume them."""
        while not self.workers_ready and not self.stop.is_set():
            if broker.queue_depth(self.topology.tasks)[1] >= self.settings.wait_for_workers:
                self.workers_ready = True
                log.info("%d workers ready; starting the clock", self.settings.wait_for_workers)
                self.started = time.monotonic()
                self._evaluate()
            else:
                broker.process(0.25)

    def _done(self) -> bool:
        settings = self.settings
        reached = settings.stop_at_target and self.time_to_target is not None
        out_of_time = settings.max_seconds is not None and self.workers_ready and \
            self.elapsed() >= settings.max_seconds
        return reached or out_of_time or self.core.applied >= settings.max_updates or \
            self._out_of_budget()

    def _out_of_budget(self) -> bool:
        ledger = self.intake.ledger
        exceeding = ledger.next_exceeds() if ledger is not None else None
        if exceeding is not None and self.stop_reason is None:
            self.stop_reason = (f"privacy budget: one more update from {exceeding[0]} would "
                                f"spend epsilon {exceeding[1]:.3f} > budget "
                                f"{self.settings.dp_epsilon_budget} (delta "
                                f"{self.settings.dp_delta}); stopping at version "
                                f"{self.core.version}")
            log.warning("%s", self.stop_reason)
        return exceeding is not None

    def _drain(self, broker: Broker) -> None:
        """Stop issuing; wait (bounded) for updates of tasks that workers already started."""
        purged = broker.purge(self.topology.tasks)
        expected = max(0, len(self.core.in_flight) - purged)
        deadline = time.monotonic() + self.settings.drain_seconds
        received_before = self.core.received
        while self.core.received - received_before < expected and time.monotonic() < deadline:
            broker.process(0.25)
        self.core.in_flight.clear()
        if self.core.flush():
            self._new_version(broker, None, "")

    # ------------------------------------------------------------ messages

    def _on_update(self, broker: Broker, delivery: Delivery) -> None:
        self.bytes_received += len(delivery.body)
        self.progress.received()
        try:
            update = self.intake.open_update(delivery.body, self.core.issued)
        except DecodeError as exc:
            outcome = self.core.reject_undecodable(exc.reason)
            self._handle_outcome(broker, delivery, None, outcome)
        except RejectedUpdate as exc:
            outcome = self.core.reject(exc, self.intake.task_of(delivery.body))
            self._handle_outcome(broker, delivery, None, outcome)
        else:
            self._handle_outcome(broker, delivery, update, self.core.handle(update))
        broker.ack(delivery)
        self._top_up(broker)

    def _handle_outcome(self, broker: Broker, delivery: Delivery, update: WeightUpdate | None,
                        outcome: Outcome) -> None:
        self.progress.outcome(outcome, update)
        if outcome.kind == "rejected":
            log.warning("rejected update (%s)", outcome.reason)
            broker.publish(self.topology.dead_letter_exchange, "", delivery.body,
                           headers={"x-fedmq-reason": outcome.reason,
                                    "x-fedmq-code": outcome.code,
                                    "x-fedmq-queue": delivery.queue})
            self._event(broker, "rejected", code=outcome.code, reason=outcome.reason)
        elif outcome.kind == "duplicate":
            log.info("ignored duplicate update %s", update.update_id if update else "?")
        elif outcome.kind == "applied" and update is not None:
            self._new_version(broker, outcome.staleness, update.worker_id)

    def _new_version(self, broker: Broker, staleness: int | None, worker_id: str) -> None:
        """Record, broadcast and (every k versions) evaluate the version just made."""
        version = self.core.version
        epsilon = self.intake.epsilon()
        self.history.add(version, self.elapsed(), staleness, worker_id, epsilon=epsilon)
        self.progress.new_version(version, self.core.applied)
        self._broadcast(broker)
        self._event(broker, "version", version=version, staleness=staleness, worker=worker_id,
                    epsilon=epsilon)
        if version % self.settings.eval_every == 0:
            score = self._evaluate()
            self._event(broker, "evaluation", version=version, accuracy=round(score.accuracy, 6),
                        loss=round(score.loss, 6))

    def _on_model_request(self, broker: Broker, delivery: Delivery) -> None:
        try:
            request = wire.decode(delivery.body, ModelRequest, self.settings.max_message_bytes)
        except DecodeError as exc:
            log.warning("bad model request: %s", exc.reason)
        else:
            reply_to = delivery.reply_to or ""
            if reply_to.startswith(REPLY_TO_PREFIX):
                log.info("sending version %d to %s", self.core.version, request.worker_id)
                broker.publish("", reply_to, self._model_body(),
                               correlation_id=delivery.correlation_id, persistent=False)
            else:
                # replying to any other queue would let a worker make the coordinator publish
                # into queues the worker itself may not write to
                log.warning("ignored model request from %s: reply_to %r is not direct reply-to",
                            request.worker_id, reply_to)
        broker.ack(delivery)

    def _model_body(self) -> bytes:
        return self.intake.encode_model(GlobalModel(
            version=self.core.version, fingerprint=self.fingerprint,
            weights=tuple(self.core.weights)))

    def _broadcast(self, broker: Broker) -> None:
        broker.publish(self.topology.model, "", self._model_body(), persistent=False)

    def _top_up(self, broker: Broker) -> None:
        """Keep `concurrency` tasks in flight, never more than the updates still wanted.

        A synchronous strategy gets its next round only when the last one has fully arrived.
        """
        if self._done() or not self.workers_ready:
            return
        if self.core.strategy.synchronous and self.core.in_flight:
            return
        wanted = self.settings.max_updates - self.core.applied - self.core.strategy.buffered
        if wanted <= 0 and not self.core.in_flight and self.core.flush():
            self._new_version(broker, None, "")  # the last, partial buffer or round
            return
        while len(self.core.in_flight) < min(self.settings.concurrency, wanted):
            task = self.core.issue_task()
            broker.publish("", self.topology.tasks, self.intake.encode_task(task))

    def _event(self, broker: Broker, name: str, **fields: Any) -> None:
        event = Event(name=name, job=self.settings.job, fields=fields)
        broker.publish(self.topology.events, name, wire.encode(event), persistent=False)

    # ------------------------------------------------------------ evaluation and results

    def _evaluate(self) -> Score:
        score = self.evaluator.score(self.core.weights)
        self.last_score = score
        self.progress.evaluated(self.core.version, score)
        self.history.score(self.core.version, self.elapsed(), score.accuracy, score.loss)
        target = self.settings.target_accuracy
        if target is not None and self.time_to_target is None and score.accuracy >= target:
            self.time_to_target = self.elapsed()
        log.info("version %d  accuracy %.4f  loss %.4f  applied %d  rejected %d  %.1fs",
                 self.core.version, score.accuracy, score.loss, self.core.applied,
                 self.core.rejected_total, self.elapsed())
        return score

    def _write_results(self) -> dict[str, Any]:
        out: Path = self.settings.out
        score = self._evaluate()
        self.evaluator.save(self.core.weights, str(out / "final_model.keras"))
        write_history(out, self.history)
        plot_curves(out / "accuracy_vs_time.png", {self.settings.strategy: self.history.curve()},
                    self.settings.target_accuracy, title=f"fedmq {self.settings.dataset}")
        staleness = self.core.staleness_seen
        summary = {
            "final_accuracy": score.accuracy, "final_loss": score.loss,
            "updates_applied": self.core.applied, "updates_rejected": self.core.rejected_total,
            "rejected_by_reason": dict(self.core.rejected), "duplicates": self.core.duplicates,
            "versions": self.core.version, "wall_seconds": round(self.elapsed(), 3),
            "time_to_target_s": self.time_to_target, "strategy": self.settings.strategy,
            "workers": len(self.core.workers), "worker_ids": sorted(self.core.workers),
            "bytes_received": self.bytes_received,
            "dataset": self.settings.eval_data_path or self.settings.dataset,
            "model": self.model_name, "mean_staleness": float(np.mean(staleness)) if staleness
            else 0.0, "max_staleness_seen": max(staleness, default=0),
            "stopped_early": self.stop.is_set(), "stop_reason": self.stop_reason,
            "sealed": self.intake.gate is not None, "epsilon": self.intake.epsilon(),
            "dp_delta": self.settings.dp_delta if self.intake.ledger else None,
        }
        write_summary(out, summary)
        log.info("finished: %s", {k: summary[k] for k in ("final_accuracy", "updates_applied",
                                                           "updates_rejected", "wall_seconds")})
        return summary
