"""What a large model costs the coordinator in memory (issue 15, the 1 GB benchmark): a body
reassembled from chunks is decoded without a copy, the start-up check that the model fits
the body limit encodes it only when it is close to the limit, the model is sent in chunks
copied from its weights (no encoded copy kept between requests, none of a version already
replaced), a FedAsync step writes the new model into the update's own reassembled body, and the
final .keras file is written without its weights whole in memory."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from unittest import mock

import numpy as np
import pytest

from common import chunks, identity, wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import ConfigError
from common.messages import GlobalModel, ModelRequest, WeightUpdate
from common.topology import REPLY_TO, Topology
from coordinator.evaluation import Evaluator
from coordinator.outbox import Outbox
from coordinator.strategies import Contribution, FedAsync, fedasync, mix, staleness_constant

WEIGHTS = (np.arange(64 * 1024, dtype=np.float32).reshape(256, 256), np.ones(7, np.float32))


def test_a_reassembled_bytearray_body_is_decoded_without_a_copy() -> None:
    # Given an update body as chunk reassembly leaves it: a bytearray
    update = WeightUpdate(update_id="u", worker_id="w", task_id="t", base_version=0,
                          num_examples=1, train_seconds=0.0, weights=WEIGHTS)
    body = bytearray(wire.encode(update))
    # When it is decoded
    decoded = wire.decode(body, WeightUpdate)
    # Then the large array is a view of the body itself (no second copy of the update), and
    # read-only like the views of a bytes body
    assert np.shares_memory(decoded.weights[0], np.frombuffer(body, np.uint8))
    assert not decoded.weights[0].flags.writeable
    assert np.array_equal(decoded.weights[0], WEIGHTS[0])


def outbox() -> Outbox:
    return Outbox(Topology("j"), Codec(2 ** 31), "fingerprint", lambda: None)


def test_the_model_is_not_encoded_at_start_when_it_clearly_fits() -> None:
    # Given a model far below the body limit
    with mock.patch.object(Codec, "encode", wraps=outbox().codec.encode) as encode:
        outbox().check_model_fits(list(WEIGHTS), "m", limit=2 ** 30)
    # Then only the empty stand-ins were encoded (two messages), never the weights
    assert encode.call_count == 2
    assert all(sum(w.size for w in call.args[0].weights) == 0 for call in encode.call_args_list)


@pytest.mark.parametrize("slack", [0, 1])
def test_a_model_near_the_limit_is_measured_exactly(slack: int) -> None:
    # Given a limit at the exact size of the larger encoded message (an update), or one byte less
    box = outbox()
    exact = len(wire.encode(WeightUpdate(  # ids of the same length as the check's new_id()
        update_id="0" * 32, worker_id="w" * 64, task_id="0" * 32, base_version=0,
        num_examples=0, train_seconds=0.0, weights=WEIGHTS)))
    # When the model is checked against it, then it fits exactly at the size and not below
    if slack == 0:
        box.check_model_fits(list(WEIGHTS), "m", limit=exact)
    else:
        with pytest.raises(ConfigError, match="exceeds the body limit"):
            box.check_model_fits(list(WEIGHTS), "m", limit=exact - slack)


class RecordingBroker:
    """Stands in for a Broker: keeps what is published (reply chunks) and what is acked."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.acked: list[Delivery] = []

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None, persistent: bool = True) -> None:
        self.published.append((routing_key, bytes(body), headers or {}))

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery)


LAYERS = tuple(np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
               for _ in range(8))  # 2 MiB in layers of 256 KiB, like the 1 GB model's 17
CHUNK = 64 * 1024


def ask(box: Outbox, broker: RecordingBroker, worker: str) -> list[tuple[bytes, dict[str, Any]]]:
    """One model request from `worker`; the reply chunks it got."""
    before = len(broker.published)
    box.reply_model(cast(Broker, broker), Delivery(
        body=wire.encode(ModelRequest(worker_id=worker)), tag=1, queue="q",
        reply_to=f"{REPLY_TO}.{worker}", correlation_id=worker))
    return [(body, headers) for _, body, headers in broker.published[before:]]


def joined(parts: list[tuple[bytes, dict[str, Any]]]) -> bytes:
    headers = [chunks.parse(h) for _, h in parts]
    assert [h.index for h in headers] == list(range(headers[0].count))
    assert len({h.transfer_id for h in headers}) == 1
    body = b"".join(part for part, _ in parts)
    assert all(h.digest == chunks.digest(body) and h.total == len(body) for h in headers)
    return body


