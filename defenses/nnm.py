from dataclasses import dataclass, field

import torch
from robustbench_dice.defenses.krum import pairwise_squared_distances

from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView, check_one_of
from robustbench_dice.registry import build_defense, register_defense

# rules that read only the node's own model and its received messages (DefenseView.with_self), so that they see
# the mixed models; the value is the rule's Byzantine-bound parameter, set to NNM's f
RULES = {"trimmed_mean": "trim", "median": None, "krum": "f", "geometric_median": None}


def nearest_neighbour_mixing(candidates: torch.Tensor, mask: torch.Tensor, f: int) -> torch.Tensor:
    """``(N, M, P)``: each of node n's valid candidates replaced by the mean of its ``m_n - f`` nearest valid ones.

    ``candidates (N, M, P)`` and ``mask (N, M)`` as :meth:`DefenseView.with_self` gives them, ``m_n`` the valid
    count of row n. Nearest by Euclidean distance, the candidate itself included (at distance 0); among equal
    distances the lower index comes first. Invalid (padded) slots come back holding the mixed slot 0.
    """
    n, m, _ = candidates.shape
    squared = pairwise_squared_distances(candidates)
    squared = torch.where(mask.unsqueeze(1), squared, torch.full_like(squared, float("inf")))
    order = squared.argsort(dim=2, stable=True)  # (N, M, M): for candidate i, the others nearest first
    kept = (mask.sum(1) - f).clamp_min(1)  # (N,)
    in_kept = torch.arange(m, device=mask.device).view(1, 1, m) < kept.view(-1, 1, 1)
    weight = torch.zeros_like(squared).scatter_(2, order, in_kept.expand(n, m, m).to(squared.dtype))
    mixed = torch.bmm(weight / kept.view(-1, 1, 1).to(squared.dtype), candidates)
    return torch.where(mask.unsqueeze(-1), mixed, mixed[:, :1])


@register_defense
@dataclass
class NearestNeighbourMixing(Defense):
    """NNM: replace each model by the mean of its m - f nearest, then apply a robust rule (Allouah et al., AISTATS 2023).

    "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
    applied by each node to its closed neighbourhood (its own model and its
    in-neighbours' messages, m models): every model becomes the average of its
    m - f nearest among them (itself included), then ``rule`` aggregates the
    mixed models with its Byzantine bound set to ``f``. Mixing shrinks the
    spread of honest models under heterogeneous data, which distance-based
    rules otherwise mistake for attack. Needs m > 2f. Suspicion: ``rule``'s,
    on the mixed models.
    """

    name = "nnm"
    byzantine_bound = "f"
    f: int = 1
    rule: str = "trimmed_mean"
    _rule: Defense = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_one_of("rule", self.rule, tuple(RULES))
        bound = RULES[self.rule]
        self._rule = build_defense(self.rule, {bound: self.f} if bound else {})

    def skip(self, cell: CellInfo) -> str | None:
        smallest = cell.smallest_neighbourhood
        if smallest <= 2 * self.f:
            return (
                f"needs more than 2f = {2 * self.f} models per neighbourhood (self included, f={self.f});"
                f" the smallest has {smallest}"
            )
        reason = self._rule.skip(cell)
        return f"rule {self.rule}: {reason}" if reason else None

    def aggregate(self, view: DefenseView) -> Aggregation:
        candidates, mask = view.with_self()
        return self._rule.aggregate(view.with_candidates(nearest_neighbour_mixing(candidates, mask, self.f)))
