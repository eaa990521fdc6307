import json

import numpy as np
import pytest
import torch

from robustbench_dice import ConfigError, RunResult, Scenario, Simulation, simulate
from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.reference import PerNodeRules, gossip_rule, run_reference
from robustbench_dice.setup import prepare, sample_positions

TOPOLOGY_CASES = [
    dict(topology="ring"),
    dict(topology="torus"),
    dict(topology="exponential"),
    dict(topology="one_peer_exponential"),
    dict(topology="complete", mixing="uniform"),
    dict(topology="star", mixing="max_degree"),
    dict(topology="erdos_renyi", edge_probability=0.4),
    dict(topology="small_world", small_world_k=2),
]


def _small(**kw):
    base = dict(nodes=8, rounds=6, batch_size=8, momentum=0.9, weight_decay=1e-3, eval_every=3)
    return Scenario(**{**base, **kw})


@pytest.mark.parametrize("case", TOPOLOGY_CASES, ids=lambda c: c["topology"])
def test_vectorised_engine_equals_per_node_reference(case):
    scenario = _small(**case)
    sim = Simulation.from_scenario(scenario)
    sim.run()
    reference = run_reference(prepare(scenario))
    assert not torch.equal(reference, prepare(scenario).theta0)  # training moved the models
    torch.testing.assert_close(sim.final_theta, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["logreg", "cnn"])
def test_reference_agreement_other_models(model):
    scenario = _small(model=model, topology="one_peer_exponential", momentum=0.0, init="independent")
    sim = Simulation.from_scenario(scenario)
    sim.run()
    torch.testing.assert_close(sim.final_theta, run_reference(prepare(scenario)), rtol=1e-5, atol=1e-6)


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = simulate(_small(seed=3)).to_dict()
    b = simulate(_small(seed=3)).to_dict()
    c = simulate(_small(seed=4)).to_dict()
    for key in ("curve", "node_accuracy", "byzantine", "final_accuracy_mean"):
        assert a[key] == b[key]
    assert a["curve"] != c["curve"]


def test_sampler_draws_distinct_positions_below_each_count():
    count = torch.tensor([5, 9, 20])
    pos = sample_positions(torch.Generator().manual_seed(0), count, 20, 5)
    assert pos.shape == (3, 5)
    for k in range(3):
        assert len(set(pos[k].tolist())) == 5 and pos[k].max() < count[k]


def test_digits_ring_reaches_ninety_percent():
    result = simulate(Scenario(dataset="digits", model="mlp", topology="ring", nodes=16, rounds=200, seed=0))
    assert result.final_accuracy_mean >= 0.90
    assert result.final_accuracy_worst <= result.final_accuracy_mean
    assert [p.round for p in result.curve] == list(range(0, 201, 10))
    assert result.curve[-1].accuracy_mean == pytest.approx(result.final_accuracy_mean)
    assert (
        result.curve[-1].consensus_distance < result.curve[5].consensus_distance
        or result.curve[5].consensus_distance == 0
    )


def test_byzantine_nodes_are_not_evaluated():
    result = simulate(_small(byzantine=3, byzantine_placement="degree", topology="star"))
    assert 0 in result.byzantine and len(result.byzantine) == 3
    assert set(map(int, result.node_accuracy)) == set(range(8)) - set(result.byzantine)


class _Recorder(Defense):
    """Test double: plain averaging that records what it was given."""

    name = "recorder"

    def __init__(self):
        self.views: list[DefenseView] = []

    def aggregate(self, view):
        self.views.append(view)
        score = torch.where(view.neighbours.mask, view.neighbours.index.float(), torch.nan)
        return Aggregation(theta=view.weights @ view.messages, suspicion=score)


def test_defense_hook_never_sees_the_byzantine_set_and_scores_are_recorded():
    scenario = _small(byzantine=2, rounds=2)
    sim = Simulation.from_scenario(scenario)
    sim.defense = _Recorder()
    result = sim.run()
    view = sim.defense.views[0]
    fields = set(DefenseView.__dataclass_fields__)
    assert not any("byz" in f or "honest" in f for f in fields)
    assert view.messages.shape == (8, sim.setup.model.num_params)
    honest = set(range(8)) - set(result.byzantine)
    assert {int(j) for j, _, _ in result.suspicion} == honest
    assert all(score == k for _, k, score in result.suspicion)


def test_result_json_roundtrip(tmp_path):
    result = simulate(_small())
    path = tmp_path / "r.json"
    result.write_json(path)
    again = RunResult.read_json(path)
    assert again.to_dict() == json.loads(path.read_text())
    assert again.curve[-1].accuracy_mean == result.curve[-1].accuracy_mean
    assert Scenario.from_dict(again.scenario) == _small()


