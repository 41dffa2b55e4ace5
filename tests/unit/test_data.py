"""common/data.py: built-in datasets; a site's own data files (.npz with x and y, CSV with a label
column; bad files are refused clearly); the stratified train/test split and the partition of the
training split into the shards workers keep to themselves."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from common import data
from common.errors import ConfigError

NUM_CLASSES = 10
LABELS = np.repeat(np.arange(NUM_CLASSES), 60)  # 600 examples, 60 of each class
METHODS = ["iid", "dirichlet"]


def partition(method: str, shards: int = 4, seed: int = 0, alpha: float = 0.5,
              labels: np.ndarray = LABELS) -> list[np.ndarray]:
    return data.partition(labels, shards, method, alpha, seed)


def label_distributions(shards: list[np.ndarray], labels: np.ndarray = LABELS) -> np.ndarray:
    return np.array([np.bincount(labels[s], minlength=NUM_CLASSES) / len(s) for s in shards])


def mean_pairwise_tv(shards: list[np.ndarray]) -> float:
    """Mean total-variation distance between the label distributions of every pair of shards."""
    dist = label_distributions(shards)
    pairs = itertools.combinations(range(len(shards)), 2)
    return float(np.mean([0.5 * np.abs(dist[i] - dist[j]).sum() for i, j in pairs]))


def same_partition(left: list[np.ndarray], right: list[np.ndarray]) -> bool:
    return len(left) == len(right) and all(np.array_equal(a, b)
                                           for a, b in zip(left, right, strict=True))


# ---------------------------------------------------------------- partitions

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_every_example_is_in_exactly_one_shard(method: str, shards: int) -> None:
    # Given labelled examples, when they are partitioned into shards
    parts = partition(method, shards)
    # Then there are that many shards and each index appears exactly once overall
    assert len(parts) == shards
    counts = np.bincount(np.concatenate(parts), minlength=len(LABELS))
    assert len(counts) == len(LABELS) and (counts == 1).all()


@pytest.mark.parametrize("method", METHODS)
def test_shards_hold_sorted_integer_indices(method: str) -> None:
    for part in partition(method):
        assert part.dtype.kind == "i" and np.array_equal(part, np.sort(part))


def test_iid_shards_are_of_nearly_equal_size() -> None:
    sizes = [len(p) for p in partition("iid", shards=7)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("method", METHODS)
def test_the_partition_is_reproducible_from_the_seed(method: str) -> None:
    # Given the same labels and seed, when partitioned twice, then the shards are identical
    assert same_partition(partition(method, seed=11), partition(method, seed=11))


@pytest.mark.parametrize("method", METHODS)
def test_different_seeds_give_different_partitions(method: str) -> None:
    assert not same_partition(partition(method, seed=11), partition(method, seed=12))


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_shards_differ_in_label_mix_far_more_than_iid_shards(seed: int) -> None:
    # Given the same labels split into 5 shards by Dirichlet(0.5) and by IID shuffling
    dirichlet = mean_pairwise_tv(partition("dirichlet", shards=5, seed=seed))
    iid = mean_pairwise_tv(partition("iid", shards=5, seed=seed))
    # Then Dirichlet shards have clearly different label mixes; IID ones differ only by sampling
    # noise (about 0.15 for 120 examples per shard)
    assert dirichlet > 0.4
    assert iid < 0.25
    assert dirichlet > 2 * iid


def test_a_smaller_dirichlet_alpha_gives_more_skewed_shards() -> None:
    skew = [np.mean([mean_pairwise_tv(partition("dirichlet", 5, seed, alpha))
                     for seed in range(3)]) for alpha in (100.0, 1.0, 0.1)]
    assert skew[0] < skew[1] < skew[2]


@pytest.mark.parametrize(("shards", "alpha", "min_size"), [(10, 0.1, 20), (5, 0.05, 60),
                                                           (3, 0.5, 150)])
def test_dirichlet_shards_respect_the_minimum_size(shards: int, alpha: float,
                                                   min_size: int) -> None:
    # Given a skewed Dirichlet that often draws tiny shards
    parts = data.partition_dirichlet(LABELS, shards, alpha, seed=3, min_size=min_size)
    # Then every shard still holds at least min_size examples, and all examples are used
    assert min(len(p) for p in parts) >= min_size
    assert sum(len(p) for p in parts) == len(LABELS)


def test_the_default_minimum_shard_size_applies_through_partition() -> None:
    parts = partition("dirichlet", shards=10, alpha=0.05)
    assert min(len(p) for p in parts) >= data.MIN_SHARD_SIZE


def test_partitions_of_the_digits_training_split_cover_it_once() -> None:
    # Given the real digits training split, when it is divided into 3 Dirichlet(0.5) shards
    split = data.builtin_split("digits", 0.2, seed=0)
    shards = [data.builtin_shard("digits", 0.2, 0, "dirichlet", 0.5, 3, i) for i in range(3)]
    # Then the shards together are exactly the training split
    assert sum(len(y) for _, y in shards) == len(split.y_train)
    rows = np.concatenate([x for x, _ in shards])
    assert np.array_equal(np.unique(rows, axis=0), np.unique(split.x_train, axis=0))


# ---------------------------------------------------------------- impossible partitions

IMPOSSIBLE = {
    "dirichlet, more shards than min-size examples": (
        lambda: data.partition_dirichlet(LABELS, 61, 0.5, seed=0), "cannot fill"),
    "dirichlet, min size never reachable": (
        lambda: data.partition_dirichlet(LABELS, 3, 0.001, seed=0, min_size=190),
        "no Dirichlet"),
    "unknown method": (lambda: data.partition(LABELS, 2, "alphabetical", 0.5, 0),
                       "unknown partition 'alphabetical'"),
    "iid, more shards than examples": (lambda: data.partition(LABELS[:5], 10, "iid", 0.5, 0),
                                       None),
    "iid, no shards": (lambda: data.partition(LABELS, 0, "iid", 0.5, 0), None),
    "dirichlet, no shards": (lambda: data.partition(LABELS, 0, "dirichlet", 0.5, 0), None),
    "dirichlet, negative alpha": (lambda: data.partition(LABELS, 3, "dirichlet", -1.0, 0),
                                  None),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_impossible_partitions_raise_config_error(case: str) -> None:
    # Given a partition that cannot be made, when it is asked for
    make, reason = IMPOSSIBLE[case]
    # Then ConfigError says why (never a silent empty shard, never a library error)
    with pytest.raises(ConfigError, match=reason):
        make()


# ---------------------------------------------------------------- train/test split

def index_split(seed: int = 0, fraction: float = 0.2) -> tuple[data.Split, np.ndarray]:
    """Split digits with each example's index as its only feature, to see where each went."""
    _, y = data.load_builtin("digits")
    return data.train_test_split(np.arange(len(y)).reshape(-1, 1), y, fraction, seed), y


