import math
from dataclasses import dataclass

from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class Balance(Defense):
    """BALANCE: accept neighbours within a shrinking distance of the node's own model (Fang et al., CCS 2024).

    "Byzantine-Robust Decentralized Federated Learning": node j accepts k when
    ``||own_j - m_k|| <= gamma * exp(-kappa * t / T) * ||own_j||`` and updates
    ``theta_j = alpha * own_j + (1 - alpha) * mean(accepted)`` (own_j alone if
    none). Suspicion of k: ``||own_j - m_k|| / ||own_j||``; rejected
    neighbours are reported as pruned.
    """

    name = "balance"
    gamma: float = 0.3
    kappa: float = 1.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.gamma <= 0 or self.kappa < 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"need gamma > 0, kappa >= 0, 0 <= alpha <= 1; got {self.gamma}, {self.kappa}, {self.alpha}"
            )

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        received = view.neighbour_messages()
        own_norm = view.own.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (N, 1)
        relative = (received - view.own.unsqueeze(1)).norm(dim=2) / own_norm  # (N, D)
        radius = self.gamma * math.exp(-self.kappa * view.round / view.rounds_total)
        accepted = nb.mask & (relative <= radius)
        count = accepted.sum(1, keepdim=True)
        mean = (received * accepted.unsqueeze(-1)).sum(1) / count.clamp_min(1)
        theta = (self.alpha * view.own + (1 - self.alpha) * mean).where(count > 0, view.own)
        return Aggregation(theta=theta, suspicion=relative, pruned=nb.mask & ~accepted)
