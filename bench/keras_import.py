"""What importing Keras costs a process, plainly and through `common.models.import_keras` (without
scikit-learn and matplotlib), side by side in fresh interpreters: peak RSS (VmHWM) after building
and evaluating a small model, and the import's wall time.

    python -m bench.keras_import --runs 5 --out docs/results/keras_import.json
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from bench import command

PLAIN = "import tensorflow, keras"
LEAN = "from common.models import import_keras\nimport_keras()"
PROBE = """
import json, sys, time
began = time.perf_counter()
{imports}
imported = time.perf_counter() - began
import numpy as np, keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
loaded = sorted(n for n in ("sklearn", "matplotlib") if sys.modules.get(n) is not None)
scores = model.evaluate(np.ones((8, 4)), np.zeros(8), verbose=0, return_dict=True)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))  # not ru_maxrss: it keeps the forking parent's
import sklearn.datasets
digits = sklearn.datasets.load_digits().data.shape
print(json.dumps({{"loaded": loaded, "peak": peak, "import_seconds": imported,
                  "metrics": sorted(scores), "digits": list(digits)}}))
"""


def probe(imports: str) -> dict[str, Any]:
    """One fresh interpreter: import Keras with `imports`, build and evaluate a model, load
    scikit-learn's digits; what it loaded, its peak RSS (bytes) and its import time."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], check=True,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@click.command("keras-import", context_settings=command.CONTEXT)
@command.out_option
@click.option("--runs", default=5, show_default=True, help="Pairs of interpreters, alternated.")
def main(out: Path, runs: int) -> None:
    pairs = [(probe(PLAIN), probe(LEAN)) for _ in range(runs)]
    results = {
        "runs": runs,
        "plain": [p for p, _ in pairs], "lean": [lean for _, lean in pairs],
        "peak_saved_mb": statistics.median((p["peak"] - lean["peak"]) / 1e6 for p, lean in pairs),
        "import_seconds_ratio": statistics.median(lean["import_seconds"] / p["import_seconds"]
                                                  for p, lean in pairs)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    click.echo(f"peak RSS saved (median): {results['peak_saved_mb']:.1f} MB; import time lean / "
               f"plain (median): {results['import_seconds_ratio']:.3f}")
    command.echo_results(out, plot=None)


if __name__ == "__main__":
    main()
