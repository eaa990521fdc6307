import dataclasses

import numpy as np
import pytest
import torch

from robustbench_dice import Scenario, Simulation, simulate
from robustbench_dice.errors import ConfigError
from robustbench_dice.plugins import DefenseView
from robustbench_dice.registry import build_defense

N, P = 7, 5


def _complete_view(messages: torch.Tensor, round_index: int = 0) -> DefenseView:
    sim = Simulation.from_scenario(Scenario(nodes=N, topology="complete", mixing="uniform", rounds=10))
    rm = sim.mixing_at(0)
    zeros = torch.zeros_like(messages)
    return DefenseView(
        round_index,
        10,
        messages,
        zeros,
        messages,
        messages,
        rm.matrix,
        rm.weights,
        rm.neighbours,
        lambda t: torch.zeros(t.shape[0]),
        lambda t: torch.zeros_like(t),
    )


def textbook_krum_scores(v: np.ndarray, f: int) -> np.ndarray:
    """Each model's summed squared distances to its m - f - 2 nearest others."""
    scores = []
    for i in range(len(v)):
        d = sorted(float(((v[i] - v[j]) ** 2).sum()) for j in range(len(v)) if j != i)
        scores.append(sum(d[: len(v) - f - 2]))
    return np.array(scores)


def textbook_krum(v: np.ndarray, f: int) -> np.ndarray:
    return v[int(np.argmin(textbook_krum_scores(v, f)))]


def textbook_trimmed_mean(v: np.ndarray, b: int) -> np.ndarray:
    return np.sort(v, axis=0)[b : len(v) - b].mean(axis=0)


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(N, P))
    v[2] += 50.0  # an outlier
    return v


@pytest.mark.parametrize("f", [1, 2])
def test_krum_equals_textbook_on_complete_graph(vectors, f):
    out = build_defense("krum", {"f": f}).aggregate(_complete_view(torch.tensor(vectors)))
    for j in range(N):
        np.testing.assert_allclose(out.theta[j].numpy(), textbook_krum(vectors, f))


def test_median_equals_numpy_median(vectors):
    out = build_defense("median").aggregate(_complete_view(torch.tensor(vectors)))
    for j in range(N):
        np.testing.assert_allclose(out.theta[j].numpy(), np.median(vectors, axis=0))
    even = vectors[:6]
    sim_view = _complete_view(torch.tensor(np.vstack([even, even[:1]])))
    assert np.allclose(
        build_defense("median").aggregate(sim_view).theta[0].numpy(), np.median(np.vstack([even, even[:1]]), axis=0)
    )


@pytest.mark.parametrize("trim", [1, 2])
def test_trimmed_mean_equals_textbook(vectors, trim):
    out = build_defense("trimmed_mean", {"trim": trim}).aggregate(_complete_view(torch.tensor(vectors)))
    for j in range(N):
        np.testing.assert_allclose(out.theta[j].numpy(), textbook_trimmed_mean(vectors, trim))


def test_suspicion_ranks_the_outlier_first(vectors):
    for name in ("krum", "median", "trimmed_mean", "clipped_gossip", "balance", "geometric_median", "ios", "nnm"):
        out = build_defense(name).aggregate(_complete_view(torch.tensor(vectors)))
        view = _complete_view(torch.tensor(vectors))
        j = 0
        scores = {
            int(k): float(s)
            for k, s, m in zip(view.neighbours.index[j], out.suspicion[j], view.neighbours.mask[j], strict=True)
            if m
        }
        assert max(scores, key=scores.get) == 2, name


def test_clipped_gossip_with_large_radius_is_plain_gossip(vectors):
    view = _complete_view(torch.tensor(vectors))
    clipped = build_defense("clipped_gossip", {"tau": 1e9}).aggregate(view).theta
    torch.testing.assert_close(clipped, view.weights.to(clipped.dtype) @ view.messages, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 5, 33])
def test_krum_pairwise_distances_equal_the_broadcast_reference(m):
    from robustbench_dice.defenses.krum import pairwise_squared_distances

    candidates = torch.randn(4, m, 50, generator=torch.Generator().manual_seed(m))
    reference = (candidates.unsqueeze(2) - candidates.unsqueeze(1)).pow(2).sum(-1)  # the (N, M, M, P) loop-free form
    fast = pairwise_squared_distances(candidates)
    if m <= 32:
        assert torch.equal(fast, reference)  # same arithmetic per pair, bit for bit
    else:
        torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)


