from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class SignFlip(Attack):
    """Sends the negated model -half_k: the bit/sign-flipping attack applied to models.

    Sign flipping as in Allen-Zhu et al. (ICLR 2021) and Karimireddy et al.
    (ICML 2021, "bit-flipping"), in the decentralized form used by He,
    Karimireddy and Jaggi (2022): the Byzantine node sends the negation of the
    model it would honestly send.
    """

    name = "sign_flip"

    def messages(self, view: AttackView) -> torch.Tensor:
        return -view.half[view.byzantine]
