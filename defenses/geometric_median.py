from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


def weiszfeld(
    candidates: torch.Tensor, weight: torch.Tensor, nu: float, max_iter: int, ftol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted geometric median of each row's candidates, all rows at once.

    ``candidates (N, M, P)``, ``weight (N, M)`` non-negative (0 = absent), each row summing to > 0.
    Returns the ``(N, P)`` medians and the ``(N, M)`` distances of the candidates to them.

    The median is a convex combination of the candidates, so the iterations run on the ``(N, M)``
    coefficients with the candidates' Gram matrix (float64, offsets from candidate 0), never on
    ``(N, M, P)`` tensors. First the exact vertex test (Vardi and Zhang 2000): candidate i is the
    median when the weighted unit vectors pointing from it to the others sum to a norm <= the weight
    sitting on it; there Weiszfeld would crawl in sublinearly. Otherwise smoothed Weiszfeld from the
    weighted mean, each step re-weighting candidate i by ``weight_i / max(nu, ||z - x_i||)``; a row
    stops when its objective ``sum_i weight_i ||z - x_i||`` improves by at most ``ftol`` times itself,
    so every row's answer is the one it would get alone.
    """
    offsets = candidates - candidates[:, :1]
    gram = torch.bmm(offsets.double(), offsets.double().transpose(1, 2))  # (N, M, M)
    weight = weight.double() / weight.double().sum(1, keepdim=True)
    coefficients = _vertex_medians(gram, weight)
    at_vertex = coefficients.sum(1) > 0
    coefficients = torch.where(at_vertex.unsqueeze(1), coefficients, weight)
    squared_norms = gram.diagonal(dim1=1, dim2=2)

    def distances(c: torch.Tensor) -> torch.Tensor:
        gc = torch.bmm(gram, c.unsqueeze(2)).squeeze(2)
        return ((c * gc).sum(1, keepdim=True) - 2 * gc + squared_norms).clamp_min(0).sqrt()

    distance = distances(coefficients)
    objective = (weight * distance).sum(1)
    running = ~at_vertex
    for _ in range(max_iter):
        if not bool(running.any()):
            break
        beta = weight / distance.clamp_min(nu)
        step = beta / beta.sum(1, keepdim=True)
        step_distance = distances(step)
        step_objective = (weight * step_distance).sum(1)
        coefficients = torch.where(running.unsqueeze(1), step, coefficients)
        distance = torch.where(running.unsqueeze(1), step_distance, distance)
        converged = (objective - step_objective).abs() <= ftol * step_objective
        objective = torch.where(running, step_objective, objective)
        running = running & ~converged
    median = candidates[:, 0] + torch.einsum("nm,nmp->np", coefficients.to(candidates.dtype), offsets)
    return median, (candidates - median.unsqueeze(1)).norm(dim=2)


def _vertex_medians(gram: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` one-hot coefficients of the candidate that is its row's median, or a zero row when none is.

    Candidates at the same point pool their weight (padded slots repeat candidate 0 with weight 0).
    """
    squared_norms = gram.diagonal(dim1=1, dim2=2)
    squared = (squared_norms.unsqueeze(2) + squared_norms.unsqueeze(1) - 2 * gram).clamp_min(0)  # (N, M, M)
    scale = squared_norms.amax(1, keepdim=True).unsqueeze(2).clamp_min(1e-300)
    together = squared <= 1e-24 * scale  # i and k at the same point, up to float64 rounding of the Gram matrix
    pooled = (together * weight.unsqueeze(1)).sum(2)  # (N, M): weight sitting on candidate i's point
    pull = torch.where(together, 0.0, weight.unsqueeze(1) / squared.sqrt().clamp_min(1e-300))  # (N, i, k)
    # <x_k - x_i, x_l - x_i> = G_kl - G_ki - G_il + G_ii, for every i at once: (N, i, k, l)
    inner = gram.unsqueeze(1) - gram.unsqueeze(3) - gram.unsqueeze(2) + squared_norms.view(*gram.shape[:2], 1, 1)
    resultant = torch.einsum("nik,nikl,nil->ni", pull, inner, pull).clamp_min(0)  # ||sum_k pull_ik (x_k - x_i)||^2
    optimal = (resultant <= pooled.square()) & (pooled > 0)
    first = optimal & (optimal.cumsum(1) == 1)  # one per row: coincident optimal candidates are the same point
    return first.to(weight.dtype)


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
