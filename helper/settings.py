"""`fedmq helper`'s settings: its own connection and identity, and the helper's rules."""

from __future__ import annotations

from common.connection_settings import ConnectionSettings
from common.secagg_settings import HelperSettings
from common.settings import IdentitySettings


class HelperRoleSettings(HelperSettings, IdentitySettings, ConnectionSettings):
    """The second aggregator of secure aggregation (helper/service.py); it needs --identity,
    --registry and --coordinator-key (the service stops at start without them)."""
