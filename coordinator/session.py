"""The coordinator's broker loop: consume updates, apply them, broadcast versions, evaluate, finish.

Decoding, judging and applying run on the pika I/O thread; the checkpoint is written and the
model evaluated on threads of their own (commit.py, evaluation.py's `Background`), so neither
blocks intake. Decisions are made by `CoordinatorCore` (core.py); who may send is `Admission`'s
(admission.py); every turn ends with the commit protocol (commit.py: checkpoint, then publish,
then ack); the lock, resume and standby takeover are the lifecycle's (lifecycle.py); outgoing
messages are the outbox's. The updates' prefetch is bounded in bytes (`update_prefetch`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from common import learning_task, leases, models
from common.amqp import Broker
from common.codec import Codec
from common.connection import Connector
from common.identity import load_identity
from common.reconnect import run_with_reconnect
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator import evaluation, results
from coordinator.admission import Admission
from coordinator.commit import Commit, Snapshot
from coordinator.core import CoordinatorCore
from coordinator.drain import Drain
from coordinator.evaluation import Score
from coordinator.federated_loop import FederatedLoop
from coordinator.history import History
from coordinator.housekeeping import Housekeeping
from coordinator.job_lock import JobLock
from coordinator.lifecycle import JobRecord, Lifecycle
from coordinator.outbox import Outbox
from coordinator.progress import Progress
from coordinator.receiving import Receiver, update_prefetch
from coordinator.scoring import Scoring
from coordinator.secure_link import SecureLink
from coordinator.stop_rule import StopRule
from coordinator.strategies import make_strategy

log = logging.getLogger("fedmq.coordinator")


class Coordinator:
    """One job's coordinator; `run()` blocks until the job ends and returns its summary."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings.job, settings.queue_limits(),
                                 secure=settings.secure_aggregation)
        self.evaluator, self.model_name, weights = evaluation.for_job(settings)
        self.progress = Progress(settings)
        self.record = JobRecord(workers_ready=settings.wait_for_workers == 0)
        fingerprint = models.fingerprint(weights)
        self.admission = Admission.from_settings(settings)
        identity = None if settings.identity is None else load_identity(settings.identity)
        self.codec = Codec(settings.max_body_bytes, identity)
        self.outbox = Outbox(self.topology, self.codec, fingerprint, self.admission.readers,
                             settings.chunk_size, settings.dead_letter_body_bytes)
        update_bytes = self.outbox.check_model_fits(weights, self.model_name,
                                                    settings.max_body_bytes)
        self.prefetch = update_prefetch(update_bytes)
        strategy = make_strategy(settings, self.admission.ledger)
        self.core = CoordinatorCore.for_job(settings, weights, strategy)
        self.stop_rule = StopRule(settings, self.record, self.core, self.admission)
        self.commit = Commit(self._capture if settings.checkpoint else None, self.outbox.task,
                             self._announce, lambda: (self.core.version, self.core.weights))
        self.housekeeping = Housekeeping(self.topology, self.codec, self.core, self.commit)
        self.scoring = Scoring(settings, self.evaluator, self.progress, self.record,
                               lambda: (self.core.applied, self.core.rejected_total))
        self.sessions = 0
        self.receiver = Receiver(settings, self.codec, self.admission, self.core, self.outbox,
                                 self.commit, self.progress, self.record, self._version_made)
        self.secure = None if not settings.secure_aggregation else SecureLink(
            settings, self.topology, self.codec, self.core, self.commit, self._version_made)
        self.drain = Drain(settings, self.topology, self.core, self.receiver, self.housekeeping,
                           self.commit, self.secure, self._pump, self._version_made)
        self.lifecycle = Lifecycle(settings, {"job": settings.job, "strategy": settings.strategy,
                                              "model": self.model_name,
                                              "fingerprint": fingerprint})
        self.history = History()
        self.stop = threading.Event()
        self.job_lock = JobLock(self.topology, settings.heartbeat, settings.standby)
        self.connector = Connector(settings, "fedmq-coordinator")
        self.set_up = False  # leases filled and leftovers purged (a resumed job skips both)
        self.federated = None if settings.validation_fraction <= 0 else FederatedLoop(
            settings, self.topology, self.codec, self.admission, self.outbox, self.progress,
            self.record, lambda: self.history, learning_task.ordering(self.evaluator.task),
            judges=not self.evaluator.has_data)
        if not settings.standby:  # a standby takes the directory (and resumes) in run()
            self._restore(self.lifecycle.claim().state)

    # ------------------------------------------------------------ checkpointed state

    def _save(self) -> None:
        self.lifecycle.save(self.record, self.core, self.admission, self.history)
        self.receiver.intake.saved()  # spooled chunks of the updates it holds may go

    def _capture(self) -> Snapshot:
        """The checkpoint of now, to be written by the commit's writer thread."""
        prepared = self.lifecycle.capture(self.record, self.core, self.admission, self.history)
        covered = self.receiver.intake.covered()  # spooled chunks of the updates it holds
        sealed = frozenset() if self.secure is None else self.secure.sealed_ids()

        def saved() -> None:
            self.receiver.intake.saved(covered)
            if self.secure is not None:
                self.secure.saved(sealed)

        return Snapshot(lambda: self.lifecycle.write(prepared), saved,
                        (self.core.version, self.core.weights))

    def _restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.receiver.intake.start_fresh()
        else:
            self.history = self.lifecycle.restore(state, self.record, self.core, self.admission)
            self.set_up = True
            if self.secure is not None:  # the buffers it sealed are on disk
                self.secure.saved(self.secure.sealed_ids())

    # ------------------------------------------------------------ lifecycle

    def run(self) -> dict[str, Any]:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        self.settings.out.mkdir(parents=True, exist_ok=True)
        if not self.lifecycle.holds_directory:
            start = self.lifecycle.take_over(self.stop)
            if not start.go:
                self.progress.finish(self.stop)
                return {"standby": "ended without taking over"}
            self._restore(start.state)
            log.warning("standby: taking over job %r at version %d", self.settings.job,
                        self.core.version)
        if self.record.resumed_from is None:
            self._evaluate()
        run_with_reconnect(self._session, self.stop)
        self.commit.close()
        self.scoring.finished(self.history, wait=True)
        self.record.finished = not self.stop.is_set()
        summary = self._write_results()
        if self.settings.checkpoint:
            self._save()  # SIGTERM: the job goes on from here when restarted; else: finished
        self.progress.finish(self.stop)
        return summary

    def _session(self) -> None:
        self.commit.forget_acks()
        broker = self.connector.connect()
        self.commit.wake = self.scoring.background.wake = broker.wake  # from their threads
        self.receiver.intake.attach(broker.wake)
        try:
            if not self.job_lock.take(broker, self.stop):  # before touching anything of the job
                return
            self.outbox.attach(broker)
            self.sessions += 1
            # tasks go out without confirms: after a lost connection, issue those in flight
            # again (not a synchronous round: its tasks wait for --task-deadline instead, as a
            # second round at the same version would only be refused as stale)
            if self.sessions > 1 and not self.core.strategy.synchronous and \
                    self.core.reissue_in_flight():
                log.warning("connection lost: tasks in flight issued again")
                self.commit.changed()
            if not self.set_up:  # before declaring, so no worker attaches to old leases
                leases.refill(broker, self.topology, self.settings.num_shards)
            else:  # those lost with a cluster node (transient: common/topology.py)
                leases.restore(broker, self.topology, self.settings.num_shards)
            broker.declare(self.topology)
            if not self.set_up:
                self.housekeeping.purge_leftovers(broker)
                self.set_up = True
            self.commit.changed()  # checkpoint what changed while the connection was down,
            self.commit.flush(broker)  # publish the tasks it left pending, only then broadcast
            self.outbox.broadcast(broker, self.core.version, self.core.weights)
            self.receiver.intake.take_back(broker)  # updates spooled whole before a crash
            broker.consume(self.topology.updates, lambda d: self.receiver.on_update(broker, d),
                           prefetch=self.prefetch)
            if self.federated is not None:
                self.federated.consume(broker)
            broker.consume(self.topology.model_requests,
                           lambda d: self.outbox.reply_model(broker, d), prefetch=8)
            if self.secure is not None:
                self.secure.start(broker)
            self._wait_for_workers(broker)
            while not self.stop_rule.done() and not self.stop.is_set():
                self._pump(broker, 0.25)
            if not self.stop.is_set():
                self.drain.run(broker)
                if self.federated is not None:
                    self.federated.final(self.core.version, broker, max(1, len(self.core.workers)),
                                         lambda seconds: self._pump(broker, seconds))
                    self.commit.changed()  # the late updates it refused while it waited
                    self.commit.flush(broker)
                self.outbox.event(broker, self.settings.job, "finished",
                                  version=self.core.version, applied=self.core.applied,
                                  rejected=self.core.rejected_total)
            else:
                self.commit.changed()  # SIGTERM: checkpoint and ack what was handled, then stop
                self.commit.flush(broker)
        finally:
            broker.close()

    def _pump(self, broker: Broker, seconds: float) -> None:
        """One turn of the loop: serve the connection, give up on overdue tasks, commit."""
        broker.process(seconds)
        self.receiver.intake.ack_written(broker)
        self.job_lock.check()
        self.housekeeping.touch_dead_letters(broker)
        late = self.core.expire(self.settings.task_deadline)
        if late:
            log.warning("%d tasks got no update within %.0fs; issuing new ones", len(late),
                        self.settings.task_deadline)
            self.commit.changed()
        self.receiver.intake.expire(broker)
        self._top_up()
        self.commit.run(broker)
        for scored in self.scoring.finished(self.history):
            self.outbox.event(broker, self.settings.job, "evaluation", version=scored.version,
                              **{name: round(value, 6)
                                 for name, value in scored.score.metrics.items()})
        if self.secure is not None:  # sealed buffers are in the checkpoint now
            self.secure.ask(broker)

    def _wait_for_workers(self, broker: Broker) -> None:
        """With --wait-for-workers N: hold tasks (and the clock) until N workers consume them."""
        while not self.record.workers_ready and not self.stop.is_set():
            if broker.queue_depth(self.topology.tasks)[1] >= self.settings.wait_for_workers:
                self.record.workers_ready = True
                log.info("%d workers ready; starting the clock", self.settings.wait_for_workers)
                self.record.started = time.monotonic()
                self.scoring.later(self.core.version, self.core.weights)
            else:
                self._pump(broker, 0.25)

    # ------------------------------------------------------------ messages

    def _version_made(self, staleness: int | None, worker_id: str) -> None:
        """Record the version just made; the commit announces it once it is checkpointed."""
        version, epsilon = self.core.version, self.admission.epsilon()
        self.history.add(version, self.record.elapsed(), staleness, worker_id, epsilon=epsilon)
        self.progress.new_version(version, self.core.applied)
        self.commit.version({"version": version, "staleness": staleness, "worker": worker_id,
                             "epsilon": epsilon})
        self.outbox.superseded()  # a large model's announced version is not kept besides it

    def _announce(self, broker: Broker, versions: list[dict[str, Any]],
                  model: tuple[int, Any]) -> None:
        """Broadcast `model` (the checkpointed one); events for each new version; evaluate
        every k (on the evaluation thread: `_pump` records the result)."""
        self.outbox.broadcast(broker, *model, current=model[0] == self.core.version)
        for fields in versions:
            self.outbox.event(broker, self.settings.job, "version", **fields)
        if self.scoring.due(versions):
            self.scoring.later(*model)
            if self.federated is not None:
                self.federated.request(broker, model[0])

    def _top_up(self) -> None:
        """Issue the tasks the core asks for; the commit publishes them once checkpointed."""
        if self.stop_rule.done() or not self.record.workers_ready:
            return
        tasks, flushed = self.core.top_up(self.settings.concurrency, self.settings.max_updates)
        if flushed:
            self._version_made(None, "")
        for task in tasks:
            self.commit.task(task)

    # ------------------------------------------------------------ evaluation and results

    def _evaluate(self) -> Score | None:
        return self.scoring.now(self.history, self.core.version, self.core.weights)

    def _write_results(self) -> dict[str, Any]:
        score = self._evaluate()
        self.evaluator.save(self.core.weights, str(self.settings.out / "final_model.keras"))
        return results.write_all(self.settings, self.core, self.history, score, self.record, {
            "model": self.model_name, "stopped_early": self.stop.is_set(),
            "stop_reason": self.stop_rule.reason, "sealed": self.codec.identity is not None,
            "epsilon": self.admission.epsilon(),
            "dp_delta": self.settings.dp_delta if self.admission.ledger else None,
            "dp_mode": self.settings.dp_mode if self.admission.ledger else None,
            "federated": None if self.federated is None else self.federated.results()})
