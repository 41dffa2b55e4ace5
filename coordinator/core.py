"""The coordinator's state and decisions, with no broker in sight: issue tasks, judge updates.

Every decision of a job is made here: which tasks are issued and in flight, who owns a task
(the first update accepted for it), which task is taken back or abandoned, whether an update
is rejected (validation, the norm bound of norm_guard.py, a non-finite result), a duplicate,
buffered or applied. The session (session.py) feeds it decoded messages and carries
out what it returns; nothing outside changes its state, which keeps every rule testable without
RabbitMQ.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from common import quantise
from common.arrays import Arrays, all_finite
from common.compression import Compression
from common.errors import RejectedUpdate
from common.messages import TrainTask, WeightUpdate, new_id
from common.settings import CoordinatorSettings, TrainingSettings
from coordinator.checkpoint import pack_strings, unpack_strings
from coordinator.norm_guard import NormGuard, reference_norm, update_norm
from coordinator.strategies import Contribution, Strategy
from coordinator.task_options import task_options
from coordinator.validation import check_update, expand_update


@dataclass(frozen=True)
class Outcome:
    """What happened to one update; `version` is the global version after it."""

    kind: Literal["applied", "buffered", "duplicate", "rejected"]
    version: int
    staleness: int | None = None
    code: str | None = None
    reason: str | None = None


@dataclass
class CoordinatorCore:
    """Global model, version counter, task bookkeeping and counters of one job."""

    weights: Arrays
    strategy: Strategy
    max_staleness: int
    training: TrainingSettings
    job: str = ""
    version: int = 0
    accepted_ids: dict[str, int] = field(default_factory=dict)  # update id -> version then
    issued: set[str] = field(default_factory=set)
    in_flight: dict[str, float] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    applied: int = 0  # updates reflected in the global model (a FedBuff flush adds K)
    workers: set[str] = field(default_factory=set)
    staleness_seen: list[int] = field(default_factory=list)
    task_options: dict[str, Any] = field(default_factory=dict)  # extra TrainTask fields
    rejected_ids: dict[str, str] = field(default_factory=dict)  # decodable update id -> code
    expired: int = 0  # tasks given up on after the task deadline (and issued again)
    reissued: int = 0  # tasks in flight issued again after a lost connection
    bind_tasks: bool = True  # a task belongs to the first update accepted for it
    task_owner: dict[str, str] = field(default_factory=dict)  # task id -> worker (bind_tasks)
    norm_guard: NormGuard | None = None  # the norm bound (norm_guard.py); None: no bound
    compression: Compression = field(default_factory=Compression)  # what tasks ask for
    masked: bool = False  # secure aggregation: updates are uint32 shares of the model's shape

    @classmethod
    def for_job(cls, settings: CoordinatorSettings, weights: Arrays,
                strategy: Strategy) -> CoordinatorCore:
        """The core of the job `settings` describe, starting from `weights`."""
        guard = None
        if settings.max_update_norm_factor > 0:
            local_clip = settings.dp_clip_norm if settings.dp_mode == "local" else 0.0
            guard = NormGuard(settings.max_update_norm_factor,
                              reference_norm(weights, local_clip, settings.dp_noise_multiplier))
        return cls(weights=weights, strategy=strategy,
                   max_staleness=0 if strategy.synchronous else settings.staleness_limit(),
                   training=TrainingSettings(local_epochs=settings.local_epochs,
                                             batch_size=settings.batch_size,
                                             learning_rate=settings.learning_rate),
                   job=settings.job, task_options=task_options(settings), norm_guard=guard,
                   compression=settings.compression_spec(), masked=settings.secure_aggregation)

    def issue_task(self) -> TrainTask:
        """A new task, recorded as issued and in flight."""
        task = TrainTask(task_id=new_id(), job=self.job, min_version=self.version,
                         local_epochs=self.training.local_epochs,
                         batch_size=self.training.batch_size,
                         learning_rate=self.training.learning_rate,
                         send_delta=self.strategy.wants_delta, **self.task_options)
        self.issued.add(task.task_id)
        self.in_flight[task.task_id] = time.time()
        return task

    @property
    def tasks_in_flight(self) -> int:
        return len(self.in_flight)

    def top_up(self, concurrency: int, max_updates: int) -> tuple[list[TrainTask], bool]:
        """The tasks to issue now, to keep `concurrency` in flight but never more than the
        updates still wanted; and whether the job's last, partial buffer or round was just
        folded in (nothing more is wanted or in flight). A synchronous strategy gets its next
        round only once the last one has fully arrived; none is issued while the strategy is
        stepping (a task issued then would train on the version about to be replaced)."""
        if (self.strategy.synchronous and self.in_flight) or self.strategy.stepping:
            return [], False
        wanted = max_updates - self.applied - self.strategy.buffered
        if wanted <= 0 and not self.in_flight and self.flush():
            return [], True
        return [self.issue_task() for _ in range(min(concurrency, wanted) -
                                                 len(self.in_flight))], False

    def reject(self, code: str, reason: str, task_id: str | None = None,
               update_id: str | None = None) -> Outcome:
        """Count a body refused before `handle` (undecodable, sealed-mode, task and privacy
        checks); the task it names is no longer in flight, so another one is issued in its
        place. A decoded update's id goes in the ledger with the code, as `handle` does."""
        self.rejected[code] += 1
        if update_id is not None:
            self.rejected_ids[update_id] = code
        if task_id is not None:
            self.in_flight.pop(task_id, None)
        return Outcome("rejected", self.version, code=code, reason=reason)

    def claim(self, update: WeightUpdate) -> None:
        """One answer per task (plain and sealed mode): refuse an update for a task that an
        accepted update already answered, unless it is that very update redelivered (the same
        update id: `handle` counts it as a duplicate). The task is bound to its worker when an
        update for it is accepted (`handle`), so a rejected update never takes a task from the
        worker that really trains it. A task is taken from a shared queue, so its worker is not
        known when it is issued. The session calls this before charging a privacy budget."""
        if not self.bind_tasks or update.update_id in self.accepted_ids:
            return
        owner = self.task_owner.get(update.task_id)
        if owner is not None and owner != update.worker_id:
            raise RejectedUpdate("task_not_issued_to_worker", f"task {update.task_id} went to "
                                 f"{owner!r}, not {update.worker_id!r}")
        if owner is not None:
            raise RejectedUpdate("task_already_answered",
                                 f"{owner!r} already answered task {update.task_id}")

    def take_back(self, task_id: str | None) -> None:
        """A task taken off the queue unstarted (the job is ending): no longer awaited."""
        if task_id is not None:
            self.in_flight.pop(task_id, None)

    def abandon_in_flight(self) -> int:
        """Stop waiting for every task in flight (the job has ended); how many there were."""
        count = len(self.in_flight)
        self.in_flight.clear()
        return count

    def handle(self, update: WeightUpdate) -> Outcome:
        """Validate an update and fold it in; never raises for bad input.

        Order: a redelivered update (same update id) is a duplicate; then its compressed form,
        the validation, the task's single answer, the norm bound; a step whose result is not
        finite is refused too.
        """
        if update.update_id in self.accepted_ids:
            self.duplicates += 1
            return Outcome("duplicate", self.version)
        try:
            update = expand_update(update, self.compression, self.weights)
            staleness = check_update(update, version=self.version,
                                     max_staleness=self.max_staleness,
                                     issued_tasks=self.issued, template=self._template(),
                                     wants_delta=self.strategy.wants_delta)
            self.claim(update)
            norm = self._check_norm(update)
        except RejectedUpdate as exc:
            return self._refuse(update, exc)
        held = self.strategy.buffered
        new_weights = self.strategy.submit(self.weights, Contribution(
            update.weights, update.is_delta, staleness, update.num_examples, update.worker_id,
            update.update_id, update.helper_seed))
        if new_weights is not None and not all_finite(new_weights):  # never apply NaN or Inf
            return self._refuse(update, RejectedUpdate(
                "non_finite_result", f"applying it would make the model non-finite "
                                     f"({held} buffered updates dropped with it)"))
        self.in_flight.pop(update.task_id, None)
        self.accepted_ids[update.update_id] = self.version
        if self.bind_tasks:
            self.task_owner[update.task_id] = update.worker_id
        if self.norm_guard is not None:
            self.norm_guard.accept(norm)
        self.workers.add(update.worker_id)
        self.staleness_seen.append(staleness)
        if new_weights is None:
            return Outcome("buffered", self.version, staleness=staleness)
        self.weights = [np.asarray(w) for w in new_weights]
        self.version += 1
        self.applied += held + 1
        return Outcome("applied", self.version, staleness=staleness)

    def _template(self) -> Arrays:
        if not self.masked:
            return self.weights
        return [np.empty(w.shape, quantise.FIELD) for w in self.weights]

    def adopt(self, new_weights: Arrays, updates: int) -> None:
        """A step taken outside `handle` (a secure buffer unmasked): `updates` now applied."""
        self.weights = [np.asarray(w) for w in new_weights]
        self.version += 1
        self.applied += updates

    def _check_norm(self, update: WeightUpdate) -> float:
        if self.norm_guard is None:
            return 0.0
        norm = update_norm(update.weights, update.is_delta, self.weights)
        reason = self.norm_guard.exceeded(norm)
        if reason is not None:
            raise RejectedUpdate("norm_too_large", reason)
        return norm

    def _refuse(self, update: WeightUpdate, exc: RejectedUpdate) -> Outcome:
        self.rejected[exc.code] += 1
        self.rejected_ids[update.update_id] = exc.code
        self.in_flight.pop(update.task_id, None)
        return Outcome("rejected", self.version, code=exc.code, reason=exc.reason)

    def flush(self) -> bool:
        """Fold in updates a strategy still buffers (end of job); True if the model changed."""
        held = self.strategy.buffered
        new_weights = self.strategy.flush(self.weights)
        if new_weights is None:
            return False
        self.adopt(new_weights, held)
        return True

    def expire(self, deadline_seconds: float, now: float | None = None) -> list[str]:
        """Stop waiting for tasks issued more than `deadline_seconds` ago (their worker died, or
        the task was lost); they stay issued, so a late update still counts. Returns their ids."""
        now = time.time() if now is None else now
        late = [task_id for task_id, issued_at in self.in_flight.items()
                if now - issued_at > deadline_seconds]
        for task_id in late:
            del self.in_flight[task_id]
        self.expired += len(late)
        return late

    def reissue_in_flight(self) -> int:
        """After a lost connection: tasks go out without confirms, so any in flight may be lost;
        stop waiting for them (they stay issued: a late update still counts) and count them
        apart from tasks that missed their deadline. Returns how many."""
        count = len(self.in_flight)
        self.in_flight.clear()
        self.reissued += count
        return count

    def state(self) -> dict[str, Any]:
        """Everything needed to go on after a restart (see coordinator/checkpoint.py)."""
        return {"weights": list(self.weights), "version": self.version, "applied": self.applied,
                "accepted_ids": pack_strings(list(self.accepted_ids)),
                "accepted_at": np.array(list(self.accepted_ids.values()), dtype=np.int64),
                "issued": pack_strings(list(self.issued)), "in_flight": dict(self.in_flight),
                "rejected": dict(self.rejected),
                "rejected_ids": pack_strings(list(self.rejected_ids)),
                "rejected_codes": pack_strings(list(self.rejected_ids.values())),
                "duplicates": self.duplicates, "workers": sorted(self.workers),
                "staleness_seen": list(self.staleness_seen), "expired": self.expired,
                "reissued": self.reissued,
                "task_owner": dict(self.task_owner), "strategy": self.strategy.state(),
                **({} if self.norm_guard is None else {"norm_guard": self.norm_guard.state()})}

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of `state`."""
        self.weights = [np.asarray(w) for w in state["weights"]]
        self.version = int(state["version"])
        self.applied = int(state["applied"])
        self.accepted_ids = dict(zip(unpack_strings(state["accepted_ids"]),
                                     np.asarray(state["accepted_at"]).tolist(), strict=True))
        self.issued = set(unpack_strings(state["issued"]))
        self.in_flight = {str(k): float(v) for k, v in state["in_flight"].items()}
        self.rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        self.rejected_ids = dict(zip(unpack_strings(state["rejected_ids"]),
                                     unpack_strings(state["rejected_codes"]), strict=True))
        self.duplicates = int(state["duplicates"])
        self.workers = set(state["workers"])
        self.staleness_seen = [int(t) for t in state["staleness_seen"]]
        self.expired = int(state["expired"])
        self.reissued = int(state.get("reissued", 0))  # absent from older checkpoints
        self.task_owner = {str(k): str(v) for k, v in state.get("task_owner", {}).items()}
        self.strategy.load_state(state["strategy"])
        if self.norm_guard is not None and "norm_guard" in state:  # older checkpoints: none
            self.norm_guard.load_state(state["norm_guard"])

    @property
    def withheld_buffers(self) -> int:
        """Buffers the strategy refused to apply (central DP's privacy budget)."""
        return self.strategy.withheld

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
