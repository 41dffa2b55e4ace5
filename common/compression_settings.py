"""The coordinator's settings for compressed updates (issue 15; the math: common/compression.py).

The choice is the coordinator's: it puts the method in every task it issues, workers compress
their deltas as the task says (keeping top-k's error-feedback residual themselves), and the
coordinator refuses an update compressed any other way. Workers have no setting of their own, so
the two roles cannot disagree. Only FedBuff is offered: compression acts on deltas, and FedAsync
and FedAvg ask workers for full weights (README, "Compressed updates").
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.compression import Compression, Method

DELTA_STRATEGIES = ("fedbuff",)


class CompressionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)

    compression: Method = Field("none", description="How workers send their deltas (fedbuff): "
                                "none, float16, int8 (a scale per layer) or topk (the largest "
                                "--topk-fraction of each layer; the worker keeps the rest for "
                                "its next update). Sent in every task; an update compressed "
                                "otherwise is rejected.")
    topk_fraction: float = Field(0.01, gt=0, le=1, description="topk: the share of each "
                                 "layer's entries a worker sends (at least one).")

    def compression_spec(self) -> Compression:
        return Compression(self.compression, self.topk_fraction if self.compression == "topk"
                           else 0.0)


def compression_problem(compression: str, strategy: str) -> str | None:
    """Why `compression` cannot work with `strategy`, or None."""
    if compression != "none" and strategy not in DELTA_STRATEGIES:
        return (f"compression {compression} compresses deltas, and {strategy} asks workers for "
                f"full weights: use --strategy fedbuff, or --compression none")
    return None
