from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class GradientScale(Attack):
    """Sends theta + scale * Delta: amplified (scale > 1) or reversed (scale < 0) local updates.

    Model-poisoning by scaling the update, as in Bhagoji et al. (ICML 2019,
    "explicit boosting") and the reversed-gradient attack of Damaskinos et al.
    (ICML 2018); here applied to the Byzantine node's own displacement Delta.
    """

    name = "gradient_scale"
    scale: float = -4.0

    def messages(self, view: AttackView) -> torch.Tensor:
        b = view.byzantine
        return view.theta[b] + self.scale * view.delta[b]
