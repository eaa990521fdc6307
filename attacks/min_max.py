"""Min-Max and Min-Sum, the aggregation-agnostic optimised attacks of Shejwalkar & Houmansadr (NDSS 2021).

Both send ``mu + gamma * p``: ``mu`` the mean of a reference set of honest
models, ``p`` a fixed perturbation direction, ``gamma`` as large as a
distance constraint allows. The paper finds ``gamma`` by bisection; both
constraints are quadratic in ``gamma``, so here it is solved in closed form
(the supremum the bisection converges to; ``tests/test_attacks.py`` checks one
against the other).

Decentralised, a Byzantine node sends one message to all its out-neighbours,
and each honest receiver compares it with what it aggregates: its own model
and its in-neighbours' messages. So the reference set of Byzantine node b is,
by default, every honest model in the closed neighbourhood of one of b's
honest receivers (``reference="neighbourhoods"``); ``"all"`` uses every honest
model, as in the paper's server setting.
"""

from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView, check_one_of
from robustbench_dice.registry import register_attack

PERTURBATIONS = ("std", "unit", "sign")
REFERENCES = ("neighbourhoods", "all")


def reference_masks(view: AttackView, reference: str) -> torch.Tensor:
    """``(|B|, N)`` bool: row i marks the honest models Byzantine node ``view.byzantine[i]`` is measured against."""
    honest = view.honest_mask
    if reference == "all":
        return honest.expand(view.byzantine.numel(), -1).clone()
    linked = torch.as_tensor(view.mixing.weights > 0, device=honest.device)  # linked[j, k]: j receives from k
    linked = linked | torch.eye(linked.shape[0], dtype=torch.bool, device=honest.device)
    receivers = linked[:, view.byzantine].T & honest  # (|B|, N): b's honest out-neighbours
    masks = (receivers.to(torch.float64) @ linked.to(torch.float64) > 0) & honest  # their closed neighbourhoods
    lonely = ~masks.any(1)  # a Byzantine node with no honest receiver: fall back to every honest model
    masks[lonely] = honest
    return masks


def perturbation(view: AttackView, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``(P,)`` direction ``p``: ``-std`` of the reference models, or ``-unit`` / ``-sign`` of their mean update."""
    if kind == "std":
        return -view.half[mask].std(0, unbiased=False)
    mean_update = view.delta[mask].mean(0)
    if kind == "sign":
        return -mean_update.sign()
    return -mean_update / mean_update.norm().clamp_min(torch.finfo(mean_update.dtype).tiny)


def min_max_gamma(models: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Largest ``gamma >= 0`` with ``max_i |mu + gamma p - x_i| <= max_ij |x_i - x_j|``; ``models (m, P)``."""
    mu, scale = models.mean(0), direction.square().sum()
    if float(scale) == 0.0:
        return torch.zeros((), dtype=models.dtype, device=models.device)
    radius2 = torch.cdist(models, models).max().square()
    offset = mu - models  # (m, P)
    b = offset @ direction / scale
    c = (offset.square().sum(1) - radius2) / scale  # <= 0: the mean is within the honest diameter of every x_i
    return (-b + (b.square() - c).clamp_min(0.0).sqrt()).min().clamp_min(0.0)


def min_sum_gamma(models: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Largest ``gamma >= 0`` with ``sum_i |mu + gamma p - x_i|^2 <= max_i sum_j |x_i - x_j|^2``."""
    mu, scale = models.mean(0), direction.square().sum()
    if float(scale) == 0.0:
        return torch.zeros((), dtype=models.dtype, device=models.device)
    bound = torch.cdist(models, models).square().sum(1).max()
    spread = (mu - models).square().sum()  # the cross term vanishes: sum_i (mu - x_i) = 0
    return ((bound - spread).clamp_min(0.0) / (models.shape[0] * scale)).sqrt()


class _Optimised(Attack):
    perturbation: str
    reference: str

    def __post_init__(self) -> None:
        check_one_of("perturbation", self.perturbation, PERTURBATIONS)
        check_one_of("reference", self.reference, REFERENCES)

    def gamma(self, models: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def messages(self, view: AttackView) -> torch.Tensor:
        out = []
        for mask in reference_masks(view, self.reference):
            direction = perturbation(view, mask, self.perturbation)
            models = view.half[mask]
            out.append(models.mean(0) + self.gamma(models, direction) * direction)
        return torch.stack(out)


@register_attack
@dataclass
class MinMax(_Optimised):
    """Min-Max: the honest mean pushed out to the honest models' largest pairwise distance (Shejwalkar & Houmansadr, NDSS 2021).

    Sends ``mu + gamma p`` with ``max_i |mu + gamma p - x_i| <= max_ij |x_i - x_j|``.

    ``perturbation``: ``std`` (minus the coordinate-wise std of the reference
    models, the paper's choice), ``unit`` (minus the unit mean update) or
    ``sign`` (minus its sign). ``reference``: see the module docstring.
    """

    name = "min_max"
    perturbation: str = "std"
    reference: str = "neighbourhoods"

    def gamma(self, models: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return min_max_gamma(models, direction)


@register_attack
@dataclass
class MinSum(_Optimised):
    """Min-Sum: the honest mean pushed out to the honest models' largest sum of squared distances (Shejwalkar & Houmansadr, NDSS 2021).

    Sends ``mu + gamma p`` with ``sum_i |mu + gamma p - x_i|^2 <= max_i sum_j |x_i - x_j|^2``.

    Parameters as for ``min_max``.
    """

    name = "min_sum"
    perturbation: str = "std"
    reference: str = "neighbourhoods"

    def gamma(self, models: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return min_sum_gamma(models, direction)
