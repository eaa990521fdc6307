from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


def masked_sorted(candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidates ``(N, M, P)`` sorted along M, with masked-out slots pushed to the end as +inf."""
    inf = torch.tensor(float("inf"), dtype=candidates.dtype, device=candidates.device)
    return torch.where(mask.unsqueeze(-1), candidates, inf).sort(dim=1).values


def coordinate_median(candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` coordinate-wise median over the valid candidates; the mean of the two middle ones when even."""
    ordered = masked_sorted(candidates, mask)
    count = mask.sum(1)
    lower = ordered.gather(1, ((count - 1) // 2).view(-1, 1, 1).expand(-1, 1, ordered.shape[2])).squeeze(1)
    upper = ordered.gather(1, (count // 2).view(-1, 1, 1).expand(-1, 1, ordered.shape[2])).squeeze(1)
    return (lower + upper) / 2


@register_defense
@dataclass
class Median(Defense):
    """Coordinate-wise median of the node's own model and its in-neighbours' (Yin et al., ICML 2018).

    Suspicion of in-neighbour k: Euclidean distance of its message to the median.
    """

    name = "median"

    def aggregate(self, view: DefenseView) -> Aggregation:
        candidates, mask = view.with_self()
        center = coordinate_median(candidates, mask)
        distance = (candidates[:, 1:] - center.unsqueeze(1)).norm(dim=2)
        return Aggregation(theta=center, suspicion=distance)
