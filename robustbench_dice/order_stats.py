"""Coordinate-wise order statistics over a node's candidate models: sort, median, trimmed mean.

Robust aggregators (median, trimmed mean) order an ``(N, M, P)`` tensor along
M, the node and its in-neighbours: M is small (3-33) and P is large.
``torch.sort`` then runs N * P tiny sorts, which costs 5-10x more on a CPU than
Batcher's odd-even merge network applied to whole ``(N, P)`` slices: a fixed
list of O(M log^2 M) compare-exchanges, each one elementwise ``minimum`` and
``maximum``. Both give the same sorted values. The aggregators below also skip
the masking and the re-stacking when every node has the same number of
candidates (regular graphs), and give the same numbers as the general path.
"""

from __future__ import annotations

import functools

import torch

NETWORK_MAX = 128  # longer dimensions go to torch.sort (the network has O(M log^2 M) steps)
# On a GPU each compare-exchange is a kernel launch of fixed cost: below this many values in all (M x N x P) one
# torch.sort is faster. On an H100 the network sorted 0.27x as fast as torch.sort at 16 nodes (M = 5, 0.4 M values)
# and 1.04x at 256 (M = 9, 11 M values); benchmarks/order_stats.py --device cuda
CUDA_NETWORK_MIN_VALUES = 1 << 23


@functools.cache
def batcher_pairs(m: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs ``(i, j)``, i < j, of Batcher's odd-even merge sort for ``m`` items.

    Built for the next power of two and cut to ``m``: the missing items would be +inf at the end, which no
    compare-exchange moves, so every pair that touches them is a no-op and is left out.
    """
    n = 1
    while n < m:
        n *= 2
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple((a, b) for a, b in pairs if b < m)


def sorted_slices(slices: list[torch.Tensor]) -> list[torch.Tensor]:
    """Elementwise order statistics of equally shaped tensors: ``out[r]`` holds, per element, the r-th smallest
    of ``slices`` (ascending, NaN last), as ``torch.sort`` along a stacked dimension would give them.

    With NaN present, more than :data:`NETWORK_MAX` slices, or on a GPU fewer than :data:`CUDA_NETWORK_MIN_VALUES`
    values, this is ``torch.sort`` itself; otherwise the sorting network, whose only difference is that equal zeros
    of opposite sign may come out as the same zero, which no later arithmetic can tell apart from the other.
    """
    rows = list(slices)
    if not rows or not _network_pays(len(rows), rows[0]) or _has_nan(rows):
        return list(torch.stack(rows).sort(dim=0).values.unbind(0))
    for i, j in batcher_pairs(len(rows)):
        rows[i], rows[j] = torch.minimum(rows[i], rows[j]), torch.maximum(rows[i], rows[j])
    return rows


def _has_nan(rows: list[torch.Tensor]) -> bool:
    # max propagates NaN: one reduction per row, about 15x cheaper here than isnan().any(), and one read of the
    # answer for all rows (on a GPU each read waits for the device)
    if not rows or not rows[0].is_floating_point() or rows[0].numel() == 0:
        return False
    return bool(torch.stack([row.amax() for row in rows]).isnan().any())


def _network_pays(m: int, row: torch.Tensor) -> bool:
    """Whether sorting ``m`` slices like ``row`` goes through the network rather than one ``torch.sort``."""
    return m <= NETWORK_MAX and not (row.is_cuda and m * row.numel() < CUDA_NETWORK_MIN_VALUES)


def sort_along(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``values`` sorted ascending along ``dim``: the values of ``torch.sort(values, dim)`` (see sorted_slices)."""
    if values.shape[dim] and not _network_pays(values.shape[dim], values.select(dim, 0)):
        return values.sort(dim=dim).values  # as sorted_slices would, without taking the slices apart
    return torch.stack(sorted_slices(list(values.unbind(dim))), dim)


def masked_sorted(candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidates ``(N, M, P)`` sorted along M, with masked-out slots (``mask`` ``(N, M)`` False) last as +inf."""
    if not bool(mask.all()):
        inf = torch.tensor(float("inf"), dtype=candidates.dtype, device=candidates.device)
        candidates = torch.where(mask.unsqueeze(-1), candidates, inf)
    return sort_along(candidates, dim=1)


def coordinate_median(candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` coordinate-wise median of the valid candidates ``(N, M, P)`` (``mask`` ``(N, M)``); the mean of
    the two middle values when a node has an even number of them."""
    m = candidates.shape[1]
    if bool(mask.all()):  # every node has m candidates: the middle slices, without masking or re-stacking
        ordered = sorted_slices(list(candidates.unbind(1)))
        return (ordered[(m - 1) // 2] + ordered[m // 2]) / 2
    ordered_all = masked_sorted(candidates, mask)
    count = mask.sum(1)
    width = ordered_all.shape[2]
    lower = ordered_all.gather(1, ((count - 1) // 2).view(-1, 1, 1).expand(-1, 1, width)).squeeze(1)
    upper = ordered_all.gather(1, (count // 2).view(-1, 1, 1).expand(-1, 1, width)).squeeze(1)
    return (lower + upper) / 2


def coordinate_trimmed_mean(candidates: torch.Tensor, mask: torch.Tensor, trim: int) -> torch.Tensor:
    """``(N, P)``: per coordinate, drop the ``trim`` smallest and largest valid candidates and average the rest."""
    count = mask.sum(1, keepdim=True)  # (N, 1)
    m = candidates.shape[1]
    if bool(mask.all()) and m > 2 * trim:
        # every node has m candidates: the kept slices as they come out of the network, zeros where the general
        # path below masks (the same tensor, summed the same way, so the same bits), without masking or re-sorting
        ordered_slices = sorted_slices(list(candidates.unbind(1)))
        zero = torch.zeros_like(ordered_slices[0])
        kept = torch.stack([zero] * trim + ordered_slices[trim : m - trim] + [zero] * trim, dim=1)
        return kept.sum(1) / (count - 2 * trim).to(kept.dtype)
    ordered = masked_sorted(candidates, mask)
    position = torch.arange(ordered.shape[1], device=ordered.device).unsqueeze(0)  # (1, M)
    keep = ((position >= trim) & (position < count - trim)).unsqueeze(-1)
    total = torch.where(keep, ordered, torch.zeros_like(ordered)).sum(1)
    return total / (count - 2 * trim).to(total.dtype)
