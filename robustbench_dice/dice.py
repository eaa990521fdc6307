"""DICE: proximal influence, the r-hop influence estimate, and its counterfactual ground truth.

Sign and scale (DESIGN.md section 4): influence is positive when it *helps*,
i.e. when the data lowers the receiver's loss on the probe set z'. ``Delta``
is the actual displacement of a local step, learning rate included (the
paper's ``eta^t * Delta_j`` is our ``Delta_j``).

The training map around a probe round ``t`` is plain decentralized SGD
(adapt, then combine): ``half_k = theta_k - lr * (grad L(theta_k; z_k^s) + wd * theta_k)``,
``theta^{s+1} = W^s half``. Removing node j's batch at round t means
``half_j^t = theta_j^t`` (its step is skipped). ``removal="sample"`` removes one
data point instead, as the paper defines ``z_j^t``: the first sample of j's
batch (batches are random draws), j stepping on the mean gradient of the
other B - 1; then ``Delta_j`` below reads ``Delta_j - Delta_j^{-z}``.

- Ground truth (paper Def. 2, per receiver):
  ``GT_r[j, k] = L(theta_k^{t+r, -j}; z') - L(theta_k^{t+r}; z')``, from
  re-running rounds t .. t+r-1 with every other batch identical; all sources
  are one batch of counterfactual worlds. The paper's ``GT_r`` is
  ``sum_k q_k GT_r[j, k]``.
- Estimate (paper Thm.): the perturbation of j's half step is ``-Delta_j``;
  it is mixed by ``W^t``, then for each later round s = t+1 .. t+r-1 every
  node linearises its step, ``(I - lr (H_k(theta_k^s; z_k^s) + wd I))``, and
  mixes with ``W^s``; the result is paired with the probe gradient at
  ``theta_k^{t+r}``. This is exactly the Jacobian-vector product of the
  unrolled r-round map (tests check it), i.e.

  ``E_r[j, k] = -grad L(theta_k^{t+r}; z')^T [W^{t+r-1} (I - lr H^{t+r-1}) ... W^{t+1} (I - lr H^{t+1}) W^t]_{kj} Delta_j``.

  Mapping to the paper: its path sum over ``(k_1 .. k_rho)`` is the matrix
  product over nodes; its ``W^{t+s-1}_{k_s k_{s-1}}`` is our ``W^{t+s-1}[k_s, k_{s-1}]``
  (receiver row); its curvature factor ``H(theta_{k_s}^{t+s-1}; z_{k_s}^{t+s-1})``
  for s = 2 .. rho is our Hessian at round t+s-1, at the node the path is
  at; its test gradient at ``theta_{k_rho}^{t+rho}`` is ours at t+r. Paths
  that stay at a node use ``W_kk`` (self-loops), so hop distances < r are
  included in the r-round product.
- Proximal influence (paper Def. 3), one round, all pairs:
  ``Prox[j, k] = -W_jk grad L(theta_j^{t+1}; z'_j)^T Delta_k`` = ``-(G Delta^T) * W``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .functional import per_node_grad, per_node_hvp, per_node_loss
from .models import Model

# On the CPU, proximal influence's dot products are taken only on W's non-zeros (one sampled product, CSR) when W
# has at least EDGE_PRODUCTS_MIN_NODES rows and at most EDGE_PRODUCTS_DENSITY non-zeros: measured there
# (benchmarks/influence.py, ``edge_products_speedup``), this is 2.5-7x faster than the dense N x N product at
# 64-128 nodes of degree <= N / 8, on par at density 1/4 and slower on denser or smaller graphs. A fixed rule, not
# a timing, so a scenario gives the same numbers on every machine; on a GPU the dense product stays (unmeasured).
EDGE_PRODUCTS_DENSITY = 0.25
EDGE_PRODUCTS_MIN_NODES = 32


def influence_weights(weights: torch.Tensor) -> torch.Tensor:
    """``weights`` in the layout :func:`proximal_influence` is fastest with: CSR where the rule above says so.

    ``weights (N, N)``, dense or CSR; a CSR input, or one the rule leaves dense, is returned as it is.
    """
    n = weights.shape[0]
    if weights.layout != torch.strided or weights.device.type != "cpu" or n < EDGE_PRODUCTS_MIN_NODES:
        return weights
    if torch.count_nonzero(weights).item() > EDGE_PRODUCTS_DENSITY * n * n:
        return weights
    return _csr(weights)


def proximal_influence(test_grad: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` dense matrix ``Prox[j, k] = -W_jk * test_grad_j . delta_k``, zero off W's non-zeros.

    ``test_grad (N, P)``: row j is ``grad L(theta_j^{t+1}; z'_j)``; ``delta (N, P)``: row k is
    ``Delta_k^t``; ``weights (N, N)``: ``W^t``. Dense ``weights``: one dense product (all N x N
    dot products); sparse CSR: only those on W's non-zeros (:func:`proximal_influence_on_edges`),
    faster when W is sparse enough. Shapes or dtypes that do not fit are a ``ValueError`` naming them.
    """
    _check_proximal_inputs(test_grad, delta, weights)
    if weights.layout == torch.strided:
        return -(test_grad @ delta.T) * weights
    csr = _csr(weights)
    out = torch.zeros(csr.shape, dtype=test_grad.dtype, device=test_grad.device)
    return out.index_put_(_csr_edges(csr), proximal_influence_on_edges(test_grad, delta, csr))


