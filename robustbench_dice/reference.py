"""The per-node reference: the same math as :mod:`.engine`, one node at a time.

This is how peer decentralized-learning codes are written (a Python loop over
nodes, one model each, gossip as a loop over neighbours). It exists so tests
can check the vectorised engine against it and ``benchmarks/engine.py`` can
report the speed-up. It supports the clean setting (attack ``none``, defense
``gossip``) and consumes the same :class:`~.setup.RunSetup` and minibatch
stream as the engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .setup import RunSetup, sample_positions


def reference_round(
    setup: RunSetup,
    theta: list[torch.Tensor],
    buffers: list[torch.Tensor | None],
    positions: torch.Tensor,
    round_index: int,
) -> list[torch.Tensor]:
    """One round for every node separately; updates ``buffers`` in place, returns the new models."""
    s, data, model = setup.scenario, setup.data, setup.model
    half = []
    for k, theta_k in enumerate(theta):
        idx = data.train_index[k, positions[k]]
        x_k, y_k = data.pool_x[idx], data.train_labels[k, positions[k]]
        leaf = theta_k.detach().requires_grad_(True)
        loss = F.cross_entropy(model.forward_single(leaf, x_k), y_k)
        (grad,) = torch.autograd.grad(loss, leaf)
        if s.weight_decay:
            grad = grad + s.weight_decay * theta_k
        if s.momentum:
            previous = buffers[k]
            grad = grad if previous is None else s.momentum * previous + grad
            buffers[k] = grad
        half.append(theta_k - s.lr * grad)
    w = setup.mixing.at(round_index).weights
    new = []
    for j in range(len(theta)):
        acc = torch.zeros_like(half[j])
        for k in range(len(theta)):
            if w[j, k] != 0.0:
                acc = acc + float(w[j, k]) * half[k]
        new.append(acc)
    return new


def run_reference(setup: RunSetup, rounds: int | None = None) -> torch.Tensor:
    """Train with the per-node loop; returns the final ``(N, P)`` parameters."""
    s = setup.scenario
    if s.attack != "none" or s.defense != "gossip":
        raise ConfigError("the per-node reference implements attack 'none' with defense 'gossip' only")
    sampler = setup.sampler()
    width = setup.data.train_index.shape[1]
    theta = [row.clone() for row in setup.theta0]
    buffers: list[torch.Tensor | None] = [None] * len(theta)
    for t in range(s.rounds if rounds is None else rounds):
        positions = sample_positions(sampler, setup.data.train_count, width, s.batch_size).to(setup.device)
        theta = reference_round(setup, theta, buffers, positions, t)
    return torch.stack(theta)
