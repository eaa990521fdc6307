import numpy as np
import pytest
import torch
from scipy.stats import norm

from robustbench_dice import Scenario, Simulation


def _spy(scenario):
    """Run and record, per round, the attack's view and what the defense received."""
    sim = Simulation.from_scenario(scenario)
    views, received = [], []
    attack_messages, aggregate = sim.attack.messages, sim.defense.aggregate
    sim.attack.messages = lambda view: views.append(view) or attack_messages(view)
    sim.defense.aggregate = lambda view: received.append(view.messages.clone()) or aggregate(view)
    sim.run()
    return sim, views, received


def test_gradient_scale_sends_exactly_theta_plus_lambda_delta():
    sim, views, received = _spy(
        Scenario(attack="gradient_scale", attack_params={"scale": -3.0}, byzantine=3, nodes=8, rounds=4)
    )
    for view, messages in zip(views, received, strict=True):
        b = view.byzantine
        assert torch.equal(messages[b], view.theta[b] + -3.0 * view.delta[b])
        honest = view.honest_mask
        assert torch.equal(messages[honest], view.half[honest])


def test_label_flip_changes_only_byzantine_labels():
    scenario = Scenario(attack="label_flip", attack_params={"rule": "reverse"}, byzantine=3, nodes=8, rounds=1)
    sim = Simulation.from_scenario(scenario)
    before = sim.setup.data.train_labels.clone()
    sim.run()
    after = sim.setup.data.train_labels
    byz = set(sim.setup.byzantine.tolist())
    for k in range(8):
        n = int(sim.setup.data.train_count[k])
        if k in byz:
            assert torch.equal(after[k, :n], 9 - before[k, :n])
        else:
            assert torch.equal(after[k], before[k])
    assert torch.equal(sim.setup.data.val_y, Simulation.from_scenario(scenario).setup.data.val_y)  # z' stays clean


def test_label_flip_fraction_and_random_rule():
    sim = Simulation.from_scenario(
        Scenario(attack="label_flip", attack_params={"rule": "random", "fraction": 0.5}, byzantine=2, nodes=8, rounds=1)
    )
    before = sim.setup.data.train_labels.clone()
    sim.run()
    for k in sim.setup.byzantine.tolist():
        n = int(sim.setup.data.train_count[k])
        changed = int((sim.setup.data.train_labels[k, :n] != before[k, :n]).sum())
        assert changed == round(0.5 * n)


def test_free_rider_forwards_its_aggregate_without_training():
    sim, views, received = _spy(Scenario(attack="free_ride", byzantine=2, nodes=8, rounds=3))
    for view, messages in zip(views, received, strict=True):
        b = view.byzantine
        assert torch.equal(messages[b], view.theta[b])
        assert torch.equal(view.delta[b], torch.zeros_like(view.delta[b]))


def test_alie_uses_the_paper_z_and_honest_statistics():
    sim, views, received = _spy(Scenario(attack="alie", byzantine=3, nodes=16, rounds=2))
    z = norm.ppf((16 - (16 // 2 + 1 - 3)) / 16)
    view, messages = views[0], received[0]
    honest = view.half[view.honest_mask]
    expected = honest.mean(0) - z * honest.std(0, unbiased=False)
    for b in view.byzantine:
        torch.testing.assert_close(messages[b], expected)


def test_ipm_and_sign_flip_formulas():
    _, views, received = _spy(Scenario(attack="ipm", attack_params={"epsilon": 2.0}, byzantine=2, nodes=8, rounds=2))
    v, m = views[0], received[0]
    h = v.honest_mask
    torch.testing.assert_close(m[v.byzantine[0]], v.theta[h].mean(0) - 2.0 * v.delta[h].mean(0))
    _, views, received = _spy(Scenario(attack="sign_flip", byzantine=2, nodes=8, rounds=2))
    assert torch.equal(received[0][views[0].byzantine], -views[0].half[views[0].byzantine])


def test_dissensus_without_push_sends_its_receivers_mean():
    _, views, received = _spy(
        Scenario(attack="dissensus", attack_params={"epsilon": 0.0}, byzantine=1, nodes=8, rounds=1, topology="ring")
    )
    v, m = views[0], received[0]
    b = int(v.byzantine[0])
    receivers = [j for j in range(8) if v.mixing.weights[j, b] > 0 and j != b]
    torch.testing.assert_close(m[b], v.half[receivers].mean(0))


@pytest.mark.parametrize("name,params", [("gaussian", {"std": 0.5}), ("label_flip", {}), ("gradient_scale", {})])
def test_attacks_hurt_plain_gossip(name, params):
    clean = Simulation.from_scenario(Scenario(byzantine=4, rounds=60, seed=1)).run()
    attacked = Simulation.from_scenario(
        Scenario(byzantine=4, rounds=60, seed=1, attack=name, attack_params=params)
    ).run()
    assert attacked.final_accuracy_mean < clean.final_accuracy_mean
    assert np.isfinite(attacked.curve[-1].loss_mean) or attacked.diverged