def test_replicated_partition_scales_nodes_past_the_dataset():
    result = simulate(
        Scenario(nodes=128, topology="exponential", partition="replicated", samples_per_node=40, rounds=2, eval_every=2)
    )
    assert len(result.node_accuracy) == 128 and result.topology["sparse_gossip"]


def test_diverged_run_serialises_with_nulls(tmp_path):
    result = simulate(
        Scenario(
            attack="gradient_scale",
            attack_params={"scale": -1e6},
            byzantine=3,
            nodes=8,
            rounds=6,
            eval_every=3,
            topology="complete",
        )
    )
    path = tmp_path / "r.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert data["status"] == "ok"
    assert result.diverged or any(p["loss_mean"] is None for p in data["curve"])


@pytest.mark.parametrize(
    "case",
    [
        dict(topology="ring", byzantine=3, seed=1),
        dict(topology="torus", byzantine=4, seed=2),
        dict(topology="one_peer_exponential", byzantine=2),
        dict(topology="erdos_renyi", edge_probability=0.4, byzantine=3),
        dict(topology="star", byzantine=1, byzantine_placement="degree"),  # the hub: every leaf has 1
        dict(topology="complete", byzantine=3),
        dict(topology="complete", byzantine=0),
    ],
    ids=lambda c: f"{c['topology']}-{c['byzantine']}",
)
def test_byzantine_in_neighbours_is_the_most_any_honest_node_has(case):
    setup = prepare(_small(**case))
    byzantine = set(setup.byzantine.tolist())
    most = 0
    for m in setup.mixing.matrices:
        for j in setup.honest:
            senders = [k for k in range(setup.n_nodes) if m.graph.adjacency[j, k]]
            most = max(most, sum(k in byzantine for k in senders))
    assert setup.byzantine_in_neighbours == most
    if case["topology"] in ("star", "complete"):
        assert most == case["byzantine"]


def test_auto_bound_runs_as_the_resolved_value_and_is_recorded():
    scenario = _small(topology="torus", byzantine=4, seed=2, attack="sign_flip", defense="trimmed_mean")
    auto = simulate(scenario.replace(defense_params={"trim": "auto"}))
    resolved = prepare(scenario).byzantine_in_neighbours
    assert auto.status == "ok" and auto.auto_params == {"trim": resolved} and resolved >= 1
    explicit = simulate(scenario.replace(defense_params={"trim": resolved}))
    assert explicit.auto_params == {}
    assert auto.final_accuracy_mean == explicit.final_accuracy_mean and auto.suspicion == explicit.suspicion
    declined = simulate(scenario.replace(topology="complete", nodes=6, defense="krum", defense_params={"f": "auto"}))
    assert declined.status == "skipped" and declined.auto_params == {"f": 4} and "f=4" in declined.reason