def test_the_model_goes_out_in_chunks_and_is_not_kept_encoded_between_requests() -> None:
    # Given a plain outbox that announced a 2 MiB model, sent in chunks of 64 KiB
    box = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=CHUNK)
    broker = RecordingBroker()
    box.broadcast(cast(Broker, broker), 3, list(LAYERS))
    # When two workers ask for it, memory traced
    tracemalloc.start()
    try:
        first = ask(box, broker, "w0")
        held = tracemalloc.get_traced_memory()[0] - sum(len(part) for part, _ in first)
        second = ask(box, broker, "w1")
        transient = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Then each gets the whole encoded model, in chunks that carry its digest, a transfer each
    body = joined(first)
    assert joined(second) == body and len(first) == -(-len(body) // CHUNK) > 1
    model = wire.decode(body, GlobalModel)
    assert model.version == 3 and model.fingerprint == "f"
    assert all(np.array_equal(a, b) for a, b in zip(model.weights, LAYERS, strict=True))
    assert chunks.parse(first[0][1]).transfer_id != chunks.parse(second[0][1]).transfer_id
    # And apart from the chunks sent (the recording broker keeps them), no copy of the model
    # stayed after the first request, and none was made for the second (a chunk at a time)
    size = sum(w.nbytes for w in LAYERS)
    assert held < size // 4
    assert transient < size // 4
    assert len(broker.acked) == 2


def test_a_sealed_model_goes_out_in_chunks_that_open_for_its_readers() -> None:
    # Given a sealed outbox (the coordinator's identity) and a registered worker
    me, worker = identity.Identity.generate("coordinator"), identity.Identity.generate("w0")
    box = Outbox(Topology("j"), Codec(2 ** 31, me), "f",
                 lambda: {"w0": worker.public().encryption}, chunk_bytes=CHUNK)
    broker = RecordingBroker()
    box.broadcast(cast(Broker, broker), 5, list(LAYERS))
    # When the worker asks for the model
    body = joined(ask(box, broker, "w0"))
    # Then the joined chunks are one sealed body: signed by the coordinator, opened by the
    # worker, and the model is whole
    opened = Codec(2 ** 31, worker).decode(body, GlobalModel,
                                          {"coordinator": me.public().signing})
    assert opened.message.version == 5
    assert all(np.array_equal(a, b) for a, b in zip(opened.message.weights, LAYERS, strict=True))


def decoded_update(make_body: Callable[[bytes], bytes | bytearray]) -> WeightUpdate:
    trained = tuple(w + 1 for w in LAYERS)
    return wire.decode(make_body(wire.encode(WeightUpdate(
        update_id="u", worker_id="w", task_id="t", base_version=0, num_examples=1,
        train_seconds=0.0, weights=trained))), WeightUpdate)


def test_a_fedasync_step_writes_the_new_model_into_a_reassembled_body() -> None:
    # Given the global model and an update decoded from a body reassembled from chunks
    current = [w.copy() for w in LAYERS]
    update = decoded_update(bytearray)
    expected = mix(current, [np.array(w) for w in update.weights], 0.6)  # a new array each
    strategy = FedAsync(alpha=0.6, staleness_fn=staleness_constant)
    # When FedAsync applies it (in blocks of a sixteenth of a layer), memory traced
    tracemalloc.start()
    try:
        with mock.patch.object(fedasync, "BLOCK", LAYERS[0].size // 16):
            result = strategy.submit(current, Contribution(update.weights, False, 0, 1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Then the new model is the same, bit for bit, as a step into new arrays gives
    assert all(np.array_equal(a, b) and a.dtype == b.dtype
               for a, b in zip(result, expected, strict=True))
    # And it lies in the update's body: the step allocated a block at a time, not a model
    assert all(np.shares_memory(r, u) for r, u in zip(result, update.weights, strict=True))
    assert peak < LAYERS[0].nbytes // 2
    # And the current model was not touched
    assert all(np.array_equal(c, w) for c, w in zip(current, LAYERS, strict=True))


def test_a_fedasync_step_leaves_any_other_update_alone() -> None:
    # Given an update decoded from an immutable body (a whole delivery) and current weights
    current = [w.copy() for w in LAYERS]
    update = decoded_update(bytes)
    # When FedAsync applies it
    result = FedAsync(alpha=0.6, staleness_fn=staleness_constant).submit(
        current, Contribution(update.weights, False, 0, 1))
    # Then the result is new arrays, and neither the update nor the current model changed
    assert not any(np.shares_memory(r, u) for r, u in zip(result, update.weights, strict=True))
    assert all(np.array_equal(u, w + 1) for u, w in zip(update.weights, LAYERS, strict=True))
    assert all(np.array_equal(c, w) for c, w in zip(current, LAYERS, strict=True))


def test_a_large_model_is_let_go_once_a_newer_version_is_made_and_requests_wait() -> None:
    # Given an outbox that announced version 3 of a model sent in chunks
    box = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=CHUNK)
    broker = RecordingBroker()
    announced = [w.copy() for w in LAYERS]
    box.broadcast(cast(Broker, broker), 3, announced)
    alive = weakref.ref(announced[0])
    # When version 4 is made (its checkpoint not yet written) and a worker asks for the model
    box.superseded()
    del announced
    waiting = ask(box, broker, "w0")
    # Then version 3 is no longer held, and the request waits, unanswered and unacked
    assert alive() is None
    assert waiting == [] and broker.acked == []
    # And when the worker asks again, its first request is let go (one reply will do)
    assert ask(box, broker, "w0") == [] and len(broker.acked) == 1
    # And when version 4 is announced, the request gets it (once) and is acked
    box.broadcast(cast(Broker, broker), 4, list(LAYERS))
    reply = [(body, headers) for _, body, headers in broker.published if headers]
    assert wire.decode(joined(reply), GlobalModel).version == 4
    assert len(broker.acked) == 2


def test_an_announced_version_already_replaced_is_not_kept_unless_it_is_small() -> None:
    # Given a version announced once its checkpoint is written, when a newer one was made since
    large = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=CHUNK)
    small = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=2 ** 30)
    for box in (large, small):
        box.broadcast(cast(Broker, RecordingBroker()), 3, list(LAYERS), current=False)
    # Then a model sent in chunks is not kept (requests wait for the next), a small one is (as
    # before: it is answered at once)
    assert large.model_weights is None
    broker = RecordingBroker()
    assert len(ask(small, broker, "w0")) == 1 and len(broker.acked) == 1


def test_a_waiting_request_gets_an_announced_version_even_if_a_newer_one_was_made() -> None:
    # Given a request waiting while version 3 is let go (version 4 made)
    box = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=CHUNK)
    broker = RecordingBroker()
    box.broadcast(cast(Broker, broker), 3, list(LAYERS))
    box.superseded()
    ask(box, broker, "w0")
    # When version 4 is announced once its checkpoint is written, but version 5 was made
    # meanwhile (a busy job applies updates while each checkpoint is written)
    box.broadcast(cast(Broker, broker), 4, list(LAYERS), current=False)
    # Then the waiting request gets version 4 and is acked (it does not wait for a version
    # that is the newest when announced, which a busy job may not make for a long time)
    reply = [(body, headers) for _, body, headers in broker.published if headers]
    assert wire.decode(joined(reply), GlobalModel).version == 4
    assert len(broker.acked) == 1 and box.waiting == []
    # And version 4 is let go after that (a large model is not kept twice)
    assert box.model_weights is None


