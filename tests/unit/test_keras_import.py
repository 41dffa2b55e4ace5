"""common.models.import_keras: TensorFlow and Keras without the packages Keras loads only for its
scikit-learn wrappers and plots, in fresh interpreters (the test process has Keras already)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, resource, sys
{imports}
import numpy as np, keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
loaded = sorted(n for n in ("sklearn", "matplotlib") if sys.modules.get(n) is not None)
scores = model.evaluate(np.ones((8, 4)), np.zeros(8), verbose=0, return_dict=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
import sklearn.datasets
digits = sklearn.datasets.load_digits().data.shape
print(json.dumps({{"loaded": loaded, "peak": peak, "metrics": sorted(scores),
                  "digits": list(digits)}}))
"""


def probe(imports: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], check=True,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_keras_imported_lean_trains_and_leaves_scikit_learn_importable() -> None:
    # Given one interpreter that imports Keras plainly and one through import_keras
    plain = probe("import tensorflow, keras")
    lean = probe("from common.models import import_keras\nimport_keras()")
    # Then the plain one loaded scikit-learn and matplotlib with Keras, the lean one neither
    assert plain["loaded"] == ["matplotlib", "sklearn"] and lean["loaded"] == [], (plain, lean)
    # and the lean one builds and evaluates a model, and still loads scikit-learn's data sets
    assert lean["metrics"] == plain["metrics"] == ["accuracy", "loss"]
    assert lean["digits"] == [1797, 64]
    # with at least 40 MB less resident memory at its peak (about 80 MB measured)
    assert plain["peak"] - lean["peak"] > 40e6, (plain["peak"], lean["peak"])
