"""Everything a run needs before its first round, built once from a Scenario.

Both engines (vectorised and per-node reference) start from the same
:class:`RunSetup`, so they see the same data, graph, Byzantine set, initial
parameters and minibatch stream.

Randomness: the scenario seed feeds a ``numpy.random.SeedSequence`` whose
children seed, independently, the partition, the topology, the Byzantine
placement, the initial parameters, the minibatch sampler, the attack and the
defense (a randomised rule's draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .datasets import Dataset, load_dataset
from .errors import ConfigError
from .functional import per_node_grad, per_node_loss
from .mixing import MixingSchedule
from .models import Model, build_model
from .partition import check_pool_size, partition_indices, split_validation
from .scenario import Scenario
from .topology import Graph, TopologySchedule, build_topology

# appended, never reordered: stream i is SeedSequence(seed).spawn(...)[i], so a new stream leaves the others' numbers
STREAMS = ("partition", "topology", "byzantine", "init", "sampler", "attack", "defense")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        fix = (
            "install a CUDA build of torch"
            if torch.version.cuda is None
            else "check `nvidia-smi` and CUDA_VISIBLE_DEVICES"
        )
        raise ConfigError(
            f"device 'cuda' requested but torch.cuda.is_available() is False ({cuda_status()}): {fix};"
            " or use device='cpu' or 'auto'"
        )
    return torch.device(name)


def cuda_status() -> str:
    """What torch can do with CUDA here: ``built without CUDA``, ``CUDA 13.0 build, no GPU visible`` or
    ``CUDA 13.0, NVIDIA H100 80GB HBM3`` (the GPU ``device='cuda'`` uses)."""
    if torch.version.cuda is None:
        return "built without CUDA"
    if not torch.cuda.is_available():
        return f"CUDA {torch.version.cuda} build, no GPU visible"
    return f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}"


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished its queued work. CUDA kernels run asynchronously: a clock read without
    this measures when the work was queued, not when it was done. Nothing to wait for on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seed_streams(seed: int) -> dict[str, int]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children, strict=True)}


def choose_byzantine(graph: Graph, count: int, placement: str, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``count`` Byzantine nodes: uniformly at random, or highest total degree first (ties random)."""
    n = graph.n_nodes
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if placement == "random":
        chosen = rng.choice(n, size=count, replace=False)
    else:
        degree = graph.in_degree + graph.out_degree
        tie_break = rng.permutation(n)
        chosen = np.lexsort((tie_break, -degree))[:count]
    return np.sort(chosen).astype(np.int64)


def _padded(rows: list[np.ndarray], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(r.size for r in rows))
    table = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        table[i, : r.size] = r
    return torch.from_numpy(table), torch.tensor([r.size for r in rows], dtype=torch.long)


@dataclass(eq=False)
class NodeData:
    """Per-node index tables into a shared pool; padded slots repeat index 0 and are never sampled.

    Shapes: ``train_index``, ``train_labels`` ``(N, n_max)``; ``train_count`` ``(N,)``;
    ``val_x (N, v_max, *input_shape)``, ``val_y``, ``val_mask`` ``(N, v_max)``.
    """

    pool_x: torch.Tensor
    train_index: torch.Tensor
    train_labels: torch.Tensor
    train_count: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_mask: torch.Tensor

    def __post_init__(self) -> None:
        # with equal validation sets (iid, replicated) there is no padding and the masked mean can be skipped
        self.val_mask_if_needed: torch.Tensor | None = None if bool(self.val_mask.all()) else self.val_mask

    def batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (N, B, *input_shape)``, ``y (N, B)`` at ``positions (N, B)`` of each node's table."""
        index = self.train_index.gather(1, positions)
        x = self.pool_x.index_select(0, index.flatten()).view(*index.shape, *self.pool_x.shape[1:])
        return x, self.train_labels.gather(1, positions)


