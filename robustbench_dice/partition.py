"""Split a training pool across nodes, and each node's share into train and local validation.

Schemes (all seeded by the ``numpy.random.Generator`` passed in):

- ``iid``: a random permutation cut into N near-equal parts.
- ``dirichlet``: per class, proportions drawn from Dirichlet(alpha) over the
  nodes (Hsu et al. 2019); redrawn until every node has enough samples.
- ``shards``: the pool sorted by label, cut into N * shards_per_node shards,
  each node given shards_per_node random shards (McMahan et al. 2017).
- ``replicated``: every node draws ``samples_per_node`` distinct examples from
  the whole pool independently, so nodes overlap (used to scale N past the
  size of a small dataset, e.g. in the engine benchmark).

The first three are disjoint and cover the pool exactly.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, check_choice

PARTITIONS = ("iid", "dirichlet", "shards", "replicated")


def check_pool_size(
    n: int, n_nodes: int, scheme: str, min_samples: int = 1, samples_per_node: int | None = None
) -> None:
    """ConfigError where a pool of ``n`` samples cannot give ``n_nodes`` nodes ``min_samples`` each under ``scheme``,
    whatever the seed (a seeded Dirichlet or shard split may still fall short: :func:`partition_indices` says so)."""
    check_choice("partition", scheme, PARTITIONS)
    if scheme == "replicated":
        if samples_per_node is None or samples_per_node < min_samples:
            raise ConfigError(f"partition 'replicated' needs samples_per_node >= {min_samples}, got {samples_per_node}")
        if samples_per_node > n:
            raise ConfigError(f"samples_per_node={samples_per_node} exceeds the training pool ({n} samples)")
    elif n < n_nodes * min_samples:
        raise ConfigError(
            f"the training pool has {n} samples, too few for {n_nodes} nodes x {min_samples} samples each"
            " (fewer nodes, a smaller batch_size, or partition='replicated')"
        )


def partition_indices(
    labels: np.ndarray,
    n_nodes: int,
    scheme: str,
    rng: np.random.Generator,
    *,
    min_samples: int = 1,
    dirichlet_alpha: float = 0.5,
    shards_per_node: int = 2,
    samples_per_node: int | None = None,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """One sorted index array per node into ``labels``; each has at least ``min_samples`` entries."""
    n = labels.shape[0]
    check_pool_size(n, n_nodes, scheme, min_samples, samples_per_node)
    if scheme == "replicated":
        assert samples_per_node is not None  # checked above
        return [np.sort(rng.choice(n, samples_per_node, replace=False)) for _ in range(n_nodes)]
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), n_nodes)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, n_nodes, rng, dirichlet_alpha, min_samples, max_tries)
    else:
        parts = _shards(labels, n_nodes, rng, shards_per_node)
    parts = [np.sort(p) for p in parts]
    smallest = min(p.size for p in parts)
    if smallest < min_samples:
        raise ConfigError(f"partition {scheme!r} gave a node {smallest} samples, fewer than the {min_samples} needed")
    return parts


def _dirichlet(
    labels: np.ndarray, n_nodes: int, rng: np.random.Generator, alpha: float, min_samples: int, max_tries: int
) -> list[np.ndarray]:
    if not alpha > 0:
        raise ConfigError(f"dirichlet_alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_nodes)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            proportions = rng.dirichlet(np.full(n_nodes, alpha))
            cuts = (np.cumsum(proportions)[:-1] * members.size).astype(int)
            for node, chunk in enumerate(np.split(members, cuts)):
                parts[node].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_samples:
            return [np.asarray(p, dtype=np.int64) for p in parts]
    raise ConfigError(
        f"dirichlet(alpha={alpha}) never gave every one of {n_nodes} nodes >= {min_samples} samples"
        f" in {max_tries} draws; raise dirichlet_alpha or lower nodes / batch_size"
    )


def _shards(labels: np.ndarray, n_nodes: int, rng: np.random.Generator, shards_per_node: int) -> list[np.ndarray]:
    if shards_per_node < 1:
        raise ConfigError(f"shards_per_node must be >= 1, got {shards_per_node}")
    if n_nodes * shards_per_node > labels.shape[0]:  # array_split would hand out empty shards without a word
        raise ConfigError(
            f"shards_per_node={shards_per_node} x {n_nodes} nodes = {n_nodes * shards_per_node} shards, more than"
            f" the {labels.shape[0]} samples of the training pool: at most {labels.shape[0] // n_nodes} per node"
        )
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_nodes * shards_per_node)
    assignment = rng.permutation(len(shards)).reshape(n_nodes, shards_per_node)
    return [np.concatenate([shards[s] for s in row]) for row in assignment]


def split_validation(indices: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) of one node's indices; validation gets round(fraction * n), at least 1 if fraction > 0."""
    if fraction <= 0:
        return indices, indices[:0]
    n_val = max(1, int(round(fraction * indices.size)))
    if n_val >= indices.size:
        raise ConfigError(f"val_fraction={fraction} leaves no training data on a node with {indices.size} samples")
    shuffled = rng.permutation(indices)
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])
