"""What attacks and defenses see and return: the two hooks of the engine.

An attack rewrites the messages of the Byzantine rows; a defense turns every
node's received messages into its next model and emits a suspicion score per
in-neighbour (higher = more suspicious). Plugins are dataclasses: their fields
are their typed parameters with defaults; ``name`` is a class variable; the
docstring's first line describes the plugin and the docstring cites its source.

Threat model (DESIGN.md section 3): :class:`AttackView` carries the Byzantine
set; :class:`DefenseView` never does. A defense runs for *every* row, so its
inputs cannot leak who is honest; the engine evaluates honest rows only.

All parameter tensors are ``(N, P)``: row ``k`` belongs to node ``k``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from .mixing import MixingMatrix, Neighbourhood

if TYPE_CHECKING:
    from .scenario import Scenario


@dataclass(frozen=True)
class CellInfo:
    """What a plugin may inspect to decline a cell before the run: the scenario and the graph's degrees."""

    scenario: Scenario
    min_in_degree: int  # smallest number of in-neighbours of any node in any round (self excluded)
    max_in_degree: int

    @property
    def smallest_neighbourhood(self) -> int:
        """Models in the smallest neighbourhood, the node's own included."""
        return self.min_in_degree + 1


@dataclass(frozen=True)
class AttackSetup:
    """Given once before training. ``train_labels (N, n_max)`` may be rewritten in place for Byzantine rows."""

    byzantine: torch.Tensor  # (|B|,) long, sorted
    train_labels: torch.Tensor  # (N, n_max) long; slots at or beyond train_count[k] are padding
    train_count: torch.Tensor  # (N,) long
    num_classes: int
    generator: torch.Generator


@dataclass(frozen=True)
class AttackView:
    """One round as the omniscient adversary sees it (it may read every honest message)."""

    round: int
    rounds_total: int
    byzantine: torch.Tensor  # (|B|,) long
    theta: torch.Tensor  # states before the local step
    half: torch.Tensor  # after the local step: the honest messages m_k = half_k
    delta: torch.Tensor  # half - theta: each node's actual displacement Delta_k
    mixing: MixingMatrix
    neighbours: Neighbourhood
    generator: torch.Generator

    @property
    def honest_mask(self) -> torch.Tensor:
        """``(N,)`` bool, True for honest rows."""
        mask = torch.ones(self.theta.shape[0], dtype=torch.bool, device=self.theta.device)
        mask[self.byzantine] = False
        return mask


@dataclass(frozen=True)
class DefenseView:
    """One round as the nodes see it; row j of each tensor is what node j knows or received."""

    round: int
    rounds_total: int
    messages: torch.Tensor  # m_k as sent (Byzantine rows possibly rewritten)
    reported_delta: torch.Tensor  # Delta_k as each sender reports it (a Byzantine sender may lie)
    own: torch.Tensor  # each node's own half-step model
    theta: torch.Tensor  # each node's own state before its local step
    mixing: MixingMatrix
    weights: torch.Tensor  # W of this round, (N, N), sparse CSR on large sparse graphs
    neighbours: Neighbourhood
    validation_loss: Callable[[torch.Tensor], torch.Tensor]  # (N, P) -> (N,): row j's loss on node j's z'_j
    validation_grad: Callable[[torch.Tensor], torch.Tensor]  # (N, P) -> (N, P): its gradient
    # (N, M, P) -> (N, M): validation_loss of M models per node in one batched pass; use candidate_losses()
    batched_validation_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    # seeded per run, a CPU generator apart from the attack's: a randomised rule draws from it (and moves the draws
    # to the tensors' device) so that the same seed gives the same run; None in views built by hand
    generator: torch.Generator | None = None

    def neighbour_messages(self) -> torch.Tensor:
        """``(N, D, P)`` messages of each node's in-neighbours, padded slots hold the node's own model.

        Gathered once per view and the same tensor returned on every call: read it, do not modify it in place.
        """
        cached = self.__dict__.get("_neighbour_messages")  # the view is frozen; the cache is not one of its fields
        if cached is None:
            nb = self.neighbours
            cached = self.messages[nb.index]
            if not bool(nb.mask.all()):  # regular graphs have no padded slot
                cached = torch.where(nb.mask.unsqueeze(-1), cached, self.own.unsqueeze(1))
            self.__dict__["_neighbour_messages"] = cached
        return cached

    def candidate_losses(self, candidates: torch.Tensor) -> torch.Tensor:
        """``(N, M)`` loss of each of node j's M models ``candidates (N, M, P)`` on node j's validation set z'_j.

        Entry ``[j, m]`` equals ``validation_loss(candidates[:, m])[j]``. The engine computes all M in one batched
        forward pass; a view built without ``batched_validation_loss`` makes the M calls.
        """
        if self.batched_validation_loss is not None:
            return self.batched_validation_loss(candidates)
        return torch.stack([self.validation_loss(candidates[:, m].contiguous()) for m in range(candidates.shape[1])], 1)

    def with_self(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D+1, P)`` candidate models (own first, then in-neighbours) and their ``(N, D+1)`` mask."""
        candidates = torch.cat([self.own.unsqueeze(1), self.neighbour_messages()], dim=1)
        mask = torch.cat([torch.ones_like(self.neighbours.mask[:, :1]), self.neighbours.mask], dim=1)
        return candidates, mask

    def with_candidates(self, candidates: torch.Tensor) -> DefenseView:
        """This round's view with each node's own model and received messages replaced by ``candidates``.

        ``candidates (N, D+1, P)`` is ordered as :meth:`with_self` returns them (own first, padded slots holding
        the own model). This is how a pre-aggregation step (nearest-neighbour mixing) hands its output to a rule
        that reads :meth:`with_self`, :meth:`neighbour_messages` or ``own``. ``messages``, which is indexed by
        sender rather than by receiver, is unchanged: a rule that reads it directly (plain gossip) would not see
        the replacement.
        """
        expected = (self.own.shape[0], self.neighbours.index.shape[1] + 1, self.own.shape[1])
        if tuple(candidates.shape) != expected:
            raise ValueError(f"candidates must have shape {expected} (N, D+1, P), got {tuple(candidates.shape)}")
        view = dataclasses.replace(self, own=candidates[:, 0])
        view.__dict__["_neighbour_messages"] = candidates[:, 1:]
        return view


@dataclass(frozen=True)
class Aggregation:
    """A defense's output.

    ``theta (N, P)``: every node's next model. ``suspicion (N, D)``: one score
    per in-neighbour slot of ``view.neighbours`` (higher = more suspicious;
    ignored on padded slots), or None for a defense without scores.
    ``pruned (N, D)`` bool: in-neighbours the node excluded this round, or None.
    """

    theta: torch.Tensor
    suspicion: torch.Tensor | None = None
    pruned: torch.Tensor | None = None


class Plugin:
    name: ClassVar[str] = ""

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def skip(self, cell: CellInfo) -> str | None:
        """A reason this plugin cannot run in this cell (shown to the user), or None when it can."""
        return None


class Attack(Plugin):
    """Base class of attacks; the default behaves honestly.

    A Byzantine node keeps an internal model that takes honest local steps on
    its (possibly poisoned) data, so that ``view.delta`` of its row is a real
    displacement; set ``local_training = False`` for attacks that do no local
    work (its displacement is then zero).
    """

    local_training: ClassVar[bool] = True

    def setup(self, context: AttackSetup) -> None:
        """Called once before training (data-poisoning attacks change Byzantine labels here)."""

    def messages(self, view: AttackView) -> torch.Tensor:
        """The ``(|B|, P)`` models the Byzantine nodes send this round. Must not modify the view's tensors."""
        return view.half[view.byzantine]

    def reported_delta(self, view: AttackView, messages: torch.Tensor) -> torch.Tensor:
        """The ``(|B|, P)`` displacements the Byzantine nodes claim; by default consistent with their message."""
        return messages - view.theta[view.byzantine]


