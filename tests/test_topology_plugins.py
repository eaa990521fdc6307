"""Topologies from a plugin's graph builder: static and time-varying schedules, checks, and clear errors."""

from pathlib import Path

import numpy as np
import pytest

from robustbench_dice import Scenario, registry
from robustbench_dice.cli import main
from robustbench_dice.conformance import run_topology_conformance
from robustbench_dice.engine import Simulation
from robustbench_dice.errors import ConfigError
from robustbench_dice.topology import PLUGIN_TOPOLOGIES, TOPOLOGIES, build_topology

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


@pytest.fixture(autouse=True)
def _restore(restore_registry):
    yield


def _register(name, builder):
    builder.__doc__ = "A test topology."
    registry.register_topology(name)(builder)
    return name


def _shifts(nodes, seed):
    """At round t node i sends to i + 1 + (t mod 2): two one-peer graphs, each a union of cycles."""
    node = np.arange(nodes)
    graphs = []
    for offset in (1, 2):
        adjacency = np.zeros((nodes, nodes))
        adjacency[(node + offset) % nodes, node] = 1.0
        graphs.append(adjacency)
    return graphs


def test_a_time_varying_plugin_topology_is_used_round_by_round():
    _register("shifts", _shifts)
    schedule = build_topology("shifts", 8, seed=0)
    assert schedule.period == 2 and schedule.time_varying
    assert schedule.graph_at(0).adjacency[1, 0] and schedule.graph_at(1).adjacency[2, 0]
    assert schedule.graph_at(3) is schedule.graph_at(1)
    sim = Simulation.from_scenario(Scenario(topology="shifts", nodes=8, rounds=4, batch_size=8, eval_every=4))
    assert [sim.setup.mixing.at(t).weights[2, 0] > 0 for t in range(4)] == [False, True, False, True]
    assert sim.run().status == "ok"
    assert all(r.passed for r in run_topology_conformance("shifts"))


def test_the_hypercube_example_declines_what_it_cannot_build():
    registry.load_plugin_file(EXAMPLES / "hypercube.py")
    assert (build_topology("hypercube", 16).graphs[0].in_degree == 4).all()
    with pytest.raises(ConfigError, match="needs a power-of-two number of nodes, got 12"):
        build_topology("hypercube", 12)
    assert TOPOLOGIES["hypercube"].startswith("Hypercube: node i talks to i XOR 2^m")


@pytest.mark.parametrize(
    "builder,message",
    [
        (lambda n, seed: np.ones((n, n + 1)), r"graph 0 must be square, got shape \(6, 7\)"),
        (lambda n, seed: np.ones((n + 1, n + 1)), "graph 0 has 7 nodes, expected 6"),
        (lambda n, seed: -np.ones((n, n)), r"graph 0 has a negative entry at \[0, 0\] = -1.0"),
        (lambda n, seed: np.full((n, n), np.nan), "graph 0 has non-finite entries"),
        (lambda n, seed: [["a"] * n] * n, "graph 0 is not a numeric matrix"),
        (lambda n, seed: [], "the builder returned an empty list of graphs"),
        (lambda n, seed: np.eye(n, k=1), r"is not \(strongly\) connected$"),
        (lambda n, seed: [np.eye(n, k=1), np.eye(n, k=2)], r"not \(strongly\) connected \(the union of its graphs"),
    ],
)
def test_bad_plugin_graphs_are_clear_errors(builder, message):
    _register("bad_graph", builder)
    with pytest.raises(ConfigError, match=f"topology 'bad_graph' on 6 nodes.*{message}"):
        build_topology("bad_graph", 6)


def test_a_builder_that_ignores_its_seed_fails_the_conformance_check():
    _register("unseeded", lambda n, seed: np.random.default_rng().random((n, n)) > 0.3)
    results = {r.check: r for r in run_topology_conformance("unseeded")}
    assert not results["topology_same_seed_same_graphs"].passed
    assert "draw randomness from the seed" in results["topology_same_seed_same_graphs"].detail


def test_topology_registration_and_scenario_errors(capsys):
    with pytest.raises(ConfigError, match=r"must take \(nodes, seed\), not 1 argument"):
        _register("one_argument", lambda n: np.ones((n, n)))
    with pytest.raises(ConfigError, match="two topologies are named 'ring': a built-in topology and"):
        _register("ring", lambda n, seed: np.ones((n, n)))
    assert "ring" not in PLUGIN_TOPOLOGIES
    with pytest.raises(ConfigError, match="unknown topology 'hypercub'.*register with @register_topology"):
        Scenario(topology="hypercub")
    assert main(["check", str(EXAMPLES / "hypercube.py")]) == 0
    assert "PASS  hypercube: topology_trains_on_it  (accuracy" in capsys.readouterr().out


def _circulant(nodes, seed, k):
    """Circulant graph: node i receives from i + 1, ..., i + k (a test family)."""
    adjacency = np.zeros((nodes, nodes), dtype=bool)
    for offset in range(1, k + 1):
        adjacency[np.arange(nodes), (np.arange(nodes) + offset) % nodes] = True
    return adjacency


def test_a_family_registers_one_name_per_member_with_functools_partial(tmp_path):
    import functools

    for k in (2, 3):
        registry.register_topology(f"circulant{k}")(functools.partial(_circulant, k=k))
    assert [(build_topology(f"circulant{k}", 8).graphs[0].in_degree == k).all() for k in (2, 3)] == [True, True]
    assert TOPOLOGIES["circulant3"] == "Circulant graph: node i receives from i + 1, ..., i + k (a test family)."
    assert registry.functions_of_file(__file__)["topology"] == ["circulant2", "circulant3"]


def test_the_regenerate_line_names_the_folder_of_a_family_member(tmp_path, monkeypatch):
    import functools

    from robustbench_dice.influence import CascadeConfig, command_line

    registry.register_topology("circulant2")(functools.partial(_circulant, k=2))
    monkeypatch.chdir(tmp_path)  # the tests folder does not lie below it: shown whole
    line = command_line("cascade", CascadeConfig(topologies=("circulant2",)), tmp_path / "out")
    assert line.endswith(f"--plugins {Path(__file__).resolve().parent}")
