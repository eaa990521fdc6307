"""Figures from stored results only: PNG for reading, PDF for papers.

- ``accuracy_curves_<topology>``: mean honest test accuracy over rounds, one
  panel per attack, defenses overlaid (mean over seeds).
- ``detection_auc_<topology>``: heatmap of edge-level detection AUC, attack x defense.
- ``influence_alignment``: DICE estimate against counterfactual ground truth
  (default learning rate), one panel per hop count r.
- ``cascade_decay``: mean |influence| against hop distance, per topology.
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .store import ResultStore
from .suite import PluginSpec


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.bbox": "tight",
            "font.size": 9,
            "svg.hashsalt": "robustbench-dice",
            "pdf.fonttype": 42,
        }
    )
    return plt


def _save(fig: Any, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None, "ModDate": None})
    _pyplot().close(fig)
    return paths


def _ok_records(store: ResultStore) -> list[dict[str, Any]]:
    return [r.data for r in store.records() if r.status == "ok"]


def accuracy_curves(store: ResultStore, out: Path) -> list[Path]:
    plt = _pyplot()
    curves: dict[str, dict[str, dict[str, list[list[tuple[int, float]]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for data in _ok_records(store):
        s = data["scenario"]
        points = [(p["round"], p["accuracy_mean"]) for p in data["result"]["curve"]]
        attack = PluginSpec(s["attack"], s["attack_params"]).label
        defense = PluginSpec(s["defense"], s["defense_params"]).label
        curves[s["topology"]][attack][defense].append(points)
    written: list[Path] = []
    for topology, by_attack in sorted(curves.items()):
        attacks = sorted(by_attack)
        fig, axes = plt.subplots(
            1, len(attacks), figsize=(3.2 * len(attacks), 3.0), sharey=True, squeeze=False, layout="constrained"
        )
        for ax, attack in zip(axes[0], attacks, strict=True):
            for defense, runs in sorted(by_attack[attack].items()):
                rounds = [r for r, _ in runs[0]]
                acc = np.mean([[a if a is not None else np.nan for _, a in run] for run in runs], axis=0)
                ax.plot(rounds, acc, label=defense, linewidth=1.4)
            ax.set_title(f"attack: {attack}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean honest test accuracy")
        axes[0][0].set_ylim(0, 1)
        axes[0][-1].legend(title="defense", fontsize=8, loc="lower right")
        fig.suptitle(f"Accuracy over rounds on the {topology} graph (mean over seeds)")
        written += _save(fig, out, f"accuracy_curves_{topology}")
    return written


def detection_heatmaps(store: ResultStore, out: Path) -> list[Path]:
    plt = _pyplot()
    values: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for data in _ok_records(store):
        s, auc = data["scenario"], data["result"].get("edge_auc")
        if auc is not None:
            key = (
                PluginSpec(s["attack"], s["attack_params"]).label,
                PluginSpec(s["defense"], s["defense_params"]).label,
            )
            values[s["topology"]][key].append(auc)
    written: list[Path] = []
    for topology, cells in sorted(values.items()):
        attacks = sorted({a for a, _ in cells})
        defenses = sorted({d for _, d in cells})
        grid = np.full((len(attacks), len(defenses)), np.nan)
        for (a, d), aucs in cells.items():
            grid[attacks.index(a), defenses.index(d)] = float(np.mean(aucs))
        fig, ax = plt.subplots(figsize=(1.2 * len(defenses) + 2, 0.5 * len(attacks) + 1.5))
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(attacks)):
            for j in range(len(defenses)):
                text = "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="white" if grid[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_xlabel("defense")
        ax.set_ylabel("attack")
        fig.colorbar(image, ax=ax, label="edge-level detection AUC")
        ax.set_title(f"Detection AUC on the {topology} graph (mean over seeds)")
        written += _save(fig, out, f"detection_auc_{topology}")
    return written


def influence_alignment(influence_dir: Path, out: Path) -> list[Path]:
    path = influence_dir / "alignment.csv.gz"
    if not path.is_file():
        return []
    plt = _pyplot()
    with gzip.open(path, "rt") as f:
        rows = list(csv.DictReader(f))
    default_lr = rows[0]["lr"]
    horizons = sorted({int(r["r"]) for r in rows})
    fig, axes = plt.subplots(1, len(horizons), figsize=(3.3 * len(horizons), 3.3), squeeze=False, layout="constrained")
    for ax, r in zip(axes[0], horizons, strict=True):
        for model, colour in (("logreg", "tab:blue"), ("mlp", "tab:orange")):
            sel = [x for x in rows if x["lr"] == default_lr and int(x["r"]) == r and x["model"] == model]
            truth = np.array([float(x["ground_truth"]) for x in sel])
            estimate = np.array([float(x["estimate"]) for x in sel])
            ax.scatter(truth, estimate, s=2, alpha=0.3, color=colour, label=model, rasterized=True)
        lim = ax.get_xlim()
        ax.plot(lim, lim, color="black", linewidth=0.8, linestyle="--", label="y = x")
        ax.set_title(f"r = {r} hop{'s' if r > 1 else ''}")
        ax.set_xlabel("ground truth")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("DICE estimate")
    axes[0][0].legend(markerscale=4, fontsize=8)
    fig.suptitle(
        f"DICE estimate vs ground truth (test-loss change when the source's batch is removed;"
        f" per receiver, lr {default_lr}, all topologies)"
    )
    return _save(fig, out, "influence_alignment")


def cascade_decay(influence_dir: Path, out: Path) -> list[Path]:
    path = influence_dir / "cascade_decay.csv"
    if not path.is_file():
        return []
    plt = _pyplot()
    rows = list(csv.DictReader(path.open()))
    r_max = max(int(x["r"]) for x in rows)
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for topology in sorted({x["topology"] for x in rows}):
        sel = sorted(
            (x for x in rows if x["topology"] == topology and int(x["r"]) == r_max), key=lambda x: int(x["hop"])
        )
        ax.plot(
            [int(x["hop"]) for x in sel], [float(x["mean_abs_ground_truth"]) for x in sel], marker="o", label=topology
        )
    ax.set_yscale("log")
    ax.set_xticks(range(r_max + 1))
    ax.set_xlabel("hop distance from the source")
    ax.set_ylabel("mean |influence| (loss change)")
    ax.set_title(f"Influence cascade {r_max} rounds after the step (ground truth)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, out, "cascade_decay")


def write_figures(store: ResultStore, influence_dir: str | Path, out: str | Path) -> list[Path]:
    out, influence_dir = Path(out), Path(influence_dir)
    return (
        accuracy_curves(store, out)
        + detection_heatmaps(store, out)
        + influence_alignment(influence_dir, out)
        + cascade_decay(influence_dir, out)
    )
