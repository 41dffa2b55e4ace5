"""Settings of secure aggregation (issue 13): the coordinator's, the worker's and the helper's.

A concern mixin per role, like common/queue_settings.py; `secure_problem` says why a coordinator
configuration cannot work with masked shares (the coordinator stops at start with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_CONFIG = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)


class HelperKeySettings(BaseSettings):
    """Who the mask seeds are sealed to: set by the worker's operator, never taken from a task
    (a coordinator that named its own key would open every seed)."""

    model_config = _CONFIG

    helper_key: Path | None = Field(None, description="Secure aggregation: the helper's public "
                                    "identity (.pub); mask seeds are sealed to it.")


class SecureAggregationSettings(HelperKeySettings):
    """The coordinator's side: masked FedBuff buffers, unmasked by the helper's sums."""

    secure_aggregation: bool = Field(False, description="FedBuff: workers send additive shares "
                                     "mod 2^32 of their clipped, quantised deltas; the helper "
                                     "(fedmq helper) unmasks only whole buffers' sums.")
    secure_clip: float = Field(1.0, gt=0, description="Secure aggregation: L2 norm every worker "
                               "clips its delta to before quantising (fixes the scale).")
    secure_weight_resolution: int = Field(16, ge=1, le=1024, description="Secure aggregation: "
                                          "integer weight of a fresh update; a stale one gets "
                                          "round(this / sqrt(1 + staleness)), at least 1.")
    helper_timeout: float = Field(30.0, gt=0, description="Secure aggregation: ask the helper "
                                  "again when a buffer's sum has not come back after this long.")


def secure_problem(settings: Any) -> str | None:
    """Why `settings` (CoordinatorSettings) cannot run secure aggregation; None: it can."""
    if not settings.secure_aggregation:
        return None
    if settings.strategy != "fedbuff":
        return "secure aggregation reveals only buffers' sums: use strategy fedbuff"
    if settings.aggregator != "mean" or settings.norm_bound > 0 or \
            settings.max_update_norm_factor > 0:
        return ("robust rules and norm checks cannot run on masked shares: with "
                "--secure-aggregation use --aggregator mean, --norm-bound 0 and "
                "--max-update-norm-factor 0 (the clip --secure-clip is the only bound)")
    if settings.dp_mode == "central":
        return "secure aggregation with central DP is not implemented: use dp_mode local"
    if settings.compression != "none" or settings.server_optimizer != "sgd":
        return ("secure aggregation sends its own quantised shares and applies FedBuff's plain "
                "step: use --compression none and --server-optimizer sgd")
    if settings.weight_by_examples:
        return "secure aggregation weights updates by staleness only: no weight_by_examples"
    if settings.identity is None or settings.helper_key is None:
        return ("secure aggregation needs sealed mode (--identity, --registry) and the helper's "
                "public key (--helper-key)")
    if settings.max_updates % settings.buffer_size:
        return (f"secure aggregation applies whole buffers only: max_updates "
                f"({settings.max_updates}) must be a multiple of buffer_size "
                f"({settings.buffer_size})")
    return None


class HelperSettings(BaseSettings):
    """The helper's own settings (with its connection and identity, fedmq/cli.py)."""

    model_config = _CONFIG

    registry: Path | None = Field(None, description="Registered worker keys: whose mask seeds "
                                  "the helper opens (the same file as the coordinator's).")
    coordinator_key: Path | None = Field(None, description="The coordinator's public identity "
                                         "(.pub): whose requests are answered, to whom.")
    k_min: int = Field(3, ge=2, description="Answer no buffer with fewer updates than this.")
    max_weight: int = Field(16, ge=1, description="Refuse a buffer with an integer weight "
                            "outside [1, this] (the coordinator's --secure-weight-resolution).")
    state_dir: Path = Field(Path("helper-state"), description="Directory of the helper's "
                            "journal (every buffer answered; keep it across restarts).")
