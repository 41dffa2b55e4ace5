"""FedOpt server optimizers (coordinator/strategies/server_optimizer.py) against values computed
by hand from Reddi et al. 2021, Algorithm 2, and FedBuff taking its step through them."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.strategies import Contribution, FedBuff
from coordinator.strategies.server_optimizer import ServerOptimizer, fedopt_step

# One aggregated delta d = (0.2, -0.4); b1 = 0.9, b2 = 0.99, tau = 0.1: m starts at 0, v at
# tau^2 = 0.01, so after one step m = 0.1 d = (0.02, -0.04) for every kind, and
#   adam:    v = 0.99 * 0.01 + 0.01 * d^2            = (0.0103, 0.0115)
#   yogi:    d^2 > v, sign(v - d^2) = -1: v = 0.01 + 0.01 d^2 = (0.0104, 0.0116)
#   adagrad: v = 0.01 + d^2                          = (0.05, 0.17)
# and the direction is m / (sqrt(v) + 0.1), e.g. adagrad: 0.02 / (0.2236068 + 0.1) = 0.0618034.
DELTA = [np.array([0.2, -0.4])]
HAND = {
    "adam": ([0.0103, 0.0115], [0.02 / 0.20148892, -0.04 / 0.20723805]),
    "yogi": ([0.0104, 0.0116], [0.02 / 0.20198039, -0.04 / 0.20770330]),
    "adagrad": ([0.05, 0.17], [0.0618034, -0.0780776]),
}


@pytest.mark.parametrize("kind", sorted(HAND))
def test_one_step_matches_the_hand_computation(kind: str) -> None:
    # Given zero first moment and tau^2 second moment
    m, v = [np.zeros(2)], [np.full(2, 0.01)]
    # When one aggregated delta goes through the optimizer
    new_m, new_v, step = fedopt_step(kind, m, v, DELTA, beta1=0.9, beta2=0.99, tau=0.1)
    # Then the moments and the direction are the hand-computed ones
    expected_v, expected_step = HAND[kind]
    np.testing.assert_allclose(new_m[0], [0.02, -0.04], rtol=1e-9)
    np.testing.assert_allclose(new_v[0], expected_v, rtol=1e-9)
    np.testing.assert_allclose(step[0], expected_step, rtol=1e-6)


def test_yogi_shrinks_a_second_moment_larger_than_the_square() -> None:
    # Given v = 1 and a small delta (d^2 = 0.01 < v)
    _, v, _ = fedopt_step("yogi", [np.zeros(1)], [np.ones(1)], [np.array([0.1])],
                          beta1=0.9, beta2=0.99, tau=0.1)
    # Then v decreases by (1 - b2) d^2 (Adam would pull it towards d^2 by 1 % of the gap)
    np.testing.assert_allclose(v[0], [1.0 - 0.01 * 0.01], rtol=1e-12)
    _, v_adam, _ = fedopt_step("adam", [np.zeros(1)], [np.ones(1)], [np.array([0.1])],
                               beta1=0.9, beta2=0.99, tau=0.1)
    np.testing.assert_allclose(v_adam[0], [0.99 + 0.01 * 0.01], rtol=1e-12)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown server optimizer"):
        fedopt_step("rmsprop", [np.zeros(1)], [np.ones(1)], [np.ones(1)], 0.9, 0.99, 0.1)


def test_fedbuff_applies_the_adam_direction_to_the_buffer_mean() -> None:
    # Given FedBuff (K = 2, server lr 0.5) with Adam, and two fresh deltas whose mean is DELTA
    strategy = FedBuff(buffer_size=2, server_lr=0.5,
                       optimizer=ServerOptimizer("adam", 0.9, 0.99, tau=0.1))
    current = [np.array([1.0, 1.0])]
    first = Contribution([np.array([0.1, -0.2])], True, staleness=0, num_examples=1)
    second = Contribution([np.array([0.3, -0.6])], True, staleness=0, num_examples=1)
    # When the buffer fills
    assert strategy.submit(current, first) is None
    new = strategy.submit(current, second)
    # Then x moves by lr times the hand-computed Adam direction
    assert new is not None
    np.testing.assert_allclose(new[0], 1.0 + 0.5 * np.array(HAND["adam"][1]), rtol=1e-6)


def test_the_moments_survive_a_checkpoint() -> None:
    # Given an Adagrad FedBuff after one buffer
    make = lambda: FedBuff(buffer_size=1, optimizer=ServerOptimizer("adagrad", tau=0.1))  # noqa: E731
    before = make()
    before.submit([np.zeros(2)], Contribution(DELTA, True, 0, 1))
    # When its state is loaded into a fresh one, both take the same next step
    after = make()
    after.load_state(before.state())
    nxt = Contribution([np.array([0.1, 0.1])], True, 0, 1)
    np.testing.assert_allclose(after.submit([np.zeros(2)], nxt)[0],  # type: ignore[index]
                               before.submit([np.zeros(2)], nxt)[0])  # type: ignore[index]
    # And a checkpoint of another optimizer is refused
    with pytest.raises(ValueError, match="server optimizer"):
        FedBuff(buffer_size=1, optimizer=ServerOptimizer("yogi")).load_state(before.state())