def sample_positions(generator: torch.Generator, count: torch.Tensor, width: int, batch_size: int) -> torch.Tensor:
    """``(N, B)`` distinct positions per node, uniform without replacement below ``count[k]``."""
    keys = torch.rand(count.shape[0], width, generator=generator)
    keys.masked_fill_(torch.arange(width) >= count.unsqueeze(1), 2.0)
    return keys.topk(batch_size, dim=1, largest=False).indices


def validation_loss(model: Model, data: NodeData, theta: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean cross-entropy of row j of ``theta`` on node j's local validation set z'_j."""
    return per_node_loss(model, theta, data.val_x, data.val_y, data.val_mask_if_needed)


def candidate_validation_loss(
    model: Model, data: NodeData, candidates: torch.Tensor, chunk_bytes: int = 64 * 2**20
) -> torch.Tensor:
    """``(N, M)`` loss of each of node j's M candidate models, ``candidates (N, M, P)``, on node j's z'_j.

    Entry ``[j, m]`` is what :func:`validation_loss` gives for ``candidates[:, m]`` at row j. The candidates go
    through the model as ``N * M`` rows at once, each with its node's validation set repeated; ``chunk_bytes``
    bounds the size of those repeated inputs by taking the candidates in chunks.
    """
    n, m, p = candidates.shape
    per_candidate = data.val_x.numel() * data.val_x.element_size()  # the validation inputs of all N nodes
    step = max(1, min(m, chunk_bytes // max(per_candidate, 1)))
    mask = data.val_mask_if_needed
    losses = []
    for start in range(0, m, step):
        part = candidates[:, start : start + step]
        k = part.shape[1]
        losses.append(
            per_node_loss(
                model,
                part.reshape(n * k, p),
                data.val_x.repeat_interleave(k, dim=0),
                data.val_y.repeat_interleave(k, dim=0),
                None if mask is None else mask.repeat_interleave(k, dim=0),
            ).view(n, k)
        )
    return torch.cat(losses, dim=1)


def validation_grad(model: Model, data: NodeData, theta: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` gradient of :func:`validation_loss` for every node at once."""
    return per_node_grad(model, theta, data.val_x, data.val_y, data.val_mask_if_needed)


@dataclass(eq=False)
class RunSetup:
    scenario: Scenario
    device: torch.device
    dataset: Dataset
    model: Model
    mixing: MixingSchedule
    byzantine: np.ndarray
    data: NodeData
    theta0: torch.Tensor
    seeds: dict[str, int]

    @property
    def n_nodes(self) -> int:
        return self.scenario.nodes

    @property
    def dtype(self) -> torch.dtype:
        return self.theta0.dtype

    @property
    def honest(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_nodes), self.byzantine)

    @property
    def byzantine_in_neighbours(self) -> int:
        """The most Byzantine in-neighbours any honest node has in any round (0 without Byzantine nodes).

        What a robust rule must tolerate in this run, and the value a defense's Byzantine bound set to
        ``"auto"`` takes (``plugins.Defense.byzantine_bound``).
        """
        is_byzantine = np.zeros(self.n_nodes, dtype=bool)
        is_byzantine[self.byzantine] = True
        return max(
            int(m.graph.adjacency[~is_byzantine][:, is_byzantine].sum(axis=1).max(initial=0))
            for m in self.mixing.matrices
        )

    def sampler(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seeds["sampler"])


# the Scenario fields scenario_topology reads: two scenarios equal on these have the same graph schedule
GRAPH_FIELDS = (
    "topology",
    "nodes",
    "seed",
    "edge_probability",
    "small_world_k",
    "small_world_p",
    "torus_rows",
    "adjacency_file",
)


def scenario_topology(s: Scenario) -> TopologySchedule:
    """The graph schedule of ``s``, exactly as a run builds it (seeded by the scenario's topology stream)."""
    return build_topology(
        s.topology,
        s.nodes,
        seed=seed_streams(s.seed)["topology"],
        edge_probability=s.edge_probability,
        small_world_k=s.small_world_k,
        small_world_p=s.small_world_p,
        torus_rows=s.torus_rows,
        adjacency_file=s.adjacency_file,
    )


