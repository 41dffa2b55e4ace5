"""common.models.import_keras: TensorFlow and Keras without the packages Keras loads only for its
scikit-learn wrappers and plots, in fresh interpreters (the test process has Keras already)."""

from __future__ import annotations

from bench.keras_import import LEAN, PLAIN, probe


def test_keras_imported_lean_trains_and_leaves_scikit_learn_importable() -> None:
    # Given one interpreter that imports Keras plainly and one through import_keras
    plain, lean = probe(PLAIN), probe(LEAN)
    # Then the plain one loaded scikit-learn and matplotlib with Keras, the lean one neither
    assert plain["loaded"] == ["matplotlib", "sklearn"] and lean["loaded"] == [], (plain, lean)
    # and the lean one builds and evaluates a model, and still loads scikit-learn's data sets
    assert lean["metrics"] == plain["metrics"] == ["accuracy", "loss"]
    assert lean["digits"] == [1797, 64]
    # with at least 40 MB less resident memory at its peak (86 MB measured: docs/benchmarks.md)
    assert plain["peak"] - lean["peak"] > 40e6, (plain["peak"], lean["peak"])
