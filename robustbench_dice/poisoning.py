"""The poisoning experiment: do r-hop DICE influence estimates single out the nodes whose data is poisoned?

Training runs under a data-poisoning attack (label flipping by default): the Byzantine nodes take honest SGD steps on
flipped labels and send them, so the run is still gossip SGD and DICE windows replay it exactly. At each probe round
t, every node is a source; its influence after r rounds is the mean over the honest receivers of ``GT_r`` (the probe
loss rise when its batch at t is removed, :func:`~.dice.dice_ground_truth`) and of the DICE estimate. A poisoned
batch helps the honest models less than a clean one, or hurts them, so a low influence should flag a Byzantine
source: the detection AUC (scikit-learn's ROC-AUC, Byzantine sources the positives, scored by the negated influence)
says how well it does, per r, with the estimate and with the ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.metrics import roc_auc_score

from .errors import ConfigError, check_choice
from .influence import (
    DEFAULT_OUT,
    Log,
    command_line,
    experiment_scenario,
    format_value,
    heartbeat,
    measure_windows,
    normalise_and_check,
    pearson_spearman,
    poisons_data_only,
    spread_probe_rounds,
    write_csv,
    write_csv_gz,
)
from .io import atomic_write_bytes
from .registry import ATTACKS, build_attack, load_builtin_plugins
from .scenario import Scenario, parse_param_pairs
from .suite import PluginSpec

Rows = list[dict[str, object]]


@dataclass
class PoisoningConfig:
    """The poisoning experiment: influence of poisoned and of clean sources on the honest nodes, and its AUC."""

    default_out: ClassVar[Path] = DEFAULT_OUT / "poisoning"  # where `influence` writes it without --out
    dataset: str = field(default="digits", metadata={"help": "dataset of every run"})
    model: str = field(default="mlp", metadata={"help": "model"})
    topologies: tuple[str, ...] = field(
        default=("ring", "torus", "exponential", "erdos_renyi"), metadata={"help": "topologies compared"}
    )
    attack: str = field(
        default="label_flip",
        metadata={"help": "a data-poisoning attack: its Byzantine nodes send honest SGD steps on data it changed"},
    )
    attack_params: tuple[str, ...] = field(
        default=(), metadata={"help": "the attack's parameters as KEY=VALUE, e.g. fraction=0.3 (default: its own)"}
    )
    byzantine: int = field(default=3, metadata={"help": "Byzantine (poisoned) nodes, placed at random by the seed"})
    nodes: int = field(default=16, metadata={"help": "nodes per run (every node is a source)"})
    rounds: int = field(default=200, metadata={"help": "training rounds per run"})
    probe_rounds: int = field(default=13, metadata={"help": "probe rounds t, evenly spaced"})
    horizon: int = field(default=3, metadata={"help": "largest hop count r"})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size"})
    seed: int = field(default=0, metadata={"help": "seed of the runs"})
    data_root: str | None = field(default=None, metadata={"help": "folder of on-disk datasets (mnist, cifar10)"})
    device: str = field(default="cpu", metadata={"help": "where the runs compute: 'cpu', 'cuda' or 'auto'"})

    def __post_init__(self) -> None:
        normalise_and_check(self)
        load_builtin_plugins()
        check_choice("attack", self.attack, ATTACKS)
        if not poisons_data_only(self.attack):
            poisoning = sorted(name for name in ATTACKS if name != "none" and poisons_data_only(name))
            raise ConfigError(
                f"attack {self.attack!r} is not a data-poisoning attack (one whose Byzantine nodes send honest SGD"
                f" steps on the data it changed); valid: {', '.join(poisoning)}"
            )
        if not 1 <= self.byzantine < self.nodes:
            raise ConfigError(f"byzantine must be in [1, nodes={self.nodes}), got {self.byzantine}")
        build_attack(self.attack, self.parameters())  # a parameter the attack lacks, or a bad value, fails now

    def parameters(self) -> dict[str, object]:
        return parse_param_pairs(self.attack_params, "--attack-params")

    def attack_label(self) -> str:
        """The attack with the parameters given, as the suites' tables label it, e.g. ``label_flip(fraction=0.3)``."""
        return PluginSpec(self.attack, self.parameters()).label

    def scenario(self, topology: str) -> Scenario:
        clean = experiment_scenario(self, self.model, topology, self.lr)
        return replace(clean, attack=self.attack, attack_params=self.parameters(), byzantine=self.byzantine)


POISONING_COLUMNS = (
    "dataset",
    "model",
    "topology",
    "attack",
    "r",
    "round",
    "source",
    "byzantine",
    "estimate",
    "ground_truth",
)
POISONING_SUMMARY_COLUMNS = (
    "dataset",
    "model",
    "topology",
    "attack",
    "byzantine",
    "r",
    "probes",
    "pearson",
    "auc_estimate",
    "auc_ground_truth",
    "auc_estimate_summed",
    "mean_ground_truth_byzantine",
    "mean_ground_truth_honest",
)


