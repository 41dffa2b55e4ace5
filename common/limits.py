"""The size limits: what may be sent at all, and the one message that says a body is too big.

Two bounds. Every message fedmq sends or accepts is at most `--max-message-bytes`
(FEDMQ_MAX_MESSAGE_BYTES): the broker has its own limit (`max_message_size`: 128 MiB by default on
RabbitMQ 3.x, 16 MiB on 4.x) and refuses anything over 512 MiB whatever its configuration. A body
larger than `--chunk-bytes` (at most --max-message-bytes, checked by the settings) travels as
chunks (common/chunks.py), so a whole body is bounded only by `--max-body-bytes`. A model whose
body cannot fit that bound is found at start by encoding it (coordinator: the model it sends;
worker: the update it would send), so a job stops with this message instead of running to fail.
"""

from __future__ import annotations

from common.errors import ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB
BROKER_HARD_LIMIT = 512 * MiB  # RabbitMQ refuses larger messages whatever max_message_size says
DEFAULT_CHUNK_BYTES = 4 * MiB  # well under RabbitMQ 4.x's default 16 MiB


def too_large(what: str, size: int, limit: int) -> str:
    """The sentence for a body of `size` bytes over `limit`: the sizes and what to do."""
    return (f"{what} is {size} bytes encoded, which exceeds the message limit of {limit} bytes; "
            f"raise --max-message-bytes (FEDMQ_MAX_MESSAGE_BYTES) of the coordinator and every "
            f"worker to at least {size}, up to the broker's own max_message_size (RabbitMQ 3.x: "
            f"128 MiB by default, 4.x: 16 MiB; never above 512 MiB), or use a smaller model")


def body_too_large(what: str, size: int, limit: int) -> str:
    """The sentence for a whole body (chunked or not) of `size` bytes over `limit`."""
    return (f"{what} is {size} bytes encoded, which exceeds the body limit of {limit} bytes; "
            f"raise --max-body-bytes (FEDMQ_MAX_BODY_BYTES) of the coordinator and every worker "
            f"to at least {size} (bodies travel in chunks of --chunk-bytes, so the broker's "
            f"max_message_size does not bound them), or use a smaller model")


def check_fits(what: str, body: bytes, limit: int) -> None:
    """Raise ConfigError (with `body_too_large`'s message) if `body` is over `limit` bytes."""
    if len(body) > limit:
        raise ConfigError(body_too_large(what, len(body), limit))
