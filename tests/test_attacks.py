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


def test_a_simulation_run_twice_poisons_the_clean_labels_once_and_gives_the_same_result():
    sim = Simulation.from_scenario(Scenario(attack="label_flip", byzantine=3, nodes=8, rounds=12, eval_every=6))
    clean = sim.setup.data.train_labels.clone()
    first = sim.run()
    flipped = sim.setup.data.train_labels.clone()
    second = sim.run()  # the reverse rule applied to already flipped labels would undo the poisoning
    assert torch.equal(sim.setup.data.train_labels, flipped) and not torch.equal(flipped, clean)
    assert repr((first.curve, first.suspicion)) == repr((second.curve, second.suspicion))


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


def test_label_flip_shift_rule_maps_each_label_to_the_next_class():
    sim = Simulation.from_scenario(
        Scenario(attack="label_flip", attack_params={"rule": "shift"}, byzantine=2, nodes=8, rounds=1)
    )
    before = sim.setup.data.train_labels.clone()
    sim.run()
    for k in sim.setup.byzantine.tolist():
        n = int(sim.setup.data.train_count[k])
        assert torch.equal(sim.setup.data.train_labels[k, :n], (before[k, :n] + 1) % 10)


def test_free_rider_camouflage_noise_has_the_asked_scale_and_is_seeded():
    scenario = Scenario(attack="free_ride", attack_params={"noise": 0.05}, byzantine=2, nodes=8, rounds=2)
    _, views, received = _spy(scenario)
    _, _, again = _spy(scenario)
    for view, messages, repeat in zip(views, received, again, strict=True):
        b = view.byzantine
        noise = messages[b] - view.theta[b]
        assert float(noise.mean().abs()) < 0.01
        assert float(noise.std()) == pytest.approx(0.05, rel=0.05)
        assert not torch.equal(noise[0], noise[1])  # each free rider draws its own noise
        assert torch.equal(messages, repeat)


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


def test_alie_with_an_explicit_z_uses_it_instead_of_the_papers():
    _, views, received = _spy(Scenario(attack="alie", attack_params={"z": 2.5}, byzantine=3, nodes=16, rounds=1))
    view, messages = views[0], received[0]
    honest = view.half[view.honest_mask]
    expected = honest.mean(0) - 2.5 * honest.std(0, unbiased=False)
    for b in view.byzantine:
        torch.testing.assert_close(messages[b], expected)


def test_ipm_and_sign_flip_formulas():
    _, views, received = _spy(Scenario(attack="ipm", attack_params={"epsilon": 2.0}, byzantine=2, nodes=8, rounds=2))
    v, m = views[0], received[0]
    h = v.honest_mask
    torch.testing.assert_close(m[v.byzantine[0]], v.theta[h].mean(0) - 2.0 * v.delta[h].mean(0))
    _, views, received = _spy(Scenario(attack="sign_flip", byzantine=2, nodes=8, rounds=2))
    assert torch.equal(received[0][views[0].byzantine], -views[0].half[views[0].byzantine])


def test_same_value_sends_the_constant_model_and_honest_rows_are_untouched():
    _, views, received = _spy(
        Scenario(attack="same_value", attack_params={"value": 7.5}, byzantine=2, nodes=8, rounds=2)
    )
    for view, messages in zip(views, received, strict=True):
        assert torch.equal(messages[view.byzantine], torch.full_like(messages[view.byzantine], 7.5))
        assert torch.equal(messages[view.honest_mask], view.half[view.honest_mask])


def test_dissensus_without_push_sends_its_receivers_mean():
    _, views, received = _spy(
        Scenario(attack="dissensus", attack_params={"epsilon": 0.0}, byzantine=1, nodes=8, rounds=1, topology="ring")
    )
    v, m = views[0], received[0]
    b = int(v.byzantine[0])
    receivers = [j for j in range(8) if v.mixing.weights[j, b] > 0 and j != b]
    torch.testing.assert_close(m[b], v.half[receivers].mean(0))


