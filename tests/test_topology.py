import numpy as np
import pytest

from robustbench_dice.errors import ConfigError
from robustbench_dice.topology import TOPOLOGIES, build_topology, exponential_offsets


@pytest.mark.parametrize("name", [t for t in TOPOLOGIES if t != "file"])
@pytest.mark.parametrize("n", [4, 12, 16])
def test_every_topology_builds_connected(name, n):
    schedule = build_topology(name, n, seed=0, edge_probability=0.6, small_world_k=2)
    assert schedule.n_nodes == n
    assert schedule.union().is_strongly_connected()
    for g in schedule.graphs:
        assert not np.diag(g.adjacency).any()


def test_degrees_of_regular_graphs():
    assert (build_topology("ring", 10).graphs[0].in_degree == 2).all()
    assert (build_topology("torus", 16).graphs[0].in_degree == 4).all()
    assert (build_topology("complete", 7).graphs[0].in_degree == 6).all()
    star = build_topology("star", 9).graphs[0]
    assert star.in_degree[0] == 8 and (star.in_degree[1:] == 1).all()


def test_exponential_is_i_to_i_plus_power_of_two():
    g = build_topology("exponential", 16).graphs[0]
    assert exponential_offsets(16) == [1, 2, 4, 8]
    for i in range(16):
        receivers = set(np.flatnonzero(g.adjacency[:, i]))
        assert receivers == {(i + 2**m) % 16 for m in range(4)}
    assert not g.is_symmetric


def test_one_peer_exponential_changes_each_round():
    s = build_topology("one_peer_exponential", 8)
    assert s.period == 3 and s.time_varying
    for t, offset in enumerate([1, 2, 4]):
        g = s.graph_at(t)
        assert (g.in_degree == 1).all() and (g.out_degree == 1).all()
        assert g.adjacency[offset % 8, 0]
    assert s.graph_at(3) is s.graph_at(0)


def test_seeded_random_graphs_are_reproducible():
    a = build_topology("erdos_renyi", 20, seed=3, edge_probability=0.3).graphs[0].adjacency
    b = build_topology("erdos_renyi", 20, seed=3, edge_probability=0.3).graphs[0].adjacency
    c = build_topology("erdos_renyi", 20, seed=4, edge_probability=0.3).graphs[0].adjacency
    assert (a == b).all() and (a != c).any()
    assert build_topology("erdos_renyi", 20, seed=3).graphs[0].is_symmetric


def test_torus_sides():
    assert build_topology("torus", 12, torus_rows=2).graphs[0].n_nodes == 12
    with pytest.raises(ConfigError, match="13 is not such a product"):
        build_topology("torus", 13)
    with pytest.raises(ConfigError, match="torus_rows=5"):
        build_topology("torus", 12, torus_rows=5)


def test_bad_topologies():
    with pytest.raises(ConfigError, match="valid: complete, erdos_renyi"):
        build_topology("hypercube", 8)
    with pytest.raises(ConfigError, match="nodes must be >= 2"):
        build_topology("ring", 1)
    with pytest.raises(ConfigError, match="disconnected in all"):
        build_topology("erdos_renyi", 30, edge_probability=0.01)
    with pytest.raises(ConfigError, match="small_world_k"):
        build_topology("small_world", 6, small_world_k=6)
    with pytest.raises(ConfigError, match="small_world_k must be even.*got 3; use 2 or 4"):
        build_topology("small_world", 8, small_world_k=3)
    with pytest.raises(ConfigError, match="needs adjacency_file"):
        build_topology("file", 4)
    with pytest.raises(ConfigError, match=r"edge_probability must be in \(0, 1\], got 1.5"):
        build_topology("erdos_renyi", 8, edge_probability=1.5)
    with pytest.raises(ConfigError, match=r"small_world_p must be in \[0, 1\], got -0.1"):
        build_topology("small_world", 8, small_world_k=2, small_world_p=-0.1)


def _ring_matrix(n):
    a = np.zeros((n, n))
    for i in range(n):
        a[i, (i + 1) % n] = a[(i + 1) % n, i] = 1
    return a


def test_adjacency_file_formats(tmp_path):
    a = _ring_matrix(5)
    np.save(tmp_path / "ring.npy", a)
    np.savetxt(tmp_path / "ring.csv", a, delimiter=",")
    np.savetxt(tmp_path / "ring.txt", a)
    for name in ("ring.npy", "ring.csv", "ring.txt"):
        g = build_topology("file", 5, adjacency_file=str(tmp_path / name)).graphs[0]
        assert (g.adjacency == (a > 0)).all()


def test_bad_adjacency_files(tmp_path):
    np.savetxt(tmp_path / "rect.csv", np.ones((3, 4)), delimiter=",")
    with pytest.raises(ConfigError, match="must be square"):
        build_topology("file", 3, adjacency_file=str(tmp_path / "rect.csv"))
    neg = _ring_matrix(4)
    neg[0, 1] = -1
    np.save(tmp_path / "neg.npy", neg)
    with pytest.raises(ConfigError, match="negative entry at \\[0, 1\\]"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "neg.npy"))
    split = np.zeros((4, 4))
    split[0, 1] = split[1, 0] = split[2, 3] = split[3, 2] = 1
    np.save(tmp_path / "split.npy", split)
    with pytest.raises(ConfigError, match="not \\(strongly\\) connected"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "split.npy"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "missing.npy"))
    np.save(tmp_path / "one.npy", np.zeros((1, 1)))
    with pytest.raises(ConfigError, match="must have at least 2 nodes"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "one.npy"))
    np.save(tmp_path / "ring5.npy", _ring_matrix(5))
    with pytest.raises(ConfigError, match="has 5 nodes but nodes=4"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "ring5.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="cannot read adjacency"):
        build_topology("file", 4, adjacency_file=str(tmp_path / "obj.npy"))
