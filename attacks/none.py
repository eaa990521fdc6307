from dataclasses import dataclass

from robustbench_dice.plugins import Attack
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class NoAttack(Attack):
    """No attack: Byzantine nodes behave honestly (the clean baseline)."""

    name = "none"
