import pytest
import torch
import torch.nn.functional as F

from robustbench_dice import Scenario
from robustbench_dice.dice import (
    EDGE_PRODUCTS_MIN_NODES,
    Probe,
    Window,
    dice_estimate,
    dice_ground_truth,
    influence_weights,
    probe_curvature_term,
    proximal_influence,
    unroll,
)
from robustbench_dice.functional import per_node_hvp
from robustbench_dice.influence import poisons_data_only, probe_from_test_set, record_windows
from robustbench_dice.models import build_model
from robustbench_dice.setup import prepare

HORIZON = 3


def _windows(model, topology, weight_decay=0.0):
    scenario = Scenario(
        model=model,
        topology=topology,
        nodes=6,
        rounds=12,
        batch_size=8,
        lr=0.1,
        momentum=0.0,
        weight_decay=weight_decay,
        dtype="float64",
        seed=1,
        eval_every=12,
    )
    return record_windows(scenario, [4], HORIZON)


def _unrolled_reference(model, window, source, probe, horizon, removal="batch"):
    """The r-round map from node ``source``'s half step to every node's probe loss, written plainly, and its JVP
    along the change of that half step in the counterfactual world (no step, or a step without sample 0)."""
    n = window.theta.shape[0]
    x0, y0 = window.batches[0]

    def step(theta_k, x, y):
        loss = F.cross_entropy(model.forward_single(theta_k, x), y)
        (g,) = torch.autograd.grad(loss, theta_k, create_graph=True)
        return theta_k - window.lr * (g + window.weight_decay * theta_k)

    half0 = [step(window.theta[k].clone().requires_grad_(True), x0[k], y0[k]).detach() for k in range(n)]
    theta_j = window.theta[source].clone().requires_grad_(True)
    counterfactual = window.theta[source] if removal == "batch" else step(theta_j, x0[source, 1:], y0[source, 1:])

    def f(u):
        half = [u if k == source else half0[k] for k in range(n)]
        theta = [sum(window.weights[0][j, k] * half[k] for k in range(n)) for j in range(n)]
        for s in range(1, horizon):
            x, y = window.batches[s]
            half = [step(theta[k], x[k], y[k]) for k in range(n)]
            theta = [sum(window.weights[s][j, k] * half[k] for k in range(n)) for j in range(n)]
        return torch.stack([F.cross_entropy(model.forward_single(theta[k], probe.x), probe.y) for k in range(n)])

    _, jvp = torch.autograd.functional.jvp(f, half0[source], counterfactual.detach() - half0[source])
    return jvp


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])  # the CNN: torch.func's HVPs, no hand-written pass
@pytest.mark.parametrize("topology", ["ring", "one_peer_exponential"])
def test_estimate_equals_jvp_of_unrolled_training(model, topology):
    _estimate_equals_jvp_of_unrolled_training(model, topology)


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_estimate_of_removing_one_sample_equals_jvp_of_unrolled_training(model):
    _estimate_equals_jvp_of_unrolled_training(model, "one_peer_exponential", removal="sample")


@pytest.mark.parametrize("model", ["mlp", "cnn"])  # the hand-written HVPs and torch.func's
def test_estimate_is_the_same_with_products_on_reached_rows_only_or_on_every_row(model, monkeypatch):
    import robustbench_dice.dice as dice

    sim, (window,) = _windows(model, "ring")
    probe = probe_from_test_set(sim, 50)
    estimates = []
    for share in (0.0, 1.0):  # every row's products / only the reached rows', at every step
        monkeypatch.setattr(dice, "REACHED_ROWS_SHARE", share)
        estimates.append(dice_estimate(sim.setup.model, window, torch.arange(6), probe, HORIZON))
    torch.testing.assert_close(estimates[1], estimates[0], rtol=1e-12, atol=1e-18)
    assert (estimates[0][0] == 0).sum() == 6 * 3  # r = 1 on the ring: 3 of each source's 6 receivers not reached


def test_estimate_equals_jvp_of_unrolled_training_for_a_plugin_module_model(restore_registry):
    from pathlib import Path

    from robustbench_dice.registry import load_plugin_file

    load_plugin_file(Path(__file__).parents[1] / "docs" / "examples" / "small_convnet.py")
    _estimate_equals_jvp_of_unrolled_training("small_convnet", "one_peer_exponential")


