from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class ClippedGossip(Defense):
    """Self-centred clipping: theta_j = own_j + sum_k W_jk clip(m_k - own_j, tau_j) (He, Karimireddy, Jaggi 2022).

    "Byzantine-robust decentralized learning via ClippedGossip"
    (arXiv:2202.01545). ``tau`` fixes the clipping radius; ``tau=None`` uses,
    per node and round, the median distance of its in-neighbours' messages (the
    lower of the two middle ones for an even count: ``torch.nanmedian``; a
    scale a node can compute without knowing who is Byzantine; the paper's
    theoretical radius needs the honest neighbours' spread). Suspicion of k:
    ``||m_k - own_j|| / tau_j``.
    """

    name = "clipped_gossip"
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.tau is not None and self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        offsets = view.neighbour_messages() - view.own.unsqueeze(1)  # (N, D, P)
        distance = offsets.norm(dim=2)  # (N, D)
        if self.tau is None:
            masked = torch.where(nb.mask, distance, torch.full_like(distance, float("nan")))
            tau = masked.nanmedian(dim=1, keepdim=True).values.clamp_min(1e-12)
        else:
            tau = torch.full_like(distance[:, :1], self.tau)
        scale = torch.clamp(tau / distance.clamp_min(1e-12), max=1.0)
        weight = torch.where(nb.mask, nb.weight, torch.zeros_like(nb.weight)) * scale
        theta = view.own + torch.einsum("nd,ndp->np", weight, offsets)
        return Aggregation(theta=theta, suspicion=distance / tau)
