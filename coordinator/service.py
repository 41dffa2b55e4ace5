"""The coordinator's broker loop: consume updates, apply them, broadcast versions, evaluate, finish.

Everything runs on the pika I/O thread (evaluation of a small model takes milliseconds); decisions
are made by `CoordinatorCore`, this module only moves messages and writes results.

Every turn of the loop ends with a commit (`_commit`): what the updates received since the last
commit changed is written to the checkpoint first; only then are the new tasks published, the new
model broadcast and the updates acked. A crash at any moment therefore loses nothing that was
acked, and an update applied but not yet acked is redelivered and recognised by its id.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from common import faults, leases, models, privacy, wire
from common.amqp import Broker, Delivery, connect, run_with_reconnect
from common.errors import DecodeError, RejectedUpdate
from common.messages import Event, GlobalModel, ModelRequest, TrainTask, WeightUpdate
from common.settings import CoordinatorSettings, TrainingSettings
from common.topology import Topology
from coordinator import checkpoint
from coordinator.core import CoordinatorCore, Outcome
from coordinator.evaluation import Evaluator, Score, held_out
from coordinator.intake import Intake
from coordinator.progress import Progress
from coordinator.results import History, plot_curves, write_history, write_ledger, write_summary
from coordinator.robust import RobustConfig
from coordinator.strategies import FedAsync, FedAvg, FedBuff, Strategy, make_staleness

log = logging.getLogger("fedmq.coordinator")
UPDATE_PREFETCH = 16
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to"


def make_strategy(settings: CoordinatorSettings,
                  ledger: privacy.PrivacyLedger | None = None) -> Strategy:
    """The configured strategy; central DP spends from `ledger` (the intake's)."""
    if settings.strategy == "fedbuff":
        robust = RobustConfig(settings.aggregator, settings.byzantine_f, settings.norm_bound)
        central = None
        if settings.dp_mode == "central":
            if ledger is None:
                raise ValueError("central DP needs a privacy ledger")
            central = privacy.CentralNoise(settings.dp_clip_norm, settings.dp_noise_multiplier,
                                           ledger)
        return FedBuff(buffer_size=settings.buffer_size, server_lr=settings.server_lr,
                       momentum=settings.server_momentum,
                       weight_by_examples=settings.weight_by_examples,
                       robust=None if robust.is_plain_mean else robust, central=central)
    if settings.strategy == "fedavg":
        return FedAvg(cohort=settings.concurrency)
    staleness = make_staleness(settings.staleness, settings.staleness_a, settings.staleness_b)
    return FedAsync(alpha=settings.alpha, staleness_fn=staleness)


def task_options(settings: CoordinatorSettings) -> dict[str, Any]:
    """TrainTask fields beyond the training settings: local differential privacy (none with
    central DP: workers send their deltas as they are, and the coordinator noises them)."""
    if settings.dp_mode == "central":
        return {"dp_clip_norm": 0.0, "dp_noise_multiplier": 0.0}
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
        self.intake = Intake.from_settings(settings)
        strategy = make_strategy(settings, self.intake.ledger)
        self.core = CoordinatorCore(weights=weights, strategy=strategy,
                                    max_staleness=0 if strategy.synchronous
                                    else settings.max_staleness,
                                    training=training, job=settings.job,
                                    task_options=task_options(settings))
        self.stop_reason: str | None = None
        self.history = History()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.last_score: Score | None = None
        self.time_to_target: float | None = None
        self.bytes_received = 0
        self.set_up = False  # leases filled and leftovers purged (a resumed job skips both)
        self.workers_ready = settings.wait_for_workers == 0
        self.finished = False
        self.dirty = False
        self.pending_acks: list[Delivery] = []
        self.pending_tasks: list[TrainTask] = []
        self.pending_versions: list[dict[str, Any]] = []  # "version" event fields, uncommitted
        self.resumed_from: int | None = None
        self.resumes = 0
        self.model_body: bytes | None = None  # the last broadcast model
        self.last_update_at = 0.0
        self.longest_training = 0.0  # seconds, as reported by updates (capped at a minute)
        self.checkpoint_path = checkpoint.path_in(settings.out)
        self.out_lock: IO[str] | None = None
        if not settings.standby:  # a standby takes the directory (and resumes) in run()
            self.out_lock = checkpoint.lock(settings.out)
            if settings.resume and self.checkpoint_path.exists():
                self._resume(checkpoint.load(self.checkpoint_path))

    # ------------------------------------------------------------ checkpoint

    def _identity(self) -> dict[str, Any]:
        return {"job": self.settings.job, "strategy": self.settings.strategy,
                "model": self.model_name, "fingerprint": self.fingerprint}

    def _take_over(self) -> bool:
        """Standby: wait for the directory, then resume its job. False: there is nothing to do
        (stopped while waiting, or the job the active coordinator ran has finished)."""
        log.info("standby: waiting for the coordinator holding %s (pid %s) to end",
                 self.settings.out, checkpoint.holder(self.settings.out))
        self.out_lock = checkpoint.await_lock(self.settings.out, self.stop)
        if self.out_lock is None:
            return False
        if self.checkpoint_path.exists():
            state = checkpoint.load(self.checkpoint_path)
            if state["finished"]:
                log.info("standby: the job in %s has finished; nothing to take over",
                         self.settings.out)
                return False
            self._resume(state)
        log.warning("standby: taking over job %r at version %d", self.settings.job,
                    self.core.version)
        return True

    def _resume(self, state: dict[str, Any]) -> None:
        if state["finished"]:
            log.info("%s holds a finished job; starting a new one", self.checkpoint_path)
            return
        mine = self._identity()
        theirs = {key: state[key] for key in mine}
        if theirs != mine:
            raise checkpoint.CheckpointError(
                f"{self.checkpoint_path} belongs to another job ({theirs}); this coordinator "
                f"runs {mine}. Use another --out, or --no-resume to start over")
        self.core.load_state(state["core"])
        self.intake.load_state(state["intake"])
        self.history = History.from_columns(state["history"])
        self.started = time.monotonic() - float(state["elapsed"])
        self.time_to_target = state["time_to_target"]
        self.bytes_received = int(state["bytes_received"])
        self.workers_ready = bool(state["workers_ready"])
        self.set_up = True
        self.resumed_from = self.core.version
        self.resumes = int(state["resumes"]) + 1
        # Tasks in flight may have been checkpointed but never published (a crash between the
        # two): issue new ones now rather than after the task deadline. The old ones stay
        # issued, so an update for one that was published still counts.
        reissued = len(self.core.expire(0.0))
        log.warning("resuming job %r from %s at version %d (%d updates applied, %d tasks in "
                    "flight issued again)", self.settings.job, self.checkpoint_path,
                    self.core.version, self.core.applied, reissued)

    def _save(self) -> None:
        """Write the checkpoint (atomically; see coordinator/checkpoint.py)."""
        self.settings.out.mkdir(parents=True, exist_ok=True)
        checkpoint.save(self.checkpoint_path, {
            **self._identity(), "finished": self.finished, "elapsed": self.elapsed(),
            "time_to_target": self.time_to_target, "bytes_received": self.bytes_received,
            "workers_ready": self.workers_ready, "resumes": self.resumes,
            "core": self.core.state(),
            "intake": self.intake.state(), "history": self.history.columns()})
        faults.after_checkpoint()

    def _commit(self, broker: Broker) -> None:
        """Checkpoint what changed, then act on it: publish tasks, broadcast, ack updates."""
        if not self.dirty:
            return
        if self.settings.checkpoint:
            self._save()
        self.dirty = False
        while self.pending_tasks:
            task = self.pending_tasks[0]
            broker.publish("", self.topology.tasks, self.intake.encode_task(task))
            self.pending_tasks.pop(0)
        if self.pending_versions:
            self._announce(broker, self.pending_versions)
            self.pending_versions = []
        for delivery in self.pending_acks:
            broker.ack(delivery)
        self.pending_acks = []

    def _pump(self, broker: Broker, seconds: float) -> None:
        """One turn of the loop: serve the connection, give up on overdue tasks, commit."""
        broker.process(seconds)
        late = self.core.expire(self.settings.task_deadline)
        if late:
            log.warning("%d tasks got no update within %.0fs; issuing new ones", len(late),
                        self.settings.task_deadline)
            self.dirty = True
        self._top_up(broker)
        self._commit(broker)

    # ------------------------------------------------------------ lifecycle

    def run(self) -> dict[str, Any]:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        self.settings.out.mkdir(parents=True, exist_ok=True)
        if self.out_lock is None and not self._take_over():
            self.progress.finish(self.stop)
            return {"standby": "ended without taking over"}
        if self.resumed_from is None:
            self._evaluate()
        run_with_reconnect(self._session, self.stop)
        self.finished = not self.stop.is_set()
        summary = self._write_results()
        if self.settings.checkpoint:
            self._save()  # SIGTERM: the job goes on from here when restarted; else: finished
        self.progress.finish(self.stop)
        return summary

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _session(self) -> None:
        self.pending_acks = []  # deliveries of a lost connection: the broker redelivers them
        broker = connect(self.settings, "fedmq-coordinator")
        try:
            if not self.set_up:  # before declaring, so no worker attaches to old leases
                leases.refill(broker, self.topology, self.settings.num_shards)
            broker.declare(self.topology)
            if not self.set_up:
                self._purge_leftovers(broker)
            self.dirty = True  # checkpoint what changed while the connection was down, publish
            self._commit(broker)  # the tasks it left pending, and only then broadcast
            self._broadcast(broker)
            broker.consume(self.topology.updates, lambda d: self._on_update(broker, d),
                           prefetch=UPDATE_PREFETCH)
            broker.consume(self.topology.model_requests,
                           lambda d: self._on_model_request(broker, d), prefetch=8)
            self._wait_for_workers(broker)
            while not self._done() and not self.stop.is_set():
                self._pump(broker, 0.25)
            if not self.stop.is_set():
                self._drain(broker)
                self._event(broker, "finished", version=self.core.version,
                            applied=self.core.applied, rejected=self.core.rejected_total)
            else:
                self.dirty = True  # SIGTERM: checkpoint and ack what was handled, then stop
                self._commit(broker)
        finally:
            broker.close()

    def _purge_leftovers(self, broker: Broker) -> None:
        """A fresh job starts from empty work queues: leftovers belong to an earlier job."""
        for queue in (self.topology.tasks, self.topology.updates):
            dropped = broker.purge(queue)
            if dropped:
                log.warning("purged %d leftover messages from %s", dropped, queue)
        self.set_up = True

    def _wait_for_workers(self, broker: Broker) -> None:
        """With --wait-for-workers N: hold tasks (and the clock) until N workers consume them."""
        while not self.workers_ready and not self.stop.is_set():
            if broker.queue_depth(self.topology.tasks)[1] >= self.settings.wait_for_workers:
                self.workers_ready = True
                log.info("%d workers ready; starting the clock", self.settings.wait_for_workers)
                self.started = time.monotonic()
                self._evaluate()
            else:
                self._pump(broker, 0.25)

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
            what = "update from" if self.intake.count_updates else "buffer with an update from"
            self.stop_reason = (f"privacy budget: one more {what} {exceeding[0]} would "
                                f"spend epsilon {exceeding[1]:.3f} > budget "
                                f"{self.settings.dp_epsilon_budget} (delta "
                                f"{self.settings.dp_delta}); stopping at version "
                                f"{self.core.version}")
            log.warning("%s", self.stop_reason)
        return exceeding is not None

    def _drain(self, broker: Broker) -> None:
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
            self._take_back_tasks(broker)
            if not self.core.in_flight and broker.queue_depth(self.topology.updates)[0] == 0 \
                    and time.monotonic() - self.last_update_at > self.longest_training + 1.0:
                break
            self._pump(broker, 0.25)
        self._take_back_tasks(broker)
        if self.core.in_flight:
            log.warning("%d tasks still in flight at the end; their updates will not count",
                        len(self.core.in_flight))
        self.core.in_flight.clear()
        if self.core.flush():
            self._version_made(None, "")
        self.dirty = True
        self._commit(broker)

    def _take_back_tasks(self, broker: Broker) -> None:
        """Remove the tasks still queued (they will not be trained) from the tasks in flight."""
        while (delivery := broker.get(self.topology.tasks)) is not None:
            task_id = self.intake.task_of(delivery.body)
            if task_id is not None:
                self.core.in_flight.pop(task_id, None)
            broker.ack(delivery)
            self.dirty = True

    # ------------------------------------------------------------ messages

    def _on_update(self, broker: Broker, delivery: Delivery) -> None:
        self.bytes_received += len(delivery.body)
        self.last_update_at = time.monotonic()
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
            self.longest_training = max(self.longest_training, min(update.train_seconds, 60.0))
            self._handle_outcome(broker, delivery, update, self.core.handle(update))
        self.dirty = True
        if self.settings.checkpoint:
            self.pending_acks.append(delivery)  # acked by _commit, after the checkpoint
        else:
            broker.ack(delivery)

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
            self._version_made(outcome.staleness, update.worker_id)

    def _version_made(self, staleness: int | None, worker_id: str) -> None:
        """Record the version just made; `_commit` broadcasts it once it is checkpointed."""
        version, epsilon = self.core.version, self.intake.epsilon()
        self.history.add(version, self.elapsed(), staleness, worker_id, epsilon=epsilon)
        self.progress.new_version(version, self.core.applied)
        self.pending_versions.append({"version": version, "staleness": staleness,
                                      "worker": worker_id, "epsilon": epsilon})
        self.dirty = True

    def _announce(self, broker: Broker, versions: list[dict[str, Any]]) -> None:
        """Broadcast the current model; events for each new version; evaluate every k."""
        self._broadcast(broker)
        for fields in versions:
            self._event(broker, "version", **fields)
        if any(fields["version"] % self.settings.eval_every == 0 for fields in versions):
            score = self._evaluate()
            self._event(broker, "evaluation", version=self.core.version,
                        accuracy=round(score.accuracy, 6), loss=round(score.loss, 6))

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
        """The last broadcast model: a model request never gets a version that is not yet in
        the checkpoint (a restart would take it back)."""
        if self.model_body is None:
            self.model_body = self._encode_model()
        return self.model_body

    def _encode_model(self) -> bytes:
        return self.intake.encode_model(GlobalModel(
            version=self.core.version, fingerprint=self.fingerprint,
            weights=tuple(self.core.weights)))

    def _broadcast(self, broker: Broker) -> None:
        self.model_body = self._encode_model()
        broker.publish(self.topology.model, "", self.model_body, persistent=False)

    def _top_up(self, broker: Broker) -> None:
        """Keep `concurrency` tasks in flight, never more than the updates still wanted; the
        tasks are published by `_commit`, once they are in the checkpoint.

        A synchronous strategy gets its next round only when the last one has fully arrived.
        """
        if self._done() or not self.workers_ready:
            return
        if self.core.strategy.synchronous and self.core.in_flight:
            return
        wanted = self.settings.max_updates - self.core.applied - self.core.strategy.buffered
        if wanted <= 0 and not self.core.in_flight and self.core.flush():
            self._version_made(None, "")  # the last, partial buffer or round
            return
        while len(self.core.in_flight) < min(self.settings.concurrency, wanted):
            self.pending_tasks.append(self.core.issue_task())
            self.dirty = True

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
            "dp_mode": self.settings.dp_mode if self.intake.ledger else None,
            "withheld_buffers": getattr(self.core.strategy, "withheld", 0),
            "resumes": self.resumes, "resumed_from_version": self.resumed_from,
            "expired_tasks": self.core.expired, "checkpoint": self.settings.checkpoint,
        }
        write_summary(out, summary)
        write_ledger(out, {"applied": [[update_id, version] for update_id, version
                                       in self.core.accepted_ids.items()],
                           "rejected": self.core.rejected_ids,
                           "duplicates": self.core.duplicates})
        log.info("finished: %s", {k: summary[k] for k in ("final_accuracy", "updates_applied",
                                                           "updates_rejected", "wall_seconds")})
        return summary
