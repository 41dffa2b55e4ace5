"""The worker's side of secure aggregation (issue 13): what it sends instead of its delta.

The clipped delta is quantised (common/quantise.py at the task's clip and scale), masked with a
ChaCha20 stream of a fresh 32-byte seed (common/masking.py), and only the share q - r mod 2^32
goes to the coordinator; the seed goes in a MaskSeed message signed by this worker and sealed to
the helper, whose key comes from this worker's own settings (--helper-key), never from a task: a
coordinator that could name the key would open the seeds itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common import masking, quantise, sealed_wire
from common.identity import Identity, PublicIdentity
from common.messages import MaskSeed, TrainTask


@dataclass(frozen=True)
class SecureSharer:
    """Turns a delta into the coordinator's share and the helper's sealed seed."""

    identity: Identity
    helper: PublicIdentity
    job: str

    def share(self, delta: Sequence[np.ndarray], task: TrainTask, update_id: str,
              rng: np.random.Generator) -> tuple[tuple[np.ndarray, ...], bytes]:
        quantised = quantise.quantise(delta, task.secure_clip, task.secure_scale, rng)
        seed = masking.new_seed()
        sealed_seed = sealed_wire.encode_sealed(
            MaskSeed(update_id=update_id, worker_id=self.identity.name, job=self.job, seed=seed),
            self.identity, {self.helper.name: self.helper.encryption})
        return tuple(masking.share(quantised, seed)), sealed_seed


def task_refusal(task: TrainTask, sharer: SecureSharer | None,
                 over_budget: str | None) -> str | None:
    """Why this worker must not answer `task` (None: it may): secure aggregation it cannot
    do, or its privacy budget (`over_budget`, worker/refusals.py)."""
    if task.secure_scale > 0 and sharer is None:
        return ("the task asks for secure aggregation, and this worker has no --helper-key "
                "and --identity to seal its mask seeds with")
    if task.secure_scale > 0 and not task.send_delta:
        return "secure aggregation masks deltas, and the task does not ask for one"
    return None if over_budget is None else f"privacy budget: {over_budget}"