def test_krum_declines_small_neighbourhoods():
    result = simulate(Scenario(defense="krum", topology="ring", nodes=8, rounds=2))
    assert result.status == "skipped" and "needs more than 2f + 2 = 4 models" in result.reason
    assert result.final_accuracy_mean is None


@pytest.mark.parametrize("topology", ["ring", "torus", "exponential"])
def test_dice_prune_detects_label_flippers(topology):
    result = simulate(Scenario(attack="label_flip", byzantine=3, defense="dice_prune", topology=topology, seed=0))
    assert result.edge_auc >= 0.9 and result.node_auc >= 0.9
    assert result.final_accuracy_mean >= 0.9
    pruned_byzantine = sum(1 for _, k in result.pruned_edges if k in result.byzantine)
    assert pruned_byzantine > 0


def test_gossip_has_no_scores_so_auc_is_undefined():
    result = simulate(Scenario(attack="label_flip", byzantine=3, rounds=5))
    assert result.edge_auc is None and "emits none" in result.edge_auc_reason
    assert result.time_to_detection is None and "does not prune" in result.time_to_detection_reason


@pytest.mark.parametrize("topology", ["star", "ring"])  # padded slots (irregular) and none (regular)
def test_neighbour_messages_equal_the_slot_by_slot_definition(topology):
    sim = Simulation.from_scenario(Scenario(nodes=N, topology=topology, rounds=10))
    rm = sim.mixing_at(0)
    own = torch.randn(N, P, generator=torch.Generator().manual_seed(0))
    messages = own.clone()
    messages[0] = 100.0  # a Byzantine node's message differs from its own model: padded slots must hold the latter
    zeros = torch.zeros_like(own)
    view = DefenseView(0, 10, messages, zeros, own, own, rm.matrix, rm.weights, rm.neighbours, None, None)
    got = view.neighbour_messages()
    nb = rm.neighbours
    for j in range(N):
        for d in range(nb.max_degree):
            expected = messages[nb.index[j, d]] if nb.mask[j, d] else own[j]
            assert torch.equal(got[j, d], expected)
    assert view.neighbour_messages() is got  # gathered once per view
    assert bool(nb.mask.all()) == (topology == "ring")


def _view_on(topology: str, seed: int = 0, nodes: int = 9, width: int = 6) -> DefenseView:
    """A round-0 view on ``topology`` (Metropolis weights: unequal on irregular graphs) with random models."""
    sim = Simulation.from_scenario(Scenario(nodes=nodes, topology=topology, rounds=10, seed=seed))
    rm = sim.mixing_at(0)
    generator = torch.Generator().manual_seed(seed)
    own = torch.randn(nodes, width, generator=generator, dtype=torch.float64)
    messages = own + 0.1 * torch.randn(nodes, width, generator=generator, dtype=torch.float64)
    messages[1] += 30.0  # one far outlier among the messages
    zeros = torch.zeros_like(own)
    nb = rm.neighbours
    neighbours = type(nb)(nb.index, nb.weight.double(), nb.mask, nb.self_weight.double())
    return DefenseView(0, 10, messages, zeros, own, own, rm.matrix, rm.weights, neighbours, None, None)


