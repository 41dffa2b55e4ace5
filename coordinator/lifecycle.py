"""The job's life across coordinator processes: the lock on --out, resume, standby takeover.

A coordinator holds `<out>/coordinator.lock` for as long as it runs; a second one on the same
directory is refused, and a hot standby (`--standby`) waits for the lock and then takes the job
over from the checkpoint. A checkpoint names the job it belongs to (job id, strategy, model and
its architecture's fingerprint); resuming another job's checkpoint is refused with a clear error.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from common import faults
from common.settings import CoordinatorSettings
from coordinator import checkpoint
from coordinator.admission import Admission
from coordinator.core import CoordinatorCore
from coordinator.history import History

log = logging.getLogger("fedmq.coordinator")


@dataclass(frozen=True)
class Start:
    """How a coordinator starts: `go` False means there is nothing to do (a standby stopped
    while waiting, or the job it watched has finished); `state` is the checkpoint to resume."""

    go: bool
    state: dict[str, Any] | None = None


@dataclass
class JobRecord:
    """The session's own facts about the job that a checkpoint carries over a restart."""

    started: float = field(default_factory=time.monotonic)  # clock start, time.monotonic()
    time_to_target: float | None = None
    bytes_received: int = 0
    workers_ready: bool = False
    resumes: int = 0
    resumed_from: int | None = None  # version this process resumed at
    finished: bool = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def scored(self, value: float, target: float | None, at: float | None = None,
               higher_is_better: bool = True) -> None:
        """Note the time the target was first reached (`at`: the job-clock seconds when the
        scored version was made; now if None): a value at least the target, or at most it for
        a metric where lower is better (a loss, an error)."""
        reached = target is not None and (value >= target if higher_is_better else value <= target)
        if reached and self.time_to_target is None:
            self.time_to_target = self.elapsed() if at is None else at

    def state(self) -> dict[str, Any]:
        return {"finished": self.finished, "elapsed": self.elapsed(),
                "time_to_target": self.time_to_target, "bytes_received": self.bytes_received,
                "workers_ready": self.workers_ready, "resumes": self.resumes}

    def resume(self, state: dict[str, Any], version: int) -> None:
        """Go on from a checkpoint's record; this process resumes it at `version`."""
        self.started = time.monotonic() - float(state["elapsed"])
        self.time_to_target = state["time_to_target"]
        self.bytes_received = int(state["bytes_received"])
        self.workers_ready = bool(state["workers_ready"])
        self.resumed_from = version
        self.resumes = int(state["resumes"]) + 1


class Lifecycle:
    """The directory a coordinator owns and the checkpoint in it."""

    def __init__(self, settings: CoordinatorSettings, identity: dict[str, Any]) -> None:
        self.settings = settings
        self.identity = identity  # what a checkpoint must name to be resumed by this process
        self.path = checkpoint.path_in(settings.out)
        self.lock: IO[str] | None = None

    @property
    def holds_directory(self) -> bool:
        return self.lock is not None

    def claim(self) -> Start:
        """Take the directory (refused if another coordinator holds it) and the checkpoint to
        resume, if the settings allow it and it holds an unfinished job."""
        self.lock = checkpoint.lock(self.settings.out)
        if self.settings.resume and self.path.exists():
            return Start(True, self._resumable(checkpoint.load(self.path)))
        return Start(True)

    def take_over(self, stop: threading.Event) -> Start:
        """Standby: wait for the directory, then the checkpoint of the job to take over."""
        log.info("standby: waiting for the coordinator holding %s (pid %s) to end",
                 self.settings.out, checkpoint.holder(self.settings.out))
        self.lock = checkpoint.await_lock(self.settings.out, stop)
        if self.lock is None:
            return Start(False)
        if not self.path.exists():
            return Start(True)
        state = checkpoint.load(self.path)
        if state["finished"]:
            log.info("standby: the job in %s has finished; nothing to take over",
                     self.settings.out)
            return Start(False)
        return Start(True, self._resumable(state))

    def _resumable(self, state: dict[str, Any]) -> dict[str, Any] | None:
        if state["finished"]:
            log.info("%s holds a finished job; starting a new one", self.path)
            return None
        theirs = {key: state[key] for key in self.identity}
        if theirs != self.identity:
            raise checkpoint.CheckpointError(
                f"{self.path} belongs to another job ({theirs}); this coordinator runs "
                f"{self.identity}. Use another --out, or --no-resume to start over")
        return state

    def save(self, record: JobRecord, core: CoordinatorCore, admission: Admission,
             history: History) -> None:
        """Write the checkpoint atomically (see checkpoint.py), with this job's identity."""
        self.write(self.capture(record, core, admission, history))

    def capture(self, record: JobRecord, core: CoordinatorCore, admission: Admission,
                history: History) -> checkpoint.Prepared:
        """The job's state now, ready for `write` (which may run on another thread)."""
        return checkpoint.prepare({**self.identity, **record.state(), "core": core.state(),
                                   "intake": admission.state(), "history": history.columns()})

    def write(self, prepared: checkpoint.Prepared) -> None:
        self.settings.out.mkdir(parents=True, exist_ok=True)
        checkpoint.write(self.path, prepared)
        faults.after_checkpoint()

    def restore(self, state: dict[str, Any], record: JobRecord, core: CoordinatorCore,
                admission: Admission) -> History:
        """Load a checkpoint's state into the job's parts; returns its history."""
        core.load_state(state["core"])
        admission.load_state(state["intake"])
        record.resume(state, core.version)
        # Tasks in flight may have been checkpointed but never published (a crash between the
        # two): issue new ones now rather than after the task deadline. The old ones stay
        # issued, so an update for one that was published still counts.
        reissued = len(core.expire(0.0))
        log.warning("resuming job %r from %s at version %d (%d updates applied, %d tasks in "
                    "flight issued again)", self.settings.job, self.path, core.version,
                    core.applied, reissued)
        return History.from_columns(state["history"])