def _estimate_equals_jvp_of_unrolled_training(model, topology, removal="batch"):
    sim, (window,) = _windows(model, topology, weight_decay=1e-3)
    probe = probe_from_test_set(sim, 50)
    sources = torch.tensor([0, 3])
    estimate = dice_estimate(sim.setup.model, window, sources, probe, HORIZON, removal=removal)
    for r in range(1, HORIZON + 1):
        for i, j in enumerate(sources.tolist()):
            reference = _unrolled_reference(sim.setup.model, window, j, probe, r, removal)
            torch.testing.assert_close(estimate[r - 1, i], reference, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("attack", ["none", "label_flip"])
def test_replayed_window_matches_the_engine_trajectory(attack):
    # under label flipping the Byzantine nodes still take SGD steps (on flipped labels), so windows replay the run
    byzantine = 0 if attack == "none" else 2
    scenario = Scenario(
        nodes=6,
        rounds=8,
        batch_size=8,
        momentum=0.0,
        dtype="float64",
        topology="torus",
        eval_every=8,
        attack=attack,
        byzantine=byzantine,
    )
    sim, (window,) = record_windows(scenario, [5], 3)
    states = unroll(sim.setup.model, window, 3)
    torch.testing.assert_close(states[-1], sim.final_theta, rtol=1e-12, atol=1e-12)
    if attack == "label_flip":  # the Byzantine rows' recorded labels are the flipped ones: C - 1 - y
        flipped = sim.setup.data.train_labels[sim.setup.byzantine]
        assert not torch.equal(flipped, prepare(scenario).data.train_labels[sim.setup.byzantine])


@pytest.mark.parametrize("attack", ["sign_flip", "alie", "free_ride"])
def test_windows_refuse_attacks_that_rewrite_messages(attack):
    from robustbench_dice.errors import ConfigError

    assert poisons_data_only("label_flip") and poisons_data_only("none") and not poisons_data_only(attack)
    with pytest.raises(ConfigError, match=f"only poisons data \\(e.g. label_flip\\); got attack '{attack}'"):
        record_windows(Scenario(momentum=0.0, rounds=5, attack=attack, byzantine=2), [1], 2)


@pytest.mark.parametrize("removal", ["batch", "sample"])
def test_quadratic_loss_estimate_is_exact(removal):
    torch.manual_seed(0)
    n, b, d, c = 5, 6, 8, 3
    model = build_model("logreg", (d,), c)
    w = torch.rand(n, n, dtype=torch.float64) + torch.eye(n, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True)
    batches = tuple((torch.randn(n, b, d, dtype=torch.float64), torch.randint(0, c, (n, b))) for _ in range(HORIZON))
    window = Window(
        0,
        torch.randn(n, model.num_params, dtype=torch.float64) * 0.1,
        batches,
        (w, w.flip(0), w),
        lr=0.3,
        weight_decay=0.01,
    )
    probe = Probe(torch.randn(20, d, dtype=torch.float64), torch.randint(0, c, (20,)))
    sources = torch.arange(n)
    # quadratic training loss: each step is affine, so the propagated perturbation is exact; a probe
    # functional linear in theta then makes the first-order estimate the exact counterfactual difference
    kinds = dict(loss="squared", probe_loss_kind="linear", removal=removal)
    estimate = dice_estimate(model, window, sources, probe, HORIZON, **kinds)
    truth = dice_ground_truth(model, window, sources, probe, HORIZON, **kinds)
    assert truth.abs().max() > (1e-3 if removal == "batch" else 1e-4)
    torch.testing.assert_close(estimate, truth, rtol=1e-6, atol=1e-10)
    without_curvature = dice_estimate(model, window, sources, probe, HORIZON, curvature=False, **kinds)
    torch.testing.assert_close(without_curvature[0], truth[0], rtol=1e-6, atol=1e-10)  # no curvature at r = 1
    assert (without_curvature[2] - truth[2]).abs().max() > 1e-4  # ...but it matters from r = 2
    # with a quadratic probe loss the gap is exactly the second-order term of the probe loss
    squared = dice_ground_truth(model, window, sources, probe, 1, loss="squared", removal=removal)
    first_order = dice_estimate(model, window, sources, probe, 1, loss="squared", removal=removal)
    assert torch.all(squared - first_order >= -1e-12)  # 0.5 * d^T H d >= 0 for this convex probe loss
    second = probe_curvature_term(model, window, sources, probe, loss="squared", removal=removal)
    assert second.abs().max() > (1e-4 if removal == "batch" else 1e-6)
    torch.testing.assert_close(first_order[0] + second, squared[0], rtol=1e-9, atol=1e-12)


def test_r1_gap_of_the_mlp_is_the_probe_losss_second_order_term():
    sim, (window,) = _windows("mlp", "one_peer_exponential")
    probe = probe_from_test_set(sim, 200)
    model, sources = sim.setup.model, torch.arange(6)
    truth = dice_ground_truth(model, window, sources, probe, 1)[0]
    gap = truth - dice_estimate(model, window, sources, probe, 1)[0]
    remainder = gap - probe_curvature_term(model, window, sources, probe)
    assert gap.norm() > 1e-3 * truth.norm()  # first order alone leaves a visible gap here...
    # ...and its leading term accounts for most of it (measured: 0.11 here; a wrong sign or scale gives >= 0.5)
    assert remainder.norm() < 0.25 * gap.norm()


@pytest.mark.parametrize("sources_per_chunk", [1, 4, None])
def test_results_do_not_depend_on_how_sources_are_chunked(sources_per_chunk, monkeypatch):
    import robustbench_dice.dice as dice

    sim, (window,) = _windows("mlp", "one_peer_exponential")
    probe = probe_from_test_set(sim, 40)
    model, sources = sim.setup.model, torch.tensor([5, 0, 3, 1, 4, 2])  # any order; 4 leaves an uneven last chunk
    chunked = dict(sources_per_chunk=sources_per_chunk)
    if sources_per_chunk is None:  # the automatic size, made small enough to split these 6 sources
        monkeypatch.setattr(dice, "CHUNK_BYTES", 2 * window.theta.numel() * window.theta.element_size())
    for fn, kwargs in (
        (dice_estimate, dict(horizon=HORIZON)),
        (dice_estimate, dict(horizon=HORIZON, curvature=False)),
        (dice_ground_truth, dict(horizon=HORIZON)),
        (dice_estimate, dict(horizon=HORIZON, removal="sample")),
        (dice_ground_truth, dict(horizon=HORIZON, removal="sample")),
        (probe_curvature_term, {}),
    ):
        whole = fn(model, window, sources, probe, **kwargs, sources_per_chunk=len(sources))
        parts = fn(model, window, sources, probe, **kwargs, **chunked)
        assert parts.shape == whole.shape
        torch.testing.assert_close(parts, whole, rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match="sources_per_chunk must be >= 1 or None"):
        dice_estimate(model, window, sources, probe, 1, sources_per_chunk=0)


def test_ground_truth_is_a_real_counterfactual():
    sim, (window,) = _windows("logreg", "ring")
    probe = probe_from_test_set(sim, 40)
    truth = dice_ground_truth(sim.setup.model, window, torch.tensor([2]), probe, HORIZON)
    states = unroll(sim.setup.model, window, 1)
    removed = window.theta.clone()
    x0, y0 = window.batches[0]
    from robustbench_dice.functional import per_node_grad, per_node_loss

    half = window.theta - window.lr * per_node_grad(sim.setup.model, window.theta, x0, y0)
    half[2] = window.theta[2]
    removed = window.weights[0] @ half
    expected = per_node_loss(sim.setup.model, removed, probe.x, probe.y) - per_node_loss(
        sim.setup.model, states[1], probe.x, probe.y
    )
    torch.testing.assert_close(truth[0, 0], expected)
    ring_neighbours = {1, 2, 3}
    assert all(truth[0, 0, k] == 0 for k in range(6) if k not in ring_neighbours)  # one hop reaches neighbours only


@pytest.mark.parametrize("topology", ["ring", "one_peer_exponential"])
def test_ground_truth_of_every_source_equals_a_plain_re_run_per_source(topology):
    """All sources and hops at once (only the nodes a source reaches are re-run) against one full re-run of the
    whole window per source, every node stepping; unreached receivers are exactly 0."""
    from robustbench_dice.functional import per_node_grad, per_node_loss

    sim, (window,) = _windows("mlp", topology, weight_decay=1e-3)
    model, probe = sim.setup.model, probe_from_test_set(sim, 40)
    truth = dice_ground_truth(model, window, torch.arange(6), probe, HORIZON)
    factual = unroll(model, window, HORIZON)
    for source in range(6):
        theta, reached = window.theta.clone(), {source}
        for s in range(HORIZON):
            x, y = window.batches[s]
            half = theta - window.lr * (per_node_grad(model, theta, x, y) + window.weight_decay * theta)
            if s == 0:
                half[source] = theta[source]  # its batch at round t removed: no step
            theta = window.weights[s] @ half
            reached = {k for k in range(6) for j in reached if window.weights[s][k, j] != 0}
            expected = per_node_loss(model, theta, probe.x, probe.y) - per_node_loss(
                model, factual[s + 1], probe.x, probe.y
            )
            torch.testing.assert_close(truth[s, source], expected, rtol=1e-9, atol=1e-15)
            assert all(truth[s, source, k] == 0 for k in range(6) if k not in reached)
            if s == 0:  # one hop leaves receivers unreached on both graphs: the shortcut is exercised
                assert len(reached) < 6


def test_removing_one_sample_re_runs_the_source_on_the_rest_of_its_batch():
    from robustbench_dice.functional import per_node_grad, per_node_loss

    sim, (window,) = _windows("logreg", "ring", weight_decay=1e-3)
    model, probe = sim.setup.model, probe_from_test_set(sim, 40)
    truth = dice_ground_truth(model, window, torch.tensor([2, 4]), probe, HORIZON, removal="sample")
    theta = window.theta.clone()
    for s in range(HORIZON):
        x, y = window.batches[s]
        half = theta - window.lr * (per_node_grad(model, theta, x, y) + window.weight_decay * theta)
        if s == 0:  # node 4 learns from samples 1 .. B-1 of its batch only
            rest = per_node_grad(model, theta[4:5], x[4:5, 1:], y[4:5, 1:])[0]
            half[4] = theta[4] - window.lr * (rest + window.weight_decay * theta[4])
        theta = window.weights[s] @ half
        factual = unroll(model, window, s + 1)[-1]
        expected = per_node_loss(model, theta, probe.x, probe.y) - per_node_loss(model, factual, probe.x, probe.y)
        torch.testing.assert_close(truth[s, 1], expected)
    batch_removed = dice_ground_truth(model, window, torch.tensor([4]), probe, 1)
    assert 0 < truth[0, 1].abs().max() < 0.5 * batch_removed.abs().max()  # one sample of 8 moves less than all 8


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")
def test_proximal_influence_equals_per_pair_formula():
    torch.manual_seed(0)
    n, p = 7, 11
    g, delta = torch.randn(n, p), torch.randn(n, p)
    w = torch.rand(n, n) * (torch.rand(n, n) > 0.5)
    for weights in (w, w.to_sparse_csr()):
        prox = proximal_influence(g, delta, weights)
        assert prox.layout == torch.strided and prox.shape == (n, n)
        for j in range(n):
            for k in range(n):
                expected = -float(w[j, k]) * float(g[j] @ delta[k])
                assert prox[j, k].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")
def test_influence_weights_take_edge_products_only_on_large_sparse_graphs():
    def ring(n: int) -> torch.Tensor:
        eye = torch.eye(n)
        return (eye + eye.roll(1, 0) + eye.roll(-1, 0)) / 3

    assert influence_weights(ring(EDGE_PRODUCTS_MIN_NODES)).layout == torch.sparse_csr
    assert influence_weights(ring(EDGE_PRODUCTS_MIN_NODES - 1)).layout == torch.strided  # too few rows
    assert influence_weights(torch.full((64, 64), 1 / 64)).layout == torch.strided  # complete graph: too dense
    csr = ring(64).to_sparse_csr()
    assert influence_weights(csr) is csr
    torch.testing.assert_close(influence_weights(ring(64)).to_dense(), ring(64), rtol=0, atol=0)


@pytest.mark.parametrize(
    "test_grad,delta,weights,message",
    [
        ((7,), (5, 7), (5, 5), "got test_grad \\(7,\\), delta \\(5, 7\\)"),  # would broadcast silently
        ((5, 7), (5, 6), (5, 5), "one shape \\(N, P\\)"),
        ((5, 7), (5, 7), (4, 4), "weights \\(4, 4\\)"),
        ((5, 7), (5, 7), (5,), "weights \\(5,\\)"),
    ],
)
def test_proximal_influence_names_inputs_that_do_not_fit(test_grad, delta, weights, message):
    with pytest.raises(ValueError, match=message):
        proximal_influence(torch.randn(test_grad), torch.randn(delta), torch.rand(weights))
    with pytest.raises(ValueError, match="one dtype; got test_grad torch.float32, delta torch.float64"):
        proximal_influence(torch.randn(5, 7), torch.randn(5, 7, dtype=torch.float64), torch.rand(5, 5))


def test_hvp_is_vectorised_over_tangents():
    torch.manual_seed(0)
    model = build_model("mlp", (10,), 4, hidden=(6,))
    theta = model.init(3, torch.Generator().manual_seed(0), same=False).double()
    x, y = torch.randn(3, 5, 10, dtype=torch.float64), torch.randint(0, 4, (3, 5))
    tangents = torch.randn(2, 3, model.num_params, dtype=torch.float64)
    hv = per_node_hvp(model, theta, x, y, tangents)
    for s in range(2):
        for k in range(3):
            leaf = theta[k].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model.forward_single(leaf, x[k]), y[k]), leaf, create_graph=True)
            (expected,) = torch.autograd.grad(g @ tangents[s, k], leaf)
            torch.testing.assert_close(hv[s, k], expected)


