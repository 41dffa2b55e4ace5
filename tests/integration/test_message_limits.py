"""Size limits (issue 15): a model over the per-message limit runs (it travels in chunks); only
what still cannot work stops at start with one clear message, never a hang: a model over the
body bound (--max-body-bytes), at the coordinator (and so `fedmq run`) and at a worker, and a
chunk size over the message limit."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from common.amqp import Broker
from common.errors import FedmqError
from common.topology import Topology
from tests.integration.support import Processes, read_summary

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
STOP_SECONDS = 120  # TensorFlow's import and the model's build take most of it (a hang: never)
RUN_SECONDS = 240


@pytest.fixture
def big_model(procs: Processes, tmp_path: Path) -> str:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "big_model.py").write_text(textwrap.dedent(BIG_MODEL))
    procs.base_env["PYTHONPATH"] = f"{plugins}:{os.environ.get('PYTHONPATH', '')}"
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


def test_fedmq_run_trains_a_model_over_the_message_limit_in_chunks(
        procs: Processes, big_model: str, tmp_path: Path) -> None:
    # When the local demo runs a model of about 9 MB with a 1 MiB message limit
    run = procs.start("run", workers=1, model=big_model, max_message_bytes=MiB,
                      max_updates=2, local_epochs=1, out=tmp_path / "out")

    # Then it runs to the end: the model and the updates travel in chunks of 1 MiB
    assert procs.wait(run, RUN_SECONDS) == 0, run.log()[-4000:]
    assert read_summary(tmp_path / "out")["updates_applied"] == 2


def test_fedmq_run_stops_at_start_when_the_model_exceeds_the_body_limit(
        procs: Processes, big_model: str, tmp_path: Path, amqp_url: str,
        topology: Topology) -> None:
    # When the local demo runs a model of about 9 MB with a 4 MiB body limit
    run = procs.start("run", workers=1, model=big_model, max_body_bytes=4 * MiB,
                      out=tmp_path / "out")

    # Then it ends promptly, not zero, with the coordinator's one clear message
    assert procs.wait(run, STOP_SECONDS) != 0
    [message] = errors(run.log())
    assert "exceeds the body limit of 4194304 bytes" in message, message
    assert "--max-body-bytes" in message, message
    assert "sending version" not in run.log()
    # And the coordinator declared nothing
    assert not declared(amqp_url, topology.tasks)


def test_a_worker_whose_body_limit_is_below_its_model_stops_at_start(
        procs: Processes, big_model: str) -> None:
    # When a worker's own update could never be sent under its body limit
    worker = procs.start("worker", model=big_model, max_body_bytes=4 * MiB)

    # Then it says so and exits at once instead of waiting for a coordinator
    assert procs.wait(worker, STOP_SECONDS) != 0
    [message] = errors(worker.log())
    assert "exceeds the body limit of 4194304 bytes" in message, message


def test_a_chunk_size_over_the_message_limit_stops_at_start(procs: Processes) -> None:
    coordinator = procs.start("coordinator", max_message_bytes=MiB, chunk_bytes=2 * MiB)
    assert procs.wait(coordinator, STOP_SECONDS) != 0
    [message] = errors(coordinator.log())
    assert "chunk_bytes (2097152) is over max_message_bytes (1048576)" in message, message
