"""Frozen, typed message classes: everything that travels through the broker is one of these.

Fields named in a class's `PAYLOAD` travel in the envelope's payload bytes (the part that may be
sealed); all others are header fields, readable for routing and monitoring.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from common.compression import Method


def new_id() -> str:
    """A fresh unique id for tasks and updates."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TrainTask:
    """Ask a worker to train locally, starting from the freshest global model it holds."""

    KIND: ClassVar[str] = "train_task"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    task_id: str
    job: str
    min_version: int
    local_epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 0.5
    send_delta: bool = False          # reply with trained - base instead of the trained weights
    issued_at: float = field(default_factory=time.time)
    dp_clip_norm: float = 0.0         # > 0: clip the delta's global L2 norm to this (local DP)
    dp_noise_multiplier: float = 0.0  # > 0: add N(0, (multiplier * clip)^2) to every coordinate
    compression: Method = "none"      # how the delta is to be sent (common/compression.py)
    topk_fraction: float = 0.0        # topk: the share of each layer's entries sent
    proximal_mu: float = 0.0          # > 0: FedProx, mu/2 * ||w - w_global||^2 in the local loss
    secure_clip: float = 0.0          # secure aggregation (> 0): clip to this L2 norm, then
    secure_scale: float = 0.0         # quantise at this scale and mask (common/masking.py)


@dataclass(frozen=True)
class WeightUpdate:
    """A worker's result: the trained weights (or their delta) and how they were obtained.

    A compressed delta (`compression` not "none") carries its wire form: `weights` holds the
    values, `scales` and `indices` what int8 and topk add (common/compression.py); an optional
    payload field left empty is not sent at all."""

    KIND: ClassVar[str] = "weight_update"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("weights", "metrics", "scales", "indices")

    update_id: str
    worker_id: str
    task_id: str
    base_version: int
    num_examples: int
    train_seconds: float
    weights: tuple[np.ndarray, ...]  # one array per layer, frozen
    is_delta: bool = False
    metrics: dict[str, float] = field(default_factory=dict)  # training metrics can leak too
    compression: Method = "none"
    scales: tuple[np.ndarray, ...] = ()   # int8: one float32 array, a scale per layer
    indices: tuple[np.ndarray, ...] = ()  # topk: one uint32 array per layer
    helper_seed: bytes = b""  # secure aggregation: a MaskSeed sealed to the helper (opaque here)


@dataclass(frozen=True)
class GlobalModel:
    """One version of the global model, as broadcast on the model exchange."""

    KIND: ClassVar[str] = "global_model"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("weights",)

    version: int
    fingerprint: str
    weights: tuple[np.ndarray, ...]  # one array per layer, frozen
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ModelNotice:
    """A new global version exists (on the model fanout exchange). Small on purpose: a worker
    fetches the model it needs once per task instead of receiving every version."""

    KIND: ClassVar[str] = "model_notice"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    version: int
    fingerprint: str
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ModelRequest:
    """A late worker asking the coordinator for the current global model (reply via reply_to)."""

    KIND: ClassVar[str] = "model_request"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    worker_id: str
    have_version: int = -1


@dataclass(frozen=True)
class Event:
    """Progress, metrics and rejections published on the events exchange."""

    KIND: ClassVar[str] = "event"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    name: str
    job: str
    fields: dict[str, int | float | str | None] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ShardLease:
    """A token in the shards queue: the worker holding it (unacked) trains on that shard."""

    KIND: ClassVar[str] = "shard_lease"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    shard_index: int
    num_shards: int
    job: str = ""


@dataclass(frozen=True)
class EvalRequest:
    """Federated evaluation: the workers sampled (by a hash of worker id and version, a share
    `sample` of them) evaluate `version`, or the fresher one they hold, on their validation
    split. Small (no weights), on the evaluations fanout exchange."""

    KIND: ClassVar[str] = "eval_request"
    PAYLOAD: ClassVar[tuple[str, ...]] = ()

    version: int
    sample: float = 1.0


@dataclass(frozen=True)
class EvalReport:
    """One worker's metrics of one global version on its validation split (to the inbox)."""

    KIND: ClassVar[str] = "eval_report"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("metrics",)  # a site's metrics describe its data

    worker_id: str
    request_version: int  # the version asked for: reports are grouped by it
    version: int          # the version evaluated (the freshest held, >= request_version)
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskSeed:
    """Secure aggregation: the seed of one update's mask, sealed by its worker to the helper
    and relayed by the coordinator, which cannot open it. Names the update it belongs to, so
    the helper refuses it under any other id."""

    KIND: ClassVar[str] = "mask_seed"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("seed",)

    update_id: str
    worker_id: str
    job: str
    seed: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """The coordinator asks the helper for sum w_i r_i over one full buffer: integer weights by
    update id, each update's sealed MaskSeed, and how many coordinates the masks have."""

    KIND: ClassVar[str] = "unmask_request"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("seeds",)

    buffer_id: str
    job: str
    coordinates: int
    weights: dict[str, int]
    seeds: dict[str, bytes]


@dataclass(frozen=True)
class UnmaskAnswer:
    """The helper's answer: sum w_i r_i mod 2^32 as one flat uint32 array, or a refusal."""

    KIND: ClassVar[str] = "unmask_answer"
    PAYLOAD: ClassVar[tuple[str, ...]] = ("mask_sum",)

    buffer_id: str
    answered: bool
    code: str = "ok"
    reason: str = ""
    mask_sum: tuple[np.ndarray, ...] = ()


Message = (TrainTask | WeightUpdate | GlobalModel | ModelNotice | ModelRequest | Event
           | ShardLease | EvalRequest | EvalReport | MaskSeed | UnmaskRequest | UnmaskAnswer)
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (TrainTask, WeightUpdate, GlobalModel, ModelNotice, ModelRequest, Event,
                ShardLease, EvalRequest, EvalReport, MaskSeed, UnmaskRequest, UnmaskAnswer)
}
