"""The local-against-central DP experiment of docs/security.md as a test (real Keras training, no
broker; about a minute): at the same noise multiplier, so the same epsilon for every worker,
central noise over a buffer of 10 keeps far more accuracy than local noise on each delta."""

from __future__ import annotations

import pytest

from bench.dp_utility import run
from bench.lab import Setup

pytestmark = pytest.mark.experiment


def test_central_noise_keeps_more_accuracy_than_local_noise_at_the_same_epsilon() -> None:
    rows = run(Setup(rounds=20), clip=1.0, multipliers=[1.0], modes=("local DP", "central DP"))
    accuracy = {row["mode"]: float(row["accuracy"]) for row in rows}
    epsilons = {row["epsilon"] for row in rows}
    assert len(epsilons) == 1  # the two ledgers report the same spending
    # measured 0.354 (local) and 0.850 (central) on 2026-11-29
    assert accuracy["central DP"] > accuracy["local DP"] + 0.2, accuracy
    assert accuracy["central DP"] > 0.75, accuracy
