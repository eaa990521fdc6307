import json
import sys

import pytest
from sklearn.metrics import roc_auc_score

from robustbench_dice.metrics import edge_auc, node_auc
from robustbench_dice.result import RunResult


def test_edge_auc_is_sklearns_over_honest_receivers():
    rows = [[0, 1, 0.1], [0, 2, 0.9], [3, 1, 0.2], [3, 2, 0.4], [3, 4, 0.5], [0, 0, 99.0]]
    auc = edge_auc(rows, byzantine={2})
    assert auc.value == pytest.approx(roc_auc_score([0, 1, 0, 1, 0], [0.1, 0.9, 0.2, 0.4, 0.5]))


def test_node_auc_averages_over_observers():
    rows = [[0, 1, 0.1], [0, 2, 0.9], [3, 1, 0.8], [3, 2, 0.7], [3, 4, 0.5]]
    auc = node_auc(rows, byzantine={2})
    assert auc.value == pytest.approx(roc_auc_score([0, 1, 0], [0.45, 0.8, 0.5]))


def test_undefined_auc_has_a_reason_not_half():
    assert edge_auc([], {1}).value is None and "emits none" in edge_auc([], {1}).reason
    only_honest = edge_auc([[0, 1, 0.3], [0, 2, 0.1]], byzantine={5})
    assert only_honest.value is None and "no Byzantine edges" in only_honest.reason
    only_byz = edge_auc([[0, 1, 0.3]], byzantine={1})
    assert only_byz.value is None and "no honest edges" in only_byz.reason
    nan = edge_auc([[0, 1, float("nan")], [0, 2, 0.1]], byzantine={1})
    assert nan.value is None and "1 edges have NaN" in nan.reason


@pytest.mark.parametrize(
    "scores",
    [
        [float("inf"), 0.2, float("inf"), 0.4, 0.5],  # overflowed Byzantine distances: the top of the order
        [float("inf"), 0.9, 0.1, float("inf"), 0.5],  # an honest edge overflowed too: tied with them
        [float("-inf"), 0.2, 0.3, -1e30, float("inf")],  # infinities of both signs
    ],
)
def test_infinite_scores_rank_as_the_largest_and_smallest_values_would(scores):
    """An overflowed score keeps its order; the AUC is the one with +-inf replaced by finite extremes."""

    def stand_in(values: list[float]) -> list[float]:
        return [1e300 if s == float("inf") else -1e300 if s == float("-inf") else s for s in values]

    rows = [[0, k, s] for k, s in zip([1, 2, 3, 4, 5], scores, strict=True)]
    assert edge_auc(rows, byzantine={1, 3}).value == roc_auc_score([1, 0, 1, 0, 0], stand_in(scores))
    # node level: a second observer of nodes 1 and 2 scores them 0; the mean of +inf and 0 is +inf
    node_scores = [(s + 0.0) / 2 if k in (1, 2) else s for k, s in zip([1, 2, 3, 4, 5], scores, strict=True)]
    observed = node_auc([*rows, [6, 1, 0.0], [6, 2, 0.0]], byzantine={1, 3})
    assert observed.value == roc_auc_score([1, 0, 1, 0, 0], stand_in(node_scores))


def test_a_run_whose_byzantine_scores_overflow_ranks_them_first():
    """Gradient scaling by 1e30 against Krum overflows the Byzantine nodes' float32 scores to +inf: perfectly ranked,
    not undefined, and stored as the largest float so that the record keeps the order."""
    from robustbench_dice import Scenario, simulate

    result = simulate(
        Scenario(
            topology="torus",
            byzantine=3,
            attack="gradient_scale",
            attack_params={"scale": 1e30},
            defense="krum",
            rounds=3,
        )
    )
    byzantine, largest = set(result.byzantine), sys.float_info.max  # stored for +inf: JSON has no infinity
    assert all(s == largest for j, k, s in result.suspicion if k in byzantine)
    assert all(s < largest for j, k, s in result.suspicion if k not in byzantine)
    assert result.edge_auc == 1.0 and result.node_auc == 1.0
    assert RunResult.from_dict(json.loads(json.dumps(result.to_dict()))).suspicion == result.suspicion