def samples_needed(s: Scenario) -> int:
    """Samples each node needs: one minibatch to train on, plus its validation share."""
    return int(np.ceil(s.batch_size / (1.0 - s.val_fraction)))


def _with_need(exc: ConfigError, s: Scenario) -> ConfigError:
    # the partition's numbers alone do not say where its sample count comes from
    return ConfigError(
        f"{exc}; a node needs ceil(batch_size / (1 - val_fraction)) = ceil({s.batch_size} / "
        f"{1.0 - s.val_fraction:g}) = {samples_needed(s)} samples: one batch, plus its validation share"
    )


FIT_FIELDS = (  # what check_fits reads of a scenario besides its dataset: cells alike in these are checked once
    "model", "hidden", "nodes", "partition", "batch_size", "val_fraction", "samples_per_node",
)  # fmt: skip


def check_fits(s: Scenario, dataset: Dataset) -> None:
    """A ConfigError for what every seed of ``s`` would fail on with ``dataset``, checked without training: a model
    that cannot take its inputs, or a training pool too small for the nodes (:func:`.partition.check_pool_size`)."""
    build_model(s.model, dataset.input_shape, dataset.num_classes, s.hidden)
    try:
        check_pool_size(len(dataset.y_train), s.nodes, s.partition, samples_needed(s), s.samples_per_node)
    except ConfigError as exc:
        raise _with_need(exc, s) from None


def prepare(scenario: Scenario) -> RunSetup:
    """Build data, graph, Byzantine set, model and initial parameters; ConfigError on impossible requests."""
    s = scenario
    device = resolve_device(s.device)
    seeds = seed_streams(s.seed)
    dataset = load_dataset(s.dataset, s.data_root, mnist1d_samples=s.mnist1d_samples)
    model = build_model(s.model, dataset.input_shape, dataset.num_classes, s.hidden)

    schedule = scenario_topology(s)
    mixing = MixingSchedule(schedule, s.mixing)
    byzantine = choose_byzantine(
        schedule.union(), s.n_byzantine, s.byzantine_placement, np.random.default_rng(seeds["byzantine"])
    )

    rng = np.random.default_rng(seeds["partition"])
    min_samples = samples_needed(s)
    try:
        parts = partition_indices(
            dataset.y_train.numpy(),
            s.nodes,
            s.partition,
            rng,
            min_samples=min_samples,
            dirichlet_alpha=s.dirichlet_alpha,
            shards_per_node=s.shards_per_node,
            samples_per_node=s.samples_per_node,
        )
    except ConfigError as exc:
        raise _with_need(exc, s) from None
    splits = [split_validation(p, s.val_fraction, rng) for p in parts]
    train_rows = [t for t, _ in splits]
    smallest = min(r.size for r in train_rows)
    if smallest < s.batch_size:
        raise ConfigError(
            f"batch_size={s.batch_size} is larger than a node's training data ({smallest} samples);"
            " lower batch_size or nodes, or use partition='replicated' with samples_per_node"
        )
    train_index, train_count = _padded(train_rows, 0)
    val_index, val_count = _padded([v for _, v in splits], 0)
    labels = dataset.y_train
    val_mask = torch.arange(val_index.shape[1]) < val_count.unsqueeze(1)
    dtype = getattr(torch, s.dtype)
    data = NodeData(
        pool_x=dataset.x_train.to(device, dtype),
        train_index=train_index.to(device),
        train_labels=labels[train_index].to(device),
        train_count=train_count,
        val_x=dataset.x_train[val_index].to(device, dtype),
        val_y=labels[val_index].to(device),
        val_mask=val_mask.to(device),
    )
    theta0 = model.init(s.nodes, torch.Generator().manual_seed(seeds["init"]), same=s.init == "same")
    theta0 = theta0.to(device, dtype)
    return RunSetup(s, device, dataset, model, mixing, byzantine, data, theta0, seeds)
