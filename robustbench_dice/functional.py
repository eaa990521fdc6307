"""Functional primitives over N nodes at once: per-node losses and gradients.

Every function takes the stacked parameters ``theta (N, P)`` and per-node
data ``x (N, B, *input_shape)``, ``y (N, B)`` (optionally a ``mask (N, B)`` of
valid samples) and treats row ``k`` as node ``k``'s model on node ``k``'s
data. Because node losses are independent, the gradient of their sum is every
node's own gradient, so one backward pass serves all nodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import Model


def per_node_loss(
    model: Model,
    theta: torch.Tensor | dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(N,)`` mean cross-entropy of each node on its own samples (masked mean when ``mask`` is given).

    ``theta`` is the flat ``(N, P)`` tensor or its :meth:`Model.unflatten` dictionary.
    """
    logits = model.apply(theta, x) if isinstance(theta, dict) else model.forward(theta, x)
    n, b, c = logits.shape
    per_sample = F.cross_entropy(logits.reshape(n * b, c), y.reshape(n * b), reduction="none").view(n, b)
    if mask is None:
        return per_sample.mean(dim=1)
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def per_node_grad(
    model: Model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(N, P)``: row k is the gradient of node k's loss at ``theta[k]``, from one backward pass.

    Gradients are taken with respect to each named parameter tensor and then
    concatenated: differentiating through slices of the flat ``theta`` would
    make autograd build a zero-filled ``(N, P)`` tensor per slice.
    """
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in model.unflatten(theta).items()}
        loss = per_node_loss(model, leaves, x, y, mask).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)
