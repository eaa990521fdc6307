from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView
from robustbench_dice.registry import register_defense


def pairwise_squared_distances(candidates: torch.Tensor) -> torch.Tensor:
    """``(N, M, M)`` exact squared distances between the M candidates ``(N, M, P)`` of each node.

    Exact: sum((a - b)^2), not the ||a||^2 - 2ab + ||b||^2 shortcut. Each pair is computed once and mirrored
    ((a - b)^2 == (b - a)^2 bit for bit), one candidate against the later ones at a time: no (N, M, M, P) temporary.
    """
    n, m, _ = candidates.shape
    if m > 32:
        return torch.cdist(candidates, candidates).pow(2)
    squared = candidates.new_zeros(n, m, m)
    for i in range(m - 1):
        later = (candidates[:, i + 1 :] - candidates[:, i : i + 1]).square_().sum(-1)  # (N, M - i - 1)
        squared[:, i, i + 1 :] = later
        squared[:, i + 1 :, i] = later
    return squared


def krum_scores(candidates: torch.Tensor, mask: torch.Tensor, f: int) -> torch.Tensor:
    """``(N, M)`` Krum score of each candidate: summed squared distances to its m - f - 2 nearest others."""
    squared = pairwise_squared_distances(candidates)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)
    eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device).unsqueeze(0)
    squared = torch.where(valid & ~eye, squared, torch.full_like(squared, float("inf")))
    nearest = squared.sort(dim=2).values.cumsum(dim=2)
    k = (mask.sum(1) - f - 2).clamp_min(1)  # (N,)
    scores = nearest.gather(2, (k - 1).view(-1, 1, 1).expand(-1, mask.shape[1], 1)).squeeze(2)
    return torch.where(mask, scores, torch.full_like(scores, float("inf")))


@register_defense
@dataclass
class Krum(Defense):
    """Krum per neighbourhood, self included: keep the model closest to its m - f - 2 nearest others.

    Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent" (NeurIPS 2017), applied by each node to its own model and
    its in-neighbours' messages (m models). ``f``: Byzantine neighbours
    tolerated; needs m > 2f + 2. Suspicion of in-neighbour k: its Krum score.
    """

    name = "krum"
    byzantine_bound = "f"
    f: int = 1

    def skip(self, cell: CellInfo) -> str | None:
        smallest = cell.smallest_neighbourhood
        if smallest <= 2 * self.f + 2:
            return (
                f"needs more than 2f + 2 = {2 * self.f + 2} models per neighbourhood (self included, f={self.f});"
                f" the smallest has {smallest}"
            )
        return None

    def aggregate(self, view: DefenseView) -> Aggregation:
        candidates, mask = view.with_self()
        scores = krum_scores(candidates, mask, self.f)
        chosen = scores.argmin(dim=1)
        theta = candidates[torch.arange(candidates.shape[0], device=chosen.device), chosen]
        return Aggregation(theta=theta, suspicion=scores[:, 1:])
