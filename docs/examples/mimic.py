"""A complete attack plugin: copy this file, rename the class and `name`, change `messages`."""

from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class Mimic(Attack):
    """Every Byzantine node sends a copy of one honest node's message (Karimireddy, He, Jaggi, ICLR 2022).

    The mimic attack over-weights one honest node's data, which hurts under
    heterogeneous data and is invisible to distance-based defenses. ``target``
    picks the honest node (by its position among the honest nodes).
    """

    name = "mimic"
    target: int = 0

    def messages(self, view: AttackView) -> torch.Tensor:
        honest = view.honest_mask.nonzero().flatten()
        copied = view.half[honest[self.target % honest.numel()]]
        return copied.expand(view.byzantine.numel(), -1).clone()
