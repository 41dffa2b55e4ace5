"""FedProx (Li et al. 2020): the local loss plus mu/2 * ||w - w_global||^2.

`Proximal` wraps the user's model without changing it: its calls go to the model, its loss is
the compiled loss plus the proximal term over the model's trainable weights, so the gradient
Keras takes is FedProx's. The anchors (the global weights the task started from) and mu are
variables, set before each task, so the compiled training step is traced once.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def proximal_term(weights: list[np.ndarray], anchors: list[np.ndarray], mu: float) -> float:
    """mu/2 * ||w - w_global||^2 in numpy: what the wrapped model adds (for tests and logs)."""
    return 0.5 * mu * sum(float(np.sum((w - a) ** 2)) for w, a in zip(weights, anchors,
                                                                          strict=True))


def make_proximal(inner: Any) -> Any:
    """A Keras model that trains `inner`'s own variables with the proximal term added."""
    import keras
    from keras import ops

    class Proximal(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.mu = keras.Variable(0.0, trainable=False, name="proximal_mu")
            self.anchors = [keras.Variable(np.zeros(w.shape, w.dtype), trainable=False,
                                           name=f"anchor_{i}")
                            for i, w in enumerate(inner.trainable_weights)]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.inner(x, training=training)

        def anchor(self, mu: float) -> None:
            """Pull towards the weights `inner` holds now, with strength mu."""
            self.mu.assign(mu)
            for anchor, weight in zip(self.anchors, inner.trainable_weights, strict=True):
                anchor.assign(weight)

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                         sample_weight: Any = None, training: bool = True) -> Any:
            loss = super().compute_loss(x, y, y_pred, sample_weight, training)
            term = sum(ops.sum(ops.square(w - a))
                       for w, a in zip(inner.trainable_weights, self.anchors, strict=True))
            return loss + 0.5 * self.mu * term

    return Proximal()
