"""From trained weights to what the worker sends: delta or weights, local DP, attack simulation.

The order is the one a real deployment has: the honest worker computes its delta, clips it and
adds noise (local DP), and only then can a simulated attacker replace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.arrays import add_scaled, difference
from common.messages import TrainTask
from common.privacy import privatize
from worker.attacks import attack_delta


@dataclass(frozen=True)
class Shaped:
    weights: tuple[np.ndarray, ...]
    is_delta: bool


def shape_update(base: Sequence[np.ndarray], trained: Sequence[np.ndarray], task: TrainTask,
                 rng: np.random.Generator, attack: str = "none",
                 attack_factor: float | None = None) -> Shaped:
    """Apply the task's DP settings and the worker's attack mode to one training result."""
    if task.dp_clip_norm <= 0 and attack == "none" and not task.send_delta:
        return Shaped(tuple(np.asarray(t) for t in trained), is_delta=False)
    delta = difference(trained, base)
    if task.dp_clip_norm > 0:
        delta = privatize(delta, task.dp_clip_norm, task.dp_noise_multiplier, rng)
    delta = attack_delta(delta, attack, attack_factor, rng)
    if task.send_delta:
        return Shaped(tuple(delta), is_delta=True)
    return Shaped(tuple(add_scaled(base, delta)), is_delta=False)
