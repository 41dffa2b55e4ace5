"""A role's broker addresses: one AMQP URL, or the nodes of a RabbitMQ cluster as a list.

`--amqp-url` (FEDMQ_AMQP_URL) takes one URL or several separated by commas, say
`amqp://u:p@rabbit-0:5672/fedmq,amqp://u:p@rabbit-1:5672/fedmq`. A role connects to the first
that answers and, after losing its connection, starts again from the next one
(common/connection.py).
The URLs name nodes of one cluster, so they share one scheme (the TLS settings apply to all of
them) and one virtual host; a list that mixes them stops at start. A comma inside a URL (in a
password, say) is written %2C, as any reserved character of a URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

SCHEMES = ("amqp", "amqps")


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (`/` when it names none)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list; ValueError saying what is wrong with it."""
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("no AMQP URL given: amqp://user:password@host:5672/vhost (or several, "
                         "comma-separated, for the nodes of a cluster)")
    for url in urls:
        if urlsplit(url).scheme not in SCHEMES:
            raise ValueError(f"{url!r} is not an amqp:// or amqps:// URL (several URLs are "
                             f"separated by commas)")
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise ValueError("the AMQP URLs mix amqp:// and amqps://: the nodes of one cluster are "
                         "reached one way, and the TLS settings apply to all of them")
    vhosts = sorted({vhost_of(url) for url in urls})
    if len(vhosts) > 1:
        raise ValueError(f"the AMQP URLs name different virtual hosts {vhosts}: they must be "
                         f"the nodes of one cluster, in one vhost")
    return urls


def rotated(urls: Sequence[str], start: int) -> list[str]:
    """`urls` starting at index `start` (modulo their number), the others after in order."""
    start %= len(urls)
    return [*urls[start:], *urls[:start]]
