from dataclasses import dataclass

import torch

from robustbench_dice.plugins import Attack, AttackView
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class Dissensus(Attack):
    """Dissensus: topology-aware messages that push honest neighbours apart (He, Karimireddy, Jaggi 2022).

    For an honest receiver j with Byzantine in-neighbours B_j the attack of
    "Byzantine-robust decentralized learning via ClippedGossip" sends
    ``m = half_j - epsilon * sum_{k honest} W_jk (half_k - half_j) / sum_{b in B_j} W_jb``,
    cancelling (epsilon = 1) or reversing (epsilon > 1) j's gossip step. Here a
    Byzantine node sends one message to all its out-neighbours, so it sends the
    average of that target over its honest out-neighbours.
    """

    name = "dissensus"
    epsilon: float = 1.5

    def messages(self, view: AttackView) -> torch.Tensor:
        w = torch.tensor(view.mixing.weights, dtype=view.half.dtype, device=view.half.device)
        w = w - torch.diag(torch.diag(w))
        honest = view.honest_mask
        w_honest = w * honest.unsqueeze(0)
        pull = w_honest @ view.half - w_honest.sum(1, keepdim=True) * view.half  # (N, P): j's honest gossip step
        byz_weight = (w * ~honest.unsqueeze(0)).sum(1, keepdim=True).clamp_min(1e-12)
        target = view.half - self.epsilon * pull / byz_weight  # (N, P): per receiver j
        out = []
        for b in view.byzantine.tolist():
            receivers = torch.nonzero((w[:, b] > 0) & honest).flatten()
            out.append(target[receivers].mean(0) if receivers.numel() else view.half[b])
        return torch.stack(out)
