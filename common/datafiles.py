"""Local data files: the real federated case, where each site trains on data only it holds.

Two formats: `.npz` with arrays `x` (features) and `y` (integer labels), loaded without pickle;
and `.csv` with a header row, one label column (integer labels) and numeric feature columns.
Features become float32 and labels int64, as for the built-in datasets.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.errors import ConfigError

SHARD_PLACEHOLDER = "{shard}"


def resolve_path(template: str, shard: int | None) -> Path:
    """The data path of one shard: `{shard}` in the template becomes the shard index."""
    if SHARD_PLACEHOLDER in template:
        if shard is None:
            raise ConfigError(f"data path {template!r} names a shard but the worker has none")
        return Path(template.replace(SHARD_PLACEHOLDER, str(shard)))
    return Path(template)


def load(path: Path, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a `.npz` or `.csv` file; a problem is a ConfigError saying why."""
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y = _load_npz(path)
    elif suffix == ".csv":
        x, y = _load_csv(path, label_column)
    else:
        raise ConfigError(f"data file {path}: use .npz (arrays x and y) or .csv")
    return _checked(path, x, y)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # allow_pickle=False: a data file must never be able to run code on the machine loading it
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise ConfigError(f"data file {path} lacks arrays {sorted(missing)} "
                                  f"(it has {sorted(archive.files)})")
            return archive["x"], archive["y"]
    except (ValueError, OSError) as exc:
        raise ConfigError(f"data file {path} is not a readable .npz: {exc}") from None


def _load_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or label_column not in header:
            raise ConfigError(f"data file {path} has no {label_column!r} column "
                              f"(columns: {header})")
        label_at = header.index(label_column)
        features, labels = [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                labels.append(float(row[label_at]))
                features.append([float(v) for i, v in enumerate(row) if i != label_at])
            except (ValueError, IndexError):
                raise ConfigError(f"data file {path}, line {line}: values must be numbers "
                                  f"and every row needs {len(header)} columns") from None
    return np.array(features, dtype=np.float64), np.array(labels, dtype=np.float64)


def _checked(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"data file {path}: x must be (examples, features...) and y "
                          f"(examples,), got {x.shape} and {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ConfigError(f"data file {path}: features must be finite numbers")
    if not np.issubdtype(y.dtype, np.number) or np.any(y < 0) or np.any(y != np.round(y)):
        raise ConfigError(f"data file {path}: labels must be class numbers 0, 1, 2, ...")
    return x.astype(np.float32), y.astype(np.int64)
