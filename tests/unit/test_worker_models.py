"""A sealed worker's model acceptance with the real codec (issue 14, item 8): a model reply not
signed by the coordinator, or not signed at all, is never taken; one of another architecture
stops the worker (item 6). The reply itself arrives through RabbitMQ's direct reply-to, which
only the coordinator's reply reaches, so this is tested here rather than on the broker."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common import identity, sealed_wire, wire
from common.amqp import Delivery
from common.codec import Codec
from common.messages import GlobalModel
from common.topology import Topology
from worker.model_source import ModelSource

COORDINATOR = identity.Identity.generate("coordinator")
W0 = identity.Identity.generate("w0")
ROGUE = identity.Identity.generate("rogue")


def model(version: int, fingerprint: str = "f") -> GlobalModel:
    return GlobalModel(version=version, fingerprint=fingerprint,
                       weights=(np.full((2, 2), version, np.float32),))


def source(wrong: list[GlobalModel]) -> ModelSource:
    return ModelSource("w0", Topology(), Codec(1 << 20, W0),
                       {"coordinator": COORDINATOR.public().signing}, "f",
                       wrong_model=wrong.append)


def reply(body: bytes) -> Delivery:
    return Delivery(body=body, tag=1, queue="amq.rabbitmq.reply-to")


def to_w0(message: GlobalModel, signer: identity.Identity) -> bytes:
    return sealed_wire.encode_sealed(message, signer, {"w0": W0.public().encryption})


def test_a_sealed_worker_takes_only_models_signed_by_its_coordinator() -> None:
    wrong: list[GlobalModel] = []
    models = source(wrong)
    # Given a model signed by another key under the coordinator's name, and an unsigned one
    impostor = replace(ROGUE, name="coordinator")
    for body in (to_w0(model(5), impostor), wire.encode(model(6)), to_w0(model(7), ROGUE)):
        # When the worker receives them, then it takes none of them
        models.on_reply(reply(body))
        assert models.latest is None
    # while the coordinator's own model is taken
    models.on_reply(reply(to_w0(model(1), COORDINATOR)))
    assert models.latest is not None and models.latest.version == 1 and not wrong


def test_a_model_of_another_architecture_is_reported_and_never_taken() -> None:
    wrong: list[GlobalModel] = []
    models = source(wrong)
    models.on_reply(reply(to_w0(model(3, fingerprint="other"), COORDINATOR)))
    assert models.latest is None and [m.fingerprint for m in wrong] == ["other"]
