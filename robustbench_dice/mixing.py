"""Mixing matrices built from a graph, checked, and ready for gossip.

``W[j, k]`` is the weight receiver ``j`` puts on sender ``k``'s message; rows
sum to one (row-stochastic). Gossip is ``theta_new = W @ messages`` with the
node models stacked as rows.

Rules (``d_in(j)``: number of in-neighbours of ``j``; ``d_out(k)`` likewise):

- ``metropolis_hastings`` (default): ``W_jk = 1 / (1 + max(d_in(j), d_out(k)))``,
  self weight takes the rest. Doubly stochastic on undirected and on regular
  directed graphs.
- ``max_degree``: ``W_jk = 1 / (1 + max_i d_in(i))``. Doubly stochastic on
  undirected and regular graphs.
- ``uniform``: ``W_jk = 1 / (1 + d_in(j))`` for ``j`` itself and each
  in-neighbour. Doubly stochastic on regular graphs only.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .errors import ConfigError, check_choice
from .topology import Graph, TopologySchedule, is_strongly_connected

MIXING_RULES = {  # name -> rule, as in the module docstring
    "metropolis_hastings": "W_jk = 1 / (1 + max(d_in(j), d_out(k))), self weight the rest",
    "max_degree": "W_jk = 1 / (1 + max_i d_in(i)), self weight the rest",
    "uniform": "W_jk = 1 / (1 + d_in(j)) for j itself and each in-neighbour",
}
# Gossip uses a sparse (CSR) product when W has fewer than SPARSE_DENSITY non-zeros and at least
# SPARSE_MIN_NODES rows: measured on CPU, a dense product is faster below ~128 nodes even on a ring.
# A fixed rule, not a timing-based choice, so a scenario gives the same numbers on every machine.
SPARSE_DENSITY = 0.1
SPARSE_MIN_NODES = 128
_ATOL = 1e-9


def _is_regular(graph: Graph) -> bool:
    d_in, d_out = graph.in_degree, graph.out_degree
    return bool((d_in == d_in[0]).all() and (d_out == d_in).all())


def mixing_weights(graph: Graph, rule: str) -> np.ndarray:
    """Dense ``(N, N)`` float64 mixing matrix of ``graph`` under ``rule``."""
    check_choice("mixing rule", rule, MIXING_RULES)
    a = graph.adjacency
    d_in = graph.in_degree.astype(float)
    d_out = graph.out_degree.astype(float)
    if rule == "metropolis_hastings":
        w = np.where(a, 1.0 / (1.0 + np.maximum(d_in[:, None], d_out[None, :])), 0.0)
    elif rule == "max_degree":
        w = np.where(a, 1.0 / (1.0 + d_in.max()), 0.0)
    else:
        w = np.where(a, 1.0 / (1.0 + d_in[:, None]), 0.0)
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def promises_doubly_stochastic(graph: Graph, rule: str) -> bool:
    if rule == "uniform":
        return _is_regular(graph)
    return graph.is_symmetric or _is_regular(graph)


# SLEMs already computed in this process, by matrix content. Every run of a suite on one graph would otherwise redo the
# eigendecomposition, which grows as N^3 (2 s at 2048 nodes on 2 cores, against 0.3 s for one training round there).
_SLEM_CACHE: dict[bytes, float] = {}
_SLEM_CACHE_SIZE = 64


def second_largest_eigenvalue_modulus(w: np.ndarray) -> float:
    """SLEM of W: the rate at which W^t converges to its consensus limit (remembered per matrix in this process)."""
    w = np.ascontiguousarray(w)
    key = hashlib.blake2b(w.tobytes(), digest_size=16).digest() + f"{w.shape}{w.dtype}".encode()
    if key not in _SLEM_CACHE:
        if len(_SLEM_CACHE) >= _SLEM_CACHE_SIZE:
            del _SLEM_CACHE[next(iter(_SLEM_CACHE))]  # the oldest
        _SLEM_CACHE[key] = _slem(w)
    return _SLEM_CACHE[key]


def _slem(w: np.ndarray) -> float:
    if np.allclose(w, w.T):
        moduli = np.sort(np.abs(np.linalg.eigvalsh(w)))
    else:
        moduli = np.sort(np.abs(np.linalg.eigvals(w)))
    return float(moduli[-2]) if moduli.size > 1 else 0.0


@dataclass(frozen=True)
class Neighbourhood:
    """Padded in-neighbour lists, self excluded; what a defense aggregates over.

    Shapes: ``index`` and ``weight`` and ``mask`` are ``(N, D)`` with ``D`` the
    largest in-degree; padded slots have ``mask`` False, ``weight`` 0 and
    ``index`` pointing at the receiver itself. ``self_weight`` is ``(N,)``.
    """

    index: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    self_weight: torch.Tensor

    @property
    def max_degree(self) -> int:
        return int(self.index.shape[1])


@dataclass(eq=False)
class MixingMatrix:
    """A checked row-stochastic mixing matrix with its graph (see module docstring)."""

    graph: Graph
    rule: str
    weights: np.ndarray = field(init=False)  # (N, N) float64

    def __post_init__(self) -> None:
        self.weights = mixing_weights(self.graph, self.rule)
        self.weights.setflags(write=False)
        self.check()

    @property
    def n_nodes(self) -> int:
        return self.graph.n_nodes

    @property
    def density(self) -> float:
        return float(np.count_nonzero(self.weights)) / self.weights.size

    @property
    def use_sparse(self) -> bool:
        return self.density < SPARSE_DENSITY and self.n_nodes >= SPARSE_MIN_NODES

    @property
    def doubly_stochastic(self) -> bool:
        return bool(np.allclose(self.weights.sum(axis=0), 1.0, atol=1e-8))

    def check(self) -> None:
        """Raise if W is not a valid mixing matrix for its graph and rule."""
        w = self.weights
        if not np.isfinite(w).all() or (w < -_ATOL).any():
            raise ConfigError(f"mixing matrix ({self.rule}) has negative or non-finite entries")
        if not np.allclose(w.sum(axis=1), 1.0, atol=1e-8):
            raise ConfigError(f"mixing matrix ({self.rule}) is not row-stochastic")
        off_diagonal = w.copy()
        np.fill_diagonal(off_diagonal, 0.0)
        if not np.array_equal(off_diagonal > 0, self.graph.adjacency):
            raise ConfigError(f"mixing matrix ({self.rule}) does not match its graph's edges")
        if promises_doubly_stochastic(self.graph, self.rule) and not self.doubly_stochastic:
            raise ConfigError(f"mixing matrix ({self.rule}) should be doubly stochastic but is not")

    @cached_property
    def slem(self) -> float:
        return second_largest_eigenvalue_modulus(self.weights)

    @property
    def spectral_gap(self) -> float:
        return 1.0 - self.slem

    def to_torch(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, sparse: bool | None = None
    ) -> torch.Tensor:
        """W as a torch tensor; sparse CSR when ``sparse``, or when ``sparse=None`` and :attr:`use_sparse`."""
        if sparse is None:
            sparse = self.use_sparse
        dense = torch.tensor(self.weights, dtype=dtype)
        if not sparse:
            return dense.to(device)
        with warnings.catch_warnings():  # CSR is marked beta; sparse @ dense is all we use of it
            warnings.simplefilter("ignore", UserWarning)
            return dense.to_sparse_csr().to(device)

    def neighbourhood(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Neighbourhood:
        n = self.n_nodes
        d_in = self.graph.in_degree
        width = max(1, int(d_in.max()))
        index = np.repeat(np.arange(n)[:, None], width, axis=1)
        mask = np.zeros((n, width), dtype=bool)
        weight = np.zeros((n, width))
        for j in range(n):
            senders = np.flatnonzero(self.graph.adjacency[j])
            index[j, : senders.size] = senders
            mask[j, : senders.size] = True
            weight[j, : senders.size] = self.weights[j, senders]
        return Neighbourhood(
            index=torch.as_tensor(index, dtype=torch.long, device=device),
            weight=torch.as_tensor(weight, dtype=dtype, device=device),
            mask=torch.as_tensor(mask, device=device),
            self_weight=torch.as_tensor(np.diag(self.weights).copy(), dtype=dtype, device=device),
        )


@dataclass(eq=False)
class MixingSchedule:
    """One :class:`MixingMatrix` per round of the topology's period."""

    topology: TopologySchedule
    rule: str
    matrices: tuple[MixingMatrix, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.matrices = tuple(MixingMatrix(g, self.rule) for g in self.topology.graphs)
        if not is_strongly_connected(self.topology.union().adjacency):
            raise ConfigError(f"topology {self.topology.name!r} is not connected over its period")

    @property
    def period(self) -> int:
        return len(self.matrices)

    @property
    def n_nodes(self) -> int:
        return self.topology.n_nodes

    def at(self, round_index: int) -> MixingMatrix:
        return self.matrices[round_index % self.period]

    @cached_property
    def spectral_gap(self) -> float:
        """Per-round spectral gap: ``1 - SLEM(W_{p-1} ... W_0)^(1/p)`` over one period ``p``."""
        if self.period == 1:
            return self.matrices[0].spectral_gap
        product = np.eye(self.n_nodes)
        for m in self.matrices:
            product = m.weights @ product
        return 1.0 - second_largest_eigenvalue_modulus(product) ** (1.0 / self.period)
