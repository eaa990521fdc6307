"""Communication graphs.

A :class:`Graph` stores a boolean adjacency ``A`` of shape ``(N, N)`` with the
*receiver* convention of the mixing matrix: ``A[j, k]`` is True when node ``j``
receives node ``k``'s message (edge ``k -> j``). Self-loops are never stored;
every node always keeps its own model, which the mixing rule weights.

A :class:`TopologySchedule` gives the graph of each round. Static topologies
have period 1; the one-peer exponential graph changes every round. A topology
of your own is a builder function registered with
:func:`robustbench_dice.registry.register_topology`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from .errors import ConfigError, check_choice

# name -> what it is, with the scenario fields that shape it (`robustbench-dice list topologies` prints these)
TOPOLOGIES = {
    "ring": "undirected cycle: each node talks to its two neighbours",
    "torus": "2-D periodic grid rows x cols, up to 4 neighbours each  [torus_rows]",
    "exponential": "directed: node i sends to i + 2^m mod N for every 2^m < N (Ying et al. 2021)",
    "one_peer_exponential": "time-varying: at round t node i sends only to i + 2^(t mod log2 N) (Ying et al. 2021)",
    "complete": "every node talks to every other",
    "star": "node 0 talks to every other node; they talk only to it",
    "erdos_renyi": "G(N, p) random graph, resampled until connected  [edge_probability]",
    "small_world": "connected Watts-Strogatz ring lattice with rewiring  [small_world_k, small_world_p]",
    "file": "your adjacency matrix, row = receiver  [adjacency_file]",
}


# builders registered by plugins (registry.register_topology), not the built-in topologies: builder(nodes, seed)
# returns one adjacency matrix, or a list of them (a time-varying topology's period)
PLUGIN_TOPOLOGIES: dict[str, Callable[[int, int], Any]] = {}


@dataclass(frozen=True, eq=False)
class Graph:
    """Directed communication graph in receiver convention (see module docstring)."""

    adjacency: np.ndarray  # (N, N) bool, [j, k] True iff j receives from k

    def __post_init__(self) -> None:
        a = np.asarray(self.adjacency, dtype=bool).copy()
        np.fill_diagonal(a, False)
        a.setflags(write=False)
        object.__setattr__(self, "adjacency", a)

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])

    @property
    def in_degree(self) -> np.ndarray:
        return self.adjacency.sum(axis=1)

    @property
    def out_degree(self) -> np.ndarray:
        return self.adjacency.sum(axis=0)

    @property
    def is_symmetric(self) -> bool:
        return bool((self.adjacency == self.adjacency.T).all())

    @property
    def n_edges(self) -> int:
        return int(self.adjacency.sum())

    def is_strongly_connected(self) -> bool:
        return is_strongly_connected(self.adjacency)


def is_strongly_connected(adjacency: np.ndarray) -> bool:
    """True when every node reaches every other along directed edges."""
    digraph = nx.from_numpy_array(adjacency.T.astype(np.int8), create_using=nx.DiGraph)
    return bool(nx.is_strongly_connected(digraph))


@dataclass(frozen=True, eq=False)
class TopologySchedule:
    """The graph used at each round: ``graphs[t % period]``."""

    name: str
    graphs: tuple[Graph, ...]

    @property
    def period(self) -> int:
        return len(self.graphs)

    @property
    def n_nodes(self) -> int:
        return self.graphs[0].n_nodes

    @property
    def time_varying(self) -> bool:
        return self.period > 1

    def graph_at(self, round_index: int) -> Graph:
        return self.graphs[round_index % self.period]

    def union(self) -> Graph:
        """Every edge used in some round of one period."""
        return Graph(np.logical_or.reduce([g.adjacency for g in self.graphs]))


def _from_networkx(g: nx.Graph, n: int) -> np.ndarray:
    adjacency = nx.to_numpy_array(g, nodelist=sorted(g.nodes()), dtype=float) > 0
    if adjacency.shape != (n, n):
        raise AssertionError(f"graph has {adjacency.shape[0]} nodes, expected {n}")
    return adjacency


def ring(n: int) -> np.ndarray:
    return _from_networkx(nx.cycle_graph(n), n)


def torus_sides(n: int, rows: int | None = None) -> tuple[int, int]:
    """Rows x cols with rows * cols == n, both >= 2; the most square one unless ``rows`` is given."""
    if rows is not None:
        if rows < 2 or n % rows or n // rows < 2:
            raise ConfigError(f"torus_rows={rows} does not divide nodes={n} into rows x cols with both sides >= 2")
        return rows, n // rows
    for r in range(math.isqrt(n), 1, -1):
        if n % r == 0 and n // r >= 2:
            return r, n // r
    nearby = [m for m in range(max(4, n - 4), n + 5) if m != n and _has_torus(m)]
    raise ConfigError(
        f"a torus needs nodes = rows x cols with both sides >= 2; {n} is not such a product"
        f" (nearby valid node counts: {', '.join(map(str, nearby))})"
    )


def _has_torus(n: int) -> bool:
    return any(n % r == 0 and n // r >= 2 for r in range(2, math.isqrt(n) + 1))


def torus(n: int, rows: int | None = None) -> np.ndarray:
    r, c = torus_sides(n, rows)
    g = nx.convert_node_labels_to_integers(nx.grid_2d_graph(r, c, periodic=True), ordering="sorted")
    return _from_networkx(g, n)


def exponential_offsets(n: int) -> list[int]:
    """Offsets 2^0, 2^1, ... below n (Ying et al. 2021, static exponential graph)."""
    return [2**m for m in range(max(1, math.ceil(math.log2(n))))] if n > 1 else []


def exponential(n: int) -> np.ndarray:
    """Directed: node i sends to i + 2^m (mod n), so j receives from j - 2^m."""
    adjacency = np.zeros((n, n), dtype=bool)
    j = np.arange(n)
    for offset in exponential_offsets(n):
        adjacency[j, (j - offset) % n] = True
    return adjacency


def one_peer_exponential(n: int) -> list[np.ndarray]:
    """Time-varying: at round t node i sends only to i + 2^(t mod log2 n) (Ying et al. 2021)."""
    graphs = []
    j = np.arange(n)
    for offset in exponential_offsets(n):
        adjacency = np.zeros((n, n), dtype=bool)
        adjacency[j, (j - offset) % n] = True
        graphs.append(adjacency)
    return graphs


def complete(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def star(n: int) -> np.ndarray:
    return _from_networkx(nx.star_graph(n - 1), n)


def erdos_renyi(n: int, p: float, seed: int, tries: int = 100) -> np.ndarray:
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"edge_probability must be in (0, 1], got {p}")
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        g = nx.gnp_random_graph(n, p, seed=int(rng.integers(2**31)))
        if nx.is_connected(g):
            return _from_networkx(g, n)
    threshold = math.log(n) / n
    raise ConfigError(
        f"Erdos-Renyi graph with nodes={n}, edge_probability={p} was disconnected in all {tries}"
        f" seeded tries; use edge_probability well above ln(n)/n = {threshold:.3f}"
    )


def small_world(n: int, k: int, p: float, seed: int, tries: int = 100) -> np.ndarray:
    if not 2 <= k < n:
        raise ConfigError(f"small_world_k must satisfy 2 <= k < nodes={n}, got {k}")
    if k % 2:  # networkx joins k // 2 neighbours on each side: an odd k would silently build the graph of k - 1
        instead = " or ".join(str(even) for even in (k - 1, k + 1) if 2 <= even < n)
        raise ConfigError(f"small_world_k must be even (k // 2 ring neighbours on each side), got {k}; use {instead}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"small_world_p must be in [0, 1], got {p}")
    try:
        g = nx.connected_watts_strogatz_graph(n, k, p, tries=tries, seed=seed)
    except nx.NetworkXError as exc:
        raise ConfigError(f"small-world graph (n={n}, k={k}, p={p}) could not be made connected: {exc}") from exc
    return _from_networkx(g, n)


def load_adjacency(path: str | Path) -> np.ndarray:
    """Read a user adjacency matrix: ``.npy`` (no pickle) or text (``.csv``/``.txt``, comma or whitespace).

    Any positive off-diagonal entry ``A[j, k]`` is an edge ``k -> j`` (row = receiver). The diagonal is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"adjacency file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            matrix = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=2)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read adjacency file {str(path)!r}: {exc}") from exc
    adjacency = check_adjacency(f"adjacency matrix in {str(path)!r}", matrix)
    if not is_strongly_connected(adjacency):
        raise ConfigError(f"adjacency matrix in {str(path)!r} is not (strongly) connected")
    return adjacency


