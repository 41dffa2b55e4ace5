"""The suite's private RabbitMQ nodes are gone after `destroy`, even one that no longer answers
(stop_timeout shortened here; 30 s in the suite): CI once left a partitioned node's VM running
for the rest of the run after `rabbitmqctl stop` hung for its whole 120 s."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.private_node import PrivateNode

pytestmark = pytest.mark.integration


def test_a_node_that_does_not_answer_is_killed_by_destroy() -> None:
    # Given a private node whose Erlang VM is frozen (SIGSTOP: `rabbitmqctl stop` cannot reach it)
    node = PrivateNode(name="fedmqfrozen", amqp_port=5688, management_port=15688,
                       management=False)
    node.start()
    pid = int((node.directory / "pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    # When it is destroyed
    began = time.monotonic()
    node.destroy(stop_timeout=5)
    # Then within the stop timeout and the kill, the VM is gone and so is its folder
    took = time.monotonic() - began
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z", f"pid {pid} still runs"
    assert not node.directory.exists() and took < 45, took
