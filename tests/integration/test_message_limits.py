"""A model too large for the message limit stops at start with one clear message, never a hang
(issue 15): at the coordinator (and so `fedmq run`) and at a worker whose limit is smaller."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from common.amqp import Broker
from common.errors import FedmqError
from common.topology import Topology
from tests.integration.support import Processes

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
# 64 -> 30,000 -> 10: about 2.25M float32 parameters, about 9 MB encoded
BIG_MODEL = """
    import keras

    def build():
        return keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(30000, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
"""
STOP_SECONDS = 45  # TensorFlow's import and the model's build take most of it


@pytest.fixture
def big_model(procs: Processes, tmp_path: Path) -> str:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "big_model.py").write_text(textwrap.dedent(BIG_MODEL))
    procs.base_env["PYTHONPATH"] = str(plugins)
    return "big_model:build"


def errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("Error:")]


def declared(amqp_url: str, queue: str) -> bool:
    broker = Broker(amqp_url, name="fedmq-test-limits")
    try:
        broker.queue_depth(queue)
        return True
    except FedmqError:
        return False
    finally:
        broker.close()


def test_fedmq_run_stops_at_start_when_the_model_exceeds_the_message_limit(
        procs: Processes, big_model: str, tmp_path: Path, amqp_url: str,
        topology: Topology) -> None:
    # When the local demo runs a model of about 9 MB with a 1 MiB message limit
    run = procs.start("run", workers=1, model=big_model, max_message_bytes=MiB,
                      out=tmp_path / "out")

    # Then it ends promptly, not zero, with the coordinator's one clear message
    assert procs.wait(run, STOP_SECONDS) != 0
    [message] = errors(run.log())
    assert "exceeds the message limit of 1048576 bytes" in message, message
    assert "--max-message-bytes" in message and "max_message_size" in message, message
    assert "sending version" not in run.log()
    # And the coordinator declared nothing
    assert not declared(amqp_url, topology.tasks)


def test_a_worker_whose_limit_is_below_its_model_stops_at_start(
        procs: Processes, big_model: str) -> None:
    # When a worker's own update could never be sent under its limit
    worker = procs.start("worker", model=big_model, max_message_bytes=MiB)

    # Then it says so and exits at once instead of waiting for a coordinator
    assert procs.wait(worker, STOP_SECONDS) != 0
    [message] = errors(worker.log())
    assert "exceeds the message limit of 1048576 bytes" in message, message