def _neighbourhood(view: DefenseView, j: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Node j's candidate models (own first) and their mixing weights, in-neighbours' node ids, by a plain loop."""
    nb = view.neighbours
    slots = [d for d in range(nb.max_degree) if nb.mask[j, d]]
    models = [view.own[j].numpy()] + [view.messages[nb.index[j, d]].numpy() for d in slots]
    weights = [float(nb.self_weight[j])] + [float(nb.weight[j, d]) for d in slots]
    return np.array(models), np.array(weights), [int(nb.index[j, d]) for d in slots]


@pytest.mark.parametrize("topology", ["star", "erdos_renyi", "exponential"])
def test_geometric_median_minimises_the_weighted_distance_sum_per_node(topology):
    from scipy.optimize import minimize

    view = _view_on(topology)
    out = build_defense("geometric_median", {"ftol": 1e-12, "max_iter": 1000}).aggregate(view)
    for j in range(view.own.shape[0]):
        x, w, _ = _neighbourhood(view, j)

        def objective(z, x=x, w=w):
            return float((w * np.linalg.norm(x - z, axis=1)).sum())

        best = minimize(
            objective,
            np.average(x, axis=0, weights=w),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
        )
        ours = out.theta[j].numpy()
        assert objective(ours) <= best.fun + 1e-9, (j, objective(ours), best.fun)
        # the minimiser is unique (points not collinear), so the two points agree
        np.testing.assert_allclose(ours, best.x, atol=1e-3)


def test_geometric_median_of_points_on_a_line_is_their_weighted_median():
    view = _complete_view(torch.tensor([[float(v), 0.0, 0.0, 0.0, 0.0] for v in (0, 1, 2, 3, 4, 100, 7)]))
    out = build_defense("geometric_median").aggregate(view)
    torch.testing.assert_close(out.theta, torch.tensor([[3.0, 0, 0, 0, 0]]).expand(N, -1), rtol=0, atol=1e-4)


def test_geometric_median_detects_a_median_at_a_candidate_exactly():
    """Where the median is one of the candidates (a weight >= 1/2, or the middle of points on a line),
    Weiszfeld would only crawl towards it; the vertex test returns that candidate itself."""
    from robustbench_dice.defenses.geometric_median import weiszfeld

    points = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype=torch.float64)
    heavy, _ = weiszfeld(points, torch.tensor([[0.5, 0.2, 0.2, 0.1]], dtype=torch.float64), 1e-6, 100, 1e-6)
    assert torch.equal(heavy[0], points[0, 0])
    line = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [3.0, 3.0], [2.0, 2.0], [2.0, 2.0]]], dtype=torch.float64)
    weight = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.0], dtype=torch.float64)
    middle, distance = weiszfeld(line, weight.unsqueeze(0), 1e-6, 1, 0.0)
    assert torch.equal(middle[0], line[0, 1])  # an even count on a line: every point between (1, 1) and (2, 2) is one
    midpoint = (line[0] - torch.tensor([1.5, 1.5], dtype=torch.float64)).norm(dim=1)
    torch.testing.assert_close((weight * distance[0]).sum(), (weight * midpoint).sum())
    inside, _ = weiszfeld(line, torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float64), 1e-6, 1, 0.0)
    assert torch.equal(inside[0], line[0, 3])  # two candidates at (2, 2) pool their weight: 0.4 of 1.0 there
    assert distance.shape == (1, 5)


def test_geometric_median_rows_stop_independently():
    """A row's answer does not depend on how long the other rows need (the vectorised loop freezes converged rows)."""
    view = _view_on("erdos_renyi", seed=3)
    together = build_defense("geometric_median").aggregate(view).theta
    for j in range(view.own.shape[0]):
        x, w, _ = _neighbourhood(view, j)
        from robustbench_dice.defenses.geometric_median import weiszfeld

        alone, _ = weiszfeld(torch.tensor(x).unsqueeze(0), torch.tensor(w).unsqueeze(0), 1e-6, 100, 1e-6)
        torch.testing.assert_close(together[j], alone[0], rtol=1e-12, atol=1e-12)


def textbook_ios(x: np.ndarray, w: np.ndarray, f: int) -> tuple[np.ndarray, set[int]]:
    """IOS for one node: rows of ``x`` are its own model (row 0, never dropped) and its in-neighbours'."""
    kept = list(range(len(x)))
    dropped = set()
    for _ in range(f):
        average = sum(w[i] * x[i] for i in kept) / sum(w[i] for i in kept)
        farthest = max((i for i in kept if i != 0), key=lambda i: np.linalg.norm(x[i] - average))
        kept.remove(farthest)
        dropped.add(farthest)
    return sum(w[i] * x[i] for i in kept) / sum(w[i] for i in kept), dropped


@pytest.mark.parametrize(
    ("topology", "f"),
    [
        ("star", 0),
        ("erdos_renyi", 0),
        ("erdos_renyi", 1),
        ("torus", 1),
        ("torus", 2),
        ("exponential", 2),
        ("complete", 3),
    ],
)
def test_ios_equals_the_per_node_textbook_loop(topology, f):
    view = _view_on(topology)
    nb = view.neighbours
    assert int(nb.mask.sum(1).min()) > f  # a cell the defense accepts
    out = build_defense("ios", {"f": f}).aggregate(view)
    for j in range(view.own.shape[0]):
        x, w, ids = _neighbourhood(view, j)
        expected, dropped = textbook_ios(x, w, f)
        np.testing.assert_allclose(out.theta[j].numpy(), expected, rtol=1e-12, atol=1e-12)
        pruned = {int(nb.index[j, d]) for d in range(nb.max_degree) if out.pruned[j, d]}
        assert pruned == {ids[i - 1] for i in dropped}
        if 1 in ids and f:
            assert 1 in pruned  # the far outlier goes first


def test_ios_without_cuts_is_gossip_and_declines_graphs_it_would_empty(vectors):
    view = _complete_view(torch.tensor(vectors))
    plain = build_defense("ios", {"f": 0}).aggregate(view).theta
    torch.testing.assert_close(plain, view.weights.to(plain.dtype) @ view.messages)
    result = simulate(Scenario(defense="ios", defense_params={"f": 2}, topology="ring", nodes=8, rounds=2))
    assert result.status == "skipped" and "smallest in-degree is 2" in result.reason


def textbook_ubar(own: np.ndarray, received: np.ndarray, loss, f: int, alpha: float) -> tuple[np.ndarray, set[int]]:
    """UBAR for one node: ``received`` rows are its in-neighbours' messages; returns the model and the kept rows."""
    by_distance = sorted(range(len(received)), key=lambda i: (np.linalg.norm(received[i] - own), i))
    shortlist = by_distance[: len(received) - f]
    kept = [i for i in shortlist if loss(received[i]) <= loss(own)]
    if not kept:
        kept = [min(shortlist, key=lambda i: loss(received[i]))]
    return alpha * own + (1 - alpha) * received[kept].mean(axis=0), set(kept)


@pytest.mark.parametrize(
    ("topology", "f", "spread"),
    [
        ("star", 0, 0.0),
        ("erdos_renyi", 1, 1.0),
        ("torus", 1, 1.0),
        ("torus", 2, 0.0),  # every neighbour worse than the node itself: the best of the shortlist is kept
        ("exponential", 2, 1.0),
        ("complete", 3, 1.0),
    ],
)
def test_ubar_equals_the_per_node_textbook_loop(topology, f, spread):
    view = _view_on(topology)
    nb = view.neighbours
    target = view.own + spread * torch.randn(
        view.own.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    view = dataclasses.replace(view, validation_loss=lambda t: (t - target).square().sum(1))
    out = build_defense("ubar", {"f": f, "alpha": 0.3}).aggregate(view)
    fallbacks = 0
    for j in range(view.own.shape[0]):
        x, _, ids = _neighbourhood(view, j)

        def loss(v, j=j):
            return float(((v - target[j].numpy()) ** 2).sum())

        expected, kept = textbook_ubar(x[0], x[1:], loss, f, 0.3)
        np.testing.assert_allclose(out.theta[j].numpy(), expected, rtol=1e-12, atol=1e-12)
        pruned = {int(nb.index[j, d]) for d in range(nb.max_degree) if out.pruned[j, d]}
        assert pruned == set(ids) - {ids[i] for i in kept}
        if 1 in ids and f:
            assert 1 in pruned  # the far outlier fails the distance stage
        fallbacks += all(loss(x[i]) > loss(x[0]) for i in range(1, len(x)))
        for d in range(nb.max_degree):
            if nb.mask[j, d]:
                k = int(nb.index[j, d])
                assert out.suspicion[j, d] == pytest.approx(loss(view.messages[k].numpy()) - loss(x[0]))
    assert fallbacks == view.own.shape[0] if spread == 0.0 else fallbacks < view.own.shape[0]


def test_ubar_declines_graphs_it_would_empty_and_rejects_bad_alpha():
    result = simulate(Scenario(defense="ubar", defense_params={"f": 2}, topology="ring", nodes=8, rounds=2))
    assert result.status == "skipped" and "smallest in-degree is 2" in result.reason
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        build_defense("ubar", {"alpha": 1.5})


def test_ubar_keeps_gradient_scalers_out_and_scores_label_flippers():
    scenario = Scenario(attack="gradient_scale", byzantine=2, topology="torus", seed=0)
    defended = simulate(dataclasses.replace(scenario, defense="ubar"))
    plain = simulate(dataclasses.replace(scenario, defense="gossip"))
    assert defended.final_accuracy_mean >= 0.9 > plain.final_accuracy_mean
    flipped = simulate(dataclasses.replace(scenario, attack="label_flip", defense="ubar"))
    assert flipped.edge_auc >= 0.95  # flipped-label models lose on the receiver's own data


@pytest.mark.parametrize(("model", "partition"), [("mlp", "iid"), ("cnn", "dirichlet"), ("logreg", "dirichlet")])
def test_candidate_losses_equal_one_validation_loss_call_per_candidate(model, partition):
    from robustbench_dice.setup import candidate_validation_loss, validation_loss

    sim = Simulation.from_scenario(Scenario(nodes=6, model=model, partition=partition, rounds=2, dtype="float64"))
    st = sim.setup
    candidates = st.theta0.unsqueeze(1) + 0.05 * torch.randn(
        6, 5, st.theta0.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    loop = torch.stack([validation_loss(st.model, st.data, candidates[:, m].contiguous()) for m in range(5)], 1)
    whole = candidate_validation_loss(st.model, st.data, candidates)
    chunked = candidate_validation_loss(st.model, st.data, candidates, chunk_bytes=1)  # one candidate per chunk
    assert whole.shape == (6, 5)
    torch.testing.assert_close(whole, loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, loop, rtol=1e-12, atol=1e-12)
    assert (st.data.val_mask_if_needed is None) == (partition == "iid")  # the masked path is exercised too


def textbook_nnm(x: np.ndarray, f: int) -> np.ndarray:
    """Nearest-neighbour mixing of one node's models ``x (m, P)``: each row becomes the mean of its m - f nearest."""
    mixed = []
    for i in range(len(x)):
        nearest = sorted(range(len(x)), key=lambda k: (float(((x[i] - x[k]) ** 2).sum()), k))[: len(x) - f]
        mixed.append(x[nearest].mean(axis=0))
    return np.array(mixed)


TEXTBOOK_RULES = {
    "trimmed_mean": textbook_trimmed_mean,
    "median": lambda v, f: np.median(v, axis=0),
    "krum": textbook_krum,
}


@pytest.mark.parametrize(
    ("topology", "f", "rule"),
    [
        (topology, f, rule)
        for topology, f in [("erdos_renyi", 0), ("erdos_renyi", 1), ("torus", 1), ("complete", 3)]
        for rule in sorted(TEXTBOOK_RULES)
        if (topology, f, rule) != ("erdos_renyi", 1, "krum")  # a neighbourhood of 4 models: too small for Krum at f=1
    ],
)
def test_nnm_equals_the_per_node_textbook_loop(topology, f, rule):
    view = _view_on(topology)
    out = build_defense("nnm", {"f": f, "rule": rule}).aggregate(view)
    for j in range(view.own.shape[0]):
        x, _, _ = _neighbourhood(view, j)
        expected = TEXTBOOK_RULES[rule](textbook_nnm(x, f), f)
        np.testing.assert_allclose(out.theta[j].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_nnm_hands_the_mixed_models_to_the_rule_and_its_scores_back():
    from robustbench_dice.defenses.nnm import nearest_neighbour_mixing

    view = _view_on("erdos_renyi")  # irregular: padded slots
    candidates, mask = view.with_self()
    mixed = nearest_neighbour_mixing(candidates, mask, 1)
    for j in range(view.own.shape[0]):
        x, _, _ = _neighbourhood(view, j)
        np.testing.assert_allclose(mixed[j][mask[j]].numpy(), textbook_nnm(x, 1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mixed[j][~mask[j]], mixed[j, :1].expand(int((~mask[j]).sum()), -1))
    direct = build_defense("geometric_median").aggregate(view.with_candidates(mixed))
    out = build_defense("nnm", {"f": 1, "rule": "geometric_median"}).aggregate(view)
    torch.testing.assert_close(out.theta, direct.theta, rtol=0, atol=0)
    torch.testing.assert_close(out.suspicion, direct.suspicion, rtol=0, atol=0)
    assert out.suspicion.shape == view.neighbours.mask.shape


def test_nnm_without_a_bound_averages_the_neighbourhood():
    vectors = np.random.default_rng(3).normal(size=(N, P))
    out = build_defense("nnm", {"f": 0, "rule": "median"}).aggregate(_complete_view(torch.tensor(vectors)))
    for j in range(N):  # every model mixes with all m: each becomes the mean, and so does any rule of them
        np.testing.assert_allclose(out.theta[j].numpy(), vectors.mean(axis=0), rtol=1e-12, atol=1e-12)


def test_nnm_declines_small_neighbourhoods_and_rejects_unknown_rules():
    ring = simulate(Scenario(defense="nnm", defense_params={"f": 1}, topology="ring", nodes=8, rounds=2))
    assert ring.status == "ok"  # 3 models > 2f
    small = simulate(Scenario(defense="nnm", defense_params={"f": 2}, topology="ring", nodes=8, rounds=2))
    assert (
        small.status == "skipped" and "more than 2f = 4 models" in small.reason and "the smallest has 3" in small.reason
    )
    krum = simulate(Scenario(defense="nnm", defense_params={"rule": "krum"}, topology="ring", nodes=8, rounds=2))
    assert krum.status == "skipped" and "rule krum: needs more than 2f + 2 = 4 models" in krum.reason
    with pytest.raises(
        ConfigError, match=r"rule must be one of trimmed_mean, median, krum, geometric_median, got 'ios'"
    ):
        build_defense("nnm", {"rule": "ios"})
    view = _view_on("torus")
    with pytest.raises(ValueError, match=r"candidates must have shape \(9, 5, 6\)"):
        view.with_candidates(torch.zeros(9, 4, 6))


def _textbook(
    name: str, params: dict, x: np.ndarray, weights: np.ndarray, round_index: int, rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    """One node's new model and its in-neighbours' suspicion scores by the paper's rule, written as a plain loop.

    ``x``: the node's own model (row 0) and its in-neighbours' messages (rows 1..); ``weights``: their W_jk.
    """
    own, received = x[0], x[1:]
    if name == "krum":
        return textbook_krum(x, params["f"]), textbook_krum_scores(x, params["f"])[1:]
    if name == "median":
        center = np.median(x, axis=0)
        return center, np.linalg.norm(received - center, axis=1)
    if name == "trimmed_mean":
        center = textbook_trimmed_mean(x, params["trim"])
        return center, np.linalg.norm(received - center, axis=1)
    if name == "balance":
        relative = np.linalg.norm(received - own, axis=1) / np.linalg.norm(own)
        accepted = relative <= 0.3 * np.exp(-1.0 * round_index / rounds)
        theta = 0.5 * own + 0.5 * received[accepted].mean(axis=0) if accepted.any() else own
        return theta, relative
    if name == "clipped_gossip":  # theta_j = own_j + sum_k W_jk clip(m_k - own_j, tau_j), over the in-neighbours
        distance = np.linalg.norm(received - own, axis=1)
        tau = params.get("tau") or np.sort(distance)[(len(distance) - 1) // 2]  # the lower median for an even count
        clipped = [min(1.0, tau / d) * (m - own) for m, d in zip(received, distance, strict=True)]
        return own + sum(w * c for w, c in zip(weights[1:], clipped, strict=True)), distance / tau
    raise AssertionError(name)


@pytest.mark.parametrize("topology", ["star", "erdos_renyi", "exponential", "small_world"])
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("krum", {"f": 0}),
        ("krum", {"f": 1}),
        ("median", {}),
        ("trimmed_mean", {"trim": 1}),
        ("balance", {}),
        ("clipped_gossip", {}),
        ("clipped_gossip", {"tau": 0.2}),
    ],
)
def test_defenses_equal_the_per_node_textbook_loop_on_irregular_neighbourhoods(topology, name, params):
    """Padded neighbourhoods of different sizes (star, Erdos-Renyi) and full ones: each node's rows, one at a time."""
    view = _view_on(topology, seed=1)
    if name == "balance":  # messages near the senders' own models, some inside BALANCE's radius and some not
        spread = torch.rand(9, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        view = dataclasses.replace(view, round=4, messages=view.own[torch.arange(9).roll(1)] * (1 + 0.4 * spread))
    nb = view.neighbours
    out = build_defense(name, params).aggregate(view)
    checked = 0
    for j in range(view.own.shape[0]):
        x, weights, _ = _neighbourhood(view, j)
        if name == "krum" and len(x) <= 2 * params["f"] + 2 or name == "trimmed_mean" and len(x) <= 2 * params["trim"]:
            continue  # a neighbourhood the rule declines (its cells are skipped)
        theta, suspicion = _textbook(name, params, x, weights, view.round, view.rounds_total)
        checked += 1
        np.testing.assert_allclose(out.theta[j].numpy(), theta, rtol=1e-12, atol=1e-12, err_msg=f"node {j}")
        np.testing.assert_allclose(
            out.suspicion[j][nb.mask[j]].numpy(), suspicion, rtol=1e-10, atol=1e-12, err_msg=f"node {j}"
        )
    assert checked >= (1 if topology == "star" or params.get("f") == 1 else 3)  # the star's leaves have 2 models
    if name == "balance":
        assert bool(out.pruned[nb.mask].any()) and not bool(out.pruned[nb.mask].all())


@pytest.mark.parametrize("trust", ["mixed", "reported"])
@pytest.mark.parametrize("topology", ["star", "erdos_renyi"])
def test_dice_prune_equals_the_per_node_textbook_loop_over_rounds(topology, trust):
    """Definition 3 edge by edge: p = -grad L(theta_j^{t+1}; z'_j)^T W_jk Delta_k, its running sum S and square sum
    Q, and k excluded once S / sqrt(Q) < threshold after the warm-up; the node keeps the excluded weight."""
    params = {"threshold": -1.0, "warmup": 2, "decay": 0.9, "trust": trust}
    defense = build_defense("dice_prune", params)
    base = _view_on(topology, seed=2)
    nodes = base.own.shape[0]
    generator = torch.Generator().manual_seed(7)
    target = torch.randn(nodes, base.own.shape[1], generator=generator, dtype=torch.float64)  # z'_j's optimum

    def validation_grad(theta):  # L(theta; z'_j) = |theta - target_j|^2 / 2
        return theta - target

    influence = {}  # (j, k) -> (S, Q), the plain loop's state
    for t in range(6):
        own = torch.randn(nodes, base.own.shape[1], generator=generator, dtype=torch.float64)
        messages = own + 0.3 * torch.randn(own.shape, generator=generator, dtype=torch.float64)
        messages[1] = target[0] * 3.0 - 2.0 * own[1]  # a sender pulling away from its receivers' optima
        reported = 0.1 * torch.randn(own.shape, generator=generator, dtype=torch.float64)
        view = dataclasses.replace(
            base,
            round=t,
            own=own,
            theta=own,
            messages=messages,
            reported_delta=reported,
            validation_grad=validation_grad,
        )
        out = defense.aggregate(view)
        nb = view.neighbours
        for j in range(nodes):
            slots = [d for d in range(nb.max_degree) if nb.mask[j, d]]
            keep = {}
            for d in slots:
                k = int(nb.index[j, d])
                s, q = influence.get((j, k), (0.0, 0.0))
                keep[d] = t < params["warmup"] or (s / max(q, 1e-60) ** 0.5 if q else 0.0) >= params["threshold"]
            weights = {d: float(nb.weight[j, d]) for d in slots}
            theta = (1.0 - sum(weights[d] for d in slots if keep[d])) * own[j].numpy()
            theta = theta + sum(weights[d] * messages[int(nb.index[j, d])].numpy() for d in slots if keep[d])
            np.testing.assert_allclose(out.theta[j].numpy(), theta, rtol=1e-12, atol=1e-12)
            gradient = theta - target[j].numpy()  # at theta_j^{t+1}
            for d in slots:
                k = int(nb.index[j, d])
                delta = (messages[k] - own[j]).numpy() if trust == "mixed" else reported[k].numpy()
                p = -weights[d] * float(gradient @ delta)
                s, q = influence.get((j, k), (0.0, 0.0))
                influence[(j, k)] = (params["decay"] * s + p, params["decay"] * q + p * p)
                assert float(out.suspicion[j, d]) == pytest.approx(-influence[(j, k)][0], rel=1e-10, abs=1e-12)
                assert bool(out.pruned[j, d]) == (not keep[d])
    assert bool(out.pruned.any())  # the sender pulling away was cut somewhere
