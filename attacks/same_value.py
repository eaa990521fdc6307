from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class SameValue(Attack):
    """Every Byzantine node sends a model whose every coordinate is ``value`` (Li et al., RSA, AAAI 2019).

    The same-value attack of the RSA paper (Li, Xu, Chen, Giannakis, Ling,
    "RSA: Byzantine-Robust Stochastic Aggregation Methods for Distributed
    Learning from Heterogeneous Datasets"), sent as a model rather than a
    gradient. Plain averaging follows it; a median or a distance filter
    ignores it. Pruning that needs rounds of evidence (DICE pruning) does
    not: one round of averaging it in ruins the honest models (README).
    """

    name = "same_value"
    value: float = 100.0

    def messages(self, view: AttackView) -> torch.Tensor:
        shape = (view.byzantine.numel(), view.half.shape[1])
        return torch.full(shape, self.value, dtype=view.half.dtype, device=view.half.device)
