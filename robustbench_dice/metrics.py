"""Detection metrics (DESIGN.md section 5), computed from a run's suspicion scores.

- Edge-level AUC: ROC-AUC (scikit-learn) of ``s_jk`` over all pairs (honest
  receiver j, in-neighbour k != j), label = k is Byzantine.
- Node-level AUC: ROC-AUC of ``s_k`` = mean of ``s_jk`` over the honest
  observers j of k, label = k is Byzantine.

Both are undefined (None, with the reason) when the defense gives no scores
or when the pairs do not contain both labels; never 0.5 by default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
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
    finite = np.isfinite(np.asarray(scores, dtype=float))
    if not finite.all():
        return Auc(None, f"{int((~finite).sum())} {what} have non-finite suspicion scores")
    return Auc(float(roc_auc_score(labels, scores)))


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
    return _auc([int(k in byzantine) for k in nodes], [float(np.mean(by_node[k])) for k in nodes], "nodes")
