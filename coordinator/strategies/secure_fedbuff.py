"""FedBuff over masked shares (issue 13): the coordinator sums shares, the helper sums masks.

Every update is an additive share q - r mod 2^32 of its clipped, quantised delta
(common/quantise.py, common/masking.py), which on its own is uniform noise. A buffer is summed
as it fills, with integer staleness weights w = round(R / sqrt(1 + t)) (at least 1). A full
buffer is sealed: its membership and weights are fixed and checkpointed, and the helper is asked
for sum w_i r_i over exactly those members (coordinator/secure_link.py). Its answer, added to the
share sum, is sum w_i q_i, which dequantises to the weighted mean of the clipped deltas; then the
FedBuff step x <- x + lr * (m v + mean) is taken. Nothing else about one update is ever known.
Pure math: the request and the answer travel through secure_link.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common import masking, quantise
from common.arrays import Arrays, add_scaled
from common.messages import new_id
from coordinator.strategies.base import Contribution

Member = tuple[str, int]  # (update id, integer weight)


def secure_weight(staleness: int, resolution: int) -> int:
    """FedBuff's 1/sqrt(1+t) as an integer in [1, resolution] (the field needs integers)."""
    return max(1, round(resolution / math.sqrt(1 + staleness)))


@dataclass
class SealedBuffer:
    """A full buffer whose membership is fixed: waiting for the helper's mask sum."""

    buffer_id: str
    members: list[Member]
    seeds: dict[str, bytes]  # update id -> its MaskSeed sealed to the helper
    share_sum: Arrays        # sum w_i share_i mod 2^32, layer by layer

    def state(self) -> dict[str, Any]:
        return {"buffer_id": self.buffer_id, "members": [list(m) for m in self.members],
                "seeds": {u: s.hex() for u, s in self.seeds.items()},
                "share_sum": list(self.share_sum)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SealedBuffer:
        return cls(str(state["buffer_id"]), [(str(u), int(w)) for u, w in state["members"]],
                   {str(u): bytes.fromhex(s) for u, s in state["seeds"].items()},
                   [np.asarray(s, dtype=quantise.FIELD) for s in state["share_sum"]])


@dataclass
class SecureFedBuff:
    """FedBuff whose buffers are opened only as sums, with the helper's help."""

    buffer_size: int
    clip: float
    resolution: int = 16
    server_lr: float = 1.0
    momentum: float = 0.0
    name: str = "fedbuff-secure"
    wants_delta: bool = True
    synchronous: bool = False
    members: list[Member] = field(default_factory=list)    # the open buffer
    seeds: dict[str, bytes] = field(default_factory=dict)
    share_sum: Arrays | None = None
    sealed: list[SealedBuffer] = field(default_factory=list)
    velocity: Arrays | None = None
    withheld: int = 0  # buffers the helper refused (their updates are lost)

    @property
    def scale(self) -> float:
        """The quantisation scale: no overflow for a full buffer of the largest weights."""
        return quantise.max_scale(self.clip, self.buffer_size * self.resolution)

    @property
    def stepping(self) -> bool:
        """A sealed buffer waits for the helper: the model is about to change."""
        return bool(self.sealed)

    @property
    def buffered(self) -> int:
        return len(self.members) + sum(len(b.members) for b in self.sealed)

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None:
        if not update.is_delta or not update.helper_seed or not update.update_id:
            raise ValueError("secure FedBuff needs masked deltas with a sealed seed")
        weight = secure_weight(update.staleness, self.resolution)
        weighted = masking.weighted_field_sum([update.weights], [weight])
        self.share_sum = weighted if self.share_sum is None else \
            masking.unshare(self.share_sum, weighted)  # (a sum mod 2^32)
        self.members.append((update.update_id, weight))
        self.seeds[update.update_id] = update.helper_seed
        if len(self.members) >= self.buffer_size:
            self._seal()
        return None  # the model changes only when the helper's sum comes back

    def _seal(self) -> None:
        assert self.share_sum is not None
        self.sealed.append(SealedBuffer(new_id(), self.members, self.seeds, self.share_sum))
        self.members, self.seeds, self.share_sum = [], {}, None

    def flush(self, current: Arrays) -> Arrays | None:
        """End of job: seal the partial buffer too (the helper refuses it below its K_min)."""
        if self.members:
            self._seal()
        return None

    def complete(self, current: Arrays, buffer_id: str,
                 mask_sum: tuple[np.ndarray, ...]) -> tuple[Arrays, int] | None:
        """The helper's sum for `buffer_id`: the new weights and how many updates they hold.
        None if no such buffer waits (answered before a restart: already applied)."""
        sealed = next((b for b in self.sealed if b.buffer_id == buffer_id), None)
        if sealed is None:
            return None
        size = sum(int(s.size) for s in sealed.share_sum)
        if len(mask_sum) != 1 or mask_sum[0].shape != (size,) or \
                mask_sum[0].dtype != quantise.FIELD:
            raise ValueError(f"a mask sum is one uint32 vector of {size} coordinates")
        shapes = [s.shape for s in sealed.share_sum]
        masks, start = [], 0
        for shape, part in zip(shapes, sealed.share_sum, strict=True):
            masks.append(mask_sum[0][start:start + part.size].reshape(shape))
            start += part.size
        field_sum = masking.unshare(sealed.share_sum, masks)
        step = quantise.dequantise_mean(field_sum, self.scale, sum(w for _, w in sealed.members),
                                        current)
        if self.momentum > 0:
            self.velocity = step if self.velocity is None else [
                self.momentum * v + s for v, s in zip(self.velocity, step, strict=True)]
            step = self.velocity
        self.sealed.remove(sealed)
        return add_scaled(current, step, self.server_lr), len(sealed.members)

    def refuse(self, buffer_id: str) -> int:
        """The helper refused `buffer_id`: drop it; how many updates were lost with it."""
        sealed = next((b for b in self.sealed if b.buffer_id == buffer_id), None)
        if sealed is None:
            return 0
        self.sealed.remove(sealed)
        self.withheld += 1
        return len(sealed.members)

    def state(self) -> dict[str, Any]:
        return {"members": [list(m) for m in self.members],
                "seeds": {u: s.hex() for u, s in self.seeds.items()},
                "share_sum": None if self.share_sum is None else list(self.share_sum),
                "sealed": [b.state() for b in self.sealed], "velocity": self.velocity,
                "withheld": self.withheld}

    def load_state(self, state: dict[str, Any]) -> None:
        self.members = [(str(u), int(w)) for u, w in state["members"]]
        self.seeds = {str(u): bytes.fromhex(s) for u, s in state["seeds"].items()}
        self.share_sum = None if state["share_sum"] is None else [
            np.asarray(s, dtype=quantise.FIELD) for s in state["share_sum"]]
        self.sealed = [SealedBuffer.from_state(b) for b in state["sealed"]]
        self.velocity = None if state["velocity"] is None else list(state["velocity"])
        self.withheld = int(state["withheld"])
