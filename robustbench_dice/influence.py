"""Influence measurements on real training runs: record windows from the engine, then estimate and re-run."""

from __future__ import annotations

import csv
import gzip
import io
import math
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeAlias

import networkx as nx
import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from .datasets import PLUGIN_DATASETS
from .dice import REMOVALS, Probe, Window, dice_estimate, dice_ground_truth, probe_curvature_term
from .engine import RoundRecord, Simulation
from .errors import ConfigError, check_choice
from .io import atomic_write_bytes
from .models import PLUGIN_MODELS
from .plugins import Attack
from .registry import defining_file, plugin_class
from .scenario import Scenario
from .setup import prepare, resolve_device
from .topology import PLUGIN_TOPOLOGIES, build_topology

if TYPE_CHECKING:
    from .poisoning import PoisoningConfig

    ExperimentConfig: TypeAlias = "AlignmentConfig | CascadeConfig | PoisoningConfig"


def poisons_data_only(attack: str) -> bool:
    """Whether ``attack``'s Byzantine nodes send their honest SGD step, on data the attack may have changed in its
    ``setup`` (label flipping): it keeps :class:`Attack`'s ``messages`` and ``reported_delta``, so a run under it is
    still gossip SGD, which DICE windows replay."""
    cls = plugin_class("attack", attack)
    return cls is not None and cls.messages is Attack.messages and cls.reported_delta is Attack.reported_delta


def record_windows(scenario: Scenario, rounds: list[int], horizon: int) -> tuple[Simulation, list[Window]]:
    """Train ``scenario`` once and keep, for each round t in ``rounds``, the inputs of rounds t .. t+horizon-1."""
    if scenario.momentum != 0.0:
        raise ConfigError("DICE windows need plain SGD (momentum=0): the estimate linearises an SGD step")
    if scenario.defense != "gossip" or not poisons_data_only(scenario.attack):
        raise ConfigError(
            "DICE windows are recorded on gossip training (defense 'gossip') in which every node takes SGD steps:"
            f" clean, or under an attack that only poisons data (e.g. label_flip); got attack {scenario.attack!r},"
            f" defense {scenario.defense!r}"
        )
    # checked before training, which the windows are cut from afterwards
    if isinstance(horizon, bool) or not isinstance(horizon, Integral) or horizon < 1:
        raise ConfigError(f"horizon must be an integer >= 1 (rounds each window keeps), got {horizon!r}")
    if not rounds or any(isinstance(t, bool) or not isinstance(t, Integral) or t < 0 for t in rounds):
        raise ConfigError(f"rounds must be a non-empty list of probe rounds, integers >= 0; got {rounds!r}")
    last = max(rounds) + horizon
    if last > scenario.rounds:
        raise ConfigError(f"probe round {max(rounds)} + horizon {horizon} exceeds rounds={scenario.rounds}")
    records: dict[int, RoundRecord] = {}
    wanted = {t + s for t in rounds for s in range(horizon)}

    def keep(record: RoundRecord) -> None:
        if record.round in wanted:
            records[record.round] = record

    sim = Simulation.from_scenario(scenario)
    sim.observer = keep
    sim.run()
    windows = []
    for t in rounds:
        span = [records[t + s] for s in range(horizon)]
        windows.append(
            Window(
                round=t,
                theta=span[0].theta,
                batches=tuple((r.x, r.y) for r in span),
                weights=tuple(r.weights.to_dense() if r.weights.layout != torch.strided else r.weights for r in span),
                lr=scenario.lr,
                weight_decay=scenario.weight_decay,
            )
        )
    return sim, windows


def probe_from_test_set(sim: Simulation, size: int | None = None) -> Probe:
    """The global held-out test set (or its first ``size`` samples) as the probe set z'."""
    ds = sim.setup.dataset
    x, y = ds.x_test, ds.y_test
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= len(y):
            raise ConfigError(
                f"size must be an integer in [1, {len(y)}] (the test set's samples) or None, got {size!r}"
            )
        x, y = x[:size], y[:size]
    return Probe(x.to(sim.setup.device, sim.setup.dtype), y.to(sim.setup.device))


