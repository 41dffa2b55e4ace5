"""Compressed updates on the wire and in the coordinator's core: they round-trip (plain and
sealed), an uncompressed update is byte for byte what it was, the sizes shrink as expected, and
anything malformed, mismatched or fuzzed is refused with a reason and never applied."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import sealed_wire, wire, wire_arrays, wire_bulk
from common.compression import Compression, compress
from common.errors import DecodeError, RejectedUpdate
from common.identity import Identity
from common.messages import WeightUpdate, new_id
from common.settings import CoordinatorSettings, TrainingSettings
from coordinator.core import CoordinatorCore
from coordinator.strategies import FedBuff
from coordinator.task_options import task_options
from coordinator.validation import expand_update

SHAPES = [(64, 64), (64,), (64, 10), (10,)]  # the digits MLP: 4,810 parameters
TEMPLATE = [np.zeros(s, np.float32) for s in SHAPES]
SPECS = {"none": Compression(), "float16": Compression("float16"), "int8": Compression("int8"),
         "topk": Compression("topk", 0.1)}


def delta(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.01, size=s).astype(np.float32) for s in SHAPES]


def packed(spec: Compression, task_id: str = "t", seed: int = 0, **changes: Any) -> WeightUpdate:
    sent = compress(delta(seed), spec)
    update = WeightUpdate(update_id=new_id(), worker_id="w", task_id=task_id, base_version=0,
                          num_examples=10, train_seconds=0.5, weights=sent.values, is_delta=True,
                          metrics={"loss": 0.1}, compression=spec.method, scales=sent.scales,
                          indices=sent.indices)
    return dataclasses.replace(update, **changes)


@pytest.mark.parametrize("method", list(SPECS))
def test_a_compressed_update_round_trips_plain_and_sealed(method: str) -> None:
    # Given an update compressed with `method`
    update = packed(SPECS[method])
    coordinator, worker = Identity.generate("coordinator"), Identity.generate("w")
    # When it is decoded plain, and sealed to the coordinator
    plain = wire.decode(wire.encode(update), WeightUpdate)
    body = sealed_wire.encode_sealed(update, worker, {"coordinator":
                                                      coordinator.public().encryption})
    opened, _ = sealed_wire.decode_sealed(body, WeightUpdate, trusted={
        "w": worker.public().signing}, me=coordinator)
    # Then both come back with every array byte for byte
    for got in (plain, opened):
        assert got.compression == method
        for field in ("weights", "scales", "indices"):
            mine, theirs = getattr(got, field), getattr(update, field)
            assert [(a.dtype, a.tobytes()) for a in mine] == [(a.dtype, a.tobytes())
                                                              for a in theirs], field


def test_an_uncompressed_update_is_byte_for_byte_what_it_was_before_compression() -> None:
    # Given an uncompressed update, and its body as it was built before the optional fields
    update = packed(SPECS["none"])
    envelope = wire.to_envelope(update)
    header = {k: v for k, v in envelope.header.items() if k != "compression"}
    old_payload = wire_bulk.pack({"weights": [wire_arrays.encode_array(w) for w in update.weights],
                                  "metrics": update.metrics})
    # Then the payload holds no empty scales or indices (only the header names the method)
    assert envelope.payload == old_payload and envelope.header["compression"] == "none"
    assert wire.encode(update) == wire.pack_envelope(envelope)
    old = wire.pack_envelope(dataclasses.replace(envelope, header=header))
    assert len(wire.encode(update)) - len(old) == len(b"\xabcompression\xa4none")


SIZES = [int(np.prod(s)) for s in SHAPES]
DATA_BYTES = {"none": 4 * sum(SIZES), "float16": 2 * sum(SIZES), "int8": sum(SIZES) + 4 * 4,
              "topk": 8 * sum(SPECS["topk"].kept(n) for n in SIZES)}


@pytest.mark.parametrize("method", list(SPECS))
def test_a_compressed_payload_is_its_data_plus_a_few_bytes_per_array(method: str) -> None:
    # Given the digits model's delta, compressed (top-k: ceil(10 %) of each layer, 8 bytes each)
    update = packed(SPECS[method])
    arrays = len(update.weights) + len(update.scales) + len(update.indices)
    # Then its payload is the data bytes plus at most 40 bytes an array (dtype, shape, length)
    # and 40 for the metrics and field names; the data is 1/2, 1/4 and 1/5 of the uncompressed
    payload = len(wire.to_envelope(update).payload)
    assert DATA_BYTES[method] < payload <= DATA_BYTES[method] + 40 * arrays + 40, payload
    assert DATA_BYTES["none"] / DATA_BYTES[method] == pytest.approx(
        {"none": 1, "float16": 2, "int8": 3.99, "topk": 4.99}[method], abs=0.01)


@pytest.mark.parametrize(("field", "value"), [("compression", "zstd"), ("compression", 1),
                                              ("compression", None)])
def test_an_unknown_compression_method_is_a_decode_error(field: str, value: object) -> None:
    envelope = wire.to_envelope(packed(SPECS["int8"]))
    body = wire.pack_envelope(dataclasses.replace(envelope,
                                                  header={**envelope.header, field: value}))
    with pytest.raises(DecodeError, match="WeightUpdate.compression|weight_update.compression"):
        wire.decode(body, WeightUpdate)


# ---------------------------------------------------------------- the coordinator's core

def core_for(method: str) -> CoordinatorCore:
    """A FedBuff (K = 1) core over TEMPLATE whose tasks ask for `method`."""
    return CoordinatorCore(weights=[t.copy() for t in TEMPLATE], strategy=FedBuff(1),
                           max_staleness=5, training=TrainingSettings(), job="j",
                           compression=SPECS[method])


@pytest.mark.parametrize("method", list(SPECS))
def test_the_core_applies_the_dense_delta_a_compressed_update_stands_for(method: str) -> None:
    # Given a core whose tasks ask for `method`, and an update answering one of them
    core = core_for(method)
    update = packed(SPECS[method], core.issue_task().task_id)
    # When it is handled
    outcome = core.handle(wire.decode(wire.encode(update), WeightUpdate))
    # Then the model moved by the decompressed delta (within the method's error)
    assert outcome.kind == "applied", outcome
    expanded = expand_update(update, SPECS[method], TEMPLATE).weights
    for w, e, d in zip(core.weights, expanded, delta(), strict=True):
        assert w.dtype == np.float32 and np.array_equal(w, e)
        if method != "topk":
            assert np.abs(w - d).max() <= 0.01 * 5 / 127  # int8's half step at |d| <= 5 sigma


MISMATCHES: dict[str, tuple[str, dict[str, Any], str]] = {
    "int8 to a topk job": ("topk", {"spec": SPECS["int8"]}, "compression_mismatch"),
    "uncompressed to an int8 job": ("int8", {"spec": SPECS["none"]}, "compression_mismatch"),
    "float16 to an uncompressed job": ("none", {"spec": SPECS["float16"]},
                                       "compression_mismatch"),
    "compressed full weights": ("int8", {"spec": SPECS["int8"], "is_delta": False}, "wrong_form"),
    "topk of another fraction": ("topk", {"spec": Compression("topk", 0.2)}, "bad_compression"),
    "stray indices": ("none", {"spec": SPECS["none"], "indices": (np.zeros(1, np.uint32),)},
                      "bad_compression"),
    "duplicate index": ("topk", {"spec": SPECS["topk"], "dup": True}, "bad_compression"),
    "NaN scale": ("int8", {"spec": SPECS["int8"], "scales": (np.full(4, np.nan, np.float32),)},
                  "bad_compression"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_mismatched_or_malformed_update_is_rejected_and_changes_nothing(case: str) -> None:
    # Given a core and an update that does not match what its tasks ask for
    method, changes, code = MISMATCHES[case]
    core = core_for(method)
    changes = dict(changes)
    spec, dup = changes.pop("spec"), changes.pop("dup", False)
    update = packed(spec, core.issue_task().task_id, **changes)
    if dup:
        index = np.array(update.indices[0])
        index[1] = index[0]
        update = dataclasses.replace(update, indices=(index, *update.indices[1:]))
    before = [w.tobytes() for w in core.weights]
    # When it is handled (after a trip over the wire)
    outcome = core.handle(wire.decode(wire.encode(update), WeightUpdate))
    # Then it is rejected with its code, recorded as such, and the model is untouched
    assert (outcome.kind, outcome.code) == ("rejected", code), outcome
    assert core.rejected_ids == {update.update_id: code} and core.version == 0
    assert [w.tobytes() for w in core.weights] == before


def test_tasks_carry_the_coordinators_compression_and_other_strategies_are_refused() -> None:
    # Given a coordinator configured for top-k at 1 %
    settings = CoordinatorSettings(strategy="fedbuff", compression="topk", topk_fraction=0.01)
    # Then its tasks ask for it (and only top-k sends its fraction)
    assert task_options(settings) | {"dp_clip_norm": 0.0} == {
        "compression": "topk", "topk_fraction": 0.01, "dp_clip_norm": 0.0,
        "dp_noise_multiplier": 0.0}
    assert task_options(CoordinatorSettings(strategy="fedbuff", compression="int8",
                                            topk_fraction=0.5))["topk_fraction"] == 0.0
    # And a strategy that asks for full weights cannot be configured with compression
    for strategy in ("fedasync", "fedavg"):
        with pytest.raises(ValueError, match="use --strategy fedbuff"):
            CoordinatorSettings(strategy=strategy, compression="float16")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["float16", "int8", "topk"]), st.data())
def test_fuzzed_compressed_bodies_are_refused_or_expand_to_the_models_shapes(
        method: str, data: st.DataObject) -> None:
    # Given a valid compressed body with a few bytes overwritten
    body = bytearray(wire.encode(packed(SPECS[method])))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    # When it is decoded and expanded, then it is refused with a reason, or it is a delta of
    # exactly the model's shapes and dtypes (validation then judges its values)
    with contextlib.suppress(DecodeError, RejectedUpdate):
        update = wire.decode(bytes(body), WeightUpdate)
        dense = expand_update(update, SPECS[method], TEMPLATE).weights
        assert [(w.shape, w.dtype) for w in dense] == [(t.shape, t.dtype) for t in TEMPLATE]