@pytest.mark.parametrize(
    ("prune_rounds", "partial_rounds", "expected"),
    [
        (range(10), (), 1),  # pruned from the first round on: detected after round 0, i.e. from round 1
        ([2, 3, 6, 7, 8, 9], (), 7),  # an interrupted streak starts again
        (range(2, 10), (5,), 7),  # so does one where round 5 prunes only some of the Byzantine in-edges
        ([2, 3, 4, 5, 6, 7, 8], (), None),  # un-pruned in the last round: not detected
        ([9], (), 10),
        ([], (), None),
    ],
)
def test_pruning_metrics_follow_their_definitions_for_a_scripted_defense(
    restore_registry, prune_rounds, partial_rounds, expected
):
    """A test-only defense that is told the Byzantine set (no real defense is) prunes their edges in the rounds
    given, and one honest edge always: time to detection, the pruned edges, the honest edges wrongly pruned and
    the edge AUC come out as DESIGN.md section 5 defines them."""
    from dataclasses import dataclass
    from typing import ClassVar

    import torch

    from robustbench_dice import Scenario, Simulation
    from robustbench_dice.plugins import Aggregation, Defense, weighted_average
    from robustbench_dice.registry import register_defense

    @register_defense
    @dataclass
    class ScriptedPruner(Defense):
        """Prunes the Byzantine in-edges in the scripted rounds (a test plugin that cheats; no paper)."""

        name = "scripted_pruner"
        byzantine: ClassVar[list[int]] = []
        rounds: ClassVar[set[int]] = set()
        partial: ClassVar[set[int]] = set()  # rounds that prune the Byzantine in-edges of one receiver only
        partial_receiver: ClassVar[int] = 0
        honest_cut: ClassVar[tuple[int, int]] = (0, 0)  # (receiver, slot) pruned every round

        def aggregate(self, view):
            nb = view.neighbours
            is_byzantine = torch.zeros(view.own.shape[0], dtype=torch.bool)
            is_byzantine[self.byzantine] = True
            byzantine_slot = nb.mask & is_byzantine[nb.index]
            pruned = byzantine_slot & (view.round in self.rounds)
            if view.round in self.partial:
                keep_row = torch.arange(view.own.shape[0]) == self.partial_receiver
                pruned &= keep_row.unsqueeze(1)
            pruned[self.honest_cut] = True
            suspicion = byzantine_slot.to(view.own.dtype) + 0.01 * nb.index.to(view.own.dtype)
            return Aggregation(theta=weighted_average(view, nb.mask & ~pruned), suspicion=suspicion, pruned=pruned)

    sim = Simulation.from_scenario(
        Scenario(nodes=8, topology="ring", byzantine=2, defense="scripted_pruner", rounds=10, eval_every=5)
    )
    byzantine = sorted(int(b) for b in sim.setup.byzantine)
    honest = [j for j in range(8) if j not in byzantine]
    receiver = next(j for j in honest if all((j + d) % 8 not in byzantine for d in (-1, 1)))  # no Byzantine in-edge
    slot = 0
    ScriptedPruner.byzantine, ScriptedPruner.rounds = byzantine, set(prune_rounds)
    byzantine_in_edges = sorted([j, k] for j in honest for k in ((j - 1) % 8, (j + 1) % 8) if k in byzantine)
    assert len({j for j, _ in byzantine_in_edges}) >= 2  # so that pruning one receiver's is partial
    ScriptedPruner.partial, ScriptedPruner.partial_receiver = set(partial_rounds), byzantine_in_edges[0][0]
    ScriptedPruner.honest_cut = (receiver, slot)
    result = sim.run()

    assert result.time_to_detection == expected
    if expected is None:
        assert "were not all pruned by the last round" in result.time_to_detection_reason
    cut = int(sim.mixing_at(0).neighbours.index[receiver, slot])
    last_round_pruned = byzantine_in_edges if 9 in prune_rounds else []
    assert sorted(result.pruned_edges) == sorted([*last_round_pruned, [receiver, cut]])
    assert result.honest_edges_wrongly_pruned == 1 and result.honest_edges == 2 * len(honest) - len(byzantine_in_edges)
    labels = [int(k in byzantine) for _, k, _ in result.suspicion]
    assert result.edge_auc == pytest.approx(roc_auc_score(labels, [s for _, _, s in result.suspicion])) == 1.0


def test_a_nan_score_on_a_scored_edge_makes_the_auc_undefined_not_dropped(restore_registry):
    """NaN marks "never scored" inside the engine; a defense's own NaN on an edge it scored must not be mistaken
    for that and silently left out of the AUC."""
    import math
    from dataclasses import dataclass

    from robustbench_dice import Scenario, simulate
    from robustbench_dice.plugins import Aggregation, Defense, weighted_average
    from robustbench_dice.registry import register_defense

    @register_defense
    @dataclass
    class NanInFirstSlot(Defense):
        """Scores each in-neighbour by its index, but the first slot of every receiver NaN (a test plugin)."""

        name = "nan_in_first_slot"

        def aggregate(self, view):
            nb = view.neighbours
            suspicion = nb.index.to(view.own.dtype)
            suspicion[:, 0] = float("nan")
            return Aggregation(theta=weighted_average(view, nb.mask), suspicion=suspicion)

    result = simulate(Scenario(nodes=8, topology="ring", byzantine=1, defense="nan_in_first_slot", rounds=2))
    assert len(result.suspicion) == 2 * 7  # every honest node's two ring neighbours, the NaN ones too
    assert sum(math.isnan(s) for _, _, s in result.suspicion) == 7
    assert result.edge_auc is None and result.edge_auc_reason == "7 edges have NaN suspicion scores"
    assert math.isnan(result.suspicion_curve[-1].honest_mean)
    stored = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert sum(s is None for _, _, s in stored.suspicion) == 7


def test_influence_auc_of_a_stored_record_reads_the_largest_float_as_overflow_and_none_as_nan():
    from robustbench_dice.tables import influence_auc

    largest = sys.float_info.max
    record = {"scenario": {"track_influence": True}, "byzantine": [2], "diverged": False}
    # suspicion is -influence: the Byzantine neighbour's influence overflowed to -inf, the most suspicious
    rows = [[0, 1, 0.5], [0, 2, -largest], [3, 1, 0.2], [3, 2, 0.1], [3, 4, -0.3]]
    assert influence_auc({**record, "proximal_influence": rows}).value == roc_auc_score(
        [0, 1, 0, 1, 0], [-0.5, largest, -0.2, -0.1, 0.3]
    )
    with_nan = influence_auc({**record, "proximal_influence": [*rows[:4], [3, 4, None]]})
    assert with_nan.value is None and with_nan.reason == "1 edges have NaN suspicion scores"
    diverged = influence_auc({**record, "diverged": True, "proximal_influence": [*rows[:4], [3, 4, None]]})
    assert diverged.value is None and diverged.reason == "the run diverged: its influence is not finite"
