"""What every task carries beyond the training settings, from the coordinator's settings: the
compression, FedProx's mu, secure aggregation's clip and scale, local differential privacy."""

from __future__ import annotations

from typing import Any

from common import quantise
from common.settings import CoordinatorSettings


def task_options(settings: CoordinatorSettings) -> dict[str, Any]:
    """TrainTask fields beyond the training settings: how deltas are compressed, FedProx's mu,
    secure aggregation's clip and scale, and local differential privacy (none with central DP:
    workers send their deltas as they are, and the coordinator noises them)."""
    spec = settings.compression_spec()
    extra: dict[str, Any] = {"proximal_mu": settings.proximal_mu} if settings.proximal_mu else {}
    if spec.lossy:
        extra.update(compression=spec.method, topk_fraction=spec.topk_fraction)
    if settings.secure_aggregation:  # coordinator/secure_link.py
        extra.update(secure_clip=settings.secure_clip, secure_scale=quantise.max_scale(
            settings.secure_clip, settings.buffer_size * settings.secure_weight_resolution))
    if settings.dp_mode == "central":
        return {"dp_clip_norm": 0.0, "dp_noise_multiplier": 0.0, **extra}
    return {"dp_clip_norm": settings.dp_clip_norm,
            "dp_noise_multiplier": settings.dp_noise_multiplier, **extra}
