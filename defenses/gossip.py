from dataclasses import dataclass

from robustbench_dice.plugins import Aggregation, Defense, DefenseView, gossip_average
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class Gossip(Defense):
    """Plain gossip averaging theta_j <- sum_k W_jk m_k, no defense (Lian et al., NeurIPS 2017, D-PSGD)."""

    name = "gossip"

    def aggregate(self, view: DefenseView) -> Aggregation:
        return Aggregation(theta=gossip_average(view))
