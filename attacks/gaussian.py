from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class Gaussian(Attack):
    """Sends its honest model plus isotropic Gaussian noise of standard deviation ``std``.

    The Gaussian attack of Blanchard et al. (NeurIPS 2017, Krum) and Xie et al.
    (2018), here added to the model a Byzantine node would honestly send.
    """

    name = "gaussian"
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std}")

    def messages(self, view: AttackView) -> torch.Tensor:
        honest = view.half[view.byzantine]
        return honest + self.std * torch.randn(honest.shape, generator=view.generator).to(honest.device)
