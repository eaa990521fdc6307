from dataclasses import dataclass

from robustbench_dice.order_stats import coordinate_trimmed_mean
from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class TrimmedMean(Defense):
    """Coordinate-wise trimmed mean over the node and its in-neighbours (Yin et al., ICML 2018).

    Drops the ``trim`` largest and ``trim`` smallest values per coordinate.
    Suspicion of in-neighbour k: Euclidean distance of its message to the
    trimmed mean. Needs more than 2 * trim models in every neighbourhood.
    """

    name = "trimmed_mean"
    byzantine_bound = "trim"
    trim: int = 1

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
