"""The worker's broker loop: hold the freshest global model, train on tasks, publish updates.

Training runs in its own thread so the pika I/O thread keeps serving heartbeats; the finished
update is handed back with `call_threadsafe`, published with a confirm, and only then is the task
acked (a worker that dies mid-task leaves the task to be redelivered to another worker).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from common import chunks, faults, learning_task, limits, models
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.connection import Connector, await_declared
from common.errors import BrokerUnavailable, ConfigError, DecodeError
from common.identity import load_identity, load_public
from common.leases import Lease
from common.messages import GlobalModel, TrainTask, WeightUpdate, new_id
from common.reconnect import run_with_reconnect
from common.settings import WorkerSettings
from common.topology import UPDATE_KEY, Topology
from worker import naming, refusals, training_data
from worker.local_evaluation import LocalEvaluation
from worker.model_source import ModelSource
from worker.packing import DeltaPacker
from worker.secure_share import SecureSharer, task_refusal
from worker.shaping import shape_update
from worker.task_hold import TaskHold
from worker.trainer import Trainer

log = logging.getLogger("fedmq.worker")


class WorkerService:
    """One worker process; `run()` blocks until SIGTERM/SIGINT."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings.job)
        identity = None if settings.identity is None else load_identity(settings.identity)
        self.codec = Codec(settings.max_body_bytes, identity)
        # sealed mode: only the coordinator's signature is trusted, updates are sealed to it
        self.trusted: dict[str, Any] | None = None
        self.recipients: dict[str, Any] | None = None
        if settings.coordinator_key is not None and identity is not None:
            coordinator = load_public(settings.coordinator_key)
            self.trusted = {coordinator.name: coordinator.signing}
            self.recipients = {coordinator.name: coordinator.encryption}
        self.worker_id = naming.worker_id(settings.worker_id, identity)
        self.sharer = None if identity is None or settings.helper_key is None else SecureSharer(
            identity, load_public(settings.helper_key), settings.job)
        self.connector = Connector(settings, f"fedmq-worker-{self.worker_id}")
        models.configure_tensorflow(settings.tf_threads)
        self.task = learning_task.load(settings.task) if settings.task else None
        self.model_name = settings.task or models.resolve_name(settings.model, settings.dataset)
        self.fresh_model = partial(learning_task.fresh_model, self.task, self.model_name,
                                   settings.seed)
        self.model = self.fresh_model()
        self.validation: tuple[np.ndarray, np.ndarray] | None = None  # --validation-fraction
        self.local_eval: LocalEvaluation | None = None
        self.fingerprint = models.fingerprint(self.model.get_weights())
        refusals.check_update_fits(self.model.get_weights(), self.model_name, self.worker_id,
                                   self.codec, self.recipients, settings.max_body_bytes)
        self.leasing = training_data.needs_lease(settings)
        self.shard: tuple[int | None, int] | None = None
        self.trainer: Trainer | None = None
        if not self.leasing:  # a fixed shard or a whole file: load (and check) it right away
            self._use_shard(settings.shard_index, settings.num_shards)
        self.models = ModelSource(self.worker_id, self.topology, self.codec, self.trusted,
                                  self.fingerprint, max_body_bytes=settings.max_body_bytes,
                                  too_large=self._over_limit, wrong_model=self._wrong_model)
        self.training: threading.Thread | None = None
        self.held = TaskHold(settings.task_hold_seconds)
        self.stop = threading.Event()
        self.tasks_done = 0
        self.releases = 0  # updates sent, for this worker's own privacy budget
        self.rng = np.random.default_rng()
        self.packer = DeltaPacker()  # compression and top-k's residual (worker/packing.py)
        self.failure: str | None = None  # why this worker stopped on its own (exits non-zero)
        if settings.attack != "none":
            log.warning("ATTACK SIMULATION: this worker sends %s updates", settings.attack)

    def _fail(self, reason: str) -> None:
        """Stop for good (the worker exits non-zero with `reason`); logged once."""
        if self.failure is None:
            self.failure = reason
            log.error("stopping: %s", reason)
        self.stop.set()

    def _over_limit(self, what: str, body: bytes, whole: bool = False) -> bool:
        """A message over this worker's message limit (or a `whole` body over its body limit):
        a settings mismatch between roles, so stop."""
        limit = self.settings.max_body_bytes if whole else self.settings.max_message_bytes
        if len(body) <= limit:
            return False
        too_large = limits.body_too_large if whole else limits.too_large
        self._fail(too_large(what, len(body), limit))
        return True

    def _wrong_model(self, model: GlobalModel) -> None:
        """Another architecture than the coordinator's: this worker could never train for the
        job (and would hold its shard lease for nothing), so it stops (issue 14, item 6)."""
        self._fail(refusals.wrong_model(
            model, self.model_name, self.fingerprint, [w.shape for w in self.model.get_weights()]))

    def _use_shard(self, shard: int | None, num_shards: int) -> None:
        """Load the training data of `shard` unless it is the one already loaded."""
        if self.shard == (shard, num_shards):
            return
        loaded = training_data.load(self.settings, shard, num_shards, self.task)
        learning_task.check(self.model, self.task, loaded.x, loaded.y)
        self.trainer = Trainer(self.model, loaded.x, loaded.y, self.settings.slowdown,
                               self.settings.train_delay_seconds, self.task)
        self.shard = (shard, num_shards)
        self.validation = None if loaded.y_val is None or loaded.x_val is None else \
            (loaded.x_val, loaded.y_val)
        self.local_eval = None
        log.info("worker %s trains on %s (%d examples)", self.worker_id, loaded.source,
                 len(loaded.y))

    def _evaluations(self, broker: Broker) -> None:
        """Federated evaluation (worker/local_evaluation.py) when it keeps a validation split."""
        if self.local_eval is None and self.validation is not None:
            self.local_eval = LocalEvaluation(
                self.worker_id, self.task, self.fresh_model, *self.validation, self.topology,
                self.codec, self.trusted, self.recipients, self.models, self.stop)
        if self.local_eval is not None:
            self.local_eval.subscribe(broker)

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        run_with_reconnect(self._session, self.stop)
        log.info("worker %s stopped after %d tasks", self.worker_id, self.tasks_done)
        if self.failure is not None:
            raise ConfigError(self.failure)

    def _session(self) -> None:
        # A task from a lost connection: let it end first (not past SIGTERM). Its hand-back may
        # have been scheduled on the dead connection and never run; unacked, the broker gives it
        # out again. Not clearing `training` left a worker refusing every task after a broker
        # restart, until each hit its delivery limit (found by the broker-restart chaos test).
        while self.training is not None and self.training.is_alive() and not self.stop.is_set():
            self.training.join(0.5)
        self.training = None
        self.held.forget()
        broker = self.connector.connect()
        try:
            lease = self._attach(broker)
            if lease is None:
                return
            self.models.fetch(broker, lambda: not self.stop.is_set() and
                              not lease.revoked.is_set())
            if self.stop.is_set():  # stopped, or failed (another architecture), meanwhile
                return
            self._evaluations(broker)
            lease.check()
            consumer = broker.consume(self.topology.tasks,
                                      lambda d: self._on_task(broker, d), prefetch=1)
            while not self.stop.is_set():
                broker.process(0.25)
                lease.check()
                self._ack_long_task(broker)
            broker.cancel(consumer)
            self._finish_in_hand(broker)
        finally:
            broker.close()

    def _attach(self, broker: Broker) -> Lease | None:
        """Wait for the coordinator's topology (workers never declare it: they lack the
        permission), then lease a shard if needed. None if stopped meanwhile."""
        queues = [self.topology.tasks] + ([self.topology.shard(0)] if self.leasing else [])
        exchanges = [self.topology.model, self.topology.inbox]
        if not await_declared(broker, self.stop, queues, exchanges):
            return None
        lease = Lease(broker, self.topology, self.settings.num_shards)
        if self.leasing:
            log.info("worker %s waiting for a shard lease on %s", self.worker_id,
                     self.topology.shard(0).removesuffix(".0") + ".*")
            token = lease.acquire(self.stop)
            lease.check()
            if token is None:
                return None
            log.info("worker %s leased shard %d/%d", self.worker_id, token.shard_index,
                     token.num_shards)
            self._use_shard(token.shard_index, token.num_shards)
        return lease

    def _finish_in_hand(self, broker: Broker) -> None:
        """On shutdown: publish the task in hand if it ends within the grace period."""
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self.training is not None and time.monotonic() < deadline:
            broker.process(0.25)
        if self.training is not None:
            log.warning("task still training at shutdown; handing it back to the broker")

    # ------------------------------------------------------------ messages

    def _on_task(self, broker: Broker, delivery: Delivery) -> None:
        if self._over_limit("a task", delivery.body):
            broker.reject(delivery, requeue=True)  # for a worker whose limit fits it
            return
        try:
            task = self.codec.decode(delivery.body, TrainTask, self.trusted).message
        except DecodeError as exc:
            log.warning("dead-lettering task that cannot be opened: %s", exc.reason)
            broker.reject(delivery, requeue=False)
            return
        if self.training is not None or self.models.latest is None:
            broker.reject(delivery, requeue=True)
            return
        refusal = task_refusal(task, self.sharer, refusals.over_budget(
            task, self.releases, self.settings.dp_epsilon_budget, self.settings.dp_delta))
        if refusal is not None:
            log.error("%s; handing the task back and stopping", refusal)
            broker.reject(delivery, requeue=True)
            self.stop.set()
            return
        self.held.start(delivery)
        self.training = threading.Thread(target=self._train, args=(broker, delivery, task),
                                         daemon=True)
        self.training.start()

    def _train(self, broker: Broker, delivery: Delivery, task: TrainTask) -> None:
        """Training thread: never touches the broker except through call_threadsafe."""
        trainer = self.trainer
        assert trainer is not None, "tasks are consumed only once the data is loaded"
        faults.on_task(task.task_id)
        try:
            model = self.models.for_task(broker, task, self.stop)
            result = trainer.train(list(model.weights), task.local_epochs, task.batch_size,
                                   task.learning_rate, task.proximal_mu)
            shaped = shape_update(model.weights, result.weights, task, self.rng,
                                  self.settings.attack, self.settings.attack_factor)
            update_id, weights, seed = new_id(), shaped.weights, b""
            if task.secure_scale > 0 and self.sharer is not None:
                weights, seed = self.sharer.share(weights, task, update_id, self.rng)
            update = WeightUpdate(update_id=update_id, worker_id=self.worker_id,
                                  task_id=task.task_id, base_version=model.version,
                                  num_examples=trainer.num_examples,
                                  train_seconds=result.seconds, metrics=result.metrics,
                                  helper_seed=seed, **(
                                      {"weights": weights, "is_delta": shaped.is_delta} if seed
                                      else self.packer.pack(task, shaped)))
            body = self.codec.encode(update, self.recipients)
        except Exception:
            log.exception("training failed for task %s; handing it back", task.task_id)
            self._hand_back(broker, lambda: self._requeue(broker, delivery))
            return
        if self._over_limit(f"the update for task {task.task_id[:8]}", body, whole=True):
            # never published (the coordinator could not open it); the task goes back
            self._hand_back(broker, lambda: self._requeue(broker, delivery))
            return
        self._hand_back(broker, lambda: self._deliver(broker, delivery, body, task))

    def _ack_long_task(self, broker: Broker) -> None:
        """Ack the task in hand once held for --task-hold-seconds (worker/task_hold.py)."""
        overdue = self.held.overdue()
        if overdue is not None:
            broker.ack(overdue)
            log.info("task still training after %.0fs: acked early (the coordinator's task "
                     "deadline covers it now)", self.held.hold_seconds)

    def _hand_back(self, broker: Broker, callback: Callable[[], None]) -> None:
        try:
            broker.call_threadsafe(callback)
        except BrokerUnavailable:
            log.warning("connection lost during training; the broker will redeliver the task")
            self.training = None

    def _requeue(self, broker: Broker, delivery: Delivery) -> None:
        self.training = None
        if self.held.settle(delivery):
            broker.reject(delivery, requeue=True)

    def _deliver(self, broker: Broker, delivery: Delivery, body: bytes, task: TrainTask) -> None:
        """I/O thread: publish the update (in chunks if it is larger than --chunk-bytes), wait
        for the confirm of each, then ack the task."""
        self.training = None
        try:
            chunks.publish(partial(broker.publish, self.topology.inbox, UPDATE_KEY), body,
                           self.settings.chunk_size)
        except BrokerUnavailable:
            self.packer.forget()
            raise
        self.releases += 1
        self.packer.sent()
        if self.held.settle(delivery):
            broker.ack(delivery)
        self.tasks_done += 1
        log.info("task %s done (%d so far)", task.task_id[:8], self.tasks_done)
