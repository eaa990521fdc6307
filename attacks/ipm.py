from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class InnerProductManipulation(Attack):
    """IPM: sends the honest mean model moved by -epsilon times the honest mean update (Xie et al., UAI 2020).

    In the server setting the Byzantine gradient is -epsilon * mean(honest
    gradients); with models exchanged, the message is
    ``mean_h(theta) - epsilon * mean_h(Delta)``, so its inner product with the
    honest update is negative. Small epsilon (0.1) evades distance-based
    rules, large epsilon (100) breaks averaging.
    """

    name = "ipm"
    epsilon: float = 0.5

    def messages(self, view: AttackView) -> torch.Tensor:
        h = view.honest_mask
        target = view.theta[h].mean(0) - self.epsilon * view.delta[h].mean(0)
        return target.expand(view.byzantine.numel(), -1).clone()