def test_bad_inputs():
    sim, (window,) = _windows("logreg", "ring")
    probe = probe_from_test_set(sim, 10)
    with pytest.raises(ValueError, match="horizon must be in \\[1, 3\\]"):
        dice_estimate(sim.setup.model, window, torch.tensor([0]), probe, 4)
    with pytest.raises(ValueError, match="sources must be node indices in \\[0, 6\\)"):
        dice_ground_truth(sim.setup.model, window, torch.tensor([6]), probe, 1)
    with pytest.raises(ValueError, match="removal must be one of batch, sample, got 'point'"):
        dice_estimate(sim.setup.model, window, torch.tensor([0]), probe, 1, removal="point")
    single = Window(
        window.round, window.theta, tuple((x[:, :1], y[:, :1]) for x, y in window.batches), window.weights, window.lr
    )
    with pytest.raises(ValueError, match="removal='sample' needs batches of at least 2 samples"):
        dice_ground_truth(sim.setup.model, single, torch.tensor([0]), probe, 1, removal="sample")
    model = sim.setup.model
    # a list is accepted as sources; floats, 2-D, a probe of another dtype or an empty one are errors, not tracebacks
    torch.testing.assert_close(
        dice_estimate(model, window, [0, 2], probe, 2), dice_estimate(model, window, torch.tensor([0, 2]), probe, 2)
    )
    with pytest.raises(ValueError, match="1-D sequence or tensor of node indices, got torch.float32 of shape \\(1,\\)"):
        dice_estimate(model, window, torch.tensor([0.0]), probe, 1)
    with pytest.raises(ValueError, match="got torch.int64 of shape \\(1, 2\\)"):
        dice_ground_truth(model, window, torch.tensor([[0, 1]]), probe, 1)
    other = Probe(probe.x.float(), probe.y)
    with pytest.raises(ValueError, match="probe set is torch.float32 on cpu but the window torch.float64 on cpu"):
        probe_curvature_term(model, window, [0], other)
    with pytest.raises(ValueError, match="the probe set z' is empty"):
        dice_estimate(model, window, [0], Probe(probe.x[:0], probe.y[:0]), 1)
    # a hand-built Window that does not fit together fails when built, not rounds later inside the propagation
    from dataclasses import replace

    n = window.theta.shape[0]
    for change, message in (
        (dict(theta=window.theta[0]), "Window.theta must be \\(N, P\\)"),
        (dict(weights=window.weights[:2]), "one mixing matrix per minibatch.*3 batches and 2 weights"),
        (dict(batches=(), weights=()), "at least one of each"),
        (
            dict(weights=(window.weights[0][:, :-1], *window.weights[1:])),
            f"weights\\[0\\] must be a dense \\({n}, {n}\\)",
        ),
        (dict(weights=(window.weights[0].float(), *window.weights[1:])), "of theta's dtype and device"),
        (dict(weights=(window.weights[0].to_sparse(), *window.weights[1:])), "got torch.sparse_coo"),
        (dict(batches=((window.batches[0][0][:-1], window.batches[0][1][:-1]), *window.batches[1:])), "with N = 6"),
        (dict(batches=((window.batches[0][0], window.batches[0][1][:, :-1]), *window.batches[1:])), "batches\\[0\\]"),
        (dict(lr=float("nan")), "lr must be finite and > 0, got nan"),
        (dict(weight_decay=-0.1), "weight_decay must be finite and >= 0, got -0.1"),
    ):
        with pytest.raises(ValueError, match=message):
            replace(window, **change)
    from robustbench_dice.errors import ConfigError

    with pytest.raises(ConfigError, match="size must be an integer in \\[1, "):
        probe_from_test_set(sim, 0)
    with pytest.raises(ConfigError, match="momentum=0"):
        record_windows(Scenario(momentum=0.9, rounds=5), [1], 2)
    # checked before training: a bad round or horizon used to fail with a KeyError / IndexError after it
    plain = Scenario(momentum=0.0, rounds=5)
    for rounds, horizon, message in (
        ([-1], 2, "rounds must be a non-empty list"),
        ([], 2, "got \\[\\]"),
        ([1], 0, "horizon must be an integer >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            record_windows(plain, rounds, horizon)
