"""Secure aggregation's math against plain FedBuff without a broker or timing noise.

bench/lab.py trains every worker's delta for real (digits, Dirichlet(0.5) shards); the same
stream of deltas, with the same staleness pattern, goes to plain FedBuff clipping each delta to C
(--norm-bound C) and to FedBuff over masked shares (each delta clipped to C, quantised, masked
with a ChaCha20 seed; the helper's mask sum computed here from the seeds). Each strategy trains
its own model, so the two drift apart only through quantisation and the integer weights.

`python -m bench.secure_aggregation_lab` prints one line per round.
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from bench import command
from bench.lab import Lab, Setup
from common import masking, quantise
from common.arrays import Arrays
from coordinator.strategies import Contribution, FedBuff, RobustConfig, SecureFedBuff


def unmask_all(strategy: SecureFedBuff, weights: Arrays, seeds: dict[str, bytes]) -> Arrays:
    """Play the helper for every sealed buffer: its mask sum from the seeds, then the step."""
    while strategy.sealed:
        sealed = strategy.sealed[0]
        size = sum(int(s.size) for s in sealed.share_sum)
        mask = masking.weighted_mask_sum([seeds[u] for u, _ in sealed.members],
                                         [w for _, w in sealed.members], [(size,)])
        result = strategy.complete(weights, sealed.buffer_id, tuple(mask))
        assert result is not None
        weights = result[0]
    return weights


@click.command(context_settings=command.CONTEXT)
@click.option("--rounds", default=6, show_default=True, help="Rounds of one delta per worker.")
@click.option("--workers", default=8, show_default=True)
@click.option("--buffer-size", default=4, show_default=True, help="FedBuff K.")
@click.option("--clip", default=5.0, show_default=True, help="L2 clip C of both.")
@click.option("--seed", default=0, show_default=True)
def main(**options: Any) -> None:
    """Plain FedBuff vs FedBuff over masked shares on the same training, round by round."""
    lab = Lab(Setup(workers=options["workers"], partition="dirichlet", seed=options["seed"]))
    rng = np.random.default_rng(options["seed"])
    k, clip = options["buffer_size"], options["clip"]
    plain = FedBuff(buffer_size=k, robust=RobustConfig("mean", 1, clip))
    secure = SecureFedBuff(k, clip)
    plain_weights = [np.array(w) for w in lab.initial]
    secure_weights = [np.array(w) for w in lab.initial]
    seeds: dict[str, bytes] = {}
    for round_ in range(options["rounds"]):
        for i, (mine, theirs) in enumerate(zip(lab.deltas(plain_weights),
                                               lab.deltas(secure_weights), strict=True)):
            staleness = i % 3  # the same pattern for both
            stepped = plain.submit(plain_weights, Contribution(
                [d.astype(np.float32) for d in mine], True, staleness, 10))
            plain_weights = plain_weights if stepped is None else stepped
            update_id, seeds[f"{round_}-{i}"] = f"{round_}-{i}", masking.new_seed()
            shares = masking.share(quantise.quantise(theirs, clip, secure.scale, rng),
                                   seeds[update_id])
            secure.submit(secure_weights, Contribution(shares, True, staleness, 10, "",
                                                       update_id, b"sealed seed"))
            secure_weights = unmask_all(secure, secure_weights, seeds)
        plain_accuracy, secure_accuracy = (lab.accuracy(plain_weights),
                                           lab.accuracy(secure_weights))
        click.echo(f"round {round_ + 1}: plain {plain_accuracy:.4f}  secure {secure_accuracy:.4f}"
                   f"  secure - plain {100 * (secure_accuracy - plain_accuracy):+.2f} points")


if __name__ == "__main__":
    main()