@pytest.mark.parametrize("topology", ["erdos_renyi", "torus", "star"])
def test_dissensus_sends_the_papers_target_averaged_over_its_honest_receivers(topology):
    """He, Karimireddy, Jaggi: for honest receiver j, half_j - epsilon * sum_{k honest} W_jk (half_k - half_j) /
    sum_{b Byzantine} W_jb, by a plain loop over receivers and senders; a Byzantine node averages it over its
    honest out-neighbours."""
    scenario = Scenario(attack="dissensus", attack_params={"epsilon": 1.5}, byzantine=3, nodes=9, rounds=2)
    _, views, received = _spy(scenario.replace(topology=topology, dtype="float64"))
    for v, m in zip(views, received, strict=True):
        w, half, n = v.mixing.weights, v.half.numpy(), 9
        byzantine = {int(b) for b in v.byzantine}
        honest = [j for j in range(n) if j not in byzantine]

        target = {}
        for j in honest:
            pull = sum(w[j, k] * (half[k] - half[j]) for k in honest if k != j)
            target[j] = half[j] - 1.5 * pull / max(sum(w[j, b] for b in byzantine), 1e-12)
        for b in byzantine:
            receivers = [j for j in honest if w[j, b] > 0]
            expected = np.mean([target[j] for j in receivers], axis=0) if receivers else half[b]
            np.testing.assert_allclose(m[b].numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,params", [("gaussian", {"std": 0.5}), ("label_flip", {}), ("gradient_scale", {})])
def test_attacks_hurt_plain_gossip(name, params):
    clean = Simulation.from_scenario(Scenario(byzantine=4, rounds=60, seed=1)).run()
    attacked = Simulation.from_scenario(
        Scenario(byzantine=4, rounds=60, seed=1, attack=name, attack_params=params)
    ).run()
    assert attacked.final_accuracy_mean < clean.final_accuracy_mean
    assert np.isfinite(attacked.curve[-1].loss_mean) or attacked.diverged


def _bisect_gamma(feasible, iterations=200):
    """The paper's search for gamma, by plain bisection: the largest gamma for which ``feasible`` holds."""
    lo, hi = 0.0, 1.0
    while feasible(hi):
        lo, hi = hi, 2.0 * hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_max_and_min_sum_gamma_equal_the_papers_bisection(seed):
    from robustbench_dice.attacks.min_max import min_max_gamma, min_sum_gamma

    gen = torch.Generator().manual_seed(seed)
    models = torch.randn(7, 30, generator=gen, dtype=torch.float64) * torch.rand(30, generator=gen, dtype=torch.float64)
    direction = -models.std(0, unbiased=False)
    mu = models.mean(0)
    diameter = torch.cdist(models, models).max()
    sum_bound = torch.cdist(models, models).square().sum(1).max()

    def max_ok(g):
        return bool(torch.cdist((mu + g * direction)[None], models).max() <= diameter)

    def sum_ok(g):
        return bool(torch.cdist((mu + g * direction)[None], models).square().sum() <= sum_bound)

    g_max, g_sum = float(min_max_gamma(models, direction)), float(min_sum_gamma(models, direction))
    assert g_max == pytest.approx(_bisect_gamma(max_ok), rel=1e-9)
    assert g_sum == pytest.approx(_bisect_gamma(sum_ok), rel=1e-9)
    assert g_max > 0 and g_sum > 0
    # each constraint is tight at its gamma
    assert float(torch.cdist((mu + g_max * direction)[None], models).max()) == pytest.approx(float(diameter))
    assert float(torch.cdist((mu + g_sum * direction)[None], models).square().sum()) == pytest.approx(float(sum_bound))
    assert float(min_max_gamma(models, torch.zeros(30, dtype=torch.float64))) == 0.0  # no direction, no push


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
def test_min_max_family_sends_the_mean_of_its_reference_pushed_along_p(name):
    from robustbench_dice.attacks.min_max import min_max_gamma, min_sum_gamma

    gamma = min_max_gamma if name == "min_max" else min_sum_gamma
    _, views, received = _spy(
        Scenario(attack=name, attack_params={"reference": "all"}, byzantine=3, nodes=8, rounds=2, topology="complete")
    )
    v, m = views[1], received[1]
    honest = v.half[v.honest_mask]
    p = -honest.std(0, unbiased=False)
    expected = honest.mean(0) + gamma(honest, p) * p
    for b in v.byzantine:
        torch.testing.assert_close(m[b], expected)
    assert not torch.allclose(expected, honest.mean(0))


@pytest.mark.parametrize(
    "kind,direction",
    [
        ("unit", lambda update: -update / update.norm()),
        ("sign", lambda update: -update.sign()),
    ],
)
def test_min_max_update_perturbations_point_against_the_honest_mean_update(kind, direction):
    from robustbench_dice.attacks.min_max import min_max_gamma

    _, views, received = _spy(
        Scenario(
            attack="min_max",
            attack_params={"reference": "all", "perturbation": kind},
            byzantine=3,
            nodes=8,
            rounds=2,
            topology="complete",
        )
    )
    v, m = views[1], received[1]
    honest = v.half[v.honest_mask]
    p = direction(v.delta[v.honest_mask].mean(0))
    expected = honest.mean(0) + min_max_gamma(honest, p) * p
    for b in v.byzantine:
        torch.testing.assert_close(m[b], expected)
    assert not torch.allclose(expected, honest.mean(0))


def test_min_max_reference_is_the_closed_neighbourhoods_of_its_receivers():
    from robustbench_dice.attacks.min_max import perturbation, reference_masks

    _, views, received = _spy(
        Scenario(
            attack="min_max", attack_params={"perturbation": "unit"}, byzantine=1, nodes=10, rounds=1, topology="ring"
        )
    )
    v, m = views[0], received[0]
    b = int(v.byzantine[0])
    expected = {(b + s) % 10 for s in (-2, -1, 1, 2)}  # receivers b +- 1 and their own neighbours, b excluded
    (mask,) = reference_masks(v, "neighbourhoods")
    assert set(mask.nonzero().flatten().tolist()) == expected
    direction = perturbation(v, mask, "unit")
    torch.testing.assert_close(direction, -v.delta[mask].mean(0) / v.delta[mask].mean(0).norm())
    assert float(torch.cdist(m[b][None], v.half[mask]).max()) == pytest.approx(
        float(torch.cdist(v.half[mask], v.half[mask]).max()), rel=1e-4
    )


@pytest.mark.parametrize("params", [{"perturbation": "inverse"}, {"reference": "global"}])
def test_min_max_bad_parameters_name_the_accepted_ones(params):
    from robustbench_dice.registry import build_attack

    with pytest.raises(ValueError, match="must be one of"):
        build_attack("min_max", params)


def _spy_reported(scenario):
    """Run and record, per round, the attack's view and the messages and displacements the defense received."""
    sim = Simulation.from_scenario(scenario)
    views, received = [], []
    attack_messages, aggregate = sim.attack.messages, sim.defense.aggregate
    sim.attack.messages = lambda view: views.append(view) or attack_messages(view)
    sim.defense.aggregate = lambda v: received.append((v.messages.clone(), v.reported_delta.clone())) or aggregate(v)
    sim.run()
    return sim, views, received


def _mimic_targets_by_the_papers_loop(views, warmup, start, reference=lambda view: view.honest_mask):
    """Karimireddy et al.'s MimicVariant, written as their per-worker loop: online power iteration for ``warmup``
    rounds, each round the honest worker furthest along z, then that worker for good. ``reference(view)``: the
    ``(N,)`` mask of the workers it watches."""
    targets, mean, z, target = [], None, None, None
    for t, view in enumerate(views):
        if t < warmup:
            ranks = [i for i in range(view.delta.shape[0]) if bool(reference(view)[i])]
            updates = [view.delta[i] for i in ranks]
            average = sum(updates) / len(updates)
            if t == 0:
                mean, z = average, start
            else:
                mean = t / (1 + t) * mean + average / (1 + t)
            cumulative = 0
            for u in updates:
                cumulative = cumulative + (u - mean).dot(z) * (u - mean)
            power = cumulative / cumulative.norm()
            z = power if t == 0 else t / (1 + t) * z + power / (1 + t)
            z = z / z.norm()
            scores = [float(u.dot(z)) for u in updates]
            target = ranks[scores.index(max(scores))]
        targets.append(target)
    return targets


def test_mimic_sends_and_reports_the_target_chosen_by_the_papers_power_iteration():
    scenario = Scenario(
        attack="mimic", attack_params={"warmup": 4}, byzantine=3, nodes=10, rounds=9, partition="dirichlet", seed=2
    )
    sim, views, received = _spy_reported(scenario)
    width = views[0].delta.shape[1]
    start = torch.randn(width, generator=torch.Generator().manual_seed(sim.setup.seeds["attack"]))
    targets = _mimic_targets_by_the_papers_loop(views, 4, start.to(views[0].delta.dtype))
    assert len(set(targets[3:])) == 1  # fixed once the warm-up is over
    assert len(set(targets)) > 1  # on this seed the warm-up target moves, so the running averages are exercised
    for view, target, (messages, reported) in zip(views, targets, received, strict=True):
        b, honest = view.byzantine, view.honest_mask
        assert bool(honest[target])
        for row in b:
            assert torch.equal(messages[row], view.half[target])
            assert torch.equal(reported[row], view.delta[target])
        assert torch.equal(messages[honest], view.half[honest])
        assert torch.equal(view.delta[b], torch.zeros_like(view.delta[b]))  # it does no local work


def test_mimic_picks_an_extreme_node_along_the_one_direction_honest_updates_differ_in():
    from robustbench_dice.attacks.mimic import Mimic

    from robustbench_dice.plugins import AttackView

    gen = torch.Generator().manual_seed(3)
    along = torch.tensor([0.3, -1.2, 0.7, 2.5, -0.4, 0.0], dtype=torch.float64)  # honest nodes 0-5; 6, 7 Byzantine
    axis = torch.randn(20, generator=gen, dtype=torch.float64)
    common = torch.randn(20, generator=gen, dtype=torch.float64)
    delta = torch.cat([common + along[:, None] * axis, torch.zeros(2, 20, dtype=torch.float64)])
    theta = torch.randn(8, 20, generator=gen, dtype=torch.float64)
    view = AttackView(0, 10, torch.tensor([6, 7]), theta, theta + delta, delta, None, None, gen)  # type: ignore[arg-type]
    attack = Mimic(warmup=1)
    sent = attack.messages(view)
    (target,) = attack._targets
    # the scatter matrix has rank one, so one power step from any start gives z = +-axis: the target is node 3 or 1
    assert target in (int(along.argmax()), int(along.argmin()))
    assert torch.equal(sent, (theta + delta)[[target, target]])


def test_mimic_per_neighbourhood_tracks_its_own_direction_over_its_receivers_neighbourhoods():
    from robustbench_dice.attacks.min_max import reference_masks

    scenario = Scenario(
        attack="mimic",
        attack_params={"warmup": 3, "reference": "neighbourhoods"},
        byzantine=2,
        nodes=12,
        rounds=6,
        topology="ring",
        partition="dirichlet",
        seed=1,
    )
    sim, views, received = _spy_reported(scenario)
    generator = torch.Generator().manual_seed(sim.setup.seeds["attack"])
    width, dtype = views[0].delta.shape[1], views[0].delta.dtype
    starts = [torch.randn(width, generator=generator).to(dtype) for _ in views[0].byzantine]  # one draw per node
    chosen = []
    for i, b in enumerate(views[0].byzantine.tolist()):
        targets = _mimic_targets_by_the_papers_loop(
            views, 3, starts[i], lambda view, i=i: reference_masks(view, "neighbourhoods")[i]
        )
        neighbourhood = reference_masks(views[0], "neighbourhoods")[i]
        assert all(bool(neighbourhood[t]) for t in targets)  # on a ring: b's receivers and their neighbours
        for view, target, (messages, reported) in zip(views, targets, received, strict=True):
            assert torch.equal(messages[b], view.half[target]) and torch.equal(reported[b], view.delta[target])
        chosen.append(targets[-1])
    assert len(set(chosen)) == 2  # nodes 1 and 4 of the ring: their neighbourhoods differ, and so do their targets


def test_mimic_bad_parameters_are_errors():
    from robustbench_dice.registry import build_attack

    with pytest.raises(ValueError, match="warmup must be >= 1 round, got 0"):
        build_attack("mimic", {"warmup": 0})
    with pytest.raises(ValueError, match="reference must be one of neighbourhoods, all, got 'global'"):
        build_attack("mimic", {"reference": "global"})
