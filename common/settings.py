"""Every setting of every command, read from CLI flags or FEDMQ_* environment variables.

One pydantic-settings class per role; `common.cli` turns each field into a `--flag` with the field's
description as help, so the flags, the environment variables and the docs cannot drift apart.
Precedence: CLI flag, then environment variable, then the default below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)


class ConnectionSettings(_Base):
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F",
                          description="AMQP URL of the RabbitMQ broker (amqps:// for TLS).")
    job: str = Field("", pattern=r"^[A-Za-z0-9_-]*$",
                     description="Job id (letters, digits, - and _); queues become "
                                 "fedmq.<job>.tasks etc. Empty: the plain fedmq.* names.")
    heartbeat: int = Field(30, ge=0, description="AMQP heartbeat interval in seconds.")
    max_message_bytes: int = Field(16 * MiB, gt=0,
                                   description="Largest message body accepted or sent.")
    log_level: str = Field("INFO", description="Python logging level.")


class DataSettings(_Base):
    dataset: str = Field("digits", description="Built-in dataset: digits or breast_cancer.")
    model: str = Field("", description="Model spec name (digits_mlp, breast_cancer_mlp) or "
                                       "'package.module:function'; empty: the dataset's default.")
    seed: int = Field(0, description="Seed of the train/test split, partition and model init.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out share for evaluation.")
    partition: Literal["iid", "dirichlet"] = Field(
        "dirichlet", description="How the training split is divided among shards.")
    dirichlet_alpha: float = Field(0.5, gt=0, description="Dirichlet concentration; smaller "
                                                          "means more skewed label mixes.")
    num_shards: int = Field(3, ge=1, description="How many shards the training split has.")
    label_column: str = Field("label", description="Name of the label column in CSV data files.")


class TrainingSettings(_Base):
    local_epochs: int = Field(2, ge=1, description="Local epochs per task.")
    batch_size: int = Field(16, ge=1, description="Local mini-batch size.")
    learning_rate: float = Field(0.5, gt=0, description="Local SGD learning rate.")


class CoordinatorSettings(TrainingSettings, DataSettings, ConnectionSettings):
    strategy: Literal["fedasync", "fedbuff", "fedavg"] = Field(
        "fedasync", description="Aggregation strategy: fedasync (apply each update at once), "
                                "fedbuff (buffer K deltas), fedavg (synchronous rounds).")
    alpha: float = Field(0.5, gt=0, le=1, description="FedAsync mixing weight.")
    staleness: Literal["constant", "polynomial", "hinge"] = Field(
        "polynomial", description="Staleness function s(t) scaling alpha.")
    staleness_a: float = Field(0.5, ge=0, description="Exponent a of polynomial/hinge staleness.")
    staleness_b: int = Field(4, ge=0, description="Threshold b of hinge staleness.")
    max_staleness: int = Field(50, ge=0, description="Updates staler than this are rejected "
                                                     "(fedavg accepts only the current round).")
    buffer_size: int = Field(4, ge=1, description="FedBuff: deltas buffered per model step (K).")
    server_lr: float = Field(1.0, gt=0, description="FedBuff: server learning rate.")
    server_momentum: float = Field(0.0, ge=0, lt=1, description="FedBuff: server momentum.")
    weight_by_examples: bool = Field(False, description="FedBuff: also weight each delta by "
                                                        "its example count.")
    concurrency: int = Field(3, ge=1, description="Tasks kept in flight.")
    max_updates: int = Field(150, ge=1, description="Stop after this many applied updates.")
    target_accuracy: float | None = Field(None, gt=0, le=1,
                                          description="Accuracy whose first time is reported "
                                                      "(time_to_target_s); see stop_at_target.")
    stop_at_target: bool = Field(True, description="Stop once evaluation reaches "
                                                   "target_accuracy.")
    max_seconds: float | None = Field(None, gt=0, description="Stop after this many seconds "
                                                              "(counted from the clock start).")
    eval_every: int = Field(5, ge=1, description="Evaluate every k versions.")
    wait_for_workers: int = Field(0, ge=0, description="Issue no task (and start no clock) "
                                                       "until this many workers consume tasks.")
    drain_seconds: float = Field(10.0, ge=0, description="At the end, how long to wait for "
                                                         "updates of tasks already started.")
    out: Path = Field(Path("results"), description="Directory for the model and results.")
    eval_data_path: str = Field("", description="Held-out data of your own (.npz with x and y, or "
                                                ".csv); empty: the built-in dataset's split.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus /metrics "
                                                            "endpoint; 0: no endpoint.")
    metrics_address: str = Field("127.0.0.1", description="Address the metrics endpoint listens "
                                                          "on (0.0.0.0 in a container).")
    metrics_linger_seconds: float = Field(0.0, ge=0, description="After the job, keep serving "
                                          "metrics this long so the final values are scraped.")


class WorkerSettings(DataSettings, ConnectionSettings):
    shard_index: int | None = Field(None, ge=0, description="Fixed shard of the training split; "
                                    "unset: lease a free shard from the fedmq.shards queue.")
    data_path: str = Field("", description="Local training data (.npz with x and y, or .csv); "
                                           "'{shard}' becomes the shard index. Empty: --dataset.")
    worker_id: str = Field("", description="Worker name in logs and updates; empty: host-pid.")
    slowdown: float = Field(1.0, ge=1, description="Make local training this many times slower "
                                                   "(simulates a straggler).")
    train_delay_seconds: float = Field(0.0, ge=0, description="Extra seconds added to every "
                                                             "task (simulated latency).")
    shutdown_grace: float = Field(30.0, ge=0, description="On SIGTERM, how long to finish the "
                                                          "task in hand before handing it back.")
    tf_threads: int = Field(1, ge=1, description="TensorFlow intra/inter-op threads.")

    @model_validator(mode="after")
    def _shard_in_range(self) -> WorkerSettings:
        if self.shard_index is not None and self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be < num_shards "
                             f"{self.num_shards}")
        return self


class RunSettings(CoordinatorSettings):
    workers: int = Field(3, ge=1, description="Worker processes to start.")
    slow_workers: int = Field(0, ge=0, description="How many of them are stragglers.")
    slowdown: float = Field(4.0, ge=1, description="Straggler slowdown factor.")


class WatchSettings(ConnectionSettings):
    events: str = Field("#", description="Events to show, as a topic pattern (version, "
                                         "evaluation, rejected, finished; # for all).")
    max_events: int = Field(0, ge=0, description="Exit after this many events; 0: until Ctrl-C.")
    watch_seconds: float = Field(0.0, ge=0, description="Exit after this many seconds; 0: no "
                                                        "limit.")


class StatusSettings(ConnectionSettings):
    management_url: str = Field("http://guest:guest@127.0.0.1:15672",
                                description="RabbitMQ management API URL with credentials; the "
                                            "vhost is the one in --amqp-url.")
