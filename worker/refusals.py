"""Why a worker must not go on: its own privacy budget, or a model of another architecture.

Pure functions returning the reason (None: go on); the worker loop acts on them (worker/service.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from common import privacy
from common.messages import GlobalModel, TrainTask


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
