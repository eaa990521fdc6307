"""The ``paper`` suite: the DICE paper's experiments, on the embedded data and on MNIST / CIFAR-10 when on disk.

Four parts:

- **anomaly detection**: decentralized training with proximal influence
  tracked (``track_influence``), no defense (``gossip``: the influence every
  honest node sees from each neighbour while nobody prunes) and DICE pruning,
  under four attacks, on ring / torus / exponential graphs, 3 seeds. Runs go
  through the result store like any suite (resumable, any executor); their
  tables go to ``results/paper/tables``; ``figures`` draws the honest vs
  Byzantine influence curves, ROC curves and the topology coloured by influence.
- **alignment**: ``influence alignment`` (DICE estimate vs counterfactual
  ground truth, r = 1..3, learning-rate sweep, no-curvature ablation).
- **cascade**: ``influence cascade`` (influence against hop distance and
  against the source's centrality).
- **poisoning**: ``influence poisoning`` (the r-hop influence of label-flipping
  sources against that of clean ones, and how well it detects them).

The embedded datasets are digits (every part) and MNIST-1D (anomaly
detection). MNIST (MLP) and CIFAR-10 (CNN for detection, MLP for the
influence experiments) join when ``--data-root`` holds them; a dataset that
is absent is listed with the command that gets it, never an error. The
influence parts on those datasets are reduced (default learning rate, ring and
exponential graphs) to keep their cost in hours, not days, on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DatasetNotFoundError
from .influence import (
    ALIGNMENT_COLUMNS,
    BY_ROUND_COLUMNS,
    CENTRALITY_COLUMNS,
    DECAY_COLUMNS,
    SUMMARY_COLUMNS,
    AlignmentConfig,
    CascadeConfig,
    write_alignment,
    write_cascade,
)
from .io import atomic_write_json
from .poisoning import POISONING_COLUMNS, POISONING_SUMMARY_COLUMNS, PoisoningConfig, write_poisoning
from .store import RESULTS_VERSION
from .suite import PluginSpec, Suite

if TYPE_CHECKING:
    from .influence import ExperimentConfig

ATTACKS = ("none", "label_flip", "gradient_scale", "free_ride")
DEFENSES = ("gossip", "dice_prune")
TOPOLOGIES = ("ring", "torus", "exponential")
EMBEDDED = {"digits": "mlp", "mnist1d": "mlp"}
ON_DISK = {"mnist": "mlp", "cifar10": "cnn"}  # dataset -> model of the detection runs


@dataclass(frozen=True)
class Experiment:
    """One kind of ``robustbench-dice influence`` experiment."""

    summary: str  # its help line
    config: type[ExperimentConfig]
    write: Callable[..., object]  # write(out, config, log=...) computes and writes every output
    columns: tuple[str, ...]  # of its CSV outputs, in the stamp: a change of format makes the outputs stale
    outputs: tuple[str, ...]  # the files it writes; the first marks it done


EXPERIMENTS = {
    "alignment": Experiment(
        "DICE estimate vs counterfactual ground truth over many (source, round) probes, r = 1..horizon",
        AlignmentConfig,
        write_alignment,
        (*ALIGNMENT_COLUMNS, *SUMMARY_COLUMNS, *BY_ROUND_COLUMNS),
        ("alignment_summary.csv", "alignment.csv.gz", "alignment_by_round.csv", "alignment_summary.md"),
    ),
    "cascade": Experiment(
        "influence against hop distance and against the source's degree and centrality",
        CascadeConfig,
        write_cascade,
        (*DECAY_COLUMNS, *CENTRALITY_COLUMNS),
        ("cascade_decay.csv", "cascade_centrality.csv", "cascade_summary.md"),
    ),
    "poisoning": Experiment(
        "influence of data-poisoned sources vs clean ones on the honest nodes, and its detection AUC, r = 1..horizon",
        PoisoningConfig,
        write_poisoning,
        (*POISONING_COLUMNS, *POISONING_SUMMARY_COLUMNS),
        ("poisoning_summary.csv", "poisoning.csv.gz", "poisoning_summary.md"),
    ),
}


@dataclass
class InfluenceJob:
    """One influence experiment: where it writes and with what configuration."""

    kind: str  # a key of EXPERIMENTS
    out: Path
    config: ExperimentConfig

    @property
    def experiment(self) -> Experiment:
        return EXPERIMENTS[self.kind]

    @property
    def stamp(self) -> Path:
        return self.out / f"{self.kind}.config.json"

    def stamp_content(self) -> dict[str, Any]:
        """The configuration, the results version (bumped by code changes that move numbers) and the output columns."""
        columns = list(self.experiment.columns)
        return {**asdict(self.config), "results_version": RESULTS_VERSION, "columns": columns}

    def up_to_date(self) -> bool:
        """True when the outputs exist and were made with this exact configuration and results version."""
        if not ((self.out / self.experiment.outputs[0]).is_file() and self.stamp.is_file()):
            return False
        try:
            return json.loads(self.stamp.read_text()) == json.loads(json.dumps(self.stamp_content()))
        except ValueError:
            return False

    def run(self, log: Callable[[str], None] = print) -> None:
        assert isinstance(self.config, self.experiment.config)
        self.experiment.write(self.out, self.config, log=log)
        atomic_write_json(self.stamp, self.stamp_content())


@dataclass
class PaperPlan:
    suites: list[Suite] = field(default_factory=list)
    influence: list[InfluenceJob] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # datasets not on disk, each with how to get it


def detection_suite(dataset: str, model: str, data_root: str | None = None) -> Suite:
    base: dict[str, Any] = {"rounds": 200, "eval_every": 20, "track_influence": True}
    if data_root is not None and dataset in ON_DISK:
        base["data_root"] = data_root
    return Suite(
        name=f"paper-{dataset}",
        description=f"anomaly detection with proximal influence tracked: {dataset}, {model}, 16 nodes, 3 Byzantine",
        datasets=(dataset,),
        models=(model,),
        topologies=TOPOLOGIES,
        attacks=tuple(PluginSpec(a) for a in ATTACKS),
        defenses=tuple(PluginSpec(d) for d in DEFENSES),
        seeds=(0, 1, 2),
        base=base,
    )


def dataset_missing(name: str, data_root: str | None) -> str | None:
    """None when ``name`` loads from ``data_root``; otherwise why not and how to get it."""
    from .datasets import how_to_get, load_dataset

    if data_root is None:
        return f"{name}: no --data-root given (get it with: {how_to_get(name, None)})"
    try:
        load_dataset(name, data_root)
    except (DatasetNotFoundError, ConfigError) as exc:
        return f"{name}: {exc}"
    return None


def paper_plan(data_root: str | None, influence_root: str | Path = "results/influence") -> PaperPlan:
    """Every part of the paper suite for the datasets available here."""
    plan = PaperPlan()
    root = Path(influence_root)
    for dataset, model in EMBEDDED.items():
        plan.suites.append(detection_suite(dataset, model))
    plan.influence += [
        InfluenceJob("alignment", root, AlignmentConfig()),
        InfluenceJob("cascade", root, CascadeConfig()),
        # the paper defines influence for one data point z_j^t; the default removes the source's whole batch
        InfluenceJob("alignment", root / "one_sample", AlignmentConfig(removal="sample")),
        InfluenceJob("poisoning", root / "poisoning", PoisoningConfig()),
    ]
    for dataset, model in ON_DISK.items():
        reason = dataset_missing(dataset, data_root)
        if reason is not None:
            plan.missing.append(reason)
            continue
        plan.suites.append(detection_suite(dataset, model, data_root))
        plan.influence += [
            InfluenceJob(
                "alignment",
                root / dataset,
                AlignmentConfig(
                    dataset=dataset,
                    data_root=data_root,
                    lrs=(0.1,),
                    topologies=("ring", "exponential"),
                    sweep_topologies=(),
                ),
            ),
            InfluenceJob(
                "cascade",
                root / dataset,
                CascadeConfig(
                    dataset=dataset, data_root=data_root, topologies=("ring", "torus", "exponential", "star")
                ),
            ),
        ]
    for suite in plan.suites:
        suite.validate()
    return plan
