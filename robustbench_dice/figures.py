"""Figures from stored results only: PNG for reading, PDF for papers.

- ``accuracy_curves_<topology>``: mean honest test accuracy over rounds, one
  panel per attack, defenses overlaid (mean over seeds, with a band of +- their
  sample standard deviation).
- ``detection_auc_<topology>``: heatmap of edge-level detection AUC, attack x defense.
- ``influence_alignment``: DICE estimate against counterfactual ground truth
  (default learning rate), one panel per hop count r.
- ``cascade_decay``: mean |influence| against hop distance, per topology.
- ``cascade_centrality``: a source's mean |influence| against its out-degree, on
  the topologies whose degrees differ.
- These three also for each experiment folder inside the influence folder, with
  its name appended: ``influence_alignment_one_sample`` (one data point removed),
  ``influence_alignment_mnist``, ...
- ``poisoning_influence``: under label flipping (``influence poisoning``),
  each source's influence on the honest nodes over training, the poisoned
  sources in red, one panel per topology.
- ``roc_curves_<topology>``: ROC curves of the edge-level suspicion scores
  (label: the sender is Byzantine), one panel per attack, defenses overlaid,
  scores pooled over seeds.
- ``influence_curves_<topology>``: running proximal influence that honest
  nodes receive from honest vs Byzantine neighbours over rounds (the paper's
  anomaly-detection picture); from runs with ``track_influence``.
- ``topology_influence_<topology>``: the graph of one such run, each edge
  k -> j coloured by the proximal influence j accumulated from k, Byzantine
  nodes marked.
- ``robustness_<dataset>_<model>_<N>n_<partition>``: each defense's worst case
  over the attacks (as in the ``worst_attack`` table) against the number of
  Byzantine nodes, with bars of +- the sample standard deviation over the seeds
  of that worst attack, one panel per topology; drawn where a suite has more
  than one Byzantine count (the full suite).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import statistics
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .scenario import Scenario
from .store import Record, ResultStore
from .suite import PluginSpec
from .tables import detection_comparisons, sample_std, summary_rows, worst_case_values


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


def _group(s: dict[str, Any]) -> str:
    """File-name key of the figure a run belongs to: topology and block (dataset, model, nodes, Byzantine, partition)."""
    byzantine = s["byzantine"] if s.get("byzantine_fraction") is None else int(s["byzantine_fraction"] * s["nodes"])
    return f"{s['topology']}_{s['dataset']}_{s['model']}_{s['nodes']}n_{byzantine}b_{s['partition']}"


def _describe(group: str) -> str:
    topology, dataset, model, nodes, byzantine, partition = group.rsplit("_", 5)  # topology names contain "_"
    return f"the {topology} graph; {dataset}, {model}, {nodes[:-1]} nodes, {byzantine[:-1]} Byzantine, {partition}"


def _panel_row(plt: Any, panels: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure with one row of ``panels`` panels sharing the y axis (one per attack)."""
    return plt.subplots(1, panels, figsize=(width * panels, height), sharey=True, squeeze=False, layout="constrained")


def _plain(label: str) -> str:
    """``label`` as matplotlib text: a pair of '$' (a plugin's string parameter may hold them) would start a formula,
    and a formula that does not parse stops the figure."""
    return label.replace("$", "\\$")


def _labels(s: dict[str, Any]) -> tuple[str, str]:
    """The (attack, defense) labels of a run's scenario, as figure text."""
    attack, defense = PluginSpec(s["attack"], s["attack_params"]), PluginSpec(s["defense"], s["defense_params"])
    return _plain(attack.label), _plain(defense.label)


