"""Bring your own: a model given as `package.module:function` and per-worker local `.npz` files,
with the coordinator evaluating on a held-out file of its own; results include TensorBoard
scalars and the accuracy-over-time picture."""

from __future__ import annotations

import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import data
from tests.integration.support import Processes, read_summary

pytestmark = pytest.mark.integration
MODEL_MODULE = """
    import keras

    def build():
        return keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(24, activation="relu", name="site_hidden"),
            keras.layers.Dense(10, activation="softmax", name="site_output"),
        ])
"""


def write_sites(directory: Path, sites: int) -> None:
    """Digits, split once: a held-out file for the coordinator and one training file per site."""
    x, y = data.load_builtin("digits")
    split = data.train_test_split(x, y, test_fraction=0.2, seed=7)
    np.savez(directory / "eval.npz", x=split.x_test, y=split.y_test)
    for site, index in enumerate(data.partition_iid(len(split.y_train), sites, seed=7)):
        np.savez(directory / f"site-{site}.npz", x=split.x_train[index], y=split.y_train[index])


def keras_layers(model_file: Path) -> dict[str, int]:
    """Units of each Dense layer in a saved .keras file (a zip holding config.json)."""
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))
    return {layer["config"]["name"]: layer["config"]["units"]
            for layer in config["config"]["layers"] if layer["class_name"] == "Dense"}


def test_a_model_by_import_path_trains_on_per_worker_npz_files(
        procs: Processes, tmp_path: Path) -> None:
    # Given a model module of the user's own and one private .npz file per site
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "site_model.py").write_text(textwrap.dedent(MODEL_MODULE))
    write_sites(tmp_path, sites=2)
    procs.base_env["PYTHONPATH"] = str(plugins)
    out = tmp_path / "out"

    # When each worker trains on its own file and the coordinator evaluates on its own file
    for site in range(2):
        procs.start("worker", model="site_model:build", data_path=tmp_path / f"site-{site}.npz",
                    worker_id=f"site-{site}")
    coordinator = procs.start("coordinator", model="site_model:build", max_updates=20,
                              concurrency=2, eval_data_path=tmp_path / "eval.npz", out=out,
                              wait_for_workers=2)

    # Then the job completes with both sites contributing and a model that learned
    assert procs.wait(coordinator, 180) == 0, procs.logs()
    summary = read_summary(out)
    assert summary["updates_applied"] == 20 and summary["updates_rejected"] == 0
    assert summary["worker_ids"] == ["site-0", "site-1"]
    assert summary["model"] == "site_model:build"
    assert summary["final_accuracy"] >= 0.8, summary
    assert keras_layers(out / "final_model.keras") == {"site_hidden": 24, "site_output": 10}

    # And the results hold TensorBoard scalars and the accuracy-over-time picture
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"eval_accuracy", "eval_loss", "staleness", "worker_train_seconds"} <= tags
    assert len(events.Tensors("staleness")) == 20
    assert (out / "accuracy_vs_time.png").stat().st_size > 0
