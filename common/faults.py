"""Fault injection for the chaos tests: inert unless a FEDMQ_FAULT_* variable is set.

- FEDMQ_FAULT_COORDINATOR_CRASH_AFTER_CHECKPOINT=N: the coordinator dies (like kill -9: no
  cleanup, no results) right after writing its N-th checkpoint, before it publishes the tasks
  and model of that checkpoint or acks the updates in it: the moment between applying an update
  and acking it.
- FEDMQ_FAULT_COORDINATOR_CRASH_AFTER_ASKING_HELPER=N: the coordinator dies right after
  publishing its N-th unmask request (secure aggregation), before the helper's answer is applied.
- FEDMQ_FAULT_WORKER_CRASH_ON_TASK=PREFIX: a worker dies the same way when it starts a task
  whose id begins with PREFIX: a poison task.

These are variables and not settings on purpose: no flag in `fedmq --help` should offer to crash.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fedmq.faults")
CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

_checkpoints = 0
_requests = 0


def _die(what: str) -> None:
    log.error("FAULT INJECTION: %s; exiting without cleanup", what)
    logging.shutdown()
    os._exit(CRASH_EXIT_CODE)


def after_checkpoint() -> None:
    """Called by the coordinator after each checkpoint it writes."""
    global _checkpoints
    limit = os.environ.get("FEDMQ_FAULT_COORDINATOR_CRASH_AFTER_CHECKPOINT")
    if not limit:
        return
    _checkpoints += 1
    if _checkpoints >= int(limit):
        _die(f"checkpoint {_checkpoints} written, its updates not acked")


def after_helper_asked() -> None:
    """Called by the coordinator after each unmask request it publishes."""
    global _requests
    limit = os.environ.get("FEDMQ_FAULT_COORDINATOR_CRASH_AFTER_ASKING_HELPER")
    if not limit:
        return
    _requests += 1
    if _requests >= int(limit):
        _die(f"unmask request {_requests} published, its answer not applied")


def on_task(task_id: str) -> None:
    """Called by a worker when it starts training a task."""
    prefix = os.environ.get("FEDMQ_FAULT_WORKER_CRASH_ON_TASK")
    if prefix and task_id.startswith(prefix):
        _die(f"poison task {task_id}")
