from dataclasses import dataclass, field

import torch

from robustbench_dice.plugins import Aggregation, Defense, DefenseView, check_one_of, weighted_average
from robustbench_dice.registry import register_defense

TRUST = ("reported", "mixed")


@register_defense
@dataclass
class DicePrune(Defense):
    """DICE proximal-influence pruning: drop in-neighbours whose influence on z' is consistently negative.

    Zhu, Li, Wang, He, "DICE: Data Influence Cascade in Decentralized
    Learning" (ICLR 2025), Definition 3 and its anomaly-detection use. Each
    node j keeps the running proximal influence of every in-neighbour k on its
    own local validation set z'_j,

        S_jk <- decay * S_jk + p_t,   p_t = Prox_t(k -> j) = -grad L(theta_j^{t+1}; z'_j)^T W_jk Delta_k,

    and its running square sum ``Q_jk <- decay * Q_jk + p_t^2``. After
    ``warmup`` rounds it excludes k while ``S_jk / sqrt(Q_jk) < threshold``
    and keeps the excluded weight itself. ``S / sqrt(Q)`` is scale-free and
    large in magnitude only when the per-round influence keeps one sign (it is
    -sqrt(rounds) for a neighbour that is harmful every round); pruning on the
    raw sum ``S_jk < 0`` instead cuts honest neighbours whose noisy influence
    drifts below zero, isolating nodes (measured in docs/plugins.md).

    ``trust`` says which Delta_k a node uses: ``reported`` (the displacement the
    sender claims; a Byzantine sender may lie) or ``mixed`` (``m_k - own_j``,
    the displacement k's message actually causes in j's average, which needs
    no trust; the default, as it also lets an isolated node re-admit neighbours
    that pull it back towards consensus). Suspicion of k: ``-S_jk``, the
    negated proximal influence.
    """

    name = "dice_prune"
    threshold: float = -2.0
    warmup: int = 5
    decay: float = 1.0
    trust: str = "mixed"
    _influence: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _square: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_one_of("trust", self.trust, TRUST)
        if self.warmup < 0 or not 0.0 < self.decay <= 1.0:
            raise ValueError(f"need warmup >= 0 and 0 < decay <= 1; got {self.warmup}, {self.decay}")

    def aggregate(self, view: DefenseView) -> Aggregation:
        nb = view.neighbours
        n = view.own.shape[0]
        if self._influence is None or self._square is None or view.round == 0:
            self._influence = torch.zeros(n, n, dtype=view.own.dtype, device=view.own.device)
            self._square = torch.zeros_like(self._influence)
        rows = torch.arange(n, device=nb.index.device).unsqueeze(1).expand_as(nb.index)
        influence, square = self._influence[rows, nb.index], self._square[rows, nb.index]  # (N, D)
        consistency = influence / square.sqrt().clamp_min(1e-30)
        keep = nb.mask & ((consistency >= self.threshold) | (view.round < self.warmup))
        theta = weighted_average(view, keep)
        test_grad = view.validation_grad(theta)  # grad L(theta_j^{t+1}; z'_j), (N, P)
        if self.trust == "reported":
            delta = view.reported_delta[nb.index]  # (N, D, P)
        else:
            delta = view.neighbour_messages() - view.own.unsqueeze(1)
        prox = -torch.einsum("np,ndp->nd", test_grad, delta) * nb.weight
        influence = self.decay * influence + prox
        square = self.decay * square + prox.square()
        slots = (rows[nb.mask], nb.index[nb.mask])
        self._influence[slots] = influence[nb.mask]
        self._square[slots] = square[nb.mask]
        return Aggregation(theta=theta, suspicion=-influence, pruned=nb.mask & ~keep)
