"""Local data files: .npz with x and y, CSV with a label column; bad files are refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common import datafiles
from common.errors import ConfigError


def test_npz_files_load_as_float32_features_and_int64_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "site.npz", x=np.arange(12).reshape(4, 3), y=np.array([0, 1, 2, 1]))
    x, y = datafiles.load(tmp_path / "site.npz")
    assert x.dtype == np.float32 and x.shape == (4, 3) and y.dtype == np.int64
    assert y.tolist() == [0, 1, 2, 1]


def test_csv_files_take_the_label_from_its_named_column(tmp_path: Path) -> None:
    (tmp_path / "site.csv").write_text("a,diagnosis,b\n0.5,1,2\n1.5,0,3\n")
    x, y = datafiles.load(tmp_path / "site.csv", label_column="diagnosis")
    assert x.tolist() == [[0.5, 2.0], [1.5, 3.0]] and y.tolist() == [1, 0]


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("a.csv", "a,b\n1,2\n", "no 'label' column"),
    ("b.csv", "a,label\nx,1\n", "line 2"),
    ("c.csv", "a,label\n1,0.5\n", "class numbers"),
    ("d.txt", "1,2\n", "use .npz"),
    ("missing.npz", None, "does not exist"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, name: str, content: str | None,
                                                problem: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=problem):
        datafiles.load(tmp_path / name)


def test_npz_without_y_or_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_y.npz", x=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"lacks arrays \['y'\]"):
        datafiles.load(tmp_path / "no_y.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(ConfigError, match="not a readable .npz"):
        datafiles.load(tmp_path / "objects.npz")


def test_the_shard_placeholder_names_one_file_per_shard() -> None:
    assert datafiles.resolve_path("/data/site-{shard}.npz", 3) == Path("/data/site-3.npz")
    assert datafiles.resolve_path("/data/mine.npz", None) == Path("/data/mine.npz")
    with pytest.raises(ConfigError, match="names a shard"):
        datafiles.resolve_path("/data/site-{shard}.npz", None)
