"""A small client of RabbitMQ's management HTTP API (port 15672): queues, consumers, rates."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import requests

from common.errors import BrokerUnavailable


class Management:
    """Read-mostly access to the management API of one vhost."""

    def __init__(self, url: str = "http://guest:guest@127.0.0.1:15672", vhost: str = "/",
                 timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.auth = (parts.username or "guest", parts.password or "guest")
        self.vhost = quote(vhost, safe="")
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = requests.request(method, f"{self.base}/{path}", auth=self.auth,
                                        timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise BrokerUnavailable(f"management API unreachable: {exc}") from None
        response.raise_for_status()
        return response.json() if response.content else None

    def queue(self, name: str) -> dict[str, Any] | None:
        """The queue's details (messages, consumers, rates), or None if it does not exist."""
        try:
            result: dict[str, Any] = self._request(
                "GET", f"queues/{self.vhost}/{quote(name, safe='')}")
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise
        return result

    def queues(self, prefix: str = "fedmq.") -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = self._request("GET", f"queues/{self.vhost}")
        return [q for q in every if q["name"].startswith(prefix)]

    def connections(self) -> list[dict[str, Any]]:
        """Open client connections (name, user, ssl, peer certificate details...)."""
        result: list[dict[str, Any]] = self._request("GET", "connections")
        return result

    def get_messages(self, queue: str, count: int = 10) -> list[dict[str, Any]]:
        """Peek at messages (they are requeued), bodies base64-encoded."""
        body = {"count": count, "ackmode": "ack_requeue_true", "encoding": "base64"}
        result: list[dict[str, Any]] = self._request(
            "POST", f"queues/{self.vhost}/{quote(queue, safe='')}/get", json=body)
        return result

    def exchanges(self, prefix: str = "fedmq.") -> list[dict[str, Any]]:
        every: list[dict[str, Any]] = self._request("GET", f"exchanges/{self.vhost}")
        return [e for e in every if e["name"].startswith(prefix)]