def _auc(is_byzantine: np.ndarray, influence: np.ndarray) -> float:
    """ROC-AUC of ``-influence`` for the Byzantine sources: 1 when every one is below every honest source."""
    return float(roc_auc_score(is_byzantine.ravel(), -influence.ravel()))


def run_poisoning(config: PoisoningConfig, log: Log = print) -> tuple[Rows, Rows]:
    """Rows of the long CSV (per topology, r, probe round, source) and of the summary (per topology, r).

    A source's influence at a probe is the mean over the honest receivers (the models the defense protects).
    ``auc_estimate`` / ``auc_ground_truth`` pool the probes of all rounds; ``auc_estimate_summed`` scores each
    source once, by its estimate summed over the probe rounds, as a detector accumulating over training would.
    """
    rows: Rows = []
    summary: Rows = []
    rounds = spread_probe_rounds(config.rounds, config.probe_rounds, config.horizon)
    for index, topology in enumerate(config.topologies, 1):
        start = time.perf_counter()
        label = f"[{index}/{len(config.topologies)}] {topology}"
        progress = heartbeat(log, label)
        sim, _, arrays = measure_windows(
            config.scenario(topology), rounds, config.horizon, ("dice",), progress=progress
        )
        byzantine = np.zeros(config.nodes, dtype=bool)
        byzantine[sim.setup.byzantine] = True
        # (windows, horizon, sources): mean over the honest receivers
        estimate, truth = (arrays[name][..., ~byzantine].mean(axis=-1) for name in ("dice", "truth"))
        labels = np.broadcast_to(byzantine, estimate[:, 0].shape)
        setting = dict(dataset=config.dataset, model=config.model, topology=topology, attack=config.attack)
        aucs = []
        for r in range(1, config.horizon + 1):
            est, gt = estimate[:, r - 1], truth[:, r - 1]
            for w, t in enumerate(rounds):
                for j in range(config.nodes):
                    rows.append(
                        dict(
                            **setting,
                            r=r,
                            round=t,
                            source=j,
                            byzantine=int(byzantine[j]),
                            estimate=est[w, j],
                            ground_truth=gt[w, j],
                        )
                    )
            aucs.append(_auc(labels, est))
            summary.append(
                dict(
                    **setting,
                    byzantine=config.byzantine,
                    r=r,
                    probes=est.size,
                    pearson=pearson_spearman(est.ravel(), gt.ravel())[0],
                    auc_estimate=aucs[-1],
                    auc_ground_truth=_auc(labels, gt),
                    auc_estimate_summed=_auc(byzantine, est.sum(axis=0)),
                    mean_ground_truth_byzantine=float(gt[:, byzantine].mean()),
                    mean_ground_truth_honest=float(gt[:, ~byzantine].mean()),
                )
            )
        log(
            f"{label}: detection AUC of the estimate, r=1..{config.horizon}"
            f" {', '.join(f'{a:.4f}' for a in aucs)} ({time.perf_counter() - start:.1f}s)"
        )
    return rows, summary


def poisoning_markdown(summary: Rows, config: PoisoningConfig, out: Path) -> str:
    lines = [
        "# DICE under data poisoning: do poisoned sources have low influence?",
        "",
        f"{config.dataset}/{config.model}, {config.nodes} nodes of which {config.byzantine} Byzantine under"
        f" {config.attack_label()} (placed at random, seed {config.seed}), plain SGD, lr {config.lr}, batch"
        f" {config.batch_size}, {config.rounds} rounds, {config.probe_rounds} probe rounds x {config.nodes} sources."
        " Influence of a source: mean over the honest receivers of the probe-loss rise when its batch at t is"
        " removed (GT_r), or its DICE estimate. AUC: Byzantine sources vs honest ones, scored by the negated"
        " influence, over all probes (`estimate`, `truth`) or once per source with the estimate summed over the"
        " probe rounds (`summed`). Pearson: estimate vs truth over the probes.",
        f"Regenerate: `{command_line('poisoning', config, out)}`.",
        "",
        "| topology | r | Pearson | AUC estimate | AUC truth | AUC summed | mean GT Byzantine | mean GT honest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['topology']} | {row['r']} | {format_value(row['pearson'])} | {format_value(row['auc_estimate'])} |"
            f" {format_value(row['auc_ground_truth'])} | {format_value(row['auc_estimate_summed'])} |"
            f" {row['mean_ground_truth_byzantine']:.2e} | {row['mean_ground_truth_honest']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def write_poisoning(out: Path, config: PoisoningConfig, log: Log = print) -> None:
    rows, summary = run_poisoning(config, log)
    write_csv_gz(out / "poisoning.csv.gz", POISONING_COLUMNS, rows)
    write_csv(out / "poisoning_summary.csv", POISONING_SUMMARY_COLUMNS, summary)
    atomic_write_bytes(out / "poisoning_summary.md", poisoning_markdown(summary, config, out).encode())
