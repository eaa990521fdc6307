"""The per-node reference: the same math as :mod:`.engine`, one node at a time.

This is how peer decentralized-learning codes are written (a Python loop over
nodes, one model each, gossip as a loop over neighbours). It exists so tests
can check the vectorised engine against it and ``benchmarks/engine.py`` can
report the speed-up. It runs the clean setting (attack ``none``, defense
``gossip``) by itself; with :class:`PerNodeRules`, an attack's message and a
defense's rule written node by node, it runs Byzantine nodes too. It consumes
the same :class:`~.setup.RunSetup` and minibatch stream as the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .setup import RunSetup, sample_positions


def gossip_rule(own: torch.Tensor, received: list[tuple[float, torch.Tensor]], self_weight: float) -> torch.Tensor:
    """Node j's plain gossip: ``W_jj own_j + sum_k W_jk m_k``."""
    return self_weight * own + sum((weight * message for weight, message in received), torch.zeros_like(own))


@dataclass(frozen=True)
class PerNodeRules:
    """An attack and a defense written for one node at a time.

    ``send(b, theta_b, half_b)``: Byzantine node b's message from its state before and after its local step.
    ``aggregate(own_j, [(W_jk, m_k) for each in-neighbour k], W_jj)``: node j's new state; it runs for every
    node, Byzantine ones included, as the engine's defense does. ``byzantine_train``: False for attacks that do
    no local step (free riding), whose half-step is then their state.
    """

    send: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
    aggregate: Callable[[torch.Tensor, list[tuple[float, torch.Tensor]], float], torch.Tensor] = gossip_rule
    byzantine_train: bool = True


def reference_round(
    setup: RunSetup,
    theta: list[torch.Tensor],
    buffers: list[torch.Tensor | None],
    positions: torch.Tensor,
    round_index: int,
    rules: PerNodeRules | None = None,
) -> list[torch.Tensor]:
    """One round for every node separately; updates ``buffers`` in place, returns the new models."""
    s, data, model = setup.scenario, setup.data, setup.model
    byzantine = {int(b) for b in setup.byzantine} if rules is not None else set()
    half = []
    for k, theta_k in enumerate(theta):
        if rules is not None and k in byzantine and not rules.byzantine_train:
            half.append(theta_k)
            continue
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
    messages = [rules.send(k, theta[k], half[k]) if rules and k in byzantine else half[k] for k in range(len(half))]
    aggregate = gossip_rule if rules is None else rules.aggregate
    w = setup.mixing.at(round_index).weights
    new = []
    for j in range(len(theta)):
        received = [(float(w[j, k]), messages[k]) for k in range(len(theta)) if k != j and w[j, k] != 0.0]
        new.append(aggregate(half[j], received, float(w[j, j])))
    return new


def run_reference(setup: RunSetup, rounds: int | None = None, rules: PerNodeRules | None = None) -> torch.Tensor:
    """Train with the per-node loop; returns the final ``(N, P)`` parameters. Without ``rules``, only the clean
    setting: the scenario's attack and defense are not written node by node here."""
    s = setup.scenario
    if rules is None and (s.attack != "none" or s.defense != "gossip"):
        raise ConfigError(
            "the per-node reference runs attack 'none' with defense 'gossip' by itself; give PerNodeRules for others"
        )
    sampler = setup.sampler()
    width = setup.data.train_index.shape[1]
    theta = [row.clone() for row in setup.theta0]
    buffers: list[torch.Tensor | None] = [None] * len(theta)
    for t in range(s.rounds if rounds is None else rounds):
        positions = sample_positions(sampler, setup.data.train_count, width, s.batch_size).to(setup.device)
        theta = reference_round(setup, theta, buffers, positions, t, rules)
    return torch.stack(theta)
