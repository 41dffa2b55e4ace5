"""What a large model costs the coordinator in memory (issue 15, the 1 GB benchmark): a body
reassembled from chunks is decoded without a copy, and the start-up check that the model fits
the body limit encodes it only when it is close to the limit."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from common import wire
from common.codec import Codec
from common.errors import ConfigError
from common.messages import WeightUpdate
from common.topology import Topology
from coordinator.outbox import Outbox

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
