from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView, needs_in_degree_above
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class IterativeOutlierScissor(Defense):
    """IOS: f times, drop the in-neighbour farthest from the weighted average of what is left (Wu, Chen, Ling, IEEE TSP 2023).

    "Byzantine-Resilient Decentralized Stochastic Optimization With Robust
    Aggregation Rules". Node j starts from itself and its in-neighbours with
    their mixing weights W_jk; each of ``f`` passes takes the weighted average
    of the models still kept and drops the in-neighbour farthest from it (never
    itself); the result is the weighted average of the kept models, weights
    renormalised. Suspicion of k: distance of its message to that result;
    dropped neighbours are reported as pruned.
    """

    name = "ios"
    byzantine_bound = "f"
    f: int = 1

    def skip(self, cell: CellInfo) -> str | None:
        return needs_in_degree_above(
            cell, self.f, f"drops f={self.f} in-neighbours per node and needs at least one left"
        )

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        received = view.neighbour_messages()  # (N, D, P)
        rows = torch.arange(received.shape[0], device=received.device)
        keep = nb.mask.clone()
        average = self._kept_average(view, received, keep)
        for _ in range(self.f):
            distance = (received - average.unsqueeze(1)).norm(dim=2)
            farthest = torch.where(keep, distance, torch.full_like(distance, -1.0)).argmax(dim=1)
            keep[rows, farthest] = False
            average = self._kept_average(view, received, keep)
        distance = (received - average.unsqueeze(1)).norm(dim=2)
        return Aggregation(theta=average, suspicion=distance, pruned=nb.mask & ~keep)

    @staticmethod
    def _kept_average(view: DefenseView, received: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        nb = view.neighbours
        weight = torch.where(keep, nb.weight, torch.zeros_like(nb.weight)).to(received.dtype)
        self_weight = nb.self_weight.to(received.dtype)
        total = (self_weight + weight.sum(1)).unsqueeze(1)
        mixed = self_weight.unsqueeze(1) * view.own + torch.einsum("nd,ndp->np", weight, received)
        return mixed / total