def test_a_model_sent_whole_is_joined_once_per_version() -> None:
    # Given a model that fits one message
    box = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=2 ** 30)
    broker = RecordingBroker()
    box.broadcast(cast(Broker, broker), 3, list(LAYERS))
    # When two workers ask for it
    first, second = ask(box, broker, "w0"), ask(box, broker, "w1")
    # Then both get the same whole body, joined once and kept for the version's other requests
    assert len(first) == len(second) == 1 and first[0][0] == second[0][0]
    assert box.model_pieces is not None and len(box.model_pieces) == 1
    assert wire.decode(first[0][0], GlobalModel).version == 3


def test_requests_waiting_on_a_lost_connection_are_dropped() -> None:
    # Given a request waiting for the next version
    box = Outbox(Topology("j"), Codec(2 ** 31), "f", lambda: None, chunk_bytes=CHUNK)
    broker = RecordingBroker()
    box.broadcast(cast(Broker, broker), 3, list(LAYERS))
    box.superseded()
    ask(box, broker, "w0")
    # When a new session attaches (the broker delivers the request again on it)
    box.attach(cast(Broker, mock.Mock()))
    box.broadcast(cast(Broker, broker), 4, list(LAYERS))
    # Then the old delivery is neither answered nor acked
    assert [h for _, _, h in broker.published if h] == [] and broker.acked == []


def test_the_final_model_file_is_written_without_its_weights_whole_in_memory(
        tmp_path: Path) -> None:
    # Given an evaluator's Keras model of 8 layers of 1 MiB, and final weights for it
    import keras
    model = keras.Sequential([keras.Input((512,)),
                              *(keras.layers.Dense(512) for _ in range(8))])
    weights = [np.asarray(w) + 1 for w in model.get_weights()]
    path = tmp_path / "final_model.keras"
    # When the final model is saved, memory traced
    tracemalloc.start()
    try:
        Evaluator(model, None, None).save(weights, str(path))
        held, peak = tracemalloc.get_traced_memory()  # held: the weights now in the model
    finally:
        tracemalloc.stop()
    # Then the file is a Keras model with those weights, written without more than a few
    # layers in memory at once besides the model's own (Keras's own way: two more copies)
    saved = keras.models.load_model(path).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(saved, weights, strict=True))
    assert peak - held < sum(w.nbytes for w in weights) // 2
