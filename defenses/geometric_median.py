from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


def weiszfeld(
    candidates: torch.Tensor, weight: torch.Tensor, nu: float, max_iter: int, ftol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted geometric median of each row's candidates by smoothed Weiszfeld, all rows at once.

    ``candidates (N, M, P)``, ``weight (N, M)`` non-negative (0 = absent), each row summing to > 0.
    Starts from the weighted mean; each step re-weights candidate i by ``weight_i / max(nu, ||z - x_i||)``.
    A row stops when its objective ``sum_i weight_i ||z - x_i||`` improves by at most ``ftol`` times
    itself, so every row's answer is the one it would get alone. Returns the ``(N, P)`` medians and the
    ``(N, M)`` distances of the candidates to them.
    """
    weight = weight / weight.sum(1, keepdim=True)
    median = torch.einsum("nm,nmp->np", weight, candidates)
    distance = (candidates - median.unsqueeze(1)).norm(dim=2)
    objective = (weight * distance).sum(1)
    running = torch.ones_like(objective, dtype=torch.bool)
    for _ in range(max_iter):
        beta = weight / distance.clamp_min(nu)
        step = torch.einsum("nm,nmp->np", beta / beta.sum(1, keepdim=True), candidates)
        step_distance = (candidates - step.unsqueeze(1)).norm(dim=2)
        step_objective = (weight * step_distance).sum(1)
        median = torch.where(running.unsqueeze(1), step, median)
        distance = torch.where(running.unsqueeze(1), step_distance, distance)
        converged = (objective - step_objective).abs() <= ftol * step_objective
        objective = torch.where(running, step_objective, objective)
        running = running & ~converged
        if not bool(running.any()):
            break
    return median, distance


@register_defense
@dataclass
class GeometricMedian(Defense):
    """Geometric median of the node's own model and its in-neighbours' (RFA: Pillutla, Kakade, Harchaoui, IEEE TSP 2022).

    "Robust Aggregation for Federated Learning": the model minimising the
    mixing-weighted sum of Euclidean distances to the node's own model and its
    in-neighbours' messages (weights: the node's row of W), by smoothed Weiszfeld
    (``nu``: smallest distance divided by; at most ``max_iter`` steps; stops when
    the objective improves by at most ``ftol`` of itself). Suspicion of
    in-neighbour k: Euclidean distance of its message to the median.
    """

    name = "geometric_median"
    nu: float = 1e-6
    max_iter: int = 100
    ftol: float = 1e-6

    def __post_init__(self) -> None:
        if self.nu <= 0 or self.max_iter < 1 or self.ftol < 0:
            raise ValueError(f"need nu > 0, max_iter >= 1, ftol >= 0; got {self.nu}, {self.max_iter}, {self.ftol}")

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        candidates, _ = view.with_self()
        weight = torch.cat([nb.self_weight.unsqueeze(1), torch.where(nb.mask, nb.weight, 0.0)], dim=1)
        median, distance = weiszfeld(candidates, weight.to(candidates.dtype), self.nu, self.max_iter, self.ftol)
        return Aggregation(theta=median, suspicion=distance[:, 1:])
