"""Detection metrics (DESIGN.md section 5), computed from a run's suspicion scores.

- Edge-level AUC: ROC-AUC (scikit-learn) of ``s_jk`` over all pairs (honest
  receiver j, in-neighbour k != j), label = k is Byzantine.
- Node-level AUC: ROC-AUC of ``s_k`` = mean of ``s_jk`` over the honest
  observers j of k, label = k is Byzantine.

Both are undefined (None, with the reason) when the defense gives no scores,
when the pairs do not contain both labels, or when a score is NaN; never 0.5
by default. A score of +-inf (a distance or an influence sum that overflowed)
ranks above (below) every finite one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Auc:
    value: float | None
    reason: str | None = None  # why value is None


def _auc(labels: Sequence[int], scores: Sequence[float], what: str) -> Auc:
    if len(labels) == 0:
        return Auc(None, f"no {what} with a suspicion score (the defense emits none)")
    if len(set(labels)) < 2:
        kind = "Byzantine" if labels[0] == 0 else "honest"
        return Auc(None, f"no {kind} {what} among the scored ones, so AUC is undefined")
    values = np.asarray(scores, dtype=float)
    nan = np.isnan(values)
    if nan.any():
        return Auc(None, f"{int(nan.sum())} {what} have NaN suspicion scores")
    if np.isinf(values).any():
        # a score that overflowed kept its sign, so the order ROC-AUC rests on is known: +inf above every finite
        # score, equal infinities tied. sklearn refuses infinities; ranks carry that order and its ties
        values = rankdata(values)
    return Auc(float(roc_auc_score(labels, values)))


def edge_auc(suspicion: Iterable[Sequence[float]], byzantine: set[int]) -> Auc:
    """AUC over ``[j, k, s_jk]`` rows (j honest receivers), label = k in ``byzantine``."""
    rows = [(int(j), int(k), float(s)) for j, k, s in suspicion if int(j) != int(k)]
    return _auc([int(k in byzantine) for _, k, _ in rows], [s for _, _, s in rows], "edges")


def node_auc(suspicion: Iterable[Sequence[float]], byzantine: set[int]) -> Auc:
    """AUC of per-node mean suspicion over honest observers, label = node in ``byzantine``."""
    by_node: dict[int, list[float]] = defaultdict(list)
    for j, k, s in suspicion:
        if int(j) != int(k):
            by_node[int(k)].append(float(s))
    nodes = sorted(by_node)
    with np.errstate(over="ignore"):  # the mean of scores stored as the largest float is +inf: still the top rank
        means = [float(np.mean(by_node[k])) for k in nodes]
    return _auc([int(k in byzantine) for k in nodes], means, "nodes")