def test_the_split_is_disjoint_and_complete_with_rows_kept_whole() -> None:
    # Given digits split with each example's index as its feature
    split, y = index_split()
    train, test = split.x_train.ravel(), split.x_test.ravel()
    # Then train and test are disjoint and together hold every example exactly once
    assert not set(train) & set(test)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    # And every feature row still carries its own label
    assert np.array_equal(y[train], split.y_train) and np.array_equal(y[test], split.y_test)


def test_the_split_is_stratified_by_class() -> None:
    # Given a 25% split, then each class gives round(25%) of its examples to the test set
    split, y = index_split(fraction=0.25)
    for label in range(NUM_CLASSES):
        assert np.sum(split.y_test == label) == round(0.25 * np.sum(y == label))
    assert split.num_classes == NUM_CLASSES


def test_the_split_is_reproducible_from_the_seed() -> None:
    first, _ = index_split(seed=5)
    again, _ = index_split(seed=5)
    other, _ = index_split(seed=6)
    assert np.array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)


# ---------------------------------------------------------------- built-in datasets

@pytest.mark.parametrize(("name", "shape", "classes"), [("digits", (1797, 64), 10),
                                                        ("breast_cancer", (569, 30), 2)])
def test_builtin_datasets_load_scaled_to_the_unit_interval(name: str, shape: tuple[int, int],
                                                           classes: int) -> None:
    # Given a dataset that ships with scikit-learn, when it is loaded
    x, y = data.load_builtin(name)
    # Then features are float32 in [0, 1] and labels are the integers 0..classes-1
    assert x.shape == shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and np.isfinite(x).all()
    assert y.shape == (shape[0],) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(classes))


def test_an_unknown_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        data.load_builtin("mnist")


# ---------------------------------------------------------------- a site's own data files

def test_npz_files_load_as_float32_features_and_int64_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "site.npz", x=np.arange(12).reshape(4, 3), y=np.array([0, 1, 2, 1]))
    x, y = data.load_file(tmp_path / "site.npz")
    assert x.dtype == np.float32 and x.shape == (4, 3) and y.dtype == np.int64
    assert y.tolist() == [0, 1, 2, 1]


def test_csv_files_take_the_label_from_its_named_column(tmp_path: Path) -> None:
    (tmp_path / "site.csv").write_text("a,diagnosis,b\n0.5,1,2\n1.5,0,3\n")
    x, y = data.load_file(tmp_path / "site.csv", label_column="diagnosis")
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
        data.load_file(tmp_path / name)


def test_npz_without_y_or_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_y.npz", x=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"lacks arrays \['y'\]"):
        data.load_file(tmp_path / "no_y.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(ConfigError, match="not a readable .npz"):
        data.load_file(tmp_path / "objects.npz")


def test_the_shard_placeholder_names_one_file_per_shard() -> None:
    assert data.file_for_shard("/data/site-{shard}.npz", 3) == Path("/data/site-3.npz")
    assert data.file_for_shard("/data/mine.npz", None) == Path("/data/mine.npz")
    with pytest.raises(ConfigError, match="names a shard"):
        data.file_for_shard("/data/site-{shard}.npz", None)
