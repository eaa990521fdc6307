"""Functional primitives over N nodes at once: per-node losses and gradients.

Every function takes the stacked parameters ``theta (N, P)`` and per-node
data ``x (N, B, *input_shape)``, ``y (N, B)`` (optionally a ``mask (N, B)`` of
valid samples) and treats row ``k`` as node ``k``'s model on node ``k``'s
data. Because node losses are independent, the gradient of their sum is every
node's own gradient, so one backward pass serves all nodes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .models import Model

LOSSES = ("cross_entropy", "squared", "linear")

# torch's forward-mode AD registers its own decompositions with torch.jit.script on first use, which warns in
# torch >= 2.9; the warning is about torch's internals, not about anything a user of this package can change
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
    """``(N, B)`` loss of each sample from logits ``(N, B, C)`` and labels ``(N, B)`` (or shared ``(B,)``).

    ``squared`` is ``0.5 * ||logits - onehot(y)||^2``: with a linear model the
    training loss is quadratic in the parameters, so one SGD step is affine and
    its linearisation exact. ``linear`` is the negative true-class logit, linear
    in the parameters of a linear model. Together they make first-order
    influence estimates exact (used to test them).
    """
    n, b, c = logits.shape
    y = y.expand(n, b)
    if loss == "squared":
        return 0.5 * (logits - F.one_hot(y, c).to(logits.dtype)).pow(2).sum(-1)
    if loss == "linear":
        return -logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return F.cross_entropy(logits.reshape(n * b, c), y.reshape(n * b), reduction="none").view(n, b)


def per_node_loss(
    model: Model,
    theta: torch.Tensor | dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """``(N,)`` mean loss of each node on its own samples (masked mean when ``mask`` is given).

    ``theta`` is the flat ``(N, P)`` tensor or its :meth:`Model.unflatten` dictionary; ``x`` is
    ``(N, B, *input_shape)`` or shared by all nodes ``(B, *input_shape)`` with ``y (B,)``.
    """
    logits = model.apply(theta, x) if isinstance(theta, dict) else model.forward(theta, x)
    per_sample = per_sample_loss(logits, y, loss)
    if mask is None:
        return per_sample.mean(dim=1)
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def per_node_grad(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """``(N, P)``: row k is the gradient of node k's loss at ``theta[k]``, from one backward pass.

    Gradients are taken with respect to each named parameter tensor and then
    concatenated: differentiating through slices of the flat ``theta`` would
    make autograd build a zero-filled ``(N, P)`` tensor per slice.
    """
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in model.unflatten(theta).items()}
        total = per_node_loss(model, leaves, x, y, mask, loss).sum()
        grads = torch.autograd.grad(total, list(leaves.values()))
    return torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)


def per_node_hvp(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    tangents: torch.Tensor,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """Hessian-vector products ``H_k(theta_k; x_k, y_k) v_k`` for every node k and every tangent.

    ``tangents`` is ``(..., N, P)`` (leading dimensions are batched with
    ``torch.func.vmap``); the result has the same shape. Forward-over-reverse
    (``jvp`` of ``grad``): never a dense Hessian.
    """

    def gradient(params: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda p: per_node_loss(model, p, x, y, loss=loss).sum())(params)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(gradient, (theta,), (v,))[1]

    lead = tangents.shape[:-2]
    flat = tangents.reshape(-1, *tangents.shape[-2:])
    return torch.func.vmap(hvp)(flat).reshape(*lead, *tangents.shape[-2:])
