from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView
from robustbench_dice.registry import register_defense

from .median import masked_sorted


def coordinate_trimmed_mean(candidates: torch.Tensor, mask: torch.Tensor, trim: int) -> torch.Tensor:
    """``(N, P)``: per coordinate, drop the ``trim`` smallest and largest valid values and average the rest."""
    ordered = masked_sorted(candidates, mask)
    count = mask.sum(1, keepdim=True)  # (N, 1)
    position = torch.arange(ordered.shape[1], device=ordered.device).unsqueeze(0)  # (1, M)
    keep = ((position >= trim) & (position < count - trim)).unsqueeze(-1)
    total = torch.where(keep, ordered, torch.zeros_like(ordered)).sum(1)
    return total / (count - 2 * trim).to(total.dtype)


@register_defense
@dataclass
class TrimmedMean(Defense):
    """Coordinate-wise trimmed mean over the node and its in-neighbours (Yin et al., ICML 2018).

    Drops the ``trim`` largest and ``trim`` smallest values per coordinate.
    Suspicion of in-neighbour k: Euclidean distance of its message to the
    trimmed mean. Needs more than 2 * trim models in every neighbourhood.
    """

    name = "trimmed_mean"
    trim: int = 1

    def __post_init__(self) -> None:
        if self.trim < 0:
            raise ValueError(f"trim must be >= 0, got {self.trim}")

    def skip(self, cell: CellInfo) -> str | None:
        if cell.smallest_neighbourhood <= 2 * self.trim:
            return (
                f"needs more than 2*trim = {2 * self.trim} models per neighbourhood (self included);"
                f" the smallest has {cell.smallest_neighbourhood}"
            )
        return None

    def aggregate(self, view: DefenseView) -> Aggregation:
        candidates, mask = view.with_self()
        center = coordinate_trimmed_mean(candidates, mask, self.trim)
        distance = (candidates[:, 1:] - center.unsqueeze(1)).norm(dim=2)
        return Aggregation(theta=center, suspicion=distance)
