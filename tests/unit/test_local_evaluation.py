"""A worker's federated evaluation (worker/local_evaluation.py) with a real Keras model and the
real codec: requests that come while an evaluation runs never build a backlog, and the newest of
them is evaluated next, so the final version's request is never lost behind an earlier one."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from common.amqp import Delivery
from common.codec import Codec
from common.learning_task import LearningTask
from common.messages import EvalReport, EvalRequest, GlobalModel
from common.topology import Topology
from worker.local_evaluation import LocalEvaluation


def build() -> Any:
    import keras
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


class HeldModels:
    """Hands out the asked-for version once `gate` lets it; records what was asked."""

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()
        self.asked: list[int] = []
        self.weights = [w.copy() for w in build().get_weights()]

    def at_least(self, broker: Any, version: int, stop: threading.Event) -> GlobalModel:
        self.asked.append(version)
        self.started.set()
        assert self.gate.wait(10)
        return GlobalModel(version=version, fingerprint="f", weights=tuple(self.weights))


class Wire:
    """A connection as the evaluation sees it: callbacks run at once, publishes recorded."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def private_queue(self, exchange: str) -> str:
        return "q"

    def consume(self, queue: str, handler: Any, auto_ack: bool = False) -> None:
        self.handler = handler

    def call_threadsafe(self, callback: Any) -> None:
        callback()

    def publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        self.sent.append(body)


def sent(wire: Wire, count: int) -> bool:
    """Whether `count` reports went out within 30 s."""
    deadline = time.monotonic() + 30
    while len(wire.sent) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(wire.sent) == count


def test_requests_during_an_evaluation_wait_in_one_slot_and_the_newest_is_evaluated_next() -> None:
    # Given a worker evaluating version 2 (its model held back)
    codec, models, wire = Codec(1 << 20), HeldModels(), Wire()
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    evaluation = LocalEvaluation("w0", LearningTask(build_model=build, loss="mse",
                                                    metrics=("mae",)),
                                 build, x, y, Topology(job="j"), codec, None, None,
                                 models, threading.Event())  # type: ignore[arg-type]

    evaluation.subscribe(wire)  # type: ignore[arg-type]

    def ask(version: int) -> None:
        body = codec.encode(EvalRequest(version=version, sample=1.0))
        wire.handler(Delivery(body=body, tag=0, queue="q"))

    ask(2)
    assert models.started.wait(10)
    # When versions 4, 3 (older than the one waiting), 5 and 2 again are asked for meanwhile,
    # and the worker reconnects
    for version in (4, 3, 5, 2):
        ask(version)
    reconnected = Wire()
    evaluation.subscribe(reconnected)  # type: ignore[arg-type]
    # Then nothing more has started, and once the model comes, 2 and then 5 are evaluated
    # (3 and 2 were skipped, 4 was replaced by 5), reporting on the current connection
    assert models.asked == [2]
    models.gate.set()
    wire = reconnected
    assert sent(wire, 2)
    assert models.asked == [2, 5] and evaluation.skipped == 3
    reports = [codec.decode(body, EvalReport).message for body in wire.sent]
    assert [(r.request_version, r.num_examples) for r in reports] == [(2, 4), (5, 4)]
    assert all(set(r.metrics) == {"loss", "mae"} for r in reports)
    # And a request after that starts an evaluation of its own
    deadline = time.monotonic() + 30
    while evaluation.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    reconnected.handler(Delivery(body=codec.encode(EvalRequest(version=6, sample=1.0)),
                                 tag=0, queue="q"))
    assert sent(wire, 3) and models.asked == [2, 5, 6]
