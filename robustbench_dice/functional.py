"""Functional primitives over N nodes at once: per-node losses and gradients.

Every function takes the stacked parameters ``theta (N, P)`` and per-node
data ``x (N, B, *input_shape)``, ``y (N, B)`` (optionally a ``mask (N, B)`` of
valid samples) and treats row ``k`` as node ``k``'s model on node ``k``'s
data. Because node losses are independent, the gradient of their sum is every
node's own gradient, so one backward pass serves all nodes. Arguments that do
not fit together (shapes, dtypes, devices, the loss name) are a ``ValueError``
naming the misfit (:func:`check_node_inputs`) rather than one of torch's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .models import Model

LOSSES = ("cross_entropy", "squared", "linear")

# torch's forward-mode AD registers its own decompositions with torch.jit.script on first use, which warns in
# torch >= 2.9; the warning is about torch's internals, not about anything a user of this package can change
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")  # Future- or DeprecationWarning


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")


def check_node_inputs(
    model: Model,
    theta: torch.Tensor | dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "cross_entropy",
    tangents: torch.Tensor | None = None,
) -> None:
    """Raises ``ValueError`` naming the misfit when the arguments of a per-node primitive do not fit together.

    Shapes, dtypes, devices and the loss name only: nothing here reads a
    tensor's values, so it never waits for a GPU. Labels out of range are left
    to torch's own error.
    """
    _check_loss(loss)
    if isinstance(theta, dict):
        return
    if theta.dim() != 2 or theta.shape[1] != model.num_params:
        raise ValueError(
            f"theta must be (N, P) = (nodes, {model.num_params}) for this {type(model).__name__}, got {tuple(theta.shape)}"
        )
    n, dims = theta.shape[0], len(model.input_shape)
    if not x.is_floating_point() or x.dtype != theta.dtype or x.device != theta.device:
        raise ValueError(
            f"x must have theta's dtype and device ({theta.dtype}, {theta.device}), got ({x.dtype}, {x.device})"
        )
    shared = x.dim() == dims + 1
    if tuple(x.shape[x.dim() - dims :]) != model.input_shape or not (
        shared or (x.dim() == dims + 2 and x.shape[0] == n)
    ):
        raise ValueError(
            f"x must be (N, B, *input_shape) = ({n}, B, {', '.join(map(str, model.input_shape))}) or shared"
            f" (B, *input_shape), got {tuple(x.shape)}"
        )
    samples = tuple(x.shape[:-dims] if dims else x.shape)
    if y.dtype not in (torch.int64, torch.int32) or tuple(y.shape) not in (samples, samples[-1:]):
        raise ValueError(f"y must be integer class labels of shape {samples}, got {y.dtype} {tuple(y.shape)}")
    if mask is not None and tuple(mask.shape) != (n, samples[-1]):
        raise ValueError(f"mask must be (N, B) = {(n, samples[-1])}, got {tuple(mask.shape)}")
    if tangents is not None and (
        tangents.dim() < 2 or tangents.shape[-2:] != theta.shape or tangents.dtype != theta.dtype
    ):
        raise ValueError(
            f"tangents must be (..., N, P) = (..., {n}, {model.num_params}) of theta's dtype {theta.dtype},"
            f" got {tangents.dtype} {tuple(tangents.shape)}"
        )


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
    """``(N, B)`` loss of each sample from logits ``(N, B, C)`` and labels ``(N, B)`` (or shared ``(B,)``).

    ``squared`` is ``0.5 * ||logits - onehot(y)||^2``: with a linear model the
    training loss is quadratic in the parameters, so one SGD step is affine and
    its linearisation exact. ``linear`` is the negative true-class logit, linear
    in the parameters of a linear model. Together they make first-order
    influence estimates exact (used to test them).
    """
    _check_loss(loss)
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
    check_node_inputs(model, theta, x, y, mask, loss)
    return _per_node_loss(model, theta, x, y, mask, loss)


def _per_node_loss(
    model: Model,
    theta: torch.Tensor | dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    loss: str,
) -> torch.Tensor:
    logits = model.apply(theta, x) if isinstance(theta, dict) else model.forward(theta, x)
    per_sample = per_sample_loss(logits, y, loss)
    if mask is None:
        return per_sample.mean(dim=1)
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def logit_grad(
    logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, loss: str = "cross_entropy"
) -> torch.Tensor:
    """``(N, B, C)`` derivative of :func:`per_node_loss` (each node's mean loss) with respect to its logits."""
    _check_loss(loss)
    return _average_(_sample_logit_grad(logits, y, loss), mask)


def _sample_logit_grad(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """``(N, B, C)`` derivative of each sample's own loss with respect to its logits (a new tensor)."""
    n, b, c = logits.shape
    y = y.expand(n, b)
    if loss == "squared":
        return logits - F.one_hot(y, c).to(logits.dtype)
    if loss == "linear":
        return -F.one_hot(y, c).to(logits.dtype)
    grad = torch.softmax(logits, dim=-1)
    return grad.scatter_add_(-1, y.unsqueeze(-1), torch.full((n, b, 1), -1.0, dtype=grad.dtype, device=grad.device))


def _average_(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scales per-sample derivatives ``(N, B, C)`` in place to those of the (masked) mean over samples."""
    if mask is None:
        return grad.mul_(1.0 / grad.shape[1])
    weights = mask.to(grad.dtype)
    return grad.mul_((weights / weights.sum(1, keepdim=True).clamp_min(1.0)).unsqueeze(-1))


def per_node_grad(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """``(N, P)``: row k is the gradient of node k's loss at ``theta[k]``.

    Uses the model's hand-written backward pass where it has one
    (:meth:`Model.gradient`: the dense models), else :func:`per_node_grad_autograd`;
    tests check the two agree.
    """
    check_node_inputs(model, theta, x, y, mask, loss)
    if model.has_gradient:
        return model.gradient(theta.detach(), x, lambda logits: logit_grad(logits, y, mask, loss))[0]
    return _per_node_grad_autograd(model, theta, x, y, mask, loss)


class Samples(NamedTuple):
    """Per-node samples ``x (N, B, *input_shape)``, labels ``y (N, B)``, optional valid-sample ``mask (N, B)``."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None


def per_node_grads(
    model: Model, theta: torch.Tensor, parts: Sequence[Samples], loss: str = "cross_entropy"
) -> list[torch.Tensor]:
    """``[per_node_grad(model, theta, *part) for part in parts]``, with one forward pass over all parts.

    For the dense models the parts' samples go through the network together
    and each part's gradient is then summed over its own samples; every
    sample's arithmetic is the same as in a separate call. Other models make
    separate calls.
    """
    for part in parts:
        check_node_inputs(model, theta, *part, loss=loss)
    sizes = [part.x.shape[1] for part in parts]

    def output_grad(logits: torch.Tensor) -> torch.Tensor:
        grad = _sample_logit_grad(logits, torch.cat([p.y for p in parts], dim=1), loss)
        for group, part in zip(grad.split(sizes, dim=1), parts, strict=True):
            _average_(group, part.mask)  # views: scales grad in place
        return grad

    if not model.has_gradient or any(p.x.dim() != len(model.input_shape) + 2 for p in parts):
        return [per_node_grad(model, theta, *part, loss) for part in parts]
    return model.gradient(theta.detach(), torch.cat([p.x for p in parts], dim=1), output_grad, sizes)


def per_node_grad_autograd(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """:func:`per_node_grad` by autograd: one backward pass through the batched forward serves every node.

    Gradients are taken with respect to each named parameter tensor and then
    concatenated: differentiating through slices of the flat ``theta`` would
    make autograd build a zero-filled ``(N, P)`` tensor per slice.
    """
    check_node_inputs(model, theta, x, y, mask, loss)
    return _per_node_grad_autograd(model, theta, x, y, mask, loss)


def _per_node_grad_autograd(
    model: Model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, loss: str
) -> torch.Tensor:
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in model.unflatten(theta).items()}
        total = _per_node_loss(model, leaves, x, y, mask, loss).sum()
        grads = torch.autograd.grad(total, list(leaves.values()))
    return torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)


def logit_hvp(logits: torch.Tensor, tangents: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
    """``(N, S, B, C)``: logit tangents ``(N, S, B, C)`` times the Hessian of each node's mean loss with respect
    to its logits ``(N, B, C)``, the second derivative to :func:`logit_grad`'s first (no mask)."""
    _check_loss(loss)
    scale = 1.0 / logits.shape[1]
    if loss == "squared":
        return tangents * scale
    if loss == "linear":
        return torch.zeros_like(tangents)
    p = torch.softmax(logits, dim=-1).unsqueeze(1)  # softmax's Jacobian: diag(p) - p p^T
    pr = p * tangents
    return (pr - p * pr.sum(-1, keepdim=True)) * scale


def per_node_hvp(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    tangents: torch.Tensor,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """Hessian-vector products ``H_k(theta_k; x_k, y_k) v_k`` for every node k and every tangent.

    ``tangents`` is ``(..., N, P)``; the result has the same shape. Never a dense Hessian: the model's
    hand-written R-operator where it has one (:meth:`Model.hvp`: the dense models), else
    :func:`per_node_hvp_autograd`; tests check the two agree.
    """
    check_node_inputs(model, theta, x, y, None, loss, tangents)
    if not model.has_hvp:
        return _per_node_hvp_autograd(model, theta, x, y, tangents, loss)
    flat = tangents.reshape(-1, *tangents.shape[-2:])
    out = model.hvp(
        theta.detach(),
        x,
        flat,
        lambda logits: logit_grad(logits, y, None, loss),
        lambda logits, r: logit_hvp(logits, r, loss),
    )
    return out.reshape(tangents.shape)


def per_node_hvp_autograd(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    tangents: torch.Tensor,
    loss: str = "cross_entropy",
) -> torch.Tensor:
    """:func:`per_node_hvp` by ``torch.func``: forward-over-reverse (``jvp`` of ``grad``), the leading
    dimensions of ``tangents`` batched with ``vmap``."""
    check_node_inputs(model, theta, x, y, None, loss, tangents)
    return _per_node_hvp_autograd(model, theta, x, y, tangents, loss)


def _per_node_hvp_autograd(
    model: Model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, tangents: torch.Tensor, loss: str
) -> torch.Tensor:
    def gradient(params: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda p: _per_node_loss(model, p, x, y, None, loss).sum())(params)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(gradient, (theta,), (v,))[1]

    lead = tangents.shape[:-2]
    flat = tangents.reshape(-1, *tangents.shape[-2:])
    return torch.func.vmap(hvp)(flat).reshape(*lead, *tangents.shape[-2:])
