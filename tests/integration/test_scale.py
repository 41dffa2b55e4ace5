"""The scale bench's cells as tests: a real coordinator, simulated fleets (bench/sim_fleet.py),
the real broker. No update the simulated workers saw confirmed is lost or applied twice, and the
broker sends the workers about one model per applied update whatever the fleet size.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import raw_rate, scale_model
from bench.scale import Cell, run_cell
from common import wire
from common.messages import GlobalModel
from fedmq.management import Management
from tests.integration.support import MANAGEMENT_URL

pytestmark = pytest.mark.integration


def audit(out: Path) -> tuple[dict[str, Any], set[str], list[str]]:
    """(summary, update ids the fleet saw confirmed, update ids the ledger applied)."""
    summary = json.loads((out / "summary.json").read_text())
    ledger = json.loads((out / "ledger.json").read_text())
    fleet = json.loads((out / "fleet.json").read_text())
    return summary, {update_id for update_id, _ in fleet["confirmed"]}, \
        [update_id for update_id, _ in ledger["applied"]] + list(ledger["rejected"])


def assert_exactly_once(out: Path) -> dict[str, Any]:
    summary, confirmed, judged = audit(out)
    twice = [update_id for update_id, count in Counter(judged).items() if count > 1]
    assert not twice, f"applied or judged twice: {twice[:5]}"
    lost = confirmed - set(judged)
    assert not lost, f"{len(lost)} confirmed updates never applied nor rejected"
    assert set(judged) <= confirmed, "judged an update no simulated worker sent"
    assert summary["updates_applied"] + summary["updates_rejected"] == len(judged)
    return summary


def cell(tmp_path: Path, amqp_url: str, **options: Any) -> Cell:
    return Cell(out=tmp_path / "cell", amqp_url=amqp_url, management_url=MANAGEMENT_URL,
                **options)


def test_the_smallest_cell_loses_nothing_and_sends_one_model_per_update(
        tmp_path: Path, amqp_url: str, management: Management) -> None:
    # Given 10 simulated workers and a real coordinator with a 20 KB model
    given = cell(tmp_path, amqp_url, size="20kb", fleet=10, seconds=15, updates=600)
    # When the bench runs the cell
    row = run_cell(given)
    # Then the job ended normally, every confirmed update was applied (or rejected) exactly once
    assert row["exit_code"] == 0, (given.out / "coordinator.log").read_text()[-3000:]
    summary = assert_exactly_once(given.out)
    assert summary["updates_applied"] > 0
    # And the broker sent the workers at most 1.2 models plus 1 KB per applied update
    model = len(wire.encode(GlobalModel(version=10**6, fingerprint="f" * 16, weights=tuple(
        np.zeros(shape, np.float32) for shape in scale_model.shapes("20kb")))))
    print(f"applied {row['applied']}, {row['bytes_to_workers_per_update']:.0f} bytes to workers "
          f"per update, model {model} bytes")
    assert row["bytes_to_workers_per_update"] <= 1.2 * model + 1024


@pytest.mark.timeout(900)
def test_a_thousand_workers_connected_at_once_lose_nothing(
        tmp_path: Path, amqp_url: str, management: Management) -> None:
    # Given 1,000 simulated workers (100 connections of 10 channels: the broker's file
    # descriptor limit, 1,024, leaves room for about 830 sockets) all consuming tasks at once
    given = cell(tmp_path, amqp_url, size="20kb", fleet=1000, seconds=90, updates=10_000)
    # When the coordinator runs until 10,000 updates are applied or 90 s have passed
    row = run_cell(given)
    # Then none of the updates the workers saw confirmed is lost or applied twice
    assert row["exit_code"] == 0, (given.out / "coordinator.log").read_text()[-3000:]
    summary = assert_exactly_once(given.out)
    print(f"1,000 workers: {summary['updates_applied']} updates applied in "
          f"{summary['wall_seconds']:.0f} s, {row['confirmed']} confirmed by the broker")
    assert summary["updates_applied"] >= 2_500


def test_the_relay_baseline_answers_every_update_with_a_model(
        amqp_url: str, management: Management) -> None:
    """bench/raw_rate.py's relay (the broker alone doing a coordinator's message work): every
    update a client sent was answered with one model-sized reply, and its queue is gone after."""
    result = raw_rate.relay(amqp_url, 50_000, 80_000, seconds=1.0, workers=3)
    assert result["updates"] > 0
    assert result["relayed"] == result["updates"]  # each client waits for its reply
    assert not [q for q in management.queues() if q["name"].startswith("fedmq.bench.relay-")]


def test_the_raw_baseline_consumes_every_message_it_published(
        amqp_url: str, management: Management) -> None:
    """bench/raw_rate.py's raw rate: every message published was consumed (the rate counts
    consumed ones), and its queue is gone after."""
    result = raw_rate.measure(amqp_url, 20_000, seconds=1.0, publishers=2)
    assert result["messages"] > 0
    assert result["mb_per_s"] == pytest.approx(result["messages_per_s"] * 20_000 / 1e6)
    assert result["queue"] not in [q["name"] for q in management.queues()]
