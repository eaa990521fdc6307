from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackSetup, check_one_of
from robustbench_dice.registry import register_attack

RULES = ("reverse", "shift", "random")


@register_attack
@dataclass
class LabelFlip(Attack):
    """Data poisoning: Byzantine nodes train honestly on flipped labels (Biggio et al., ICML 2012; Fang et al. 2020).

    ``rule``: ``reverse`` maps y to C-1-y, ``shift`` to y+1 mod C, ``random`` to
    a uniformly drawn other class. ``fraction`` of each Byzantine node's
    training samples are flipped (seeded).
    """

    name = "label_flip"
    rule: str = "reverse"
    fraction: float = 1.0

    def __post_init__(self) -> None:
        check_one_of("rule", self.rule, RULES)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def setup(self, context: AttackSetup) -> None:
        c, labels = context.num_classes, context.train_labels
        for k in context.byzantine.tolist():
            n = int(context.train_count[k])
            chosen = torch.randperm(n, generator=context.generator)[: round(self.fraction * n)].to(labels.device)
            y = labels[k, chosen]
            if self.rule == "reverse":
                flipped = c - 1 - y
            elif self.rule == "shift":
                flipped = (y + 1) % c
            else:
                offset = torch.randint(1, c, y.shape, generator=context.generator).to(labels.device)
                flipped = (y + offset) % c
            labels[k, chosen] = flipped