def accuracy_curves(records: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = _pyplot()
    curves: dict[str, dict[str, dict[str, list[list[tuple[int, float]]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for data in records:
        s = data["scenario"]
        points = [(p["round"], p["accuracy_mean"]) for p in data["result"]["curve"]]
        attack, defense = _labels(s)
        curves[_group(s)][attack][defense].append(points)
    written: list[Path] = []
    for topology, by_attack in sorted(curves.items()):
        attacks = sorted(by_attack)
        fig, axes = _panel_row(plt, len(attacks), 3.2, 3.0)
        for ax, attack in zip(axes[0], attacks, strict=True):
            for defense, runs in sorted(by_attack[attack].items()):
                rounds = [r for r, _ in runs[0]]
                seeds = np.array([[a if a is not None else np.nan for _, a in run] for run in runs])
                acc = seeds.mean(axis=0)
                (line,) = ax.plot(rounds, acc, label=defense, linewidth=1.4)
                if len(runs) > 1:  # the seeds' spread: +- their sample standard deviation
                    spread = seeds.std(axis=0, ddof=1)
                    ax.fill_between(rounds, acc - spread, acc + spread, color=line.get_color(), alpha=0.15, linewidth=0)
            ax.set_title(f"attack: {attack}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean honest test accuracy")
        axes[0][0].set_ylim(0, 1)
        axes[0][-1].legend(title="defense", fontsize=8, loc="lower right")
        fig.suptitle(
            f"Accuracy over rounds on {_describe(topology)} (mean over seeds, band: +- their standard deviation)"
        )
        written += _save(fig, out, f"accuracy_curves_{topology}")
    return written


def detection_heatmaps(records: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = _pyplot()
    values: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for data in records:
        s, auc = data["scenario"], data["result"].get("edge_auc")
        if auc is not None:
            values[_group(s)][_labels(s)].append(auc)
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
                ax.text(j, i, text, ha="center", va="center", color=_text_colour_on(image, grid[i, j]))
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_xlabel("defense")
        ax.set_ylabel("attack")
        fig.colorbar(image, ax=ax, label="edge-level detection AUC")
        ax.set_title(f"Detection AUC (mean over seeds)\n{_describe(topology)}", fontsize=8)
        written += _save(fig, out, f"detection_auc_{topology}")
    return written


def influence_folders(influence_dir: Path) -> list[tuple[Path, str]]:
    """``(folder, file-name suffix)``: ``influence_dir`` itself (no suffix), then each folder in it that an
    influence experiment wrote (the paper suite's ``one_sample/``, ``mnist/``, ...), suffixed with its name."""
    subfolders = (
        sorted(p for p in influence_dir.glob("*/") if any(p.glob("*.config.json"))) if influence_dir.is_dir() else []
    )
    return [(influence_dir, ""), *((p, f"_{p.name}") for p in subfolders)]


REMOVED = {"batch": "the source's batch is removed", "sample": "one sample of the source's batch is removed"}


def _unreadable_output(path: Path, reason: str) -> ConfigError:
    """A file of an ``influence`` experiment that does not read as one (cut short, a Git LFS pointer, another
    program's file): say which, and how to make it again."""
    from .paper import EXPERIMENTS  # the files each experiment writes; needed on this error path only

    experiment = next(
        (name for name, e in EXPERIMENTS.items() if path.name in (*e.outputs, f"{name}.config.json")), "EXPERIMENT"
    )
    return ConfigError(
        f"{str(path)!r} is not a readable output of `robustbench-dice influence` ({reason}); write it again with"
        f" `robustbench-dice influence {experiment} --out {path.parent}` and the options it was made"
        " with, or restore the committed copy with `git checkout`"
    )


def _read_rows(path: Path, columns: Collection[str]) -> list[dict[str, str]]:
    """The rows of an influence experiment's CSV (gzipped when named ``.gz``), each with ``columns``, at least one."""
    try:
        with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:  # OSError: BadGzipFile too
        raise _unreadable_output(path, f"{type(exc).__name__}: {exc}") from exc
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        raise _unreadable_output(path, f"no column {missing[0]!r}")
    if not rows:
        raise _unreadable_output(path, "no rows")
    short = next((i for i, row in enumerate(rows) if None in row.values() or None in row), None)
    if short is not None:  # a row cut off (or run on) reads as None in its missing (extra) columns
        raise _unreadable_output(
            path, f"row {short + 1} does not have the header's {len(reader.fieldnames or ())} fields"
        )
    return rows


def _read_stamp(path: Path) -> dict[str, Any]:
    """An experiment's ``.config.json`` (empty when there is none)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:  # UnicodeDecodeError too
        raise _unreadable_output(path, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise _unreadable_output(path, f"a JSON {type(data).__name__}, not an object")
    return data


def influence_alignment(influence_dir: Path, out: Path, suffix: str = "") -> list[Path]:
    path = influence_dir / "alignment.csv.gz"
    if not path.is_file():
        return []
    removal = _read_stamp(influence_dir / "alignment.config.json").get("removal", "batch")
    rows = _read_rows(path, ("dataset", "model", "lr", "r", "estimate", "ground_truth"))
    plt = _pyplot()
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
        ax.ticklabel_format(style="sci", scilimits=(-2, 4))  # 2e-3, not 0.002: long labels overlap
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("DICE estimate")
    axes[0][0].legend(markerscale=4, fontsize=8)
    fig.suptitle(
        f"DICE estimate vs ground truth (test-loss change when {REMOVED[removal]};"
        f" per receiver, {rows[0]['dataset']}, lr {default_lr}, all topologies)"
    )
    return _save(fig, out, f"influence_alignment{suffix}")


def cascade_decay(influence_dir: Path, out: Path, suffix: str = "") -> list[Path]:
    path = influence_dir / "cascade_decay.csv"
    if not path.is_file():
        return []
    rows = _read_rows(path, ("topology", "r", "hop", "mean_abs_ground_truth"))
    plt = _pyplot()
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
    return _save(fig, out, f"cascade_decay{suffix}")


def cascade_centrality(influence_dir: Path, out: Path, suffix: str = "") -> list[Path]:
    """The paper's topological importance: each source's mean |influence| against its out-degree, one panel per
    topology whose degrees differ (on regular graphs there is nothing to plot), Spearman's rho in the title."""
    from scipy.stats import spearmanr

    path = influence_dir / "cascade_centrality.csv"
    if not path.is_file():
        return []
    rows = _read_rows(path, ("topology", "degree", "mean_abs_influence"))
    by_topology: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for x in rows:
        by_topology[x["topology"]].append((int(x["degree"]), float(x["mean_abs_influence"])))
    irregular = [t for t in dict.fromkeys(x["topology"] for x in rows) if len({d for d, _ in by_topology[t]}) > 1]
    if not irregular:
        return []
    plt = _pyplot()
    fig, axes = _panel_row(plt, len(irregular), 2.8, 2.8)
    for ax, topology in zip(axes[0], irregular, strict=True):
        degree, influence = zip(*by_topology[topology], strict=True)
        ax.scatter(degree, influence, s=14, alpha=0.8)
        ax.set_title(f"{topology} (Spearman {spearmanr(degree, influence).statistic:.2f})")
        ax.set_xlabel("out-degree of the source")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("|change of the nodes' mean test loss|")
    fig.suptitle(
        "Topological importance: a source's influence against its degree (ground truth GT_r at the largest r,"
        " mean over the probe rounds)",
        fontsize=9,
    )
    return _save(fig, out, f"cascade_centrality{suffix}")


def poisoning_influence(influence_dir: Path, out: Path, suffix: str = "") -> list[Path]:
    """Each source's influence on the honest nodes over training under data poisoning, Byzantine sources in red, one
    panel per topology, the estimate's detection AUC in the title. Drawn from the folder of ``influence poisoning``;
    named ``poisoning_influence`` there (its folder is called poisoning already), suffixed elsewhere."""
    path = influence_dir / "poisoning.csv.gz"
    if not path.is_file():
        return []
    from sklearn.metrics import roc_auc_score

    rows = _read_rows(
        path,
        ("dataset", "model", "attack", "topology", "r", "source", "round", "byzantine", "estimate", "ground_truth"),
    )
    r_max = max(int(x["r"]) for x in rows)
    rows = [x for x in rows if int(x["r"]) == r_max]
    topologies = list(dict.fromkeys(x["topology"] for x in rows))
    plt = _pyplot()
    fig, axes = _panel_row(plt, len(topologies), 3.0, 3.0)
    for ax, topology in zip(axes[0], topologies, strict=True):
        mine = [x for x in rows if x["topology"] == topology]
        by_source: dict[int, list[dict[str, str]]] = defaultdict(list)
        for x in mine:
            by_source[int(x["source"])].append(x)
        for source_rows in by_source.values():
            poisoned = source_rows[0]["byzantine"] == "1"
            style = dict(color="tab:red", alpha=0.9, zorder=3) if poisoned else dict(color="0.55", alpha=0.6)
            rounds = [int(x["round"]) for x in source_rows]
            ax.plot(rounds, [float(x["ground_truth"]) for x in source_rows], lw=1, **style)
            ax.plot(rounds, [float(x["estimate"]) for x in source_rows], ls="none", marker="x", ms=3, **style)
        auc = roc_auc_score([int(x["byzantine"]) for x in mine], [-float(x["estimate"]) for x in mine])
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(f"{topology} (AUC {auc:.3f})", fontsize=9)
        ax.set_xlabel("probe round t")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[0][0].set_ylabel(f"influence on the honest nodes, r = {r_max}")
    axes[0][0].plot([], [], color="tab:red", label=f"{_plain(rows[0]['attack'])} source")
    axes[0][0].plot([], [], color="0.55", label="clean source")
    axes[0][0].plot([], [], color="black", ls="none", marker="x", ms=3, label="DICE estimate (lines: ground truth)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"Influence of each source's batch at t on the honest nodes' test loss {r_max} rounds later"
        f" ({rows[0]['dataset']}/{rows[0]['model']}); AUC: the estimate detecting the poisoned sources",
        fontsize=9,
    )
    return _save(fig, out, "poisoning_influence" + ("" if influence_dir.name == "poisoning" else suffix))


def roc_curves(records: list[dict[str, Any]], out: Path) -> list[Path]:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    pooled: dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: ([], [])))
    )
    for data in records:
        s, result = data["scenario"], data["result"]
        if not result.get("suspicion") or result.get("edge_auc") is None:
            continue
        attack, defense = _labels(s)
        byzantine = set(result["byzantine"])
        labels, scores = pooled[_group(s)][attack][defense]
        for j, k, score in result["suspicion"]:
            if int(j) != int(k):
                labels.append(int(int(k) in byzantine))
                scores.append(float(score))
    written: list[Path] = []
    for topology, by_attack in sorted(pooled.items()):
        attacks = sorted(by_attack)
        fig, axes = _panel_row(plt, len(attacks), 3.0, 3.1)
        for ax, attack in zip(axes[0], attacks, strict=True):
            for defense, (labels, scores) in sorted(by_attack[attack].items()):
                fpr, tpr, _ = roc_curve(labels, scores)
                ax.plot(fpr, tpr, linewidth=1.3, label=f"{defense} ({roc_auc_score(labels, scores):.2f})")
            ax.plot([0, 1], [0, 1], color="grey", linewidth=0.7, linestyle=":")
            ax.set_title(f"attack: {attack}")
            ax.set_xlabel("false positive rate (honest edges flagged)")
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            ax.legend(title="defense (AUC)", fontsize=7, title_fontsize=7, loc="lower right")
        axes[0][0].set_ylabel("true positive rate (Byzantine edges flagged)")
        fig.suptitle(f"ROC of edge suspicion scores (final round, seeds pooled) on {_describe(topology)}")
        written += _save(fig, out, f"roc_curves_{topology}")
    return written


def influence_curves(records: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = _pyplot()
    runs: dict[str, dict[tuple[str, str], list[list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for data in records:
        curve = data["result"].get("influence_curve")
        if curve and not data["result"].get("diverged"):  # a diverged run's influence overflows to +-inf
            runs[_group(data["scenario"])][_labels(data["scenario"])].append(curve)
    written: list[Path] = []
    for topology, by_cell in sorted(runs.items()):
        attacks = sorted({a for a, _ in by_cell})
        defenses = sorted({d for _, d in by_cell})
        fig, axes = plt.subplots(
            len(defenses),
            len(attacks),
            figsize=(3.0 * len(attacks), 2.5 * len(defenses) + 0.4),
            sharex=True,
            squeeze=False,
            layout="constrained",
        )
        for row, defense in enumerate(defenses):
            for col, attack in enumerate(attacks):
                ax = axes[row][col]
                curves = by_cell.get((attack, defense), [])
                for kind, colour in (("honest_mean", "tab:blue"), ("byzantine_mean", "tab:red")):
                    if not curves:
                        continue
                    rounds = [p["round"] for p in curves[0]]
                    values = np.array([[np.nan if p[kind] is None else p[kind] for p in c] for c in curves], float)
                    mean = np.nanmean(values, axis=0) if np.isfinite(values).any() else values[0]
                    label = "from honest neighbours" if kind == "honest_mean" else "from Byzantine neighbours"
                    ax.plot(rounds, mean, color=colour, linewidth=1.3, label=label)
                    if len(curves) > 1 and np.isfinite(values).any():
                        ax.fill_between(
                            rounds, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colour, alpha=0.15
                        )
                ax.axhline(0, color="grey", linewidth=0.6)
                ax.set_title(f"{attack} / defense {defense}", fontsize=8)
                ax.grid(alpha=0.3)
                if row == len(defenses) - 1:
                    ax.set_xlabel("round")
            axes[row][0].set_ylabel("running proximal influence\n(validation-loss decrease)")
        axes[0][-1].legend(fontsize=7, loc="best")
        fig.suptitle(
            f"Proximal influence received by honest nodes on {_describe(topology)}\n"
            "(mean over edges; line: mean over seeds, band: min-max; diverged runs left out)"
        )
        written += _save(fig, out, f"influence_curves_{topology}")
    return written


def topology_influence(records: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib.colors as mcolors
    import networkx as nx

    from .setup import scenario_topology
    from .topology import torus_sides

    plt = _pyplot()
    chosen: dict[str, dict[str, Any]] = {}
    # one representative run per topology: label flipping, no defense, lowest seed (then the first in sort order)
    candidates = sorted(
        # runs with some finite influence (a diverged run's rows hold None: a NaN JSON cannot)
        (r for r in records if any(v is not None for _, _, v in r["result"].get("proximal_influence") or [])),
        key=lambda r: (
            r["scenario"]["attack"] != "label_flip",
            r["scenario"]["defense"] != "gossip",
            r["scenario"]["dataset"],
            r["scenario"]["seed"],
            r["key"],
        ),
    )
    for data in candidates:
        chosen.setdefault(_group(data["scenario"]), data)
    written: list[Path] = []
    for group, data in sorted(chosen.items()):
        scenario = Scenario.from_dict(data["scenario"])
        topology = scenario.topology
        union = scenario_topology(scenario).union().adjacency  # [j, k]: j receives from k
        n = union.shape[0]
        byzantine = set(data["result"]["byzantine"])
        rows = data["result"]["proximal_influence"]
        # None: a NaN influence (JSON holds no NaN), drawn as an edge without a score
        influence = {(int(j), int(k)): float(v) for j, k, v in rows if int(j) != int(k) and v is not None}
        graph = nx.DiGraph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from((int(k), int(j)) for j, k in zip(*np.nonzero(union), strict=True))
        if topology == "torus":  # the grid the torus is built on (node = row * cols + col); wrap edges curve back
            _, cols = torus_sides(n, scenario.torus_rows)
            positions = {v: np.array([v % cols, -(v // cols)], dtype=float) for v in range(n)}
        elif topology in ("ring", "exponential", "one_peer_exponential", "complete"):
            positions = nx.circular_layout(graph)
        else:
            positions = nx.kamada_kawai_layout(graph)
        scale = max((abs(v) for v in influence.values()), default=1.0) or 1.0
        norm = mcolors.TwoSlopeNorm(vmin=-scale, vcenter=0.0, vmax=scale)
        cmap = plt.get_cmap("coolwarm_r")
        fig, ax = plt.subplots(figsize=(5.6, 4.8), layout="constrained")
        scored = [(k, j) for (j, k) in sorted(influence)]
        unscored = [e for e in graph.edges if (e[1], e[0]) not in influence]
        nx.draw_networkx_edges(
            graph,
            positions,
            edgelist=unscored,
            ax=ax,
            edge_color="lightgrey",
            arrows=True,
            arrowsize=6,
            connectionstyle="arc3,rad=0.12",
            node_size=260,
        )
        nx.draw_networkx_edges(
            graph,
            positions,
            edgelist=scored,
            ax=ax,
            arrows=True,
            arrowsize=8,
            width=1.6,
            edge_color=[cmap(norm(influence[(j, k)])) for k, j in scored],
            connectionstyle="arc3,rad=0.12",
            node_size=260,
        )
        colours = ["tab:red" if v in byzantine else "white" for v in range(n)]
        nx.draw_networkx_nodes(graph, positions, ax=ax, node_color=colours, edgecolors="black", node_size=260)
        nx.draw_networkx_labels(graph, positions, ax=ax, font_size=7)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=ax, shrink=0.8, label="accumulated proximal influence k -> j (loss decrease)")
        s = data["scenario"]
        attack, defense = _labels(s)
        ax.set_title(
            f"{_describe(group)}\n{attack}, defense {defense}, seed {s['seed']}; "
            "red nodes: Byzantine; grey edges: into Byzantine nodes (not scored)",
            fontsize=8,
        )
        ax.set_axis_off()
        written += _save(fig, out, f"topology_influence_{group}")
    return written


def robustness_curves(records: list[Record], out: Path) -> list[Path]:
    """Worst case over the attacks against the Byzantine count: one figure per (dataset, model, nodes, partition)
    with more than one count, a panel per topology, a line per defense. ``records``: every status, since a declined
    or failed seed leaves that worst case undefined (no point drawn), as in the ``worst_attack`` table."""
    plt = _pyplot()
    # group -> topology -> defense -> Byzantine count -> (mean, sample standard deviation) over the worst attack's seeds
    series: dict[tuple[Any, ...], dict[str, dict[str, dict[int, tuple[float, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    counts: dict[tuple[Any, ...], set[int]] = defaultdict(set)
    for (dataset, model, nodes, byzantine, partition, topology), by_defense in worst_case_values(
        summary_rows(records)
    ).items():
        group = (dataset, model, nodes, partition)
        counts[group].add(int(byzantine))
        for defense, values in by_defense.items():
            # the table's mean and the tables' spread (n - 1); one seed draws no bar
            point = (np.nan, np.nan) if values is None else (statistics.fmean(values), sample_std(values) or 0.0)
            series[group][topology][_plain(defense)][int(byzantine)] = point
    written: list[Path] = []
    for group, by_topology in sorted(series.items(), key=lambda kv: tuple(map(str, kv[0]))):
        xs = sorted(counts[group])
        if len(xs) < 2:
            continue
        topologies = sorted(by_topology)
        defenses = sorted({d for by_defense in by_topology.values() for d in by_defense})
        columns = min(4, len(topologies) + 1)  # one slot for the legend
        rows = -(-(len(topologies) + 1) // columns)
        fig, axes = plt.subplots(
            rows,
            columns,
            figsize=(2.6 * columns, 2.4 * rows),
            sharex=True,
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        palette = plt.get_cmap("tab10" if len(defenses) <= 10 else "tab20")
        colours = {defense: palette(i % palette.N) for i, defense in enumerate(defenses)}
        # each defense's points shifted a little sideways, so that bars at the same count do not cover each other
        dodge = 0.02 * (xs[-1] - xs[0])
        for ax, topology in zip(axes.flat, topologies, strict=False):
            for i, defense in enumerate(defenses):
                points = by_topology[topology].get(defense, {})
                ys, spread = np.array([points.get(x, (np.nan, np.nan)) for x in xs]).T
                shifted = np.array(xs, dtype=float) + dodge * (i - (len(defenses) - 1) / 2)
                style = {"color": "black", "linestyle": "--"} if defense == "gossip" else {"color": colours[defense]}
                bars = {"yerr": spread, "elinewidth": 0.7, "capsize": 1.5}
                ax.errorbar(shifted, ys, marker="o", markersize=3.5, linewidth=1.3, label=defense, **bars, **style)
            ax.set_title(topology)
            ax.set_xticks(xs)
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("worst-case honest accuracy")
        for i, ax in enumerate(axes.flat[: len(topologies)]):
            if i + columns >= len(topologies):  # nothing drawn below it: its x axis is the column's
                ax.xaxis.set_tick_params(labelbottom=True)
                ax.set_xlabel(f"Byzantine nodes (of {group[2]})")
        axes[0][0].set_ylim(0, 1)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        for ax in list(axes.flat)[len(topologies) :]:
            ax.set_axis_off()
        axes.flat[len(topologies)].legend(handles, labels, title="defense", fontsize=7, loc="center")
        dataset, model, nodes, partition = group
        fig.suptitle(
            f"Worst case over the attacks against the number of Byzantine nodes; {dataset}, {model}, {nodes} nodes,"
            f" {partition}\n(mean over seeds of the final honest accuracy, lowest over the attacks, with bars of +- the"
            " standard deviation over those seeds; no point where the defense declined or lacked a seed)",
            fontsize=8,
        )
        written += _save(fig, out, f"robustness_{dataset}_{model}_{nodes}n_{partition}")
    return written


def _text_colour_on(image: Any, value: float) -> str:
    """White or black, whichever reads better on the colour ``image`` gives ``value`` (black on n/a's blank)."""
    if np.isnan(value):
        return "black"
    red, green, blue, _ = image.cmap(image.norm(value))
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


def detection_summary_heatmaps(records: list[Record], out: Path, suite: str = "all") -> list[Path]:
    """The ``detection_summary`` table drawn: per (dataset, model), defense x attack, left the mean edge-level AUC on the
    cells every defense has, right the defenses' mean rank there (1 = the best detector). Rows as in the table, best
    detector first. ``records``: every status, as for the tables, of one suite, named ``suite`` in the file name."""
    plt = _pyplot()
    written: list[Path] = []
    for (dataset, model), compared in detection_comparisons(summary_rows(records)).items():
        attacks = compared.attacked
        if not compared.pairs:
            continue
        auc = np.array([[compared.auc(d, a, shared=True) for a in attacks] for d in compared.defenses], dtype=float)
        rank = np.array([[compared.rank(d, a) for a in attacks] for d in compared.defenses], dtype=float)
        n = len(compared.defenses)
        fig, axes = plt.subplots(
            1, 2, figsize=(2 * (0.55 * len(attacks) + 2.2), 0.4 * n + 1.8), sharey=True, layout="constrained"
        )
        panels = (
            (auc, 0.0, 1.0, "viridis", "{:.2f}", "edge-level AUC"),
            (rank, 1.0, float(n), "viridis_r", "{:.1f}", f"mean rank of {n} (1 = best)"),
        )
        for ax, (grid, low, high, cmap, spec, label) in zip(axes, panels, strict=True):
            image = ax.imshow(grid, vmin=low, vmax=high, cmap=cmap, aspect="auto")
            for i in range(n):
                for j in range(len(attacks)):
                    value = grid[i, j]
                    text = "n/a" if np.isnan(value) else spec.format(value)
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=_text_colour_on(image, value))
            ax.set_xticks(range(len(attacks)), [_plain(a) for a in attacks], rotation=35, ha="right")
            fig.colorbar(image, ax=ax, label=label, shrink=0.9)
        axes[0].set_yticks(range(n), [_plain(d) for d in compared.defenses])
        fig.suptitle(
            f"Detection by attack, suite {suite}; {dataset}, {model}\nmean over the {compared.shared_count()} cells"
            " (block x topology) every defense has; rows: best detector first",
            fontsize=8,
        )
        written += _save(fig, out, f"detection_summary_{suite}_{dataset}_{model}")
    return written


FIGURE_KINDS = (
    "accuracy_curves",
    "detection_auc",
    "roc_curves",
    "influence_curves",
    "topology_influence",
    "influence_alignment",
    "cascade_decay",
    "cascade_centrality",
    "poisoning_influence",
    "robustness",
    "detection_summary",
)
SUITE_FIGURES = ("detection_summary",)  # compare a whole suite's defenses: drawn from one suite's runs at a time


def write_figures(
    store: ResultStore,
    influence_dir: str | Path,
    out: str | Path,
    scenarios: Iterable[Scenario] | Mapping[str, Scenario] | None = None,
    kinds: Collection[str] = FIGURE_KINDS,
    suite: str = "all",
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Every figure of ``kinds`` (names in ``FIGURE_KINDS``) that the store (restricted to ``scenarios``, a suite's
    runs, when given; those not stored count as not run) and ``influence_dir`` have data for. ``suite`` names the
    runs in the files of ``SUITE_FIGURES``; ``log`` gets a line per kind as it is done (a minute for all of them)."""
    unknown = sorted(set(kinds) - set(FIGURE_KINDS))
    if unknown:
        raise ValueError(f"unknown figure kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(FIGURE_KINDS)}")
    out, influence_dir = Path(out), Path(influence_dir)

    @functools.cache  # read once, and only when a kind drawn from the store is asked for
    def stored() -> list[Record]:
        return store.records_of(scenarios)

    @functools.cache
    def ok() -> list[dict[str, Any]]:
        return [r.data for r in stored() if r.status == "ok"]

    def each_influence_folder(draw: Callable[[Path, Path, str], list[Path]]) -> list[Path]:
        return [path for folder, suffix in influence_folders(influence_dir) for path in draw(folder, out, suffix)]

    drawers: dict[str, Callable[[], list[Path]]] = {
        "accuracy_curves": lambda: accuracy_curves(ok(), out),
        "detection_auc": lambda: detection_heatmaps(ok(), out),
        "roc_curves": lambda: roc_curves(ok(), out),
        "influence_curves": lambda: influence_curves(ok(), out),
        "topology_influence": lambda: topology_influence(ok(), out),
        "influence_alignment": lambda: each_influence_folder(influence_alignment),
        "cascade_decay": lambda: each_influence_folder(cascade_decay),
        "cascade_centrality": lambda: each_influence_folder(cascade_centrality),
        "poisoning_influence": lambda: each_influence_folder(poisoning_influence),
        "robustness": lambda: robustness_curves(stored(), out),
        "detection_summary": lambda: detection_summary_heatmaps(stored(), out, suite),
    }
    written = []
    for kind in (k for k in FIGURE_KINDS if k in kinds):
        start = time.perf_counter()
        paths = drawers[kind]()
        written += paths
        if log is not None:
            log(
                f"  {kind}{'' if suite == 'all' else f' ({suite})'}: {len(paths)} file(s) in {time.perf_counter() - start:.1f}s"
            )
    return written