def test_cpu_kernels_are_pinned_to_avx2_unless_the_environment_says_otherwise(tmp_path):
    import os
    import subprocess
    import sys

    from robustbench_dice.cpu_kernels import PINNED, has_avx2, pin_instruction_set

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    assert has_avx2(cpuinfo, machine="x86_64") and not has_avx2(cpuinfo, machine="aarch64")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert not has_avx2(cpuinfo, machine="x86_64") and not has_avx2(tmp_path / "missing", machine="x86_64")

    environ = {"MKL_CBWR": "AUTO"}
    assert pin_instruction_set(environ, supported=True) == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert environ == {**PINNED, "MKL_CBWR": "AUTO"}  # the user's setting stays
    assert pin_instruction_set(empty := {}, supported=False) == {} and empty == {}

    probe = "import robustbench_dice, torch; print(torch.backends.cpu.get_cpu_capability())"
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    run = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ("AVX2" if has_avx2() else run.stdout.strip())
    record = simulate(Scenario(nodes=4, rounds=1))
    assert record.versions["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_detection_streak_skips_rounds_of_a_time_varying_graph_without_byzantine_edges():
    """One-peer exponential graph on 8 nodes: at rounds t = 2 mod 3 node i sends only to i + 4, so Byzantine nodes
    {0, 4} send only to each other. Such a round can neither break a detection streak nor start one."""
    from robustbench_dice.engine import _Detection

    sim = Simulation.from_scenario(Scenario(topology="one_peer_exponential", nodes=8, byzantine=0, rounds=6))
    byzantine = torch.tensor([0, 4])
    detection = _Detection(8, byzantine, torch.tensor([1, 2, 3, 5, 6, 7]), torch.device("cpu"))

    def round_(t, prune_byzantine):
        rm = sim.mixing_at(t)
        pruned = rm.neighbours.mask & torch.isin(rm.neighbours.index, byzantine) & prune_byzantine
        detection.update(t, Aggregation(theta=torch.zeros(8, 1), pruned=pruned), rm)
        return detection.caught_since

    assert sim.setup.mixing.period == 3
    assert round_(0, False) is None
    assert round_(1, False) is None
    assert round_(2, False) is None  # no Byzantine edge this round: pruning nothing does not start a streak
    assert round_(3, True) == 4
    assert round_(4, True) == 4
    assert round_(5, False) == 4  # nor does it break one
    assert round_(6, False) is None


@pytest.mark.parametrize("defense", ["dice_prune", "ubar"])
def test_a_defense_reading_the_validation_set_fails_without_one(defense):
    # with val_fraction=0 the validation loss and gradient are zero, and these defenses judged nothing, silently
    scenario = _small(defense=defense, byzantine=2, attack="label_flip", val_fraction=0.0)
    with pytest.raises(
        ConfigError, match=f"defense '{defense}' uses each node's validation set z', but val_fraction=0"
    ):
        simulate(scenario)
    simulate(_small(defense="median", byzantine=2, attack="label_flip", val_fraction=0.0))  # one that does not read it


def test_a_dict_instead_of_a_scenario_is_a_clear_error():
    with pytest.raises(TypeError, match="expected a robustbench_dice.Scenario, got dict; build one with Scenario"):
        simulate({"nodes": 4})  # type: ignore[arg-type]


class _Misfit(Defense):
    """Test double: averaging whose output is changed by ``spoil`` after the fact."""

    name = "misfit"

    def __init__(self, spoil):
        self.spoil = spoil

    def aggregate(self, view):
        scores = torch.where(view.neighbours.mask, 0.0, torch.nan)
        agg = Aggregation(theta=view.weights @ view.messages, suspicion=scores, pruned=~view.neighbours.mask)
        return self.spoil(agg)


@pytest.mark.parametrize(
    "spoil,message",
    [
        (
            lambda a: Aggregation(a.theta.T, a.suspicion, a.pruned),
            "theta of shape \\(4810, 8\\), expected \\(8, 4810\\)",
        ),
        (lambda a: Aggregation(a.theta.double(), a.suspicion), "theta of dtype torch.float64, expected torch.float32"),
        (lambda a: Aggregation(a.theta.numpy(), a.suspicion), "theta of type ndarray, expected a torch.Tensor"),
        (lambda a: Aggregation(a.theta, a.suspicion[:, :1]), "suspicion of shape \\(8, 1\\), expected \\(8, 2\\)"),
        (lambda a: Aggregation(a.theta, a.suspicion.to(torch.complex64)), "suspicion of dtype torch.complex64"),
        (lambda a: Aggregation(a.theta, None, a.pruned.float()), "pruned of dtype torch.float32, expected torch.bool"),
    ],
)
def test_a_defense_output_that_does_not_fit_is_named(spoil, message):
    # a float64 theta used to surface a round later as a dtype error inside the next gradient; float pruned flags
    # as an index_put error inside the detection bookkeeping
    sim = Simulation.from_scenario(_small(rounds=2))
    sim.defense = _Misfit(spoil)
    with pytest.raises(RuntimeError, match=f"defense 'misfit' returned {message}"):
        sim.run()
    sim = Simulation.from_scenario(_small(rounds=2))
    sim.defense = _Misfit(lambda a: Aggregation(a.theta, a.suspicion.double(), a.pruned))  # scores of any real dtype
    sim.run()


def test_an_attack_output_that_does_not_fit_is_named():
    from robustbench_dice.plugins import Attack

    class Float64Messages(Attack):
        name = "float64_messages"

        def messages(self, view):
            return view.half[view.byzantine].double()

    class ShortClaims(Float64Messages):
        name = "short_claims"

        def messages(self, view):
            return view.half[view.byzantine]

        def reported_delta(self, view, messages):
            return super().reported_delta(view, messages)[:, 1:]

    for attack, message in (
        (
            Float64Messages(),
            "attack 'float64_messages' returned messages of dtype torch.float64, expected torch.float32",
        ),
        (ShortClaims(), "attack 'short_claims' returned reported_delta of shape \\(2, 4809\\), expected \\(2, 4810\\)"),
    ):
        sim = Simulation.from_scenario(_small(rounds=2, byzantine=2))
        sim.attack = attack
        with pytest.raises(RuntimeError, match=message):
            sim.run()


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_final_metrics_equal_a_per_honest_node_evaluation_with_sklearn(model):
    """Accuracy (mean and worst honest node), test loss and consensus distance as DESIGN.md section 5 defines them:
    each honest node's model on the whole test set, one node at a time (scikit-learn's accuracy and log loss), and
    the same from the batched evaluation in any chunking of nodes and test samples."""
    from sklearn.metrics import accuracy_score, log_loss

    from robustbench_dice.engine import honest_test_metrics

    scenario = Scenario(
        nodes=8, byzantine=2, attack="label_flip", defense="median", rounds=6, eval_every=3, model=model
    )
    sim = Simulation.from_scenario(scenario.replace(dtype="float64"))
    result = sim.run()
    honest = [j for j in range(8) if j not in result.byzantine]
    ds = sim.setup.dataset
    x_test, y_test = ds.x_test.to(torch.float64), ds.y_test.numpy()
    accuracy, loss = [], []
    for j in honest:
        logits = sim.setup.model.forward_single(sim.final_theta[j], x_test)
        accuracy.append(accuracy_score(y_test, logits.argmax(1).numpy()))
        loss.append(log_loss(y_test, torch.softmax(logits, 1).numpy(), labels=list(range(ds.num_classes))))
    # the engine sums correct counts and losses in float32, whatever the run's dtype (the stored numbers were made
    # so): 1e-7 and 1e-6, not 1e-12
    assert result.final_accuracy_mean == pytest.approx(np.mean(accuracy), abs=1e-7)
    assert result.final_accuracy_worst == pytest.approx(min(accuracy), abs=1e-7)
    last = result.curve[-1]
    assert last.round == 6 and last.loss_mean == pytest.approx(np.mean(loss), rel=1e-6)
    models = sim.final_theta[honest].numpy()
    spread = np.mean([np.sum((m - models.mean(0)) ** 2) for m in models])
    assert last.consensus_distance == pytest.approx(spread, rel=1e-9)
    for test_batch in (7, 100, 5000):  # chunking test samples (and, with it, nodes) leaves the numbers as they are
        chunked = honest_test_metrics(sim.setup, sim.final_theta[honest], test_batch=test_batch)
        np.testing.assert_allclose(chunked[0].numpy(), accuracy, atol=1e-7)
        np.testing.assert_allclose(chunked[1].numpy(), loss, rtol=1e-6)


def _median(own, received, self_weight):  # the two middle values' mean for an even count
    return torch.stack([own] + [m for _, m in received]).quantile(0.5, dim=0)


@pytest.mark.parametrize(
    ("attack", "params", "send", "local_training"),
    [
        ("gradient_scale", {"scale": -4.0}, lambda b, theta, half: theta - 4.0 * (half - theta), True),
        ("sign_flip", {}, lambda b, theta, half: -half, True),
        ("label_flip", {}, lambda b, theta, half: half, True),  # honest steps on the labels it flipped
        ("free_ride", {}, lambda b, theta, half: theta, False),  # no local step: forwards its aggregate
    ],
)
@pytest.mark.parametrize("defense", ["gossip", "median"])
def test_engine_with_byzantine_nodes_equals_the_per_node_loop(attack, params, send, local_training, defense):
    """Attacks rewrite only the Byzantine rows of what is sent, a Byzantine node keeps its own honest half-step (or
    none, free riding), and the defense runs for every row on an irregular graph: as a node-by-node loop does it."""
    scenario = _small(
        topology="erdos_renyi", nodes=9, byzantine=3, attack=attack, attack_params=params, defense=defense
    ).replace(dtype="float64", weight_decay=0.0)
    sim = Simulation.from_scenario(scenario)
    sim.run()  # label_flip leaves the labels it poisoned in sim.setup.data, which the loop then trains on
    if attack == "label_flip":
        byzantine = torch.as_tensor(sim.setup.byzantine)
        assert not torch.equal(sim.setup.data.train_labels[byzantine], prepare(scenario).data.train_labels[byzantine])
    with pytest.raises(ConfigError, match="by itself; give PerNodeRules for others"):
        run_reference(sim.setup)
    rules = PerNodeRules(send, gossip_rule if defense == "gossip" else _median, byzantine_train=local_training)
    loop = run_reference(sim.setup, rules=rules)
    torch.testing.assert_close(sim.final_theta, loop, rtol=1e-9, atol=1e-10)
