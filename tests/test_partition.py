import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_dice.errors import ConfigError
from robustbench_dice.partition import partition_indices, split_validation

LABELS = np.repeat(np.arange(10), 50)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["iid", "dirichlet", "shards"]),
    n_nodes=st.integers(2, 20),
    seed=st.integers(0, 10_000),
)
def test_partitions_are_disjoint_and_cover(scheme, n_nodes, seed):
    parts = partition_indices(LABELS, n_nodes, scheme, np.random.default_rng(seed), dirichlet_alpha=1.0, min_samples=2)
    assert len(parts) == n_nodes
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(LABELS.size))
    assert min(p.size for p in parts) >= 2


def test_more_shards_than_samples_is_an_error():
    with pytest.raises(ConfigError, match="1000 shards, more than the 500 samples .* at most 50 per node"):
        partition_indices(LABELS, 10, "shards", np.random.default_rng(0), shards_per_node=100)
    assert len(partition_indices(LABELS, 10, "shards", np.random.default_rng(0), shards_per_node=50)) == 10


def test_partitions_are_seeded():
    a = partition_indices(LABELS, 5, "dirichlet", np.random.default_rng(1))
    b = partition_indices(LABELS, 5, "dirichlet", np.random.default_rng(1))
    c = partition_indices(LABELS, 5, "dirichlet", np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_shards_give_few_labels_per_node():
    parts = partition_indices(LABELS, 10, "shards", np.random.default_rng(0), shards_per_node=2)
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2


def test_small_alpha_dirichlet_is_skewed():
    parts = partition_indices(LABELS, 5, "dirichlet", np.random.default_rng(0), dirichlet_alpha=0.05)
    dominant = [np.bincount(LABELS[p], minlength=10).max() / p.size for p in parts]
    assert np.mean(dominant) > 0.5


def test_replicated_draws_distinct_samples_per_node():
    parts = partition_indices(LABELS, 30, "replicated", np.random.default_rng(0), samples_per_node=40, min_samples=8)
    assert all(p.size == 40 and np.unique(p).size == 40 for p in parts)
    with pytest.raises(ConfigError, match="samples_per_node"):
        partition_indices(LABELS, 3, "replicated", np.random.default_rng(0), min_samples=8)


def test_validation_split_is_disjoint():
    idx = np.arange(100, 150)
    train, val = split_validation(idx, 0.2, np.random.default_rng(0))
    assert val.size == 10 and np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), idx)


def test_too_few_samples_and_bad_parameters():
    with pytest.raises(ConfigError, match="too few for 100 nodes"):
        partition_indices(LABELS, 100, "iid", np.random.default_rng(0), min_samples=10)
    with pytest.raises(ConfigError, match="dirichlet_alpha must be > 0"):
        partition_indices(LABELS, 4, "dirichlet", np.random.default_rng(0), dirichlet_alpha=0.0)
    with pytest.raises(ConfigError, match="valid: dirichlet, iid, replicated, shards"):
        partition_indices(LABELS, 4, "noniid", np.random.default_rng(0))
