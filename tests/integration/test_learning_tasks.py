"""The user's own learning task on the real broker (tests/integration/learning_tasks.py): a
regression, a binary sigmoid and a multi-label job each run to their end with the task's loss and
metrics, evaluated on the workers' validation splits; the regression's coordinator holds no data
at all and ends with federated metrics only; a sealed job evaluates on the sites with every report
signed and sealed to the coordinator; a model that cannot fit its labels stops at start."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from common import identity
from common.amqp import Broker
from common.codec import Codec
from common.errors import DecodeError
from common.messages import EvalReport
from common.topology import EVAL_REPORT_KEY, Topology
from tests.integration.broker_tools import declare_queue
from tests.integration.support import Processes, drain, read_summary, sealed_keys

pytestmark = pytest.mark.integration
TASKS = "tests.integration.learning_tasks"
SHARED: dict[str, Any] = {"num_shards": 2, "validation_fraction": 0.25}


def run_job(procs: Processes, out: Path, task: str, worker: dict[str, Any] | None = None,
            **coordinator: Any) -> dict[str, Any]:
    """Two workers (each its shard) and a FedBuff coordinator; the job's summary. `worker`:
    settings of the two workers, by site (0, 1) -> settings."""
    for site in range(2):
        procs.start("worker", task=f"{TASKS}:{task}", worker_id=f"site-{site}", **SHARED,
                    **(worker or {}).get(site, {}))
    job = procs.start("coordinator", task=f"{TASKS}:{task}", strategy="fedbuff",
                      buffer_size=2, concurrency=2, max_updates=10, eval_every=2,
                      drain_seconds=5, out=out, wait_for_workers=2, federated_eval_wait=120,
                      **SHARED, **coordinator)
    assert procs.wait(job, 420) == 0, procs.logs()
    summary = read_summary(out)
    assert summary["updates_applied"] == 10 and summary["updates_rejected"] == 0, summary
    return summary


def history(out: Path) -> list[dict[str, str]]:
    with (out / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_regression_with_no_data_on_the_coordinator_ends_with_federated_metrics(
        procs: Processes, tmp_path: Path) -> None:
    # Given a regression task (MSE, MAE, Adam locally) that gives the coordinator no data,
    # with FedProx on the workers and Adam on the server
    out = tmp_path / "out"
    # When the job runs
    summary = run_job(procs, out, "regression", target_metric="mae", learning_rate=0.01,
                      proximal_mu=0.01, server_optimizer="adam", server_lr=0.05)
    # Then nothing was measured on the coordinator, and both sites evaluated the final version
    assert summary["final_metrics"] is None and summary["final_accuracy"] is None
    federated = summary["federated"]
    assert federated["version"] == summary["versions"] and federated["workers"] == 2, federated
    assert set(federated["per_worker"]) == {"site-0", "site-1"}
    assert set(federated["mean"]) == {"loss", "mae"} and federated["metric"] == "mae"
    # And the history shows the federated MAE falling from the first evaluated version to the
    # last, with the worst site never better (a round asked for while a site is still evaluating
    # an earlier one may be replaced by a newer request, so only the first and last are certain)
    rows = [r for r in history(out) if r["fed_metric"]]
    assert len(rows) >= 2 and all(r["accuracy"] == "" for r in history(out))
    assert int(rows[0]["version"]) < int(rows[-1]["version"]) == summary["versions"], rows
    assert float(rows[-1]["fed_metric"]) < float(rows[0]["fed_metric"]), rows
    assert all(float(r["worst_metric"]) >= float(r["fed_metric"]) - 1e-9 for r in rows)


def test_a_sealed_job_evaluates_on_the_sites_with_sealed_reports(
        procs: Processes, tmp_path: Path, amqp_url: str, topology: Topology) -> None:
    # Given identities for the coordinator and two registered sites, and a tap on the reports
    keys = sealed_keys(tmp_path / "keys", ["site-0", "site-1"])
    tap = Broker(amqp_url, name="fedmq-test-report-tap")
    tapped = f"fedmq.{topology.job}.report-tap"
    try:
        tap.declare(topology)
        declare_queue(tap, tapped, bind_to=topology.inbox, routing_key=EVAL_REPORT_KEY,
                      durable=False)
        # When a sealed binary job runs with federated evaluation
        sites = {site: {"identity": keys / f"site-{site}.key",
                        "coordinator_key": keys / "coordinator.pub"} for site in range(2)}
        summary = run_job(procs, tmp_path / "out", "binary", worker=sites,
                          identity=keys / "coordinator.key", registry=keys / "reg.json",
                          target_metric="auc", learning_rate=0.5)
        reports = [d.body for d in drain(tap, tapped)]
    finally:
        tap.delete(tapped)
        tap.close()
    # Then both sites evaluated the final version
    assert summary["federated"]["workers"] == 2, summary["federated"]
    assert summary["federated"]["mean"]["auc"] > 0.8
    # and every report on the wire is signed by its site and opens only with the coordinator's key
    assert len(reports) >= 4, len(reports)
    me = identity.load_identity(keys / "coordinator.key")
    trusted = {f"site-{i}": identity.load_public(keys / f"site-{i}.pub").signing for i in (0, 1)}
    for body in reports:
        with pytest.raises(DecodeError):
            Codec(2**30).decode(body, EvalReport)  # without a key: not readable
        opened = Codec(2**30, me).decode(body, EvalReport, trusted)
        report = opened.message
        assert opened.seal is not None and opened.seal.signer == report.worker_id, report
        assert report.worker_id in trusted and 0 <= report.metrics["auc"] <= 1, report


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_a_sigmoid_task_trains_with_its_loss_and_auc(procs: Processes, tmp_path: Path,
                                                     task: str) -> None:
    # Given a sigmoid task (binary, or three labels that may co-occur) with AUC, whose
    # coordinator also holds held-out data
    out = tmp_path / "out"
    # When the job runs
    summary = run_job(procs, out, task, target_metric="auc", learning_rate=0.5)
    # Then the coordinator measured the task's own metrics, and the sites did too
    assert set(summary["final_metrics"]) >= {"loss", "auc"}, summary
    assert summary["final_metrics"]["auc"] > 0.8, summary
    assert summary["federated"]["mean"]["auc"] > 0.8 and summary["federated"]["workers"] == 2
    worst = summary["federated"]["worst"]["auc"]
    assert worst["value"] <= summary["federated"]["mean"]["auc"] + 1e-9
    assert worst["worker"] in {"site-0", "site-1"}


def test_a_model_that_cannot_fit_the_labels_stops_the_coordinator_at_start(
        procs: Processes, tmp_path: Path) -> None:
    # Given a task whose model has two outputs for one regression target
    job = procs.start("coordinator", task=f"{TASKS}:wrong_shape", out=tmp_path / "out")
    # Then the coordinator stops at once with one clear message
    assert procs.wait(job, 240) != 0
    assert "cannot train on data of shape (8,)" in job.log(), job.log()