def check_adjacency(what: str, matrix: object, n_nodes: int | None = None) -> np.ndarray:
    """The boolean adjacency of ``matrix`` (positive off-diagonal entries are edges, row = receiver), or a
    ConfigError naming ``what`` when it is not a square, finite, non-negative matrix (of ``n_nodes`` rows)."""
    try:
        values = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not a numeric matrix: {exc}") from exc
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ConfigError(f"{what} must be square, got shape {values.shape}")
    if values.shape[0] < 2:
        raise ConfigError(f"{what} must have at least 2 nodes")
    if n_nodes is not None and values.shape[0] != n_nodes:
        raise ConfigError(f"{what} has {values.shape[0]} nodes, expected {n_nodes}")
    if not np.isfinite(values).all():
        raise ConfigError(f"{what} has non-finite entries")
    if (values < 0).any():
        j, k = np.argwhere(values < 0)[0]
        raise ConfigError(f"{what} has a negative entry at [{j}, {k}] = {values[j, k]}")
    adjacency = values > 0
    np.fill_diagonal(adjacency, False)
    return adjacency


def _plugin_schedule(name: str, n_nodes: int, seed: int) -> TopologySchedule:
    """The schedule a plugin's builder gives, checked: each matrix valid, the union over one period connected."""
    built = PLUGIN_TOPOLOGIES[name](n_nodes, seed)
    matrices = list(built) if isinstance(built, (list, tuple)) else [built]
    if not matrices:
        raise ConfigError(f"topology {name!r} on {n_nodes} nodes: the builder returned an empty list of graphs")
    graphs = tuple(
        Graph(check_adjacency(f"topology {name!r} on {n_nodes} nodes: graph {t}", m, n_nodes))
        for t, m in enumerate(matrices)
    )
    schedule = TopologySchedule(name, graphs)
    if not schedule.union().is_strongly_connected():
        over = " (the union of its graphs over one period)" if schedule.time_varying else ""
        raise ConfigError(f"topology {name!r} on {n_nodes} nodes is not (strongly) connected{over}")
    return schedule


