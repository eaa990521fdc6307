from dataclasses import dataclass

from robustbench_dice.order_stats import coordinate_median
from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


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
