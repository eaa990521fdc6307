"""A complete defense plugin: copy this file, rename the class and `name`, change `aggregate`."""

from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView, weighted_average
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class DistanceFilter(Defense):
    """Drops in-neighbours whose model is more than `factor` times the median distance from the node's own.

    A simple distance-based filter in the spirit of BALANCE (Fang et al., CCS
    2024), written as a teaching example. Suspicion of k: its distance to the
    node's own model divided by the median distance.
    """

    name = "distance_filter"
    factor: float = 2.0

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        distance = (view.neighbour_messages() - view.own.unsqueeze(1)).norm(dim=2)  # (N, D)
        masked = torch.where(nb.mask, distance, torch.full_like(distance, float("nan")))
        median = masked.nanmedian(dim=1, keepdim=True).values.clamp_min(1e-12)
        relative = distance / median
        keep = nb.mask & (relative <= self.factor)
        return Aggregation(theta=weighted_average(view, keep), suspicion=relative, pruned=nb.mask & ~keep)
