"""Local and central differential privacy and attack simulation in real runs on the shared
broker."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common import models, privacy
from common.amqp import Broker
from common.topology import Topology
from coordinator import checkpoint
from tests.integration.audit import tap_name, tap_updates, tapped_updates
from tests.integration.support import AMQP_URL, Processes, read_summary, wait_for

pytestmark = pytest.mark.integration


def test_a_dp_run_reports_epsilon_per_version_and_stops_at_the_budget(
        procs: Processes, broker: Broker, topology: Topology, tmp_path: Path) -> None:
    # Given local DP (clip 1, noise multiplier 4) and a budget of epsilon 5 at delta 1e-5,
    # on the coordinator and on both workers, and the updates they send tapped
    tap_updates(broker, topology)
    out = tmp_path / "out"
    dp = {"dp_delta": 1e-5, "dp_epsilon_budget": 5.0}
    for index in range(2):
        procs.start("worker", worker_id=f"w{index}", shard_index=index, num_shards=2, **dp)
    coordinator = procs.start("coordinator", max_updates=100, concurrency=2, out=out,
                              dp_clip_norm=1.0, dp_noise_multiplier=4.0, drain_seconds=5, **dp)

    # When the run goes on until the budget is spent
    assert procs.wait(coordinator, 180) == 0, coordinator.log()

    # Then it stopped by itself, saying why, before any worker went over the budget
    summary = read_summary(out)
    assert summary["stop_reason"].startswith("privacy budget: one more update from"), summary
    assert "privacy budget" in coordinator.log()
    assert 0 < summary["epsilon"] <= 5.0
    assert summary["updates_applied"] < 100 and summary["updates_rejected"] == 0
    # And every version reports the largest epsilon spent so far, as dp-accounting computes it
    releases: Counter[str] = Counter()
    with (out / "history.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["worker_id"]]
    for row in rows:
        releases[row["worker_id"]] += 1
        expected = max(privacy.epsilon(4.0, n, 1e-5) for n in releases.values())
        assert math.isclose(float(row["epsilon"]), expected, rel_tol=1e-9), row
    assert max(releases.values()) == 4  # eps(4) = 4.73 <= 5 < eps(5) = 5.38
    # And the noise is really there (issue 14, item 8): an update trained from version 0 minus
    # the initial model is the clipped delta (norm <= 1 over 4,810 weights: a std of at most
    # 0.015) plus Gaussian noise of std z * C = 4 per coordinate
    initial = models.build("digits_mlp", 0).get_weights()
    fresh = Broker(AMQP_URL, name="fedmq-test-tap")  # the fixture's connection may idle out
    try:
        sent_updates = tapped_updates(fresh, topology)
        fresh.delete(tap_name(topology))
    finally:
        fresh.close()
    first = [u for u in sent_updates.values() if u.base_version == 0]
    assert first, "no update trained from version 0 was tapped"
    for update in first:
        sent = np.concatenate([(np.asarray(w, np.float64) - b).ravel()
                               for w, b in zip(update.weights, initial, strict=True)])
        assert abs(float(sent.std()) / 4.0 - 1.0) < 0.05, sent.std()
        assert abs(float(sent.mean())) < 0.2, sent.mean()


def epsilon_by_version(out: Path) -> list[float]:
    """history.csv's epsilon of every version after 0 (the end-of-job flush's row, which names
    no worker, included)."""
    with (out / "history.csv").open() as handle:
        return [float(r["epsilon"]) for r in csv.DictReader(handle) if r["version"] != "0"]


def test_a_central_dp_run_noises_each_buffer_once_and_stops_at_the_budget(
        procs: Processes, tmp_path: Path) -> None:
    # Given central DP on a FedBuff coordinator (buffers of 3; clip 1, noise multiplier 4) with a
    # budget of epsilon 5 at delta 1e-5, and three workers with no DP settings of their own
    out = tmp_path / "out"
    for index in range(3):
        procs.start("worker", worker_id=f"w{index}", shard_index=index, num_shards=3,
                    partition="iid")
    coordinator = procs.start("coordinator", strategy="fedbuff", buffer_size=3, concurrency=3,
                              max_updates=150, out=out, dp_mode="central", dp_clip_norm=1.0,
                              dp_noise_multiplier=4.0, dp_delta=1e-5, dp_epsilon_budget=5.0,
                              drain_seconds=5)

    # When the run goes on until the budget is spent
    assert procs.wait(coordinator, 180) == 0, coordinator.log()

    # Then it stopped by itself, saying why, when the busiest worker had taken part in 4 buffers
    # (eps(4) = 4.73 <= 5 < eps(5) = 5.38): the spending is per buffer, not per update
    summary = read_summary(out)
    assert summary["stop_reason"].startswith(
        "privacy budget: one more buffer with an update from"), summary
    assert summary["dp_mode"] == "central" and summary["updates_rejected"] == 0
    assert math.isclose(summary["epsilon"], privacy.epsilon(4.0, 4, 1e-5), rel_tol=1e-9)
    assert summary["versions"] >= 4
    # And every version reports an epsilon of some number of buffers, never decreasing
    spent = epsilon_by_version(out)
    possible = [privacy.epsilon(4.0, n, 1e-5) for n in range(1, 5)]
    assert spent == sorted(spent) and len(spent) == summary["versions"]
    assert all(any(math.isclose(e, p, rel_tol=1e-9) for p in possible) for e in spent), spent


def test_central_dp_spending_survives_a_coordinator_kill(procs: Processes,
                                                         tmp_path: Path) -> None:
    # Given a central DP run (buffers of 3, clip 1, z = 4, budget epsilon 7: 7 buffers a worker)
    out = tmp_path / "out"
    for index in range(3):
        procs.start("worker", worker_id=f"w{index}", shard_index=index, num_shards=3,
                    partition="iid", train_delay_seconds=0.3)
    settings = {"strategy": "fedbuff", "buffer_size": 3, "concurrency": 3, "max_updates": 300,
                "out": out, "dp_mode": "central", "dp_clip_norm": 1.0,
                "dp_noise_multiplier": 4.0, "dp_delta": 1e-5, "dp_epsilon_budget": 7.0,
                "drain_seconds": 5}
    coordinator = procs.start("coordinator", name="c0", **settings)

    # When the coordinator is killed with SIGKILL after its third version and restarted
    wait_for(lambda: checkpoint.path_in(out).exists() and int(
        checkpoint.load(checkpoint.path_in(out))["core"]["version"]) >= 3, 120, "version 3")
    coordinator.process.kill()
    coordinator.process.wait()
    coordinator = procs.start("coordinator", name="c1", **settings)
    assert procs.wait(coordinator, 180) == 0, coordinator.log()

    # Then the restarted coordinator went on spending from what the first had spent: epsilon
    # never went down from one version to the next, and the run stopped at 7 buffers in all
    summary = read_summary(out)
    assert summary["resumes"] == 1
    assert summary["stop_reason"].startswith("privacy budget: one more buffer"), summary
    assert math.isclose(summary["epsilon"], privacy.epsilon(4.0, 7, 1e-5), rel_tol=1e-9)
    spent = epsilon_by_version(out)
    assert spent == sorted(spent) and len(spent) == summary["versions"], spent


def test_attackers_in_a_robust_buffered_run_are_contained_and_nan_is_never_applied(
        procs: Processes, tmp_path: Path) -> None:
    # Given a FedBuff coordinator taking the median of 5 deltas, three honest workers, a
    # sign-flipping one and one that sends NaN
    out = tmp_path / "out"
    shards = {"num_shards": 5, "partition": "iid"}
    for index in range(3):
        procs.start("worker", worker_id=f"honest{index}", shard_index=index, **shards)
    procs.start("worker", worker_id="flipper", shard_index=3, attack="sign_flip", **shards)
    procs.start("worker", worker_id="nan", shard_index=4, attack="nan", **shards)
    coordinator = procs.start("coordinator", strategy="fedbuff", aggregator="median",
                              buffer_size=5, max_updates=40, concurrency=5, out=out,
                              eval_every=1, wait_for_workers=5, **shards)

    # When the run ends
    assert procs.wait(coordinator, 240) == 0, coordinator.log()

    # Then every NaN update was rejected, the model stayed finite and learned despite the flipper
    summary = read_summary(out)
    assert summary["updates_applied"] == 40 and summary["versions"] == 8
    assert set(summary["rejected_by_reason"]) == {"non_finite"}, summary
    assert summary["rejected_by_reason"]["non_finite"] >= 1
    assert "nan" not in summary["worker_ids"] and "flipper" in summary["worker_ids"]
    assert math.isfinite(summary["final_loss"])
    assert summary["final_accuracy"] >= 0.8, summary
