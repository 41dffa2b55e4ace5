"""Every strategy through the real broker with real processes, and the benchmark end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.topology import Topology
from tests.integration.support import AMQP_URL, Processes, read_summary

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("strategy", "versions"), [("fedasync", 24), ("fedbuff", 6),
                                                    ("fedavg", 8)])
def test_each_strategy_completes_a_short_run(procs: Processes, topology: Topology,
                                             tmp_path: Path, strategy: str,
                                             versions: int) -> None:
    # Given three workers (one of them 3x slower) and a coordinator using `strategy`
    out = tmp_path / "out"
    for index in range(3):
        procs.start("worker", shard_index=index, num_shards=3,
                    slowdown=3.0 if index == 2 else 1.0)
    coordinator = procs.start("coordinator", strategy=strategy, max_updates=24, concurrency=3,
                              buffer_size=4, wait_for_workers=3, out=out)
    # When the run ends
    assert procs.wait(coordinator, 180) == 0, coordinator.log()
    # Then all 24 updates are in the model, in the number of versions the strategy implies
    summary = read_summary(out)
    assert summary["strategy"] == strategy
    assert summary["updates_applied"] == 24 and summary["updates_rejected"] == 0
    assert summary["versions"] == versions
    assert summary["final_accuracy"] >= 0.75, summary


def test_fedavg_waits_for_the_straggler_every_round(procs: Processes, topology: Topology,
                                                    tmp_path: Path) -> None:
    # Given two workers, one of them much slower, in synchronous rounds
    out = tmp_path / "out"
    procs.start("worker", shard_index=0, num_shards=2, worker_id="fast")
    procs.start("worker", shard_index=1, num_shards=2, worker_id="slow", train_delay_seconds=1)
    coordinator = procs.start("coordinator", strategy="fedavg", max_updates=8, concurrency=2,
                              wait_for_workers=2, out=out)
    assert procs.wait(coordinator, 120) == 0, coordinator.log()
    # Then every round holds one update of each worker: the fast one never runs ahead
    rows = (out / "history.csv").read_text().splitlines()[2:]
    assert len(rows) == 4
    summary = read_summary(out)
    assert summary["worker_ids"] == ["fast", "slow"] and summary["max_staleness_seen"] == 0


def test_time_to_accuracy_benchmark_writes_results_and_plot(tmp_path: Path) -> None:
    # When a small version of the benchmark runs (3 workers, 1 straggler, 5 s per strategy)
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "fedmq", "bench", "time-to-accuracy", "--out", str(out),
         "--workers", "3", "--slow-workers", "1", "--seconds", "5", "--target", "0.8",
         "--amqp-url", AMQP_URL], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Then results.json has every strategy and the central reference, and the plot exists
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]) == {"fedavg", "fedasync", "fedbuff", "central"}
    for name, row in report["results"].items():
        assert set(row) >= {"time_to_target_s", "final_accuracy", "updates_applied",
                            "bytes_received"}, name
        assert 0.0 < row["final_accuracy"] <= 1.0
    assert report["results"]["fedasync"]["bytes_received"] > 0
    assert "speedup over fedavg" in result.stdout
    assert (out / "accuracy_vs_time.png").stat().st_size > 10_000