def build_topology(
    name: str,
    n_nodes: int,
    *,
    seed: int = 0,
    edge_probability: float = 0.3,
    small_world_k: int = 4,
    small_world_p: float = 0.2,
    torus_rows: int | None = None,
    adjacency_file: str | None = None,
) -> TopologySchedule:
    """Build the named topology on ``n_nodes`` nodes; raises ConfigError on impossible requests."""
    check_choice("topology", name, TOPOLOGIES)
    if n_nodes < 2:
        raise ConfigError(f"nodes must be >= 2, got {n_nodes}")
    if name in PLUGIN_TOPOLOGIES:
        return _plugin_schedule(name, n_nodes, seed)
    if name == "one_peer_exponential":
        graphs = [Graph(a) for a in one_peer_exponential(n_nodes)]
        return TopologySchedule(name, tuple(graphs))
    if name == "file":
        if adjacency_file is None:
            raise ConfigError("topology 'file' needs adjacency_file (a .npy, .csv or .txt matrix)")
        adjacency = load_adjacency(adjacency_file)
        if adjacency.shape[0] != n_nodes:
            raise ConfigError(f"adjacency file {adjacency_file!r} has {adjacency.shape[0]} nodes but nodes={n_nodes}")
    elif name == "ring":
        adjacency = ring(n_nodes)
    elif name == "torus":
        adjacency = torus(n_nodes, torus_rows)
    elif name == "exponential":
        adjacency = exponential(n_nodes)
    elif name == "complete":
        adjacency = complete(n_nodes)
    elif name == "star":
        adjacency = star(n_nodes)
    elif name == "erdos_renyi":
        adjacency = erdos_renyi(n_nodes, edge_probability, seed)
    else:
        adjacency = small_world(n_nodes, small_world_k, small_world_p, seed)
    graph = Graph(adjacency)
    if not graph.is_strongly_connected():
        raise ConfigError(f"topology {name!r} on {n_nodes} nodes is not connected")
    return TopologySchedule(name, (graph,))
