"""What attacks and defenses see and return: the two hooks of the engine.

An attack rewrites the messages of the Byzantine rows; a defense turns every
node's received messages into its next model and emits a suspicion score per
in-neighbour. Plugins are dataclasses: their fields are their typed parameters
with defaults; ``name`` is a class variable; the docstring cites the source.

Threat model (DESIGN.md section 3): :class:`AttackView` carries the Byzantine
set; :class:`DefenseView` never does. A defense runs for *every* row, so its
output cannot leak who is honest; the engine evaluates honest rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from .mixing import MixingMatrix, Neighbourhood


@dataclass(frozen=True)
class AttackSetup:
    """Given once before training. ``train_labels (N, n_max)`` may be rewritten in place for Byzantine rows."""

    byzantine: torch.Tensor  # (|B|,) long, sorted
    train_labels: torch.Tensor  # (N, n_max) long; padded slots beyond train_count[k] are unused
    train_count: torch.Tensor  # (N,) long
    num_classes: int
    generator: torch.Generator


@dataclass(frozen=True)
class AttackView:
    """One round as the (omniscient) adversary sees it. All parameter tensors are ``(N, P)``."""

    round: int
    byzantine: torch.Tensor  # (|B|,) long
    theta: torch.Tensor  # states before the local step
    half: torch.Tensor  # after the local step: the honest messages m_k = half_k
    delta: torch.Tensor  # half - theta: each node's actual displacement Delta_k
    mixing: MixingMatrix
    generator: torch.Generator


@dataclass(frozen=True)
class DefenseView:
    """One round as the nodes see it; row j of each tensor is what node j knows. Tensors ``(N, P)``."""

    round: int
    messages: torch.Tensor  # m_k as sent (Byzantine rows possibly rewritten)
    own: torch.Tensor  # each node's own half-step model (what it would send if honest)
    theta: torch.Tensor  # each node's own state before its local step
    mixing: MixingMatrix
    weights: torch.Tensor  # W of this round, (N, N), sparse CSR when the graph is sparse
    neighbours: Neighbourhood
    validation_loss: Callable[[torch.Tensor], torch.Tensor]  # (N, P) -> (N,) loss of row j on node j's z'


@dataclass(frozen=True)
class Aggregation:
    """A defense's output: next ``theta (N, P)``; ``suspicion (N, D)`` aligned with ``neighbours`` or None."""

    theta: torch.Tensor
    suspicion: torch.Tensor | None = None


class Plugin:
    name: ClassVar[str] = ""

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def skip(self, scenario: object) -> str | None:
        """A reason this plugin cannot run in the scenario's cell, or None when it can."""
        return None


class Attack(Plugin):
    def setup(self, context: AttackSetup) -> None:
        """Called once before training (data-poisoning attacks change labels here)."""

    def messages(self, view: AttackView) -> torch.Tensor:
        """The ``(|B|, P)`` messages the Byzantine nodes send this round."""
        return view.half[view.byzantine]


class Defense(Plugin):
    def aggregate(self, view: DefenseView) -> Aggregation:
        raise NotImplementedError


def gossip_average(view: DefenseView) -> torch.Tensor:
    """Plain gossip ``W @ messages`` with each node's own row replaced by its own model."""
    mixed = view.weights @ view.messages
    if view.own is not view.messages:
        diag = view.neighbours.self_weight.unsqueeze(1)
        mixed = mixed + diag * (view.own - view.messages)
    return mixed


AttackFactory = Callable[..., Attack]
