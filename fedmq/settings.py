"""Settings of the operator tools: `fedmq run` (a whole job as local processes), `fedmq watch` and
`fedmq status`. The roles' own settings, which these build on, are in common/settings.py."""

from __future__ import annotations

from pydantic import Field

from common.connection_settings import ConnectionSettings
from common.settings import CoordinatorSettings


class RunSettings(CoordinatorSettings):
    workers: int = Field(3, ge=1, description="Worker processes to start.")
    slow_workers: int = Field(0, ge=0, description="How many of them are stragglers.")
    slowdown: float = Field(4.0, ge=1, description="Straggler slowdown factor.")
    sealed: bool = Field(False, description="Generate throwaway keys in <out>/keys and run "
                                            "with sealed, signed messages.")


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