AUTO = "auto"  # the value of a defense's Byzantine bound that the engine resolves per run


class Defense(Plugin):
    """Base class of defenses. State kept across rounds lives on the instance.

    ``byzantine_bound`` names the integer parameter that is the number of Byzantine in-neighbours the rule
    tolerates (Krum's ``f``, the trimmed mean's ``trim``), or None. That parameter also accepts ``"auto"``:
    the engine sets it, before :meth:`skip`, to the most Byzantine in-neighbours any honest node has in the
    run (``RunSetup.byzantine_in_neighbours``), the known bound decentralized robust rules assume. The
    defense gets that one number, never the Byzantine set.
    """

    byzantine_bound: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        """Checks the declared Byzantine bound (dataclass subclasses call this after ``__init__``; a subclass with
        a ``__post_init__`` of its own calls ``super().__post_init__()``)."""
        if self.byzantine_bound is not None and getattr(self, self.byzantine_bound) < 0:
            raise ValueError(f"{self.byzantine_bound} must be >= 0, got {getattr(self, self.byzantine_bound)}")

    def aggregate(self, view: DefenseView) -> Aggregation:
        raise NotImplementedError


def check_one_of(parameter: str, value: str, choices: tuple[str, ...]) -> None:
    """For a plugin's ``__post_init__``: a ValueError naming ``parameter``, the bad ``value`` and the ``choices``."""
    if value not in choices:
        raise ValueError(f"{parameter} must be one of {', '.join(choices)}, got {value!r}")


def needs_in_degree_above(cell: CellInfo, f: int, what: str) -> str | None:
    """For a defense's ``skip``: the reason to decline a cell where some node has at most ``f`` in-neighbours (a rule
    that sets ``f`` of them aside would have none left), ``what`` the rule does followed by the smallest in-degree;
    None where every node has more."""
    if cell.min_in_degree <= f:
        return f"{what}; the smallest in-degree is {cell.min_in_degree}"
    return None


def gossip_average(view: DefenseView) -> torch.Tensor:
    """Plain gossip ``W @ messages`` with each node's own row replaced by its own model."""
    mixed = view.weights @ view.messages
    if view.own is not view.messages:
        mixed = mixed + view.neighbours.self_weight.unsqueeze(1) * (view.own - view.messages)
    return mixed


def weighted_average(view: DefenseView, keep: torch.Tensor) -> torch.Tensor:
    """Gossip over the kept in-neighbours only (``keep (N, D)`` bool); dropped weight goes to the node itself."""
    nb = view.neighbours
    w = torch.where(keep & nb.mask, nb.weight, torch.zeros_like(nb.weight))
    self_w = 1.0 - w.sum(1)
    return self_w.unsqueeze(1) * view.own + torch.einsum("nd,ndp->np", w, view.neighbour_messages())
