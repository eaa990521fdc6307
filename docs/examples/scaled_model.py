"""A complete attack plugin: copy this file, rename the class and `name`, change `messages`."""

from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class ScaledModel(Attack):
    """Every Byzantine node sends its honest model times ``scale`` (0: the all-zero model); an example for the docs.

    Not an attack from a paper (a real plugin cites its source here): it shows
    the hooks. ``view.half`` holds the models every node would send honestly,
    row k for node k; a Byzantine node returns one row of its own.
    """

    name = "scaled_model"
    scale: float = 0.0

    def messages(self, view: AttackView) -> torch.Tensor:
        return self.scale * view.half[view.byzantine]
