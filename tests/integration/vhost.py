"""The compose file's broker definitions, loaded into the local broker in a vhost of their own.

The shared broker is never reconfigured: the test creates a fresh vhost, imports the definitions'
vhost-scoped part into it (POST /api/definitions/<vhost>), creates the definitions' users (renamed
with a unique suffix, the test passwords, same tags) and their permissions on that vhost only,
and deletes the vhost and the users afterwards. The default vhost is never touched.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from tests.deploy_support import definitions, hash_password, password_of
from tests.integration.support import AMQP_URL, MANAGEMENT_URL

COMPOSE_BROKER_HOST = "rabbitmq"
VHOST_SCOPED = ("queues", "exchanges", "bindings", "policies", "parameters")


@dataclass(frozen=True)
class LoadedDefinitions:
    original_vhost: str
    vhost: str
    users: dict[str, str]  # user name in the definitions -> user name created for the test

    def rewrite_url(self, url: str) -> str:
        """A compose URL (host `rabbitmq`) pointed at the local broker, test vhost and users."""
        parts = urlsplit(url)
        assert parts.hostname == COMPOSE_BROKER_HOST, url
        local = urlsplit(AMQP_URL if parts.scheme.startswith("amqp") else MANAGEMENT_URL)
        user = self.users[parts.username or ""]
        netloc = f"{user}:{parts.password}@{local.hostname}:{local.port}"
        path = parts.path
        if parts.scheme.startswith("amqp"):
            assert path.lstrip("/") == self.original_vhost, url
            path = "/" + quote(self.vhost, safe="")
        return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))

    def url_as(self, user: str, password: str) -> str:
        """An AMQP URL for one of the definitions' users (by its name in the definitions)."""
        return self.rewrite_url(f"amqp://{user}:{password}@{COMPOSE_BROKER_HOST}:5672/"
                                f"{self.original_vhost}")


class _Api:
    def __init__(self) -> None:
        parts = urlsplit(MANAGEMENT_URL)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port}/api"
        self.auth = (parts.username or "guest", parts.password or "guest")

    def call(self, method: str, path: str, body: Any = None) -> None:
        response = requests.request(method, f"{self.base}/{path}", auth=self.auth, json=body,
                                    timeout=30)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} " \
                                           f"{response.text}"


@contextlib.contextmanager
def definitions_in_fresh_vhost() -> Iterator[LoadedDefinitions]:
    """Load deploy/rabbitmq/definitions.json into a new vhost; remove everything afterwards."""
    spec = definitions()
    (original,) = [v["name"] for v in spec["vhosts"]]
    suffix = uuid.uuid4().hex[:8]
    loaded = LoadedDefinitions(original, f"fedmq-test-{suffix}",
                               {u["name"]: f"{u['name']}-test-{suffix}" for u in spec["users"]})
    api, vhost = _Api(), quote(loaded.vhost, safe="")
    created_users: list[str] = []
    api.call("PUT", f"vhosts/{vhost}")
    try:
        api.call("POST", f"definitions/{vhost}",
                 {key: spec.get(key, []) for key in VHOST_SCOPED})
        for user in spec["users"]:
            name = loaded.users[user["name"]]
            api.call("PUT", f"users/{quote(name, safe='')}",
                     {"password_hash": hash_password(password_of(user)),
                      "hashing_algorithm": user["hashing_algorithm"],
                      "tags": ",".join(user["tags"])})
            created_users.append(name)
        for permission in spec["permissions"]:
            assert permission["vhost"] == original
            api.call("PUT", f"permissions/{vhost}/{quote(loaded.users[permission['user']])}",
                     {key: permission[key] for key in ("configure", "write", "read")})
        yield loaded
    finally:
        with contextlib.suppress(AssertionError, requests.RequestException):
            api.call("DELETE", f"vhosts/{vhost}")
        for name in created_users:
            with contextlib.suppress(AssertionError, requests.RequestException):
                api.call("DELETE", f"users/{quote(name, safe='')}")
