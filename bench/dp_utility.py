"""Utility of differential privacy: local against central noise at the same epsilon.

The lab of bench/lab.py (10 IID shards of digits, every worker trains from the same global model
each step, a buffer of 10 deltas, x <- x + aggregate). Every worker takes part in every step, so
after R steps each worker has made R releases in either mode and should have spent the same
epsilon: each mode's own PrivacyLedger (dp-accounting's RDP accountant, no amplification by
sampling) reports it.

- no DP: the plain mean;
- clipped: each delta clipped to C, no noise (what clipping alone costs);
- local DP: each worker clips its delta to C and adds N(0, (zC)^2) (worker/shaping.py's
  privatize), then the mean;
- central DP: the coordinator's CentralNoise: clip each share to C, sum, add N(0, (zC)^2) once,
  divide by 10.

    python -m bench.dp_utility --rounds 20 --noise-multipliers 0.5 1 2 4 \
        --out docs/results/dp_utility.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.lab import Lab, Setup
from common import privacy
from common.arrays import clip_by_global_norm
from coordinator.strategies.central_dp import CentralNoise
from coordinator.strategies.robust import mean

MODES = ("no DP", "clipped", "local DP", "central DP")


def run(setup: Setup, clip: float, multipliers: Sequence[float], delta: float = 1e-5,
        modes: Sequence[str] = MODES) -> list[dict[str, float | str]]:
    """One row per (mode, noise multiplier): final accuracy and each worker's epsilon."""
    lab = Lab(setup)
    rows: list[dict[str, float | str]] = []
    names = [f"w{i}" for i in range(setup.workers)]
    for mode in modes:
        for z in multipliers if mode in ("local DP", "central DP") else [0.0]:
            rng = np.random.default_rng(setup.seed)
            ledger = privacy.PrivacyLedger(z, delta)  # what each worker spent, as it happens
            central = CentralNoise(clip, z, ledger, rng)
            weights, started = [w.copy() for w in lab.initial], time.monotonic()
            for _ in range(setup.rounds):
                deltas = lab.deltas(weights)
                if mode == "clipped":
                    deltas = [clip_by_global_norm(d, clip) for d in deltas]
                elif mode == "local DP":
                    deltas = [privacy.privatize(d, clip, z, rng) for d in deltas]
                    for name in names:
                        ledger.record(name)
                if mode == "central DP":
                    aggregate = central.aggregate(deltas, [1.0] * len(deltas), names)
                else:
                    aggregate = mean(deltas)
                weights = lab.step(weights, aggregate)
            rows.append({"mode": mode, "noise_multiplier": z,
                         "epsilon": ledger.worst()[1] if z > 0 else "",
                         "accuracy": lab.accuracy(weights),
                         "seconds": round(time.monotonic() - started, 1)})
            print(f"{mode:<11} z={z:<5g} epsilon={rows[-1]['epsilon'] or '-':<10.6} "
                  f"accuracy {rows[-1]['accuracy']:.4f}  ({rows[-1]['seconds']} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=Setup.rounds)
    parser.add_argument("--clip", type=float, default=1.0, help="Clip norm C.")
    parser.add_argument("--noise-multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    setup = Setup(rounds=args.rounds, seed=args.seed)
    rows = run(setup, args.clip, args.noise_multipliers, args.delta)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"setup": setup.__dict__, "clip": args.clip,
                                        "delta": args.delta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
