from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Aggregation, CellInfo, Defense, DefenseView, needs_in_degree_above
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class Ubar(Defense):
    """UBAR: the in-neighbours nearest the node's model, then those no worse on its own data (Guo et al., IEEE TCSVT 2022).

    Guo, Zhang, Yu, Xie, Ma, Xiang, Liu, "Byzantine-resilient Decentralized
    Stochastic Gradient Descent", IEEE TCSVT 2022 (arXiv:2002.08569). Node j
    with d_j in-neighbours
    1. distance stage: shortlists the d_j - f in-neighbours whose messages are
       nearest its own model (the paper's rho_j d_j, with rho_j = 1 - f / d_j
       the fraction of honest neighbours);
    2. performance stage: of those, keeps the ones whose loss on j's local data
       is no larger than its own model's, or the one with the smallest loss if
       none is;
    then ``theta_j = alpha * own_j + (1 - alpha) * mean(kept)`` (``alpha`` 0.5
    by default, as BALANCE's; on a torus with 2 Byzantine nodes, alpha from 0
    to 0.75 moved the accuracy by at most 0.013 under four attacks). The paper
    takes the loss on a training minibatch; here it is node j's local
    validation set z'_j (as in DICE pruning), so that the check does not reuse
    the samples of the local step. Suspicion of k:
    ``loss(m_k; z'_j) - loss(own_j; z'_j)``; neighbours not kept are reported
    as pruned.
    """

    name = "ubar"
    byzantine_bound = "f"
    f: int = 1
    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def skip(self, cell: CellInfo) -> str | None:
        return needs_in_degree_above(
            cell, self.f, f"shortlists in-degree - f in-neighbours (f={self.f}) and needs at least one"
        )

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        received = view.neighbour_messages()  # (N, D, P)
        n = nb.mask.shape[0]
        distance = (received - view.own.unsqueeze(1)).norm(dim=2).masked_fill(~nb.mask, torch.inf)
        rank = distance.argsort(dim=1, stable=True).argsort(dim=1)  # ties: the lower slot first
        shortlisted = nb.mask & (rank < nb.mask.sum(1, keepdim=True) - self.f)
        losses = view.candidate_losses(torch.cat([view.own.unsqueeze(1), received], dim=1))  # (N, 1 + D), own first
        excess = losses[:, 1:] - losses[:, :1]  # (N, D)
        kept = shortlisted & (excess <= 0)
        best = excess.masked_fill(~shortlisted, torch.inf).argmin(dim=1)
        fallback = ~kept.any(1) & shortlisted.any(1)
        kept[torch.arange(n, device=kept.device)[fallback], best[fallback]] = True
        count = kept.sum(1, keepdim=True)
        mean = torch.einsum("nd,ndp->np", kept.to(received.dtype), received) / count.clamp_min(1)
        theta = (self.alpha * view.own + (1 - self.alpha) * mean).where(count > 0, view.own)
        return Aggregation(theta=theta, suspicion=excess, pruned=nb.mask & ~kept)
