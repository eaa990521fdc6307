import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_dice.errors import ConfigError
from robustbench_dice.mixing import MIXING_RULES, MixingMatrix, MixingSchedule, promises_doubly_stochastic
from robustbench_dice.topology import Graph, build_topology

GENERATED = ["ring", "torus", "exponential", "one_peer_exponential", "complete", "star", "erdos_renyi", "small_world"]


@settings(max_examples=120, deadline=None)
@given(
    topology=st.sampled_from(GENERATED),
    rule=st.sampled_from(tuple(MIXING_RULES)),
    n=st.integers(min_value=4, max_value=40),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_every_mixing_matrix_is_valid(topology, rule, n, seed):
    if topology == "torus" and all(n % r for r in range(2, int(n**0.5) + 1)):
        n = 16
    schedule = MixingSchedule(build_topology(topology, n, seed=seed, edge_probability=0.5, small_world_k=2), rule)
    for m in schedule.matrices:
        w = m.weights
        assert (w >= 0).all() and np.isfinite(w).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
        off = w.copy()
        np.fill_diagonal(off, 0)
        assert ((off > 0) == m.graph.adjacency).all()
        assert (np.diag(w) > 0).all()
        if promises_doubly_stochastic(m.graph, rule):
            np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-9)
    assert 0.0 < schedule.spectral_gap <= 1.0 + 1e-9


def test_metropolis_hastings_on_ring_is_one_third():
    m = MixingMatrix(build_topology("ring", 6).graphs[0], "metropolis_hastings")
    assert np.allclose(m.weights[0, [0, 1, 5]], 1 / 3) and m.doubly_stochastic


def test_complete_uniform_has_full_spectral_gap():
    m = MixingMatrix(build_topology("complete", 5).graphs[0], "uniform")
    assert np.allclose(m.weights, 0.2) and m.spectral_gap == pytest.approx(1.0)


def test_ring_spectral_gap_matches_closed_form():
    n = 10
    m = MixingMatrix(build_topology("ring", n).graphs[0], "metropolis_hastings")
    eigs = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * np.arange(n) / n)
    assert m.spectral_gap == pytest.approx(1 - np.sort(np.abs(eigs))[-2])


def test_slem_is_computed_once_per_matrix_and_process(monkeypatch):
    from robustbench_dice import mixing

    monkeypatch.setattr(mixing, "_SLEM_CACHE", {})
    monkeypatch.setattr(mixing, "_SLEM_CACHE_SIZE", 2)
    calls = []
    monkeypatch.setattr(mixing, "_slem", lambda w: calls.append(w.shape) or float(w.shape[0]))
    ring, torus = (MixingMatrix(build_topology(name, 9).graphs[0], "metropolis_hastings") for name in ("ring", "torus"))
    again = MixingMatrix(build_topology("ring", 9).graphs[0], "metropolis_hastings")  # a new object, the same W
    assert ring.slem == again.slem == 9.0 and len(calls) == 1
    assert MixingSchedule(build_topology("ring", 9), "metropolis_hastings").spectral_gap == 1.0 - 9.0
    assert len(calls) == 1
    assert torus.slem == 9.0 and len(calls) == 2  # another matrix of the same size is computed
    mixing.second_largest_eigenvalue_modulus(np.eye(4))  # a third: the oldest (the ring) is forgotten
    assert len(mixing._SLEM_CACHE) == 2
    mixing.second_largest_eigenvalue_modulus(ring.weights)
    assert len(calls) == 4


def test_star_metropolis_is_doubly_stochastic_uniform_is_not():
    g = build_topology("star", 6).graphs[0]
    assert MixingMatrix(g, "metropolis_hastings").doubly_stochastic
    assert not MixingMatrix(g, "uniform").doubly_stochastic


def test_unknown_rule_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid: max_degree, metropolis_hastings, uniform"):
        MixingMatrix(build_topology("ring", 4).graphs[0], "metropolis")


def test_disconnected_over_period_is_rejected():
    a = np.zeros((4, 4), dtype=bool)
    a[0, 1] = a[1, 0] = a[2, 3] = a[3, 2] = True
    from robustbench_dice.topology import TopologySchedule

    with pytest.raises(ConfigError, match="not connected"):
        MixingSchedule(TopologySchedule("custom", (Graph(a),)), "uniform")


@pytest.mark.parametrize("sparse", [True, False])
def test_torch_weights_and_neighbourhood_agree(sparse):
    m = MixingMatrix(build_topology("erdos_renyi", 20, seed=1, edge_probability=0.2).graphs[0], "metropolis_hastings")
    x = torch.randn(20, 7, dtype=torch.float64)
    w = m.to_torch(dtype=torch.float64, sparse=sparse)
    assert w.is_sparse_csr == sparse
    nb = m.neighbourhood(dtype=torch.float64)
    by_neighbourhood = nb.self_weight[:, None] * x + (nb.weight[..., None] * x[nb.index] * nb.mask[..., None]).sum(1)
    torch.testing.assert_close(w @ x, torch.tensor(m.weights) @ x)
    torch.testing.assert_close(by_neighbourhood, torch.tensor(m.weights) @ x)


def test_large_sparse_graph_fits():
    schedule = MixingSchedule(build_topology("exponential", 1024), "metropolis_hastings")
    m = schedule.matrices[0]
    assert m.density < 0.02 and m.to_torch().is_sparse_csr
    assert 0 < schedule.spectral_gap < 1
