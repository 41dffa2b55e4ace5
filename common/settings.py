"""The settings of the two roles, read from CLI flags or FEDMQ_* environment variables.

One pydantic-settings class per role (CoordinatorSettings, WorkerSettings), composed of the
concerns they share (connection, identity, data, training...); the larger concerns have modules
of their own (common/connection_settings.py, learning_settings.py, queue_settings.py, ...).
The `fedmq` command (fedmq/cli.py) turns each field into a `--flag` with the field's
description as help, so the flags, the environment variables and the docs cannot drift apart.
The settings that only the operator tools use (`fedmq run`, `watch`, `status`) are in
fedmq/settings.py.
Precedence: CLI flag, then environment variable, then the default below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.compression_settings import CompressionSettings, compression_problem
from common.connection_settings import ConnectionSettings
from common.learning_settings import ServerLearningSettings, TaskSettings
from common.queue_settings import QueueSettings
from common.robust_rules import robust_problem
from common.secagg_settings import (
    HelperKeySettings,
    SecureAggregationSettings,
    secure_problem,
)


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)


class IdentitySettings(_Base):
    identity: Path | None = Field(None, description="This process's private identity file "
                                  "(fedmq keys generate). Set: messages are signed and updates "
                                  "and models sealed end to end.")


class PrivacyBudgetSettings(_Base):
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="Delta at which epsilon is reported.")
    dp_epsilon_budget: float | None = Field(
        None, gt=0, description="Stop before any worker's epsilon would exceed this.")


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


class RobustSettings(_Base):
    aggregator: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"] = Field(
        "mean", description="FedBuff: how a full buffer is combined (robust rules against "
                            "poisoned updates).")
    byzantine_f: int = Field(1, ge=0, description="FedBuff: attackers tolerated per buffer: "
                                                  "Krum's f, trimmed per end by trimmed_mean.")
    norm_bound: float = Field(0.0, ge=0, description="FedBuff: > 0 clips every buffered delta to "
                                                     "this L2 norm before aggregating.")
    max_update_norm_factor: float = Field(
        20.0, ge=0, description="Every strategy: reject an update whose delta's L2 norm exceeds "
                                "this factor x the median norm of the last 50 accepted updates "
                                "(x the model's norm before 5 were accepted); 0: no bound.")


class CoordinatorSettings(CompressionSettings, ServerLearningSettings, TaskSettings,
                          SecureAggregationSettings, QueueSettings, RobustSettings,
                          PrivacyBudgetSettings, IdentitySettings, TrainingSettings, DataSettings,
                          ConnectionSettings):
    strategy: Literal["fedasync", "fedbuff", "fedavg"] = Field(
        "fedasync", description="Aggregation strategy: fedasync (apply each update at once), "
                                "fedbuff (buffer K deltas), fedavg (synchronous rounds).")
    alpha: float = Field(0.5, gt=0, le=1, description="FedAsync mixing weight.")
    staleness: Literal["constant", "polynomial", "hinge"] = Field(
        "polynomial", description="Staleness function s(t) scaling alpha.")
    staleness_a: float = Field(0.5, ge=0, description="Exponent a of polynomial/hinge staleness.")
    staleness_b: int = Field(4, ge=0, description="Threshold b of hinge staleness.")
    max_staleness: int | None = Field(
        None, ge=0, description="Updates staler than this are rejected (fedavg accepts only the "
                                "current round); unset: 50, or twice the versions made while a "
                                "task is in flight (concurrency, / buffer_size for fedbuff), "
                                "whichever is larger.")
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
    out: Path = Field(Path("results"), description="Directory for the model, results and "
                                                   "checkpoint.")
    checkpoint: bool = Field(True, description="Keep <out>/checkpoint.npz current and ack each "
                             "update only once it is in the checkpoint; --no-checkpoint acks at "
                             "once (faster; a crash loses the job).")
    resume: bool = Field(True, description="Go on from <out>/checkpoint.npz if it holds an "
                         "unfinished job; --no-resume starts over (and overwrites it).")
    standby: bool = Field(False, description="Hot standby: load everything, then wait until the "
                          "coordinator holding the same --out ends or dies and take its job "
                          "over from the checkpoint.")
    chunk_expiry_seconds: float = Field(300.0, gt=0, description="A chunked update with no "
                                        "new chunk for this long is dropped and counted as "
                                        "rejected (its sender died).")
    max_partial_transfers: int = Field(16, ge=1, description="Chunked updates held in progress "
                                       "at once (spooled under --out); more are rejected.")
    task_deadline: float = Field(300.0, gt=0, description="Seconds after which a task whose "
                                 "update has not arrived is issued again (a late update still "
                                 "counts).")
    eval_data_path: str = Field("", description="Held-out data of your own (.npz with x and y, or "
                                                ".csv); empty: the built-in dataset's split.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus /metrics "
                                                            "endpoint; 0: no endpoint.")
    metrics_address: str = Field("127.0.0.1", description="Address the metrics endpoint listens "
                                                          "on (0.0.0.0 in a container).")
    metrics_linger_seconds: float = Field(0.0, ge=0, description="After the job, keep serving "
                                          "metrics this long so the final values are scraped.")
    registry: Path | None = Field(None, description="Registered worker keys (fedmq keys "
                                  "register); required with --identity.")
    dp_clip_norm: float = Field(0.0, ge=0, description="> 0: clip each update delta (local DP) "
                                                       "or each worker's share of a buffer "
                                                       "(central DP) to this L2 norm.")
    dp_noise_multiplier: float = Field(0.0, ge=0, description="> 0: Gaussian noise of std "
                                       "multiplier * clip norm (where: dp_mode).")
    dp_mode: Literal["local", "central"] = Field(
        "local", description="local: each worker clips its delta and adds the noise before "
                             "sending; central (fedbuff, trusted coordinator): the coordinator "
                             "clips each worker's share of a buffer and noises their sum once.")

    def staleness_limit(self) -> int:
        """max_staleness, or its default: an update's staleness is about the versions made while
        it trains, concurrency / K (K = buffer_size for fedbuff, 1 for fedasync), so a fixed
        limit rejects most of a large fleet's work (59.7 % at 128 workers, docs/benchmarks.md);
        twice that rejects only real stragglers, and staleness weighting still shrinks them."""
        if self.max_staleness is not None:
            return self.max_staleness
        per_version = self.buffer_size if self.strategy == "fedbuff" else 1
        return max(50, 2 * -(-self.concurrency // per_version))

    @model_validator(mode="after")
    def _consistent(self) -> CoordinatorSettings:
        if self.identity is not None and self.registry is None:
            raise ValueError("a sealed coordinator (identity) needs a worker registry")
        if self.dp_noise_multiplier > 0 and self.dp_clip_norm <= 0:
            raise ValueError("dp_noise_multiplier needs dp_clip_norm > 0")
        if self.dp_epsilon_budget is not None and self.dp_noise_multiplier <= 0:
            raise ValueError("dp_epsilon_budget needs dp_noise_multiplier > 0")
        self._check_robust()
        self._check_central_dp()
        if (problem := compression_problem(self.compression, self.strategy)) is not None:
            raise ValueError(problem)
        if (problem := secure_problem(self)) is not None:
            raise ValueError(problem)
        return self

    def _check_central_dp(self) -> None:
        if self.dp_mode != "central":
            return
        if self.dp_noise_multiplier <= 0:
            raise ValueError("dp_mode central needs dp_noise_multiplier > 0 and dp_clip_norm > 0")
        if self.strategy != "fedbuff":
            raise ValueError("dp_mode central noises a buffer: use strategy fedbuff")
        if self.aggregator != "mean" or self.norm_bound > 0:
            raise ValueError("dp_mode central clips and noises the buffer's mean itself: no "
                             "aggregator or norm_bound")
        if self.weight_by_examples:
            raise ValueError("dp_mode central weights deltas by staleness only: no "
                             "weight_by_examples")

    def _check_robust(self) -> None:
        if (self.aggregator != "mean" or self.norm_bound > 0) and self.strategy != "fedbuff":
            raise ValueError("aggregator and norm_bound act on a buffer: use strategy fedbuff")
        problem = robust_problem(self.aggregator, self.byzantine_f, self.buffer_size)
        if problem is not None:
            raise ValueError(problem)


class WorkerSettings(TaskSettings, HelperKeySettings, PrivacyBudgetSettings, IdentitySettings,
                     DataSettings,
                     ConnectionSettings):
    shard_index: int | None = Field(None, ge=0, description="Fixed shard of the training split; "
                                    "unset: lease a free shard (the fedmq.shards.<i> queues).")
    data_path: str = Field("", description="Local training data (.npz with x and y, or .csv); "
                                           "'{shard}' becomes the shard index. Empty: --dataset.")
    worker_id: str = Field("", description="Worker name in logs and updates; empty: host-pid.")
    slowdown: float = Field(1.0, ge=1, description="Make local training this many times slower "
                                                   "(simulates a straggler).")
    train_delay_seconds: float = Field(0.0, ge=0, description="Extra seconds added to every "
                                                             "task (simulated latency).")
    shutdown_grace: float = Field(30.0, ge=0, description="On SIGTERM, how long to finish the "
                                                          "task in hand before handing it back.")
    task_hold_seconds: float = Field(900.0, gt=0, description="Ack a task still training "
                                     "after this long (under the broker's consumer_timeout); "
                                     "the coordinator's task deadline covers it from then on.")
    tf_threads: int = Field(1, ge=1, description="TensorFlow intra/inter-op threads.")
    coordinator_key: Path | None = Field(None, description="The coordinator's public identity "
                                         "(.pub); required with --identity.")
    attack: Literal["none", "sign_flip", "scale", "random", "nan"] = Field(
        "none", description="Attack simulation (tests, benchmarks): send -factor*delta, "
                            "factor*delta, random noise of factor*|delta|, or NaN.")
    attack_factor: float | None = Field(None, gt=0, description="Factor of --attack; unset: 10 "
                                        "for sign_flip and random, 100 for scale.")

    @model_validator(mode="after")
    def _shard_in_range(self) -> WorkerSettings:
        if self.identity is not None and self.coordinator_key is None:
            raise ValueError("a sealed worker (identity) needs the coordinator's public key")
        if self.shard_index is not None and self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be < num_shards "
                             f"{self.num_shards}")
        return self
