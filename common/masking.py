"""Additive secret sharing mod 2^32 with PRG masks: the arithmetic of secure aggregation.

A worker hides its quantised delta q (common/quantise.py) behind a mask r expanded from a fresh
32-byte seed with ChaCha20 (the `cryptography` package; no hand-written cipher): the coordinator
gets the share q - r mod 2^32, which on its own is uniformly distributed whatever q is, and the
helper gets only the seed. For a buffer with integer weights w_i the coordinator sums
w_i * share_i and the helper sums w_i * r_i over the same members; their sum is sum w_i q_i, and
neither party alone learns anything about one q_i. All arithmetic is numpy's wrapping uint32,
which is exactly arithmetic mod 2^32. Pure functions: no broker, no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from common.arrays import Arrays
from common.quantise import FIELD

SEED_BYTES = 32
PRG_NONCE = b"fedmq secagg v1\x00"
"""ChaCha20's 16-byte nonce (counter + nonce). Fixed: every seed is fresh and used for one mask."""


def new_seed() -> bytes:
    """A fresh 32-byte seed from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


def expand_mask(seed: bytes, shapes: Sequence[tuple[int, ...]]) -> Arrays:
    """The mask for arrays of `shapes`: a ChaCha20 keystream read as little-endian uint32 words."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    encryptor = Cipher(algorithms.ChaCha20(seed, PRG_NONCE), mode=None).encryptor()
    stream = np.frombuffer(encryptor.update(bytes(4 * sum(sizes))), dtype="<u4").astype(FIELD)
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(stream[start:start + size].reshape(shape))
        start += size
    return out


def share(quantised: Sequence[np.ndarray], seed: bytes) -> Arrays:
    """The coordinator's share q - r mod 2^32, r expanded from `seed`."""
    mask = expand_mask(seed, [np.shape(q) for q in quantised])
    return [np.asarray(q, dtype=FIELD) - r for q, r in zip(quantised, mask, strict=True)]


def unshare(share_sum: Sequence[np.ndarray], mask_sum: Sequence[np.ndarray]) -> Arrays:
    """share + mask mod 2^32: both aggregators' sums together give sum w_i q_i."""
    return [np.asarray(s, dtype=FIELD) + np.asarray(m, dtype=FIELD)
            for s, m in zip(share_sum, mask_sum, strict=True)]


def weighted_field_sum(vectors: Sequence[Sequence[np.ndarray]],
                       weights: Sequence[int]) -> Arrays:
    """sum_i w_i * v_i mod 2^32, layer by layer, with non-negative integer weights < 2^32."""
    if not vectors or len(vectors) != len(weights):
        raise ValueError("a weighted sum needs one integer weight per vector, at least one")
    if any(int(w) != w or not 0 <= int(w) < 2 ** 32 for w in weights):
        raise ValueError("secure-aggregation weights are integers in [0, 2^32)")
    total = [np.zeros(np.shape(layer), dtype=FIELD) for layer in vectors[0]]
    for vector, weight in zip(vectors, weights, strict=True):
        w = FIELD(int(weight))
        for acc, layer in zip(total, vector, strict=True):
            acc += w * np.asarray(layer, dtype=FIELD)
    return total


def weighted_mask_sum(seeds: Sequence[bytes], weights: Sequence[int],
                      shapes: Sequence[tuple[int, ...]]) -> Arrays:
    """The helper's answer: sum_i w_i * r_i mod 2^32, each r_i expanded from its seed (one mask
    in memory at a time, not the whole buffer's)."""
    total = [np.zeros(shape, dtype=FIELD) for shape in shapes]
    for seed, weight in zip(seeds, weights, strict=True):
        w = FIELD(int(weight))
        for acc, layer in zip(total, expand_mask(seed, shapes), strict=True):
            acc += w * layer
    return total