# -- experiments ---------------------------------------------------------------------------------------------------

Log = Callable[[str], None]
DEFAULT_OUT = Path("results/influence")


@dataclass
class AlignmentConfig:
    """The alignment experiment: estimate vs ground truth over many (source, round) probes."""

    default_out: ClassVar[Path] = DEFAULT_OUT  # where `influence` writes it without --out
    dataset: str = field(default="digits", metadata={"help": "dataset of every run"})
    models: tuple[str, ...] = field(default=("logreg", "mlp"), metadata={"help": "models compared"})
    topologies: tuple[str, ...] = field(
        default=("ring", "torus", "exponential", "one_peer_exponential"), metadata={"help": "topologies compared"}
    )
    lrs: tuple[float, ...] = field(
        default=(0.1, 0.03, 0.3, 1.0), metadata={"help": "learning rates; the first is the default, the rest the sweep"}
    )
    sweep_topologies: tuple[str, ...] = field(
        default=("ring", "exponential"), metadata={"help": "topologies the learning-rate sweep runs on"}
    )
    nodes: int = field(default=16, metadata={"help": "nodes per run (every node is a source)"})
    rounds: int = field(default=200, metadata={"help": "training rounds per run"})
    probe_rounds: int = field(default=13, metadata={"help": "probe rounds t, evenly spaced over training"})
    horizon: int = field(default=3, metadata={"help": "largest hop count r"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size"})
    seed: int = field(default=0, metadata={"help": "seed of the runs"})
    data_root: str | None = field(default=None, metadata={"help": "folder of on-disk datasets (mnist, cifar10)"})
    device: str = field(default="cpu", metadata={"help": "where the runs compute: 'cpu', 'cuda' or 'auto'"})
    removal: str = field(
        default="batch",
        metadata={
            "help": "what the ground truth removes from the source at round t: 'batch' (its whole minibatch) or"
            " 'sample' (one data point, the paper's z_j^t)"
        },
    )

    def __post_init__(self) -> None:
        normalise_and_check(self)

    def settings(self) -> list[tuple[str, str, float]]:
        """(model, topology, lr): every model x topology at the first rate, then the sweep's rates on its graphs."""
        first = [(m, t, self.lrs[0]) for m in self.models for t in self.topologies]
        return first + [(m, t, lr) for lr in self.lrs[1:] for m in self.models for t in self.sweep_topologies]


MAY_BE_EMPTY = ("sweep_topologies", "attack_params")  # the tuple fields whose empty value means something: none


def normalise_and_check(config: ExperimentConfig) -> None:
    """Lists (from JSON or the command line) become tuples; every run the experiment will make is built and
    checked now, so that a bad name fails before minutes of training rather than after."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            setattr(config, f.name, tuple(value))
        value = getattr(config, f.name)
        if isinstance(value, tuple) and not value and f.name not in MAY_BE_EMPTY:
            raise ConfigError(f"{f.name} must name at least one value")
        if isinstance(value, tuple) and f.name != "attack_params":  # parse_param_pairs names a repeated KEY itself
            repeated = [v for i, v in enumerate(value) if v in value[:i]]
            if repeated:
                raise ConfigError(
                    f"{f.name} lists {repeated[0]!r} twice: its runs would be made twice, and its rows written twice"
                )
    for name in ("nodes", "rounds", "probe_rounds", "horizon"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if name == "nodes" else 1):
            raise ConfigError(f"{name} must be an integer >= {2 if name == 'nodes' else 1}, got {value!r}")
    if config.horizon >= config.rounds:
        raise ConfigError(
            f"horizon={config.horizon} leaves no probe round in rounds={config.rounds} (a probe at round t needs"
            " rounds t..t+horizon): use more rounds or a smaller horizon"
        )
    if config.probe_rounds > config.rounds - config.horizon:  # else fewer probes than asked for, silently
        raise ConfigError(
            f"probe_rounds={config.probe_rounds} does not fit: rounds={config.rounds} with horizon={config.horizon}"
            f" has {config.rounds - config.horizon} probe rounds (1..{config.rounds - config.horizon})"
        )
    if isinstance(config, AlignmentConfig):
        check_choice("removal", config.removal, REMOVALS)
        if config.removal == "sample" and config.batch_size < 2:
            raise ConfigError(
                f"removal='sample' needs batch_size >= 2 (the source's step without the sample must have data),"
                f" got {config.batch_size}"
            )
        settings = config.settings()
    else:
        settings = [(config.model, t, config.lr) for t in config.topologies]
    for model, topology, lr in settings:
        if topology == "file":  # the experiments have no adjacency_file field to pass it on
            raise ConfigError(
                "the influence experiments cannot run topology 'file' (no adjacency file can be given to them): wrap"
                " your graph in a topology plugin, @register_topology, and load it with --plugins DIR (docs/plugins.md)"
            )
        scenario = experiment_scenario(config, model, topology, lr)
        build_topology(topology, scenario.nodes, seed=scenario.seed)  # e.g. a torus on a prime node count
    resolve_device(config.device)  # 'cuda' on a machine without one


def spread_probe_rounds(rounds: int, count: int, horizon: int) -> list[int]:
    """Up to ``count`` distinct probe rounds evenly spaced over 1 .. rounds - horizon (each window must fit)."""
    last = rounds - horizon
    return sorted({int(round(x)) for x in np.linspace(1, last, count)})


def hop_distances(sim: Simulation) -> np.ndarray:
    """``(N, N)``: shortest directed hop count from source j (row) to receiver k (column) in the union graph."""
    adjacency = sim.setup.mixing.topology.union().adjacency  # [k, j]: k receives from j
    graph = nx.from_numpy_array(adjacency.T.astype(np.int8), create_using=nx.DiGraph)
    n = adjacency.shape[0]
    hops = np.full((n, n), -1, dtype=int)
    for j, lengths in nx.all_pairs_shortest_path_length(graph):
        for k, d in lengths.items():
            hops[j, k] = d
    return hops


ESTIMATORS = ("dice", "no_curvature", "probe_second_order")
REMOVED = {"batch": "the source's batch", "sample": "one sample of the source's batch (the first)"}


HEARTBEAT_SECONDS = 30.0  # a slow setting (a CNN, a large N) says how far it is at most this often


def heartbeat(log: Log, label: str, every: float | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for :func:`measure_windows` that logs ``label: probe round done/total`` only
    once ``every`` seconds (default :data:`HEARTBEAT_SECONDS`) have passed since the start or its last line:
    quick settings stay one line each."""
    interval = HEARTBEAT_SECONDS if every is None else every
    start = last = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= interval and done < total:
            log(f"  {label}: probe round {done}/{total} done ({now - start:.0f}s)")
            last = now

    return progress


def measure_windows(
    scenario: Scenario,
    rounds: list[int],
    horizon: int,
    estimators: tuple[str, ...],
    removal: str = "batch",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Simulation, np.ndarray, dict[str, np.ndarray]]:
    """Train once, then for every probe round: each estimator (of :data:`ESTIMATORS`) and the ground truth.

    Returns the simulation, the ``(N, N)`` hop distances and arrays of shape ``(windows, horizon, S, N)`` with every
    node a source and the global test set as z'. ``probe_second_order`` (the r = 1 estimate plus the probe loss's
    second-order term, a diagnostic of the r = 1 gap) is defined at r = 1 only: its array is ``(windows, 1, S, N)``.
    ``removal``: what each counterfactual removes from its source (:data:`~.dice.REMOVALS`). ``progress(done,
    total)`` is called after each probe round (e.g. :func:`heartbeat`).
    """
    sim, windows = record_windows(scenario, rounds, horizon)
    probe = probe_from_test_set(sim)
    sources = torch.arange(scenario.nodes, device=sim.setup.device)
    model = sim.setup.model
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*estimators, "truth")}
    for window in windows:
        for name in estimators:
            if name == "probe_second_order":
                first = dice_estimate(model, window, sources, probe, 1, removal=removal)
                estimate = first + probe_curvature_term(model, window, sources, probe, removal=removal).unsqueeze(0)
            else:
                estimate = dice_estimate(
                    model, window, sources, probe, horizon, curvature=name == "dice", removal=removal
                )
            out[name].append(estimate.cpu().numpy())
        out["truth"].append(dice_ground_truth(model, window, sources, probe, horizon, removal=removal).cpu().numpy())
        if progress is not None:
            progress(len(out["truth"]), len(windows))
    return sim, hop_distances(sim), {k: np.stack(v) for k, v in out.items()}


