"""Attack simulation for tests and benchmarks: what a Byzantine worker sends instead of its delta.

- sign_flip: -factor * delta (default factor 10), pushes the model away from the optimum;
- scale: factor * delta (default 100), one honest-looking direction, far too long;
- random: Gaussian noise with factor * |delta| global norm (default 10);
- nan: every value NaN, which validation must reject before any strategy sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.arrays import Arrays, global_norm

ATTACKS = ("none", "sign_flip", "scale", "random", "nan")
DEFAULT_FACTOR = {"sign_flip": 10.0, "scale": 100.0, "random": 10.0, "nan": 1.0, "none": 1.0}


def attack_delta(delta: Sequence[np.ndarray], attack: str, factor: float | None,
                 rng: np.random.Generator) -> Arrays:
    """The delta a worker in `attack` mode sends in place of its honest `delta`."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    k = DEFAULT_FACTOR[attack] if factor is None else factor
    if attack == "none":
        return [np.array(d, copy=True) for d in delta]
    if attack == "sign_flip":
        return [(-k * d).astype(d.dtype) for d in delta]
    if attack == "scale":
        return [(k * d).astype(d.dtype) for d in delta]
    if attack == "nan":
        return [np.full_like(d, np.nan) for d in delta]
    noise = [rng.standard_normal(d.shape) for d in delta]
    scale = k * global_norm(delta) / max(global_norm(noise), 1e-12)
    return [(scale * n).astype(d.dtype) for n, d in zip(noise, delta, strict=True)]
