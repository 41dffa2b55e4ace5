"""Server optimizers for FedBuff (FedOpt: Reddi et al., "Adaptive Federated Optimization", 2021).

FedBuff's aggregated buffer delta d (the mean change the workers propose) is the negative of a
pseudo-gradient. With m and v starting at 0 and tau^2, every step is, coordinate-wise:

    m <- b1 m + (1 - b1) d
    adam:    v <- b2 v + (1 - b2) d^2
    yogi:    v <- v - (1 - b2) d^2 sign(v - d^2)
    adagrad: v <- v + d^2
    x <- x + lr * m / (sqrt(v) + tau)

(Algorithm 2 of the paper, no bias correction). The functions are pure over lists of arrays;
`ServerOptimizer` holds m and v between buffers and gives them to the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.arrays import Arrays

Moments = tuple[Arrays, Arrays]


def first_moment(m: Arrays, delta: Arrays, beta1: float) -> Arrays:
    return [beta1 * mi + (1.0 - beta1) * di for mi, di in zip(m, delta, strict=True)]


def adam_second(v: Arrays, delta: Arrays, beta2: float) -> Arrays:
    return [beta2 * vi + (1.0 - beta2) * di * di for vi, di in zip(v, delta, strict=True)]


def yogi_second(v: Arrays, delta: Arrays, beta2: float) -> Arrays:
    return [vi - (1.0 - beta2) * di * di * np.sign(vi - di * di)
            for vi, di in zip(v, delta, strict=True)]


def adagrad_second(v: Arrays, delta: Arrays) -> Arrays:
    return [vi + di * di for vi, di in zip(v, delta, strict=True)]


def direction(m: Arrays, v: Arrays, tau: float) -> Arrays:
    """The step the server takes (before its learning rate): m / (sqrt(v) + tau)."""
    return [mi / (np.sqrt(vi) + tau) for mi, vi in zip(m, v, strict=True)]


def fedopt_step(kind: str, m: Arrays, v: Arrays, delta: Arrays, beta1: float, beta2: float,
                tau: float) -> tuple[Arrays, Arrays, Arrays]:
    """New (m, v) and the direction for one aggregated delta."""
    new_m = first_moment(m, delta, beta1)
    if kind == "adam":
        new_v = adam_second(v, delta, beta2)
    elif kind == "yogi":
        new_v = yogi_second(v, delta, beta2)
    elif kind == "adagrad":
        new_v = adagrad_second(v, delta)
    else:
        raise ValueError(f"unknown server optimizer {kind!r}")
    return new_m, new_v, direction(new_m, new_v, tau)


@dataclass
class ServerOptimizer:
    """Adam, Yogi or Adagrad on the server, with its moments kept between buffers."""

    kind: str
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: Arrays | None = None
    v: Arrays | None = None

    def step(self, delta: Arrays) -> Arrays:
        """The direction for this buffer's aggregated delta (the moments move on)."""
        m = self.m if self.m is not None else [np.zeros_like(d) for d in delta]
        v = self.v if self.v is not None else [np.full_like(d, self.tau ** 2) for d in delta]
        self.m, self.v, step = fedopt_step(self.kind, m, v, delta, self.beta1, self.beta2,
                                           self.tau)
        return step

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "m": self.m, "v": self.v}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's server optimizer is {state.get('kind')!r}, "
                             f"this job's {self.kind!r}")
        self.m = None if state["m"] is None else list(state["m"])
        self.v = None if state["v"] is None else list(state["v"])
