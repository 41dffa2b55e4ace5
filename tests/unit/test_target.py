"""The target a job stops at: reached at or above it for a metric where higher is better, at or
below it where lower is better (a loss, an error), and judged only on the metric named by
--target-metric (never on the loss that federated rounds fall back to showing)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from common.amqp import Delivery
from common.codec import Codec
from common.identity import Identity
from common.learning_task import LearningTask
from common.messages import EvalReport
from common.sealed_wire import encode_sealed
from common.settings import CoordinatorSettings
from coordinator.federated_eval import RoundSummary
from coordinator.federated_loop import FederatedLoop
from coordinator.history import History
from coordinator.lifecycle import JobRecord


def test_a_lower_is_better_metric_reaches_its_target_at_or_below_it() -> None:
    above, below = JobRecord(), JobRecord()
    above.scored(0.6, 0.5, higher_is_better=False)
    below.scored(0.4, 0.5, higher_is_better=False)
    assert above.time_to_target is None and below.time_to_target is not None
    higher = JobRecord()
    higher.scored(0.4, 0.5)
    assert higher.time_to_target is None


def loop(record: JobRecord, **settings: Any) -> FederatedLoop:
    quiet = SimpleNamespace(event=lambda *a, **k: None, federated=lambda *a, **k: None)
    task = LearningTask(build_model=lambda: None)
    history = History()
    return FederatedLoop(CoordinatorSettings(**settings), SimpleNamespace(), SimpleNamespace(),
                         SimpleNamespace(), quiet, quiet, record, lambda: history,  # type: ignore[arg-type]
                         task.better_is_higher, judges=True)


def summary(**mean: float) -> RoundSummary:
    return RoundSummary(version=3, workers=2, examples=40, mean=mean,
                        worst={name: (value, "w1") for name, value in mean.items()},
                        per_worker={})


def test_a_federated_round_without_the_target_metric_never_reaches_the_target() -> None:
    # Given a job judged on accuracy whose workers report only a loss (a regression task)
    record = JobRecord()
    federated = loop(record, target_accuracy=0.9)
    # When a round reports a loss of 2.3 (the fallback it shows is the loss)
    federated._record(SimpleNamespace(), summary(loss=2.3))  # type: ignore[arg-type]
    # Then the target is not reached (2.3 >= 0.9 would have stopped the job at once)
    assert record.time_to_target is None


def test_a_federated_mae_target_is_reached_below_it() -> None:
    record = JobRecord()
    federated = loop(record, target_accuracy=0.5, target_metric="mae")
    federated._record(SimpleNamespace(), summary(loss=0.8, mae=0.7))  # type: ignore[arg-type]
    assert record.time_to_target is None
    federated._record(SimpleNamespace(), summary(loss=0.3, mae=0.4))  # type: ignore[arg-type]
    assert record.time_to_target is not None


def test_a_sealed_report_signed_by_another_site_than_it_names_is_refused() -> None:
    # Given a sealed coordinator that trusts two registered sites
    coordinator = Identity.generate("coordinator")
    sites = {name: Identity.generate(name) for name in ("site-0", "site-1")}
    trusted = {name: site.public().signing for name, site in sites.items()}
    quiet = SimpleNamespace(event=lambda *a, **k: None, federated=lambda *a, **k: None)
    history = History()
    federated = FederatedLoop(
        CoordinatorSettings(), SimpleNamespace(), Codec(2 ** 20, coordinator),  # type: ignore[arg-type]
        SimpleNamespace(trusted=lambda: trusted), quiet, quiet,  # type: ignore[arg-type]
        JobRecord(), lambda: history, lambda name: True, judges=False)
    broker = SimpleNamespace(acked=[])
    broker.ack = broker.acked.append

    def report(signer: str, names: str) -> Delivery:
        body = encode_sealed(EvalReport(worker_id=names, request_version=1, version=1,
                                        num_examples=1000, metrics={"loss": 2.0, "accuracy": 0.1}),
                             sites[signer], {"coordinator": coordinator.public().encryption})
        return Delivery(body=body, tag=1, queue="reports")

    # When site-1 reports under site-0's name, and site-0 under its own
    federated.on_report(broker, report("site-1", "site-0"))  # type: ignore[arg-type]
    federated.on_report(broker, report("site-0", "site-0"))  # type: ignore[arg-type]
    # Then the forged one is refused (and acked), and only the genuine one counts
    assert federated.rounds.refused == 1 and len(broker.acked) == 2
    assert list(federated.rounds.rounds[1]) == ["site-0"]
