from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class FreeRide(Attack):
    """Free-riding: no local training; forwards the model it aggregated, optionally with camouflage noise.

    Lin et al., "Free-riders in Federated Learning: Attacks and Defenses"
    (arXiv:1911.12560, 2019): the free rider sends its previous model
    (``theta``, the result of last round's aggregation) plus Gaussian noise of
    standard deviation ``noise`` per coordinate to imitate a real update.
    """

    name = "free_ride"
    local_training = False
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def messages(self, view: AttackView) -> torch.Tensor:
        sent = view.theta[view.byzantine]
        if self.noise:
            sent = sent + self.noise * torch.randn(sent.shape, generator=view.generator).to(sent.device)
        return sent
