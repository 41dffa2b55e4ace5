"""The settings of the learning task (both roles) and of server-side learning (the coordinator):
the user's task, the workers' validation split, FedProx, FedBuff's server optimizer, and where
the job is evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TaskSettings(BaseSettings):
    """Both roles: they must agree on these, like --seed and --num-shards."""

    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)

    task: str = Field("", description="Your learning task, 'package.module:function' returning "
                                      "a common.learning_task.LearningTask (model, loss, local "
                                      "optimizer, metrics, local data); empty: --dataset and "
                                      "--model (a softmax classifier).")
    validation_fraction: float = Field(
        0.0, ge=0, lt=1, description="> 0: each worker keeps this share of its local data "
                                     "(seeded by --seed and its shard) to evaluate global "
                                     "versions, and the coordinator asks for these federated "
                                     "evaluations.")


class ServerLearningSettings(BaseSettings):
    """The coordinator's: FedProx (sent in every task), FedBuff's server optimizer (FedOpt) and
    the evaluation of the job."""

    model_config = SettingsConfigDict(env_prefix="FEDMQ_", extra="ignore", frozen=True)

    proximal_mu: float = Field(0.0, ge=0, description="FedProx: > 0 adds mu/2 * ||w - "
                                                      "w_global||^2 to every worker's local "
                                                      "loss.")
    server_optimizer: Literal["sgd", "adam", "yogi", "adagrad"] = Field(
        "sgd", description="FedBuff: the server optimizer applied to each buffer's aggregated "
                           "delta (FedOpt, Reddi et al. 2021); sgd: --server-lr and "
                           "--server-momentum.")
    server_beta1: float = Field(0.9, ge=0, lt=1, description="FedOpt: first-moment decay.")
    server_beta2: float = Field(0.99, ge=0, lt=1, description="FedOpt: second-moment decay "
                                                              "(adam, yogi).")
    server_tau: float = Field(1e-3, gt=0, description="FedOpt: adaptivity tau (added to the "
                                                      "root of the second moment).")
    central_eval: bool = Field(True, description="Evaluate on the coordinator's held-out data; "
                                                 "--no-central-eval: the coordinator holds no "
                                                 "data (the job needs --validation-fraction).")
    federated_eval_sample: float = Field(1.0, gt=0, le=1, description="Share of the workers "
                                         "that evaluate each evaluated version (chosen by a "
                                         "hash of worker and version).")
    federated_eval_wait: float = Field(10.0, ge=0, description="At the end, seconds to wait "
                                       "for the workers' evaluations of the final version.")
    target_metric: str = Field("accuracy", description="Metric --target-accuracy is checked "
                                                       "on (higher is better); federated when "
                                                       "the coordinator holds no data.")

    @model_validator(mode="after")
    def _server_learning_fits(self) -> ServerLearningSettings:
        strategy = getattr(self, "strategy", "fedbuff")
        momentum = getattr(self, "server_momentum", 0.0)
        if not self.central_eval and getattr(self, "validation_fraction", 0.0) <= 0:
            raise ValueError("--no-central-eval leaves the job unevaluated: give the workers a "
                             "--validation-fraction")
        if self.server_optimizer != "sgd" and strategy != "fedbuff":
            raise ValueError("server_optimizer acts on FedBuff's aggregated delta: use strategy "
                             "fedbuff")
        if self.server_optimizer != "sgd" and momentum > 0:
            raise ValueError(f"server_optimizer {self.server_optimizer} keeps its own moments: "
                             f"no server_momentum")
        return self
