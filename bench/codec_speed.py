"""Encode and decode of a large WeightUpdate against one memory copy of the same size, in one run.

`python -m bench.codec_speed [--megabytes 40] [--repeats 9]`: the best of `repeats` timings of
`wire.encode` (plain) and `wire.decode`, and of one copy of the same number of bytes, in GB/s:
`bytes(bytearray)` (a new bytes object, like the body encode must return: fresh pages from the
C allocator) and `np.copy` (numpy asks the kernel for huge pages, so on this machine it runs 3-5x
faster than any bytes copy). Ratios are given against both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from bench import command
from common import wire
from common.messages import WeightUpdate, new_id


def best_seconds(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def update_of(megabytes: float) -> WeightUpdate:
    """A dense-model update of about `megabytes` MB of float32 weights (4 layers)."""
    side = int((megabytes * 1e6 / 4) ** 0.5)
    rng = np.random.default_rng(0)
    weights = (rng.random((side, side), np.float32), rng.random(side, np.float32),
               rng.random((side, 10), np.float32), rng.random(10, np.float32))
    return WeightUpdate(update_id=new_id(), worker_id="w" * 16, task_id=new_id(),
                        base_version=3, num_examples=100, train_seconds=1.0, weights=weights,
                        is_delta=True, metrics={"loss": 0.5})


def measure(megabytes: float = 40.0, repeats: int = 9) -> dict[str, float]:
    update = update_of(megabytes)
    body = wire.encode(update)
    size = len(body)
    flat = np.concatenate([w.reshape(-1) for w in update.weights])
    raw = bytearray(body)
    bytes_copy = best_seconds(lambda: bytes(raw), repeats)
    np_copy = best_seconds(lambda: np.copy(flat), repeats)
    encode = best_seconds(lambda: wire.encode(update), repeats)
    decode = best_seconds(lambda: wire.decode(body, WeightUpdate, size), repeats)
    gb = size / 1e9
    return {"bytes": size, "bytes_copy_gb_s": gb / bytes_copy, "np_copy_gb_s": gb / np_copy,
            "encode_gb_s": gb / encode, "decode_gb_s": gb / decode,
            "encode_vs_bytes_copy": bytes_copy / encode,
            "decode_vs_bytes_copy": bytes_copy / decode,
            "encode_vs_np_copy": np_copy / encode, "decode_vs_np_copy": np_copy / decode}


@click.command(context_settings=command.CONTEXT)
@click.option("--megabytes", default=40.0, show_default=True)
@click.option("--repeats", default=9, show_default=True)
def main(megabytes: float, repeats: int) -> None:
    """Encode/decode of a WeightUpdate against one memory copy of the same size."""
    click.echo(json.dumps(measure(megabytes, repeats), indent=2))


if __name__ == "__main__":
    main()
