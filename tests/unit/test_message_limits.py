"""The message limit (issue 15): settings refuse what RabbitMQ never accepts, and a worker given a
body over its limit says why once, hands the task back and stops instead of spinning."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from common.amqp import Delivery
from common.codec import Codec
from common.errors import ConfigError
from common.limits import check_fits, too_large
from common.messages import GlobalModel, TrainTask
from common.settings import CoordinatorSettings, WorkerSettings
from common.topology import Topology
from worker.model_source import ModelSource
from worker.packing import DeltaPacker
from worker.service import WorkerService
from worker.task_hold import TaskHold
from worker.trainer import TrainResult

MiB = 1024 * 1024


def test_a_limit_over_512_mib_is_refused() -> None:
    with pytest.raises(ValidationError, match="512 MiB"):
        WorkerSettings(max_message_bytes=512 * MiB + 1)
    assert CoordinatorSettings(max_message_bytes=512 * MiB).max_message_bytes == 512 * MiB


def test_the_message_names_both_sizes_and_what_to_do() -> None:
    message = too_large("the model 'm'", 9_000_000, MiB)
    assert "9000000 bytes" in message and f"limit of {MiB} bytes" in message
    assert "--max-message-bytes" in message and "max_message_size" in message
    assert "smaller model" in message
    check_fits("x", b"1" * 10, 10)
    with pytest.raises(ConfigError, match="11 bytes encoded"):
        check_fits("x", b"1" * 11, 10)


class FakeBroker:
    def __init__(self) -> None:
        self.rejected: list[tuple[int, bool]] = []

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        self.rejected.append((delivery.tag, requeue))


def bare_worker(limit: int) -> Any:
    """A WorkerService without a model or a broker: only what the limit checks use."""
    service: Any = object.__new__(WorkerService)
    service.settings = WorkerSettings(max_message_bytes=limit)
    service.failure = None
    service.stop = threading.Event()
    return service


def test_a_model_over_the_workers_limit_stops_it_with_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    service = bare_worker(100)
    models = ModelSource("w", Topology(), Codec(100), None, "f",
                         too_large=service._over_limit, wrong_model=service._wrong_model)
    for _ in range(3):  # replies to repeated requests: logged once
        models.on_reply(Delivery(body=b"m" * 150, tag=1, queue="model"))
    assert service.stop.is_set()
    assert "150 bytes encoded" in service.failure and "limit of 100 bytes" in service.failure
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_a_task_over_the_workers_limit_goes_back_and_the_worker_stops() -> None:
    service, broker = bare_worker(100), FakeBroker()
    service._on_task(broker, Delivery(body=b"t" * 101, tag=7, queue="tasks"))
    assert broker.rejected == [(7, True)]
    assert service.stop.is_set() and "a task is 101 bytes" in service.failure


class FakeTrainer:
    num_examples = 10

    def train(self, weights: list[np.ndarray], *_: Any) -> TrainResult:
        return TrainResult(weights=[w + 1 for w in weights], metrics={}, seconds=0.1)


def test_an_update_over_the_limit_is_never_published_and_its_task_goes_back() -> None:
    # Given a worker holding a model whose update will not fit its body limit
    service = bare_worker(2000)
    service.settings = WorkerSettings(max_message_bytes=2000, max_body_bytes=2000)
    service.codec = Codec(2000)
    service.recipients = None
    service.worker_id = "w"
    service.trainer = FakeTrainer()
    service.rng = np.random.default_rng(0)
    service.packer = DeltaPacker()
    service.models = ModelSource("w", Topology(), service.codec, None, "f",
                                 too_large=service._over_limit)
    service.models.latest = GlobalModel(version=0, fingerprint="f",
                                        weights=(np.zeros(1000, np.float32),))
    handed_back: list[Callable[[], None]] = []
    service._hand_back = lambda _broker, callback: handed_back.append(callback)
    broker = FakeBroker()
    service.training = object()

    # When it has trained a task
    task = TrainTask(task_id="t" * 32, job="", min_version=0)
    delivery = Delivery(body=b"", tag=3, queue="tasks")
    service.held = TaskHold(60.0)
    service.held.start(delivery)  # as _on_task does
    service._train(broker, delivery, task)

    # Then the task is handed back (requeued), nothing published, and the worker stops
    [callback] = handed_back
    callback()
    assert broker.rejected == [(3, True)] and service.training is None
    assert service.stop.is_set() and "the update for task tttttttt" in service.failure
    assert "body limit of 2000 bytes" in service.failure and "--max-body-bytes" in service.failure


def test_a_chunk_size_over_the_message_limit_is_refused_and_the_default_fits() -> None:
    with pytest.raises(ValidationError, match="chunk_bytes .* is over max_message_bytes"):
        WorkerSettings(max_message_bytes=MiB, chunk_bytes=2 * MiB)
    assert WorkerSettings(max_message_bytes=MiB).chunk_size == MiB
    assert CoordinatorSettings().chunk_size == 4 * MiB
