"""Local differential privacy: the calibrated noise, and epsilon as an independent dp-accounting
computation gives it (clipping itself is tested in test_arrays.py)."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from common import privacy
from common.arrays import global_norm
from common.messages import TrainTask
from coordinator.strategies.central_dp import CentralNoise
from worker.shaping import shape_update


def test_noise_has_the_calibrated_standard_deviation() -> None:
    # Given clip norm 1.5 and noise multiplier 0.8: calibrated std 1.2
    clip, multiplier = 1.5, 0.8
    zeros = [np.zeros(100_000, dtype=np.float64)]
    # When noise is added to 100,000 coordinates of a zero update (already under the clip norm)
    noised = privacy.privatize(zeros, clip, multiplier, np.random.default_rng(7))[0]
    # Then the empirical standard deviation is within 1% of multiplier * clip
    expected = privacy.noise_std(clip, multiplier)
    assert expected == pytest.approx(1.2)
    assert abs(noised.std() - expected) / expected < 0.01
    assert abs(noised.mean()) < 4 * expected / np.sqrt(100_000)


def independent_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Straight from dp-accounting: one Gaussian mechanism of sensitivity 2C and std z*C per
    update (noise multiplier z/2 relative to the sensitivity), composed update by update."""
    accountant = rdp.RdpAccountant()
    for _ in range(releases):
        accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier / 2))
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("multiplier", "releases", "delta"),
                         [(1.0, 1, 1e-5), (2.0, 7, 1e-5), (4.0, 40, 1e-6), (0.7, 3, 1e-3)])
def test_reported_epsilon_equals_an_independent_dp_accounting_computation(
        multiplier: float, releases: int, delta: float) -> None:
    ledger = privacy.PrivacyLedger(multiplier, delta)
    for _ in range(releases):
        reported = ledger.record("w0")
    assert reported == pytest.approx(independent_epsilon(multiplier, releases, delta), rel=1e-9)
    assert ledger.worst() == ("w0", reported)


def test_the_ledger_says_when_one_more_update_would_exceed_the_budget() -> None:
    ledger = privacy.PrivacyLedger(2.0, 1e-5, budget=10.0)
    for expected_ok in (True, True, True, False):  # eps after 1..4 updates: 4.7, 7.1, 9.0, 10.7
        assert (ledger.next_exceeds("w0") is None) == expected_ok
        ledger.record("w0")
    name, spent = ledger.next_exceeds() or ("", 0.0)
    assert name == "w0" and spent > 10.0


def test_a_dp_task_makes_the_worker_send_a_clipped_noised_delta() -> None:
    base = [np.zeros((4, 4), np.float32)]
    trained = [np.full((4, 4), 10.0, np.float32)]  # delta norm 40
    task = TrainTask(task_id="t", job="", min_version=0, send_delta=True, dp_clip_norm=2.0)
    shaped = shape_update(base, trained, task, np.random.default_rng(0))
    assert shaped.is_delta
    assert global_norm(shaped.weights) == pytest.approx(2.0, rel=1e-6)
    noisy = shape_update(base, trained, TrainTask(task_id="t", job="", min_version=0,
                                                  send_delta=True, dp_clip_norm=2.0,
                                                  dp_noise_multiplier=1.0),
                         np.random.default_rng(0))
    assert not np.allclose(noisy.weights[0], shaped.weights[0])


def central(clip: float, multiplier: float, budget: float | None = None,
            seed: int = 7) -> CentralNoise:
    return CentralNoise(clip, multiplier, privacy.PrivacyLedger(multiplier, 1e-5, budget),
                                np.random.default_rng(seed))


def test_central_dp_clips_each_workers_share_of_a_buffer_not_each_update() -> None:
    # Given a buffer where worker a sent two deltas that together have norm 5, and b one short
    # delta; no noise, clip norm 1
    noise = central(clip=1.0, multiplier=0.0)
    deltas = [[np.array([3.0, 0.0], np.float32)], [np.array([0.0, 4.0], np.float32)],
              [np.array([0.3, 0.0], np.float32)]]
    # When the buffer is combined
    combined = noise.aggregate(deltas, [1.0, 1.0, 1.0], ["a", "a", "b"])
    # Then a's share is clipped as a whole to (0.6, 0.8), b's is kept, and the sum is divided by
    # the number of buffered updates
    np.testing.assert_allclose(combined[0], [0.9 / 3, 0.8 / 3], rtol=1e-6)
    assert combined[0].dtype == np.float32
    # And each worker spent one release, however many updates it had in the buffer
    assert noise.ledger.releases == {"a": 1, "b": 1}


def test_central_dp_staleness_weights_apply_before_the_clip() -> None:
    noise = central(clip=10.0, multiplier=0.0)
    combined = noise.aggregate([[np.array([4.0])], [np.array([2.0])]], [0.5, 1.0], ["a", "b"])
    np.testing.assert_allclose(combined[0], [(0.5 * 4.0 + 2.0) / 2])


def test_central_noise_on_the_aggregate_has_the_calibrated_standard_deviation() -> None:
    # Given clip norm 1.5, noise multiplier 0.8 and a buffer of 4 zero deltas from 4 workers
    noise = central(clip=1.5, multiplier=0.8)
    zeros = [[np.zeros(100_000, np.float64)] for _ in range(4)]
    # When the buffer is combined
    combined = noise.aggregate(zeros, [1.0] * 4, ["a", "b", "c", "d"])[0]
    # Then the noise was added once to the sum: std (multiplier * clip) / 4, within 1%
    expected = privacy.noise_std(1.5, 0.8) / 4
    assert abs(combined.std() - expected) / expected < 0.01


def test_central_epsilon_counts_the_buffers_each_worker_took_part_in() -> None:
    noise = central(clip=1.0, multiplier=2.0)
    delta = [np.ones(3, np.float32)]
    for step in range(5):
        noise.aggregate([delta, delta], [1.0, 1.0], ["a", "b" if step < 2 else "a"])
    assert noise.ledger.releases == {"a": 5, "b": 2}
    assert noise.ledger.worst() == ("a", pytest.approx(independent_epsilon(2.0, 5, 1e-5),
                                                       rel=1e-9))
    assert noise.ledger.epsilon_of("b") == pytest.approx(independent_epsilon(2.0, 2, 1e-5),
                                                         rel=1e-9)


def test_a_buffer_that_would_exceed_the_budget_is_withheld_not_applied() -> None:
    from coordinator.strategies import Contribution, FedBuff

    # Given central DP with a budget that allows 3 buffers (eps 9.0 after 3, 10.7 after 4)
    buffered = FedBuff(buffer_size=2, central=central(clip=1.0, multiplier=2.0, budget=10.0))
    model = [np.zeros(3, np.float32)]
    update = Contribution([np.full(3, 0.1, np.float32)], True, 0, 10, "a")
    for _ in range(3):
        assert buffered.submit(model, update) is None
        model = buffered.submit(model, update) or model
    assert buffered.central is not None and buffered.central.ledger.releases["a"] == 3
    # When a fourth buffer fills
    assert buffered.submit(model, update) is None
    # Then it is not applied, nothing more is spent, and the buffer is emptied
    assert buffered.submit(model, update) is None
    assert buffered.withheld == 1 and buffered.buffered == 0
    assert buffered.central.ledger.releases["a"] == 3
