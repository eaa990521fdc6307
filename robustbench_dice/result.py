"""RunResult: everything one run reports, as plain JSON-able data."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io import atomic_write_json


@dataclass
class CurvePoint:
    round: int
    accuracy_mean: float
    accuracy_worst: float
    loss_mean: float
    consensus_distance: float  # mean over honest j of ||theta_j - mean_honest(theta)||^2


@dataclass
class SuspicionPoint:
    """Mean of a per-edge score over edges (honest j <- k), split by whether k is Byzantine (None: no such edge).

    Used for the latest suspicion scores and for the running proximal influence.
    """

    round: int
    honest_mean: float | None
    byzantine_mean: float | None


@dataclass
class RunResult:
    """Outcome of one Scenario. ``suspicion`` lists ``[j, k, s_jk]`` for honest receivers j, in-neighbours k."""

    scenario: dict[str, Any]
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    auto_params: dict[str, int] = field(default_factory=dict)  # defense parameters given as "auto" -> their value
    byzantine: list[int] = field(default_factory=list)
    final_accuracy_mean: float | None = None
    final_accuracy_worst: float | None = None
    node_accuracy: dict[str, float] = field(default_factory=dict)  # honest node -> final test accuracy
    curve: list[CurvePoint] = field(default_factory=list)
    suspicion: list[list[float]] = field(default_factory=list)
    suspicion_curve: list[SuspicionPoint] = field(default_factory=list)
    edge_auc: float | None = None
    edge_auc_reason: str | None = None
    node_auc: float | None = None
    node_auc_reason: str | None = None
    pruned_edges: list[list[int]] = field(default_factory=list)  # [j, k]: honest j excluded k in the last round
    honest_edges_wrongly_pruned: int | None = None  # of honest_edges (honest j, honest in-neighbour k)
    honest_edges: int | None = None
    time_to_detection: int | None = (
        None  # first round from which every Byzantine in-edge of an honest node stays pruned
    )
    time_to_detection_reason: str | None = None
    proximal_influence: list[list[float]] = field(default_factory=list)  # [j, k, sum_t Prox_t(k -> j)], honest j
    influence_curve: list[SuspicionPoint] = field(default_factory=list)  # mean running Prox by neighbour kind
    diverged: bool = False
    topology: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; non-finite numbers (a diverged run's loss) become None."""
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        data = dict(data)
        data["curve"] = [CurvePoint(**p) for p in data.get("curve", [])]
        data["suspicion_curve"] = [SuspicionPoint(**p) for p in data.get("suspicion_curve", [])]
        data["influence_curve"] = [SuspicionPoint(**p) for p in data.get("influence_curve", [])]
        return cls(**data)

    def write_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read_json(cls, path: str | Path) -> RunResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