def _check_proximal_inputs(test_grad: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor) -> None:
    # a 1-D test gradient would broadcast against W into an (N, N) matrix of the wrong quantity, silently
    n = weights.shape[0] if weights.dim() == 2 else -1
    if test_grad.dim() != 2 or test_grad.shape != delta.shape or tuple(weights.shape) != (n, n) or n != len(delta):
        raise ValueError(
            "proximal influence needs test_grad and delta of one shape (N, P) and weights (N, N); got"
            f" test_grad {tuple(test_grad.shape)}, delta {tuple(delta.shape)}, weights {tuple(weights.shape)}"
        )
    if not test_grad.dtype == delta.dtype == weights.dtype:
        raise ValueError(
            f"proximal influence needs one dtype; got test_grad {test_grad.dtype}, delta {delta.dtype},"
            f" weights {weights.dtype}"
        )


def proximal_influence_on_edges(test_grad: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(nnz,)`` values of :func:`proximal_influence` on the non-zeros of the CSR matrix ``weights``, in its order.

    One sampled matrix product (``torch.sparse.sampled_addmm``): only the N x
    degree dot products on the edges are computed, not N x N.
    """
    with warnings.catch_warnings():  # CSR is marked beta; sampled products are all we use of it here
        warnings.simplefilter("ignore", UserWarning)
        dots = torch.sparse.sampled_addmm(weights, test_grad, delta.T, beta=0.0, alpha=-1.0)
    return dots.values() * weights.values()


def _csr_edges(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index ``(nnz,)`` of each non-zero of a CSR matrix, in its order."""
    n = weights.shape[0]
    counts = weights.crow_indices().diff()
    return torch.repeat_interleave(torch.arange(n, device=counts.device), counts), weights.col_indices()


def _csr(weights: torch.Tensor) -> torch.Tensor:
    if weights.layout == torch.sparse_csr:
        return weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return weights.to_sparse_csr()


@dataclass(frozen=True)
class Window:
    """The inputs of rounds t .. t+R-1 of a run: enough to replay and differentiate them.

    ``theta (N, P)``: states at the start of round t. ``batches``: R pairs
    ``(x (N, B, ...), y (N, B))`` of the minibatches used. ``weights``: R dense
    ``(N, N)`` mixing matrices. ``lr``, ``weight_decay``: the plain-SGD step.
    """

    round: int
    theta: torch.Tensor
    batches: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    weights: tuple[torch.Tensor, ...]
    lr: float
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        """A misfit here would surface rounds later as a torch error (or an IndexError) inside the propagation."""
        theta = self.theta
        if theta.dim() != 2:
            raise ValueError(f"Window.theta must be (N, P), got shape {tuple(theta.shape)}")
        n = theta.shape[0]
        if not self.batches or len(self.weights) != len(self.batches):
            raise ValueError(
                f"a Window needs one mixing matrix per minibatch, at least one of each; got {len(self.batches)}"
                f" batches and {len(self.weights)} weights"
            )
        for s, ((x, y), w) in enumerate(zip(self.batches, self.weights, strict=True)):
            if w.shape != (n, n) or w.layout != torch.strided or w.dtype != theta.dtype or w.device != theta.device:
                raise ValueError(
                    f"Window.weights[{s}] must be a dense ({n}, {n}) tensor of theta's dtype and device"
                    f" ({theta.dtype}, {theta.device}), got {w.layout} {tuple(w.shape)} ({w.dtype}, {w.device})"
                )
            if x.dim() < 3 or x.shape[0] != n or y.shape != x.shape[:2]:
                raise ValueError(
                    f"Window.batches[{s}] must be (x (N, B, *input_shape), y (N, B)) with N = {n}, got x"
                    f" {tuple(x.shape)} and y {tuple(y.shape)}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Window.lr must be finite and > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"Window.weight_decay must be finite and >= 0, got {self.weight_decay}")

    @property
    def horizon(self) -> int:
        return len(self.batches)


@dataclass(frozen=True)
class Probe:
    """The probe set z' shared by all receivers: ``x (M, *input_shape)``, ``y (M,)``."""

    x: torch.Tensor
    y: torch.Tensor


def _step(model: Model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: Window, loss: str) -> torch.Tensor:
    """``Delta`` of one plain-SGD step for every row of ``theta``."""
    grad = per_node_grad(model, theta, x, y, loss=loss)
    return -w.lr * (grad + w.weight_decay * theta)


REMOVALS = ("batch", "sample")  # what a counterfactual world removes from its source at round t


def _check(
    window: Window,
    horizon: int,
    sources: torch.Tensor | Sequence[int],
    probe: Probe | None = None,
    sources_per_chunk: int | None = None,
    removal: str = "batch",
) -> torch.Tensor:
    """The arguments checked, and ``sources`` as a 1-D index tensor on the window's device."""
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}")
    if removal == "sample" and window.batches[0][1].shape[1] < 2:
        raise ValueError("removal='sample' needs batches of at least 2 samples: the step without one must have data")
    if not 1 <= horizon <= window.horizon:
        raise ValueError(f"horizon must be in [1, {window.horizon}] for this window, got {horizon}")
    n = window.theta.shape[0]
    index = torch.as_tensor(sources, device=window.theta.device)
    if index.ndim != 1 or index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise ValueError(
            f"sources must be a 1-D sequence or tensor of node indices, got {index.dtype} of shape {tuple(index.shape)}"
        )
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= n:
        raise ValueError(f"sources must be node indices in [0, {n}), got {index.tolist()}")
    if probe is not None:
        if probe.y.numel() == 0:
            raise ValueError("the probe set z' is empty")
        if probe.x.dtype != window.theta.dtype or probe.x.device != window.theta.device:
            raise ValueError(
                f"the probe set is {probe.x.dtype} on {probe.x.device} but the window {window.theta.dtype} on"
                f" {window.theta.device}: build both from one simulation (influence.probe_from_test_set(sim))"
            )
    if sources_per_chunk is not None and sources_per_chunk < 1:
        raise ValueError(f"sources_per_chunk must be >= 1 or None (automatic), got {sources_per_chunk}")
    return index.long()


# Sources are processed in chunks whose (sources, N, P) tensors stay under this size. It bounds memory (all
# sources at once is S * N * P numbers: 2.5 GB in float64 at 256 nodes), and blocks this small are reused by
# the allocator instead of being mapped afresh each time (benchmarks/influence.py: dice_estimate at 64 nodes ran
# 2.4x faster in chunks). On a GPU, where each operation has a fixed cost and the caching allocator keeps its
# blocks, fewer and larger chunks win instead: on an H100 at 64 nodes, all 64 sources at once (150 MB) took the
# r = 3 estimate from 129 to 20 ms and the ground truth from 28 to 12 ms against 6-source chunks (measured with
# torch.func's Hessian-vector products; on the CPU the MLP's hand-written ones keep 16 MB the fastest chunk).
CHUNK_BYTES = 16 * 2**20
CUDA_CHUNK_BYTES = 512 * 2**20


def _source_chunks(window: Window, sources: torch.Tensor, sources_per_chunk: int | None) -> tuple[torch.Tensor, ...]:
    """``sources`` split into consecutive chunks: ``sources_per_chunk`` each, or sized by :data:`CHUNK_BYTES`
    (:data:`CUDA_CHUNK_BYTES` on a GPU)."""
    if sources_per_chunk is None:
        budget = CUDA_CHUNK_BYTES if window.theta.device.type == "cuda" else CHUNK_BYTES
        sources_per_chunk = max(1, budget // (window.theta.numel() * window.theta.element_size()))
    return sources.split(sources_per_chunk)


def _trajectory(model: Model, window: Window, horizon: int, loss: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Factual states ``theta^t .. theta^{t+horizon}`` and the ``Delta`` of each of the ``horizon`` steps."""
    states, deltas = [window.theta], []
    for s in range(horizon):
        x, y = window.batches[s]
        theta = states[-1]
        deltas.append(_step(model, theta, x, y, window, loss))
        states.append(window.weights[s] @ (theta + deltas[-1]))
    return states, deltas


def unroll(model: Model, window: Window, horizon: int, loss: str = "cross_entropy") -> list[torch.Tensor]:
    """Factual states ``[theta^t, theta^{t+1}, ..., theta^{t+horizon}]`` of the window, replayed."""
    return _trajectory(model, window, horizon, loss)[0]


def probe_loss(model: Model, theta: torch.Tensor, probe: Probe, loss: str = "cross_entropy") -> torch.Tensor:
    """``(N,)`` mean loss of every row of ``theta`` on the shared probe set."""
    return per_node_loss(model, theta, probe.x, probe.y, loss=loss)


def dice_ground_truth(
    model: Model,
    window: Window,
    sources: torch.Tensor | Sequence[int],
    probe: Probe,
    horizon: int,
    loss: str = "cross_entropy",
    probe_loss_kind: str | None = None,
    sources_per_chunk: int | None = None,
    removal: str = "batch",
) -> torch.Tensor:
    """``(horizon, S, N)``: ``GT[r-1, s, k] = L(theta_k^{t+r, -j_s}; z') - L(theta_k^{t+r}; z')``.

    The counterfactual worlds of a chunk of sources (plus the factual one,
    computed by the same arithmetic) advance together as ``(chunk + 1) * N``
    virtual nodes; in each world only the nodes its source has reached through
    the mixing matrices' non-zeros are stepped and probed again, the others
    keeping the factual state bit for bit (influence exactly 0).

    ``sources``: S node indices (a 1-D tensor or sequence). ``removal``: what
    world s removes from source ``j_s`` at round t, its whole batch or one
    sample (module docstring). ``sources_per_chunk``: default sized by
    :data:`CHUNK_BYTES` (:data:`CUDA_CHUNK_BYTES` on a GPU); the result does not
    depend on it beyond rounding.
    """
    sources = _check(window, horizon, sources, probe, sources_per_chunk, removal)
    chunks = _source_chunks(window, sources, sources_per_chunk)
    return torch.cat(
        [_ground_truth(model, window, c, probe, horizon, loss, probe_loss_kind, removal) for c in chunks], dim=1
    )


def _ground_truth(
    model: Model,
    window: Window,
    sources: torch.Tensor,
    probe: Probe,
    horizon: int,
    loss: str,
    probe_loss_kind: str | None,
    removal: str,
) -> torch.Tensor:
    n, p = window.theta.shape
    worlds = sources.numel() + 1
    kind = probe_loss_kind or loss
    theta = window.theta.expand(worlds, n, p)
    # (S, N): the nodes whose state in world s can differ from the factual one, those the source reaches through
    # the mixing matrices' non-zeros. Every other node's state is the factual one bit for bit (the same rows of the
    # same products), so its step and probe loss are not recomputed and its influence is exactly 0.
    differs = torch.zeros(worlds - 1, n, dtype=theta.dtype, device=theta.device)
    rows = torch.arange(worlds - 1, device=theta.device)
    world, node = differs.nonzero(as_tuple=True)  # (world, node) pairs whose state differs: none at round t
    out = []
    for s in range(horizon):
        x, y = window.batches[s]
        delta = _step(model, theta[-1], x, y, window, loss).expand(worlds, n, p).clone()
        if world.numel():
            delta[world, node] = _step(model, theta[world, node], x[node], y[node], window, loss)
        if s == 0:  # world i replaces source i's step at round t by its counterfactual one
            delta[rows, sources] = _counterfactual_step(model, window, sources, removal, loss)
            differs[rows, sources] = 1.0
        theta = torch.einsum("kl,wlp->wkp", window.weights[s], theta + delta)
        differs = ((differs @ (window.weights[s] != 0).T.to(differs.dtype)) > 0).to(differs.dtype)
        world, node = differs.nonzero(as_tuple=True)
        factual_loss = probe_loss(model, theta[-1], probe, kind)
        influence = torch.zeros(worlds - 1, n, dtype=theta.dtype, device=theta.device)
        influence[world, node] = probe_loss(model, theta[world, node], probe, kind) - factual_loss[node]
        out.append(influence)
    return torch.stack(out)


def _counterfactual_step(model: Model, window: Window, sources: torch.Tensor, removal: str, loss: str) -> torch.Tensor:
    """``(S, P)``: each source's ``Delta`` at round t in its counterfactual world: none when its batch is removed,
    its step on the batch without the first sample when one sample is."""
    if removal == "batch":
        return torch.zeros(sources.numel(), window.theta.shape[1], dtype=window.theta.dtype, device=window.theta.device)
    x, y = window.batches[0]
    return _step(model, window.theta[sources], x[sources, 1:], y[sources, 1:], window, loss)


# The estimate's Hessian-vector products are taken only on the (source, node) rows its perturbation has reached
# when they are at most this share of all rows; each such row then has its own forward pass, where the dense call
# shares one per node between every source.
REACHED_ROWS_SHARE = 0.5


def _minus_lr_hvp(
    model: Model,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    tangents: torch.Tensor,
    linearised: torch.Tensor,
    lr: float,
    loss: str,
) -> torch.Tensor:
    """``linearised - lr * per_node_hvp(model, theta, x, y, tangents)`` for ``(S, N, P)`` tensors; ``linearised``
    may be ``tangents`` itself and is then overwritten.

    Rows of ``tangents`` that the source has not reached through the mixing matrices are exactly zero, and so
    are their products: when those are most rows, the products are taken on the reached rows only and the
    others of ``linearised`` are left as they are (``x - lr * 0`` is ``x`` bit for bit).
    """
    reached = tangents.ne(0).any(-1)  # (S, N)
    if reached.sum() > REACHED_ROWS_SHARE * reached.numel():
        return linearised - lr * per_node_hvp(model, theta, x, y, tangents, loss)
    source, node = reached.nonzero(as_tuple=True)
    if node.numel():
        rows = per_node_hvp(model, theta[node], x[node], y[node], tangents[source, node].unsqueeze(0), loss)
        linearised[source, node] = linearised[source, node] - lr * rows.squeeze(0)
    return linearised


def _source_perturbation(
    model: Model, window: Window, delta: torch.Tensor, sources: torch.Tensor, removal: str, loss: str
) -> torch.Tensor:
    """``(S, N, P)``: every node's state change at t+1 in source j's counterfactual world, ``-W^t[k, j] change_j``,
    where ``change_j`` is the factual ``Delta_j`` (row j of ``delta (N, P)``) minus the counterfactual one
    (``Delta_j`` itself when the step is skipped)."""
    change = delta[sources] - _counterfactual_step(model, window, sources, removal, loss)
    return -window.weights[0][:, sources].T.unsqueeze(-1) * change.unsqueeze(1)


def probe_curvature_term(
    model: Model,
    window: Window,
    sources: torch.Tensor | Sequence[int],
    probe: Probe,
    loss: str = "cross_entropy",
    probe_loss_kind: str | None = None,
    sources_per_chunk: int | None = None,
    removal: str = "batch",
) -> torch.Tensor:
    """``(S, N)``: the second-order term ``0.5 p^T H' p`` of the probe loss that the r = 1 estimate leaves out.

    ``p = -W^t[k, j] Delta_j`` is receiver k's perturbation in source j's
    counterfactual and ``H'`` the Hessian of the probe loss at
    ``theta_k^{t+1}``. At r = 1 the perturbation itself is exact (removing a
    batch zeroes ``Delta_j``; removing a sample changes it by a known amount), so ``GT_1 - E_1`` is the Taylor
    remainder of the probe loss, and this is its leading term: a diagnostic of why first order falls short, not
    part of DICE.
    """
    sources = _check(window, 1, sources, probe, sources_per_chunk, removal)
    states, deltas = _trajectory(model, window, 1, loss)
    out = []
    for chunk in _source_chunks(window, sources, sources_per_chunk):
        perturbation = _source_perturbation(model, window, deltas[0], chunk, removal, loss)
        curved = per_node_hvp(model, states[1], probe.x, probe.y, perturbation, probe_loss_kind or loss)
        out.append(0.5 * (perturbation * curved).sum(-1))
    return torch.cat(out)


def dice_estimate(
    model: Model,
    window: Window,
    sources: torch.Tensor | Sequence[int],
    probe: Probe,
    horizon: int,
    loss: str = "cross_entropy",
    curvature: bool = True,
    probe_loss_kind: str | None = None,
    sources_per_chunk: int | None = None,
    removal: str = "batch",
) -> torch.Tensor:
    """``(horizon, S, N)``: first-order estimate ``E[r-1, s, k]`` of ``GT[r-1, s, k]`` (module docstring).

    ``curvature=False`` drops the ``(I - lr H)`` factors (H = 0): a
    TracIn-like estimate that only propagates ``Delta_j`` through the mixing
    matrices (weight decay is kept). ``loss`` is the training loss,
    ``probe_loss_kind`` the loss on z' (default: the same). Sources are
    propagated ``sources_per_chunk`` at a time (default sized by
    :data:`CHUNK_BYTES`, :data:`CUDA_CHUNK_BYTES` on a GPU); the result does not depend on it beyond rounding.
    ``removal``: the counterfactual it estimates, as for :func:`dice_ground_truth`.
    """
    sources = _check(window, horizon, sources, probe, sources_per_chunk, removal)
    states, deltas = _trajectory(model, window, horizon, loss)
    test_grads = [  # (N, P) at t+1 .. t+horizon, shared by every chunk
        per_node_grad(model, states[r], probe.x, probe.y, loss=probe_loss_kind or loss) for r in range(1, horizon + 1)
    ]
    chunks = []
    for chunk in _source_chunks(window, sources, sources_per_chunk):
        perturbation = _source_perturbation(model, window, deltas[0], chunk, removal, loss)
        out = []
        for r in range(1, horizon + 1):
            out.append(torch.einsum("np,snp->sn", test_grads[r - 1], perturbation))
            if r == horizon:
                break
            x, y = window.batches[r]
            linearised = perturbation * (1.0 - window.lr * window.weight_decay) if window.weight_decay else perturbation
            if curvature:
                linearised = _minus_lr_hvp(model, states[r], x, y, perturbation, linearised, window.lr, loss)
            perturbation = torch.einsum("kl,slp->skp", window.weights[r], linearised)
        chunks.append(torch.stack(out))
    return torch.cat(chunks, dim=1)
