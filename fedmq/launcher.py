"""`fedmq run`: one coordinator and N workers as local processes, configured through FEDMQ_* env
vars exactly as docker-compose.yml configures the containers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from common import identity
from common.errors import ConfigError
from common.settings import CoordinatorSettings, WorkerSettings
from fedmq.local_broker import broker_for
from fedmq.settings import RunSettings

log = logging.getLogger("fedmq.run")
WORKER_STOP_SECONDS = 30


def to_env(settings: BaseSettings, cls: type[BaseSettings]) -> dict[str, str]:
    """FEDMQ_* variables for the fields of `cls` that `settings` has values for."""
    env = {}
    for name in cls.model_fields:
        value = getattr(settings, name, None)
        if value is not None:
            env[f"FEDMQ_{name.upper()}"] = str(value)
    return env


def _spawn(role: str, env: dict[str, str], log_path: Path | None) -> subprocess.Popen[bytes]:
    """Start `fedmq <role>`; its log goes to `log_path`, or to our stderr when None."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")} | env
    if log_path is None:
        return subprocess.Popen([sys.executable, "-m", "fedmq", role], env=full_env,
                                stdout=subprocess.DEVNULL)
    with log_path.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "fedmq", role], env=full_env,
                                stdout=output, stderr=subprocess.STDOUT)


def worker_envs(settings: RunSettings) -> list[dict[str, str]]:
    """One env per worker: shard i of --workers; the last --slow-workers are stragglers."""
    envs = []
    for index in range(settings.workers):
        slow = index >= settings.workers - settings.slow_workers
        worker = WorkerSettings(**{**settings.model_dump(include=set(WorkerSettings.model_fields)),
                                   "num_shards": settings.workers, "shard_index": index,
                                   "worker_id": f"worker-{index}",
                                   "slowdown": settings.slowdown if slow else 1.0})
        envs.append(to_env(worker, WorkerSettings))
    return envs


def throwaway_keys(settings: RunSettings) -> dict[str, Any]:
    """--sealed: an identity per process in <out>/keys (made once) and the registry of workers."""
    directory = settings.out / "keys"
    names = ["coordinator"] + [f"worker-{i}" for i in range(settings.workers)]
    for name in names:
        if not (directory / f"{name}.key").exists():
            identity.save_identity(identity.Identity.generate(name), directory)
    registry = identity.Registry()
    for name in names[1:]:
        registry.add(identity.load_public(directory / f"{name}.pub"))
    registry.save(directory / "registry.json")
    return {"identity": directory / "coordinator.key", "registry": directory / "registry.json"}


def seal_worker_env(env: dict[str, str], settings: RunSettings) -> dict[str, str]:
    keys = settings.out / "keys"
    return env | {"FEDMQ_IDENTITY": str(keys / f"{env['FEDMQ_WORKER_ID']}.key"),
                  "FEDMQ_COORDINATOR_KEY": str(keys / "coordinator.pub")}


def run_local(settings: RunSettings) -> dict[str, Any]:
    """Start everything, wait for the coordinator, stop the workers, return the summary."""
    if settings.identity is not None:
        raise ConfigError("fedmq run makes its own keys: use --sealed instead of --identity")
    overrides: dict[str, Any] = {"num_shards": settings.workers}
    if "concurrency" not in settings.model_fields_set:
        overrides["concurrency"] = settings.workers
    settings = settings.model_copy(update=overrides)
    with broker_for(settings.amqp_urls):  # the demo starts its own broker if it must
        code = _run_job(settings)
    if code != 0:
        raise SystemExit(f"coordinator exited with status {code}; see its log above")
    return dict(json.loads((settings.out / "summary.json").read_text()))


def _run_job(settings: RunSettings) -> int:
    """The coordinator and workers of one job; returns the coordinator's exit status."""
    logs = settings.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    envs = worker_envs(settings)
    if settings.sealed:
        settings = settings.model_copy(update=throwaway_keys(settings))
        envs = [seal_worker_env(env, settings) for env in envs]
    workers = [_spawn("worker", env, logs / f"worker-{i}.log") for i, env in enumerate(envs)]
    log.info("started %d workers (logs in %s)", len(workers), logs)
    coordinator = _spawn("coordinator", to_env(settings, CoordinatorSettings), None)
    try:
        code = coordinator.wait()
    finally:
        if coordinator.poll() is None:
            coordinator.terminate()
            coordinator.wait()
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
    return code
