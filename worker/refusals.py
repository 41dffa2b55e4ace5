"""Why a worker must not go on: its own privacy budget, a model of another architecture, or an
update that could never be sent under the body limit.

Pure functions returning the reason (None: go on), and one start-up check that raises
ConfigError; the worker loop acts on them (worker/service.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common import limits, privacy
from common.codec import Codec
from common.messages import GlobalModel, TrainTask, WeightUpdate, new_id


def over_budget(task: TrainTask, releases: int, budget: float | None,
                dp_delta: float) -> str | None:
    """Why answering `task` would take this worker past its own epsilon budget, having sent
    `releases` updates so far (None: it may answer)."""
    if budget is None:
        return None
    if task.dp_noise_multiplier <= 0:
        return f"the task asks for no DP noise and this worker has a budget of {budget}"
    spent = privacy.epsilon(task.dp_noise_multiplier, releases + 1, dp_delta)
    if spent > budget:
        return (f"update {releases + 1} would bring epsilon to {spent:.3f} > budget {budget} "
                f"(delta {dp_delta})")
    return None


def wrong_model(model: GlobalModel, name: str, fingerprint: str,
                shapes: Sequence[tuple[int, ...]]) -> str:
    """The coordinator's model has another architecture than this worker's (`name`, with its
    `fingerprint` and layer `shapes`): it could never train for this job."""
    return (f"the coordinator's model (version {model.version}) has architecture "
            f"{model.fingerprint} (layer shapes {[w.shape for w in model.weights]}); this "
            f"worker's model {name!r} has {fingerprint} (layer shapes {list(shapes)}): start "
            f"the worker with the coordinator's --model and --dataset")


def check_update_fits(weights: list[np.ndarray], model_name: str, worker_id: str, codec: Codec,
                      recipients: dict[str, Any] | None, limit: int) -> None:
    """Stop at start if an update of this model could never be sent under the limit (an update
    is the whole model's weights), instead of training only to fail at every task."""
    arrays = [np.asarray(w) for w in weights]
    update = WeightUpdate(update_id=new_id(), worker_id=worker_id, task_id=new_id(),
                          base_version=0, num_examples=0, train_seconds=0.0,
                          weights=tuple(arrays), is_delta=False, metrics={})
    parameters = sum(int(w.size) for w in arrays)
    limits.check_fits(f"an update of the model {model_name!r} ({parameters} parameters)",
                      codec.encode(update, recipients), limit)
