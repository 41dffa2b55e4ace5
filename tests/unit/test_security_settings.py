"""Security settings refuse combinations that cannot work, at the command line already."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from common.connection_settings import ConnectionSettings
from common.settings import CoordinatorSettings, WorkerSettings
from fedmq.cli import main


def test_krum_with_too_small_a_buffer_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValidationError, match="2f\\+3 = 7"):
        CoordinatorSettings(strategy="fedbuff", aggregator="krum", byzantine_f=2,
                            buffer_size=6)
    result = CliRunner().invoke(main, ["coordinator", "--strategy", "fedbuff", "--aggregator",
                                       "multi_krum", "--buffer-size", "4"])
    assert result.exit_code == 2 and "needs buffer_size >= 2f+3 = 5" in result.output
    CoordinatorSettings(strategy="fedbuff", aggregator="krum", byzantine_f=2, buffer_size=7)
    with pytest.raises(ValidationError, match="use strategy fedbuff"):
        CoordinatorSettings(strategy="fedasync", aggregator="median")


def test_tls_files_need_an_amqps_url_and_go_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not amqps"):
        ConnectionSettings(tls_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="go together"):
        ConnectionSettings(amqp_url="amqps://h/%2F", tls_cert_file=tmp_path / "c.pem")
    ConnectionSettings(amqp_url="amqps://h/%2F", tls_ca_file=tmp_path / "ca.pem")


def test_sealed_processes_need_their_counterpart_keys(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="registry"):
        CoordinatorSettings(identity=tmp_path / "c.key")
    with pytest.raises(ValidationError, match="coordinator's public key"):
        WorkerSettings(identity=tmp_path / "w.key")


def test_dp_settings_must_be_consistent() -> None:
    with pytest.raises(ValidationError, match="dp_clip_norm"):
        CoordinatorSettings(dp_noise_multiplier=1.0)
    with pytest.raises(ValidationError, match="dp_noise_multiplier"):
        CoordinatorSettings(dp_clip_norm=1.0, dp_epsilon_budget=3.0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"dp_noise_multiplier": 0.0}, "needs dp_noise_multiplier > 0"),
    ({"strategy": "fedasync"}, "use strategy fedbuff"),
    ({"aggregator": "median"}, "no aggregator or norm_bound"),
    ({"norm_bound": 1.0}, "no aggregator or norm_bound"),
    ({"weight_by_examples": True}, "no weight_by_examples"),
])
def test_central_dp_is_refused_where_its_accounting_would_not_hold(
        overrides: dict[str, object], message: str) -> None:
    central = {"dp_mode": "central", "strategy": "fedbuff", "dp_clip_norm": 1.0,
               "dp_noise_multiplier": 1.0}
    CoordinatorSettings(**central)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=message):
        CoordinatorSettings(**{**central, **overrides})  # type: ignore[arg-type]


def test_with_central_dp_tasks_ask_workers_for_no_noise_of_their_own() -> None:
    from coordinator.task_options import task_options

    local = CoordinatorSettings(strategy="fedbuff", dp_clip_norm=1.0, dp_noise_multiplier=2.0)
    assert task_options(local) == {"dp_clip_norm": 1.0, "dp_noise_multiplier": 2.0}
    central = local.model_copy(update={"dp_mode": "central"})
    assert task_options(central) == {"dp_clip_norm": 0.0, "dp_noise_multiplier": 0.0}
