"""The data a model trains and is evaluated on: built-in datasets, a site's own data files, the
train/test split, and how a training split is cut into the shards that workers keep to themselves.

Built-in datasets ship inside scikit-learn (nothing is downloaded). The train/test split and the
partition are pure functions of the seed, so every process derives the same shards independently.

A site's own data (the real federated case, where each site trains on data only it holds) comes
in two formats: `.npz` with arrays `x` (features) and `y` (integer labels), loaded without pickle;
and `.csv` with a header row, one label column (integer labels) and numeric feature columns.
Features become float32 and labels int64, as for the built-in datasets.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError

MIN_SHARD_SIZE = 10
SHARD_PLACEHOLDER = "{shard}"


# ---------------------------------------------------------------- built-in datasets

def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and integer labels of a dataset that ships with scikit-learn."""
    from sklearn import datasets

    if name == "digits":
        x, y = datasets.load_digits(return_X_y=True)
        return (x / 16.0).astype(np.float32), y.astype(np.int64)
    if name == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        # A fixed, public per-feature transform (log scale, then the dataset's published ranges)
        # keeps every shard on the same scale without pooling statistics from the shards.
        x = np.log1p(x)
        x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
        return x.astype(np.float32), y.astype(np.int64)
    raise ConfigError(f"unknown dataset {name!r}; built-in datasets: digits, breast_cancer")


# ---------------------------------------------------------------- a site's own data files

def file_for_shard(template: str, shard: int | None) -> Path:
    """The data path of one shard: `{shard}` in the template becomes the shard index."""
    if SHARD_PLACEHOLDER in template:
        if shard is None:
            raise ConfigError(f"data path {template!r} names a shard but the worker has none")
        return Path(template.replace(SHARD_PLACEHOLDER, str(shard)))
    return Path(template)


def load_file(path: Path, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
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


# ---------------------------------------------------------------- split and shards

@dataclass(frozen=True)
class Split:
    """A dataset cut into the training examples (for the shards) and the held-out test set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Split:
    """Stratified split: the test share of every class goes to the coordinator's held-out set."""
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(members[: int(round(len(members) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    return Split(x[train], y[train], x[test], y[test], int(y.max()) + 1)


def partition_iid(num_examples: int, num_shards: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into shards of (nearly) equal size."""
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_shards)]


def partition_dirichlet(labels: np.ndarray, num_shards: int, alpha: float, seed: int,
                        min_size: int = MIN_SHARD_SIZE) -> list[np.ndarray]:
    """Label-skewed shards: each class is split among shards by proportions ~ Dir(alpha).

    Redraws (up to 1000 times) until every shard holds at least `min_size` examples, the usual
    practice since Hsu et al. 2019; raises ConfigError if that cannot be met.
    """
    if num_shards * min_size > len(labels):
        raise ConfigError(f"{len(labels)} examples cannot fill {num_shards} shards of "
                          f"{min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_shards)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_shards, alpha))) * len(members))
            for shard, part in zip(shards, np.split(members, cuts.astype(int)[:-1]),
                                   strict=True):
                shard.append(part)
        result = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(r) for r in result) >= min_size:
            return result
    raise ConfigError(f"no Dirichlet({alpha}) partition into {num_shards} shards of at least "
                      f"{min_size} examples")


def partition(labels: np.ndarray, num_shards: int, method: str, alpha: float,
              seed: int) -> list[np.ndarray]:
    """Indices of every shard; every example is in exactly one shard."""
    if not 1 <= num_shards <= len(labels):
        raise ConfigError(f"cannot split {len(labels)} examples into {num_shards} shards")
    if method == "dirichlet" and not alpha > 0:
        raise ConfigError(f"Dirichlet alpha must be positive, got {alpha}")
    if method == "iid":
        return partition_iid(len(labels), num_shards, seed)
    if method == "dirichlet":
        return partition_dirichlet(labels, num_shards, alpha, seed)
    raise ConfigError(f"unknown partition {method!r}; use iid or dirichlet")


def builtin_split(dataset: str, test_fraction: float, seed: int) -> Split:
    x, y = load_builtin(dataset)
    return train_test_split(x, y, test_fraction, seed)


def builtin_shard(dataset: str, test_fraction: float, seed: int, method: str, alpha: float,
                  num_shards: int, shard_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) a worker trains on: one shard of the training split of a built-in dataset."""
    split = builtin_split(dataset, test_fraction, seed)
    index = partition(split.y_train, num_shards, method, alpha, seed)[shard_index]
    return split.x_train[index], split.y_train[index]


def validation_split(num_examples: int, fraction: float, seed: int,
                     shard: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of one shard's examples: the validation share is drawn by a
    generator seeded with (seed, shard), so a restarted worker keeps the same split."""
    order = np.random.default_rng([seed, shard]).permutation(num_examples)
    cut = int(round(num_examples * fraction))
    return np.sort(order[cut:]), np.sort(order[:cut])
