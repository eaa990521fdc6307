from dataclasses import dataclass

import torch
from scipy.stats import norm

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class ALittleIsEnough(Attack):
    """ALIE: sends mean - z * std of the honest messages, coordinate-wise (Baruch et al., NeurIPS 2019).

    ``z=None`` uses the paper's z_max = Phi^{-1}((n - s) / n) with
    s = floor(n / 2 + 1) - f, n the number of nodes and f the number of
    Byzantine nodes. Statistics are over all honest messages (omniscient).
    """

    name = "alie"
    z: float | None = None

    def z_value(self, n: int, f: int) -> float:
        if self.z is not None:
            return float(self.z)
        s = n // 2 + 1 - f
        return float(norm.ppf((n - s) / n))

    def messages(self, view: AttackView) -> torch.Tensor:
        honest = view.half[view.honest_mask]
        z = self.z_value(view.half.shape[0], view.byzantine.numel())
        target = honest.mean(0) - z * honest.std(0, unbiased=False)
        return target.expand(view.byzantine.numel(), -1).clone()