def experiment_scenario(config: ExperimentConfig, model: str, topology: str, lr: float) -> Scenario:
    """A DICE experiment run: plain SGD (momentum 0) in float64, evaluated once at the end."""
    return Scenario(
        dataset=config.dataset,
        data_root=config.data_root,
        model=model,
        topology=topology,
        nodes=config.nodes,
        rounds=config.rounds,
        lr=lr,
        momentum=0.0,
        batch_size=config.batch_size,
        dtype="float64",
        seed=config.seed,
        eval_every=config.rounds,
        device=config.device,
    )


def pearson_spearman(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of two 1-D arrays (scipy); NaN where either is constant or too short."""
    if estimate.size < 3 or np.std(estimate) == 0 or np.std(truth) == 0:
        return math.nan, math.nan
    return float(pearsonr(estimate, truth).statistic), float(spearmanr(estimate, truth).statistic)


SETTING_COLUMNS = ("dataset", "model", "topology", "lr")  # lead every alignment output's rows
ALIGNMENT_COLUMNS = (
    *SETTING_COLUMNS,
    "r",
    "source",
    "round",
    "receiver",
    "hop",
    "estimate",
    "estimate_no_curvature",
    "estimate_probe_second_order",
    "ground_truth",
)
SUMMARY_COLUMNS = (
    *SETTING_COLUMNS,
    "estimator",
    "r",
    "probes",
    "pearson",
    "spearman",
    "receiver_rows",
    "pearson_per_receiver",
    "spearman_per_receiver",
)
# per probe round: how the agreement and the first-order error move as training converges
BY_ROUND_COLUMNS = (
    *SETTING_COLUMNS,
    "estimator",
    "r",
    "round",
    "sources",
    "pearson",
    "mean_abs_ground_truth",
    "mean_abs_error",
)

Rows = list[dict[str, object]]


def run_alignment(config: AlignmentConfig, log: Log = print) -> tuple[Rows, Rows, Rows]:
    """Rows of the long CSV, of the summary and of the per-round breakdown.

    Aggregates use ``q_k = 1 / N`` (paper Def. 2): a probe's ``GT_r`` is the
    mean over all receivers. The per-round rows correlate the sources of one
    probe round, and give the mean ``|GT_r|`` and mean ``|GT_r - E_r|`` there.
    """
    rows: Rows = []
    summary: Rows = []
    by_round: Rows = []
    settings = config.settings()
    # each model's data and partition built first, so that one the dataset cannot feed (a CNN on 1-D inputs) fails
    # before the other models' minutes of training, not after
    for model in dict.fromkeys(model for model, _, _ in settings):
        prepare(experiment_scenario(config, model, *settings[0][1:]))
    for index, (model, topology, lr) in enumerate(settings, 1):
        start = time.perf_counter()
        scenario = experiment_scenario(config, model, topology, lr)
        rounds = spread_probe_rounds(config.rounds, config.probe_rounds, config.horizon)
        label = f"[{index}/{len(settings)}] {model} {topology} lr={lr}"
        progress = heartbeat(log, label)
        sim, hops, arrays = measure_windows(scenario, rounds, config.horizon, ESTIMATORS, config.removal, progress)
        setting = dict(zip(SETTING_COLUMNS, (config.dataset, model, topology, lr), strict=True))
        for w, t in enumerate(rounds):
            for r in range(1, config.horizon + 1):
                for j in range(config.nodes):
                    for k in np.flatnonzero((hops[j] >= 0) & (hops[j] <= r)):
                        rows.append(
                            dict(
                                **setting,
                                r=r,
                                source=j,
                                round=t,
                                receiver=int(k),
                                hop=int(hops[j, k]),
                                estimate=arrays["dice"][w, r - 1, j, k],
                                estimate_no_curvature=arrays["no_curvature"][w, r - 1, j, k],
                                estimate_probe_second_order=arrays["probe_second_order"][w, 0, j, k] if r == 1 else "",
                                ground_truth=arrays["truth"][w, r - 1, j, k],
                            )
                        )
        first_row = len(summary)
        for estimator in ESTIMATORS:
            for r in range(1, arrays[estimator].shape[1] + 1):
                est, truth = arrays[estimator][:, r - 1], arrays["truth"][:, r - 1]  # (windows, S, N)
                reach = (hops >= 0) & (hops <= r)
                pear, spear = pearson_spearman(est.mean(-1).ravel(), truth.mean(-1).ravel())
                mask = np.broadcast_to(reach, est.shape)
                pear_k, spear_k = pearson_spearman(est[mask], truth[mask])
                summary.append(
                    dict(
                        **setting,
                        estimator=estimator,
                        r=r,
                        probes=est.shape[0] * est.shape[1],
                        pearson=pear,
                        spearman=spear,
                        receiver_rows=int(mask.sum()),
                        pearson_per_receiver=pear_k,
                        spearman_per_receiver=spear_k,
                    )
                )
                for w, t in enumerate(rounds):
                    probe_est, probe_truth = est[w].mean(-1), truth[w].mean(-1)  # (S,)
                    by_round.append(
                        dict(
                            **setting,
                            estimator=estimator,
                            r=r,
                            round=t,
                            sources=probe_est.size,
                            pearson=pearson_spearman(probe_est, probe_truth)[0],
                            mean_abs_ground_truth=float(np.abs(probe_truth).mean()),
                            mean_abs_error=float(np.abs(probe_truth - probe_est).mean()),
                        )
                    )
        dice_pearson = [s["pearson"] for s in summary[first_row:] if s["estimator"] == "dice"]
        log(
            f"{label}: Pearson r=1..{config.horizon}"
            f" {', '.join(f'{p:.4f}' for p in dice_pearson)} ({time.perf_counter() - start:.1f}s)"
        )
    return rows, summary, by_round


@dataclass
class CascadeConfig:
    """The cascade experiment: influence against hop distance and against the source's topological importance."""

    default_out: ClassVar[Path] = DEFAULT_OUT  # where `influence` writes it without --out
    dataset: str = field(default="digits", metadata={"help": "dataset of every run"})
    model: str = field(default="mlp", metadata={"help": "model"})
    topologies: tuple[str, ...] = field(
        default=("ring", "torus", "exponential", "erdos_renyi", "small_world", "star"),
        metadata={"help": "topologies compared"},
    )
    nodes: int = field(default=16, metadata={"help": "nodes per run"})
    rounds: int = field(default=200, metadata={"help": "training rounds per run"})
    probe_rounds: int = field(default=13, metadata={"help": "probe rounds t, evenly spaced"})
    horizon: int = field(default=4, metadata={"help": "r: influence is measured r rounds after the step"})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size"})
    seed: int = field(default=0, metadata={"help": "seed of the runs"})
    data_root: str | None = field(default=None, metadata={"help": "folder of on-disk datasets (mnist, cifar10)"})
    device: str = field(default="cpu", metadata={"help": "where the runs compute: 'cpu', 'cuda' or 'auto'"})

    def __post_init__(self) -> None:
        normalise_and_check(self)


def command_line(kind: str, config: ExperimentConfig, out: str | Path = DEFAULT_OUT) -> str:
    """The ``robustbench-dice influence`` command that reproduces ``config`` into ``out``: only the flags that
    differ from the defaults, so the default experiment reads ``robustbench-dice influence alignment``."""
    default = type(config)()
    parts = ["robustbench-dice", "influence", kind]
    for f in fields(config):
        value = getattr(config, f.name)
        if value == getattr(default, f.name):
            continue
        parts.append("--" + f.name.replace("_", "-"))
        parts += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    if Path(out) != config.default_out:
        parts += ["--out", str(out)]
    for folder in _plugin_folders(config):
        parts += ["--plugins", folder]
    return " ".join(shlex.quote(p) for p in parts)


def _plugin_folders(config: ExperimentConfig) -> list[str]:
    """The folders of the dataset, model and topology plugins ``config`` names, which the command that reproduces
    it must load (relative to the working directory where they lie under it)."""
    models = config.models if isinstance(config, AlignmentConfig) else (config.model,)
    topologies = (*config.topologies, *(config.sweep_topologies if isinstance(config, AlignmentConfig) else ()))
    functions = [
        PLUGIN_DATASETS.get(config.dataset),
        *(PLUGIN_MODELS.get(m) for m in models),
        *(PLUGIN_TOPOLOGIES.get(t) for t in topologies),
    ]
    folders = []
    for function in functions:
        if function is None:
            continue
        folder = Path(defining_file(function)).resolve().parent  # a functools.partial too
        shown = str(folder.relative_to(Path.cwd())) if folder.is_relative_to(Path.cwd()) else str(folder)
        folders += [shown] if shown not in folders else []
    return folders


DECAY_COLUMNS = ("dataset", "model", "topology", "r", "hop", "pairs", "mean_abs_estimate", "mean_abs_ground_truth")
CENTRALITY_COLUMNS = (
    "dataset",
    "model",
    "topology",
    "source",
    "degree",
    "eigenvector_centrality",
    "mean_influence",
    "mean_abs_influence",
)


def run_cascade(config: CascadeConfig, log: Log = print) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Rows of the decay table (per topology, r, hop) and of the centrality table (per topology, source)."""
    decay: list[dict[str, object]] = []
    centrality: list[dict[str, object]] = []
    for index, topology in enumerate(config.topologies, 1):
        start = time.perf_counter()
        scenario = experiment_scenario(config, config.model, topology, config.lr)
        rounds = spread_probe_rounds(config.rounds, config.probe_rounds, config.horizon)
        label = f"[{index}/{len(config.topologies)}] cascade on {topology}"
        progress = heartbeat(log, label)
        sim, hops, arrays = measure_windows(scenario, rounds, config.horizon, ("dice",), progress=progress)
        est, truth = arrays["dice"], arrays["truth"]
        for r in range(1, config.horizon + 1):
            for hop in range(0, r + 1):
                mask = np.broadcast_to(hops == hop, est[:, r - 1].shape)
                if mask.any():
                    decay.append(
                        dict(
                            dataset=config.dataset,
                            model=config.model,
                            topology=topology,
                            r=r,
                            hop=hop,
                            pairs=int(mask.sum()),
                            mean_abs_estimate=float(np.abs(est[:, r - 1][mask]).mean()),
                            mean_abs_ground_truth=float(np.abs(truth[:, r - 1][mask]).mean()),
                        )
                    )
        adjacency = sim.setup.mixing.topology.union().adjacency
        graph = nx.from_numpy_array((adjacency | adjacency.T).astype(np.int8))
        eigen = nx.eigenvector_centrality_numpy(graph)
        total = truth[:, -1].mean(axis=-1)  # (windows, S): GT_r with q_k = 1/N at the largest r
        for j in range(config.nodes):
            centrality.append(
                dict(
                    dataset=config.dataset,
                    model=config.model,
                    topology=topology,
                    source=j,
                    degree=int(adjacency[:, j].sum()),
                    eigenvector_centrality=float(eigen[j]),
                    mean_influence=float(total[:, j].mean()),
                    mean_abs_influence=float(np.abs(total[:, j]).mean()),
                )
            )
        log(f"{label} ({time.perf_counter() - start:.1f}s)")
    return decay, centrality


def _csv_text(columns: Iterable[str], rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path: Path, columns: Iterable[str], rows: list[dict[str, object]]) -> None:
    atomic_write_bytes(path, _csv_text(columns, rows).encode())


def write_csv_gz(path: Path, columns: Iterable[str], rows: list[dict[str, object]]) -> None:
    """Gzipped CSV with a fixed header timestamp, so the same rows give the same bytes."""
    atomic_write_bytes(path, gzip.compress(_csv_text(columns, rows).encode(), mtime=0))


def format_value(value: object) -> str:
    """A table cell: 4 decimals, 'n/a' for NaN."""
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def alignment_markdown(
    summary: Rows, config: AlignmentConfig, by_round: Rows | None = None, out: str | Path = DEFAULT_OUT
) -> str:
    lines = [
        "# DICE alignment: estimate vs counterfactual ground truth",
        "",
        f"{config.dataset}, {config.nodes} nodes, plain SGD, batch {config.batch_size}, {config.rounds} rounds,"
        f" {config.probe_rounds} probe rounds x {config.nodes} sources per setting; ground truth re-runs rounds"
        f" t..t+r-1 without {REMOVED[config.removal]} at t. Pearson / Spearman over probes of"
        " GT_r = mean over receivers (q_k = 1/N); `per receiver`: over (probe, receiver within r hops) pairs."
        " `probe_second_order` (r = 1 only) is not an estimator: it adds the probe loss's second-order term"
        " 0.5 p^T H' p to the r = 1 estimate, to show what the first-order gap at r = 1 is made of.",
        f"Regenerate: `{command_line('alignment', config, out)}`.",
        "",
    ]
    rs = range(1, config.horizon + 1)
    header = ["model", "topology", "lr", "estimator", "probes"]
    header += [f"r={r} Pearson" for r in rs] + [f"r={r} Spearman" for r in rs] + [f"r={rs[-1]} Pearson per receiver"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keyed: dict[tuple[object, ...], dict[int, dict[str, object]]] = {}
    for row in summary:
        keyed.setdefault((row["model"], row["topology"], row["lr"], row["estimator"]), {})[int(str(row["r"]))] = row
    for (model, topology, lr, estimator), by_r in keyed.items():
        pear = [format_value(by_r[r]["pearson"]) if r in by_r else "n/a" for r in rs]
        spear = [format_value(by_r[r]["spearman"]) if r in by_r else "n/a" for r in rs]
        last = format_value(by_r[rs[-1]]["pearson_per_receiver"]) if rs[-1] in by_r else "n/a"
        lines.append(
            f"| {model} | {topology} | {lr} | {estimator} | {by_r[min(by_r)]['probes']} | {' | '.join(pear)} |"
            f" {' | '.join(spear)} | {last} |"
        )
    return "\n".join(lines + _by_round_markdown(by_round or [], config)) + "\n"


def _by_round_markdown(by_round: Rows, config: AlignmentConfig) -> list[str]:
    """r = 1, DICE, first learning rate: Pearson within a probe round and relative error, early to late."""
    cells: dict[tuple[object, object], list[dict[str, object]]] = {}
    for row in by_round:
        if row["estimator"] == "dice" and row["r"] == 1 and row["lr"] == config.lrs[0]:
            cells.setdefault((row["model"], row["topology"]), []).append(row)
    if not cells:
        return []
    rounds = [int(str(row["round"])) for row in next(iter(cells.values()))]
    picked = sorted({0, len(rounds) // 2, len(rounds) - 1})
    lines = [
        "",
        f"## r = 1 by probe round (lr {config.lrs[0]})",
        "",
        "Within one probe round (its sources): Pearson of GT_1 and E_1, and the relative first-order error"
        " mean |GT_1 - E_1| / mean |GT_1|. Every round, estimator and r: `alignment_by_round.csv`.",
        "",
    ]
    header = ["model", "topology"] + [f"round {rounds[i]}: Pearson / rel. error" for i in picked]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, topology), rows in cells.items():
        parts = []
        for i in picked:
            row = rows[i]
            relative = float(str(row["mean_abs_error"])) / float(str(row["mean_abs_ground_truth"]))
            parts.append(f"{format_value(row['pearson'])} / {relative:.3f}")
        lines.append(f"| {model} | {topology} | {' | '.join(parts)} |")
    return lines


def cascade_markdown(
    decay: list[dict[str, object]],
    centrality: list[dict[str, object]],
    config: CascadeConfig,
    out: str | Path = DEFAULT_OUT,
) -> str:
    r = config.horizon
    lines = [
        "# DICE cascade: influence against hop distance and topological importance",
        "",
        f"{config.dataset}/{config.model}, {config.nodes} nodes, lr {config.lr}, {config.probe_rounds} probe rounds,"
        f" every node a source. Mean |influence| on receivers at each hop distance, {r} rounds after the step"
        f" (estimate and ground truth). Regenerate: `{command_line('cascade', config, out)}`.",
        "",
        "| topology | " + " | ".join(f"hop {h}: estimate / truth" for h in range(r + 1)) + " |",
        "|---|" + "---|" * (r + 1),
    ]
    for topology in config.topologies:
        cells = []
        for h in range(r + 1):
            row = next((d for d in decay if d["topology"] == topology and d["r"] == r and d["hop"] == h), None)
            cells.append("-" if row is None else f"{row['mean_abs_estimate']:.2e} / {row['mean_abs_ground_truth']:.2e}")
        lines.append(f"| {topology} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Spearman correlation of a source's mean |GT_{r}| with its degree and eigenvector centrality:",
        "",
        "| topology | vs out-degree | vs eigenvector centrality |",
        "|---|---|---|",
    ]
    for topology in config.topologies:
        rows = [c for c in centrality if c["topology"] == topology]
        influence = np.array([c["mean_abs_influence"] for c in rows])
        cells = []
        for key in ("degree", "eigenvector_centrality"):
            values = np.array([c[key] for c in rows], dtype=float)
            cells.append(
                "n/a (all equal)"
                if np.ptp(values) < 1e-9
                else format_value(float(spearmanr(values, influence).statistic))
            )
        lines.append(f"| {topology} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def write_alignment(out: Path, config: AlignmentConfig, log: Log = print) -> list[dict[str, object]]:
    rows, summary, by_round = run_alignment(config, log)
    write_csv_gz(out / "alignment.csv.gz", ALIGNMENT_COLUMNS, rows)
    write_csv(out / "alignment_summary.csv", SUMMARY_COLUMNS, summary)
    write_csv(out / "alignment_by_round.csv", BY_ROUND_COLUMNS, by_round)
    atomic_write_bytes(out / "alignment_summary.md", alignment_markdown(summary, config, by_round, out).encode())
    return summary


def write_cascade(out: Path, config: CascadeConfig, log: Log = print) -> None:
    decay, centrality = run_cascade(config, log)
    write_csv(out / "cascade_decay.csv", DECAY_COLUMNS, decay)
    write_csv(out / "cascade_centrality.csv", CENTRALITY_COLUMNS, centrality)
    atomic_write_bytes(out / "cascade_summary.md", cascade_markdown(decay, centrality, config, out).encode())
