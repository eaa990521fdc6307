"""The vectorised engine: all N nodes' local steps, attacks, defenses and gossip as tensor operations.

One round (DESIGN.md section 2), with ``theta`` the ``(N, P)`` stacked models:

1. local step for all nodes at once: ``g = grad L_k(theta_k; batch_k) + wd * theta_k``,
   ``buf = momentum * buf + g``, ``Delta = -lr * buf``, ``half = theta + Delta``;
2. messages ``m = half``; the attack rewrites the Byzantine rows (and what they report as Delta);
3. the defense maps every node's received messages to its next ``theta`` and
   emits suspicion scores (and pruned edges);
4. bookkeeping: evaluation of honest nodes every ``eval_every`` rounds, the
   latest suspicion score of every edge, pruning-based time to detection.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .cpu_kernels import active_instruction_set
from .dice import influence_weights, proximal_influence
from .errors import ConfigError
from .functional import Samples, per_node_grad, per_node_grads
from .mixing import MixingMatrix, Neighbourhood
from .plugins import AUTO, Aggregation, Attack, AttackSetup, AttackView, CellInfo, Defense, DefenseView
from .registry import build_attack, build_defense
from .result import CurvePoint, RunResult, SuspicionPoint
from .scenario import Scenario
from .setup import (
    RunSetup,
    candidate_validation_loss,
    prepare,
    sample_positions,
    synchronize,
    validation_grad,
    validation_loss,
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round, for observers (influence measurements, tests). Tensors ``(N, ...)``."""

    round: int
    theta: torch.Tensor  # states before the local step
    x: torch.Tensor  # the minibatches, (N, B, *input_shape)
    y: torch.Tensor  # (N, B)
    delta: torch.Tensor  # actual displacements (reported, for Byzantine rows)
    messages: torch.Tensor
    weights: torch.Tensor  # W of the round, as used for gossip
    mixing: MixingMatrix
    theta_next: torch.Tensor  # after aggregation


Observer = Callable[[RoundRecord], None]

local_gradients = per_node_grad  # every node's minibatch gradient, (N, P), in one backward pass


def sgd_displacement(
    grad: torch.Tensor,
    theta: torch.Tensor,
    buffer: torch.Tensor | None,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(Delta, new_buffer)`` of one heavy-ball SGD step (PyTorch's convention, no dampening).

    ``grad`` and ``buffer`` are updated in place; ``Delta = -lr * (momentum * buffer + grad + weight_decay * theta)``.
    """
    if weight_decay:
        grad.add_(theta, alpha=weight_decay)
    if momentum:
        buffer = grad if buffer is None else buffer.mul_(momentum).add_(grad)
        grad = buffer
    return grad * -lr, buffer


@dataclass(eq=False)
class _RoundMixing:
    matrix: MixingMatrix
    weights: torch.Tensor
    neighbours: Neighbourhood
    receivers: torch.Tensor  # (N, D) row index of each neighbour slot
    influence_weights: torch.Tensor  # W as proximal influence takes it: CSR where its edge-only products pay


@dataclass(eq=False)
class _Detection:
    """Engine-side bookkeeping of what the defense did; this is where the true Byzantine set is used."""

    n: int
    byzantine: torch.Tensor
    honest: torch.Tensor
    device: torch.device
    suspicion: torch.Tensor = field(init=False)  # (N, N) latest s_jk (a defense's NaN kept), NaN where never scored
    scored: torch.Tensor = field(init=False)  # (N, N) bool: some round scored edge k -> j
    pruned: torch.Tensor | None = None  # (N, N) bool of the last round
    caught_since: int | None = None  # start of the current streak of rounds with every Byzantine in-edge pruned

    def __post_init__(self) -> None:
        self.suspicion = torch.full((self.n, self.n), float("nan"), device=self.device, dtype=torch.float64)
        self.scored = torch.zeros((self.n, self.n), dtype=torch.bool, device=self.device)
        self.is_byz = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        self.is_byz[self.byzantine] = True

    def update(self, round_index: int, agg: Aggregation, rm: _RoundMixing) -> None:
        mask = rm.neighbours.mask
        rows, cols = rm.receivers[mask], rm.neighbours.index[mask]
        if agg.suspicion is not None:
            self.suspicion[rows, cols] = agg.suspicion[mask].to(self.suspicion.dtype)
            self.scored[rows, cols] = True
        if agg.pruned is None:
            return
        self.pruned = torch.zeros(self.n, self.n, dtype=torch.bool, device=self.device)
        self.pruned[rows, cols] = agg.pruned[mask]
        byz_edges = mask & self.is_byz[rm.neighbours.index] & ~self.is_byz[rm.receivers]
        # a round of a time-varying graph without Byzantine edges neither breaks nor starts a streak
        if not byz_edges.any():
            return
        if not bool(agg.pruned[byz_edges].all()):
            self.caught_since = None
        elif self.caught_since is None:
            self.caught_since = round_index + 1

    def curve_point(
        self, round_index: int, scores: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> SuspicionPoint:
        """Means of ``scores`` (default: the latest suspicion) over honest receivers' edges in ``where`` (default: the
        scored ones); a NaN among them makes its mean NaN."""
        sus = (self.suspicion if scores is None else scores)[self.honest]
        scored = (self.scored if where is None else where)[self.honest]
        means = []
        for wanted in (False, True):
            sel = scored & (self.is_byz.unsqueeze(0) == wanted)
            means.append(float(sus[sel].mean()) if sel.any() else None)
        return SuspicionPoint(round_index, means[0], means[1])


@dataclass(eq=False)
class Simulation:
    """A prepared run; :meth:`run` trains and returns the :class:`RunResult`. Running it again gives the same result:
    each run starts from the clean training labels, and plugins reset their state at the start of a run."""

    setup: RunSetup
    attack: Attack
    defense: Defense
    progress: ProgressCallback | None = None
    observer: Observer | None = None
    final_theta: torch.Tensor | None = None  # (N, P) after :meth:`run`
    _last_accuracy: torch.Tensor | None = None  # (honest,) test accuracy at the latest evaluation
    _clean_labels: torch.Tensor | None = None  # the training labels before any run: an attack may poison them in place
    _mixing_cache: dict[int, _RoundMixing] = field(default_factory=dict)

    @classmethod
    def from_scenario(cls, scenario: Scenario, progress: ProgressCallback | None = None) -> Simulation:
        if not isinstance(scenario, Scenario):  # a dict of fields is the likely mistake
            raise TypeError(
                f"expected a robustbench_dice.Scenario, got {type(scenario).__name__}; build one with"
                " Scenario(**fields), Scenario.from_dict(...) or Scenario.from_file(path)"
            )
        attack = build_attack(scenario.attack, scenario.attack_params)
        setup = prepare(scenario)
        defense = build_defense(
            scenario.defense, scenario.defense_params, byzantine_in_neighbours=setup.byzantine_in_neighbours
        )
        return cls(setup, attack, defense, progress)

    @property
    def auto_params(self) -> dict[str, int]:
        """The defense parameters the scenario gave as ``"auto"``, with the values this run resolved them to."""
        params = self.setup.scenario.defense_params
        return {key: getattr(self.defense, key) for key, value in params.items() if value == AUTO}

    def cell_info(self) -> CellInfo:
        degrees = [m.graph.in_degree for m in self.setup.mixing.matrices]
        return CellInfo(self.setup.scenario, int(min(d.min() for d in degrees)), int(max(d.max() for d in degrees)))

    def skip_reason(self) -> str | None:
        cell = self.cell_info()
        for plugin in (self.attack, self.defense):
            reason = plugin.skip(cell)
            if reason:
                return f"{plugin.name}: {reason}"
        return None

    def mixing_at(self, round_index: int) -> _RoundMixing:
        key = round_index % self.setup.mixing.period
        if key not in self._mixing_cache:
            m = self.setup.mixing.at(key)
            dev = self.setup.device
            dtype = self.setup.dtype
            nb = m.neighbourhood(dev, dtype)
            receivers = torch.arange(m.n_nodes, device=dev).unsqueeze(1).expand_as(nb.index)
            weights = m.to_torch(dev, dtype)
            self._mixing_cache[key] = _RoundMixing(m, weights, nb, receivers, influence_weights(weights))
        return self._mixing_cache[key]

    def run(self) -> RunResult:
        st, s = self.setup, self.setup.scenario
        t_start = time.perf_counter()
        dev = st.device
        byz = torch.as_tensor(st.byzantine, dtype=torch.long, device=dev)
        honest = torch.as_tensor(st.honest, dtype=torch.long, device=dev)
        attack_gen = torch.Generator().manual_seed(st.seeds["attack"])
        defense_gen = torch.Generator().manual_seed(st.seeds["defense"])  # the nodes' own randomness, apart
        if self._clean_labels is None:
            self._clean_labels = st.data.train_labels.clone()
        else:  # a label-poisoning attack of the previous run left its labels in place
            st.data.train_labels.copy_(self._clean_labels)
        if byz.numel():
            self.attack.setup(
                AttackSetup(byz, st.data.train_labels, st.data.train_count, st.dataset.num_classes, attack_gen)
            )
        sampler = st.sampler()
        width = st.data.train_index.shape[1]
        theta = st.theta0.clone()
        buffer: torch.Tensor | None = None
        detection = _Detection(s.nodes, byz, honest, dev)
        curve = [self.evaluate(theta, 0, honest)]
        suspicion_curve = [detection.curve_point(0)]
        influence = torch.zeros((s.nodes, s.nodes), device=dev, dtype=st.dtype)  # sum_t Prox_t; 0 off the edges
        influence_curve: list[SuspicionPoint] = []
        ever_edge = torch.as_tensor(st.mixing.topology.union().adjacency.copy(), device=dev)
        eval_s, t_train = 0.0, time.perf_counter()

        def require_validation() -> None:
            # without this, an empty z' gives zero losses and gradients, and the defense silently judges nothing
            if s.val_fraction == 0:
                raise ConfigError(
                    f"defense {s.defense!r} uses each node's validation set z', but val_fraction=0 holds none"
                    " out; set val_fraction > 0 (default 0.2)"
                )

        def val_loss(params: torch.Tensor) -> torch.Tensor:
            require_validation()
            return validation_loss(st.model, st.data, params)

        def candidate_loss(candidates: torch.Tensor) -> torch.Tensor:
            require_validation()
            return candidate_validation_loss(st.model, st.data, candidates)

        # the last validation gradient a defense asked for, with a copy of its parameters: when tracking, the engine
        # reuses it if the defense aggregated to exactly those parameters (DICE pruning does)
        asked: list[tuple[torch.Tensor, torch.Tensor]] = []

        def val_grad(params: torch.Tensor) -> torch.Tensor:
            require_validation()
            grad = validation_grad(st.model, st.data, params)
            if s.track_influence:
                asked[:] = [(params.detach().clone(), grad)]
            return grad

        data = st.data
        validation = Samples(data.val_x, data.val_y, data.val_mask_if_needed)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            return data.batch(sample_positions(sampler, data.train_count, width, s.batch_size).to(dev))

        lookahead: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # this round's x, y, grad
        for t in range(s.rounds):
            if lookahead is None:
                x, y = next_batch()
                grad = local_gradients(st.model, theta, x, y)
            else:
                (x, y, grad), lookahead = lookahead, None
            delta, buffer = sgd_displacement(grad, theta, buffer, s.lr, s.momentum, s.weight_decay)
            if byz.numel() and not self.attack.local_training:
                delta[byz] = 0.0
            half = theta + delta
            rm = self.mixing_at(t)
            messages, reported = half, delta
            if byz.numel():
                view = AttackView(t, s.rounds, byz, theta, half, delta, rm.matrix, rm.neighbours, attack_gen)
                sent = self.attack.messages(view)
                owner, rows = f"attack {self.attack.name!r}", (byz.numel(), theta.shape[1])
                _check_output(owner, "messages", sent, rows, theta.dtype, theta.device)
                messages, reported = half.clone(), delta.clone()
                messages[byz] = sent
                claimed = self.attack.reported_delta(view, sent)
                _check_output(owner, "reported_delta", claimed, rows, theta.dtype, theta.device)
                reported[byz] = claimed
            agg = self.defense.aggregate(
                DefenseView(
                    t,
                    s.rounds,
                    messages,
                    reported,
                    half,
                    theta,
                    rm.matrix,
                    rm.weights,
                    rm.neighbours,
                    val_loss,
                    val_grad,
                    candidate_loss,
                    defense_gen,
                )
            )
            self._check_aggregation(agg, theta, rm.neighbours)
            if self.observer is not None:
                self.observer(
                    RoundRecord(t, theta, x, y, reported, messages, rm.weights, rm.matrix, agg.theta.detach())
                )
            theta = agg.theta.detach()
            detection.update(t, agg, rm)
            if s.track_influence:  # Prox_t[j, k] = -W_jk grad L(theta_j^{t+1}; z'_j)^T Delta_k, zero off the edges
                reusable = asked.pop() if asked else None
                if reusable is not None and torch.equal(reusable[0], theta):
                    test_grad = reusable[1]
                elif t + 1 < s.rounds:
                    # next round's minibatch gradient is taken at the same theta^{t+1}: one pass serves both
                    x, y = next_batch()
                    grad, test_grad = per_node_grads(st.model, theta, [Samples(x, y), validation])
                    lookahead = x, y, grad
                else:
                    test_grad = validation_grad(st.model, st.data, theta)
                influence.add_(proximal_influence(test_grad, reported, rm.influence_weights))
            if (t + 1) % s.eval_every == 0 or t + 1 == s.rounds:
                synchronize(dev)
                t_eval = time.perf_counter()
                curve.append(self.evaluate(theta, t + 1, honest))
                suspicion_curve.append(detection.curve_point(t + 1))
                if s.track_influence:
                    influence_curve.append(detection.curve_point(t + 1, influence, ever_edge))
                eval_s += time.perf_counter() - t_eval
            if self.progress is not None:
                self.progress(t + 1, s.rounds)
        synchronize(dev)
        train_s = time.perf_counter() - t_train - eval_s
        self.final_theta = theta
        result = self._result(theta, curve, detection, honest, t_start, train_s, eval_s)
        result.suspicion_curve = suspicion_curve
        if s.track_influence:
            result.influence_curve = influence_curve
            result.proximal_influence = _edge_rows(influence, ever_edge, honest)
        return result

    def _check_aggregation(self, agg: Aggregation, theta: torch.Tensor, nb: Neighbourhood) -> None:
        owner = f"defense {self.defense.name!r}"
        _check_output(owner, "theta", agg.theta, tuple(theta.shape), theta.dtype, theta.device)
        slots = tuple(nb.index.shape)
        if agg.suspicion is not None:  # scores of any real dtype: the engine keeps them in float64
            _check_output(owner, "suspicion", agg.suspicion, slots, None, theta.device)
        if agg.pruned is not None:
            _check_output(owner, "pruned", agg.pruned, slots, torch.bool, theta.device)

    @torch.no_grad()
    def evaluate(self, theta: torch.Tensor, round_index: int, honest: torch.Tensor) -> CurvePoint:
        """The curve point of ``round_index``; keeps each honest node's accuracy in ``self._last_accuracy``."""
        h = theta[honest]
        acc, loss = honest_test_metrics(self.setup, h)
        self._last_accuracy = acc
        consensus = ((h - h.mean(0, keepdim=True)) ** 2).sum(1).mean().item()
        return CurvePoint(round_index, float(acc.mean()), float(acc.min()), float(loss.mean()), float(consensus))

    def _result(
        self,
        theta: torch.Tensor,
        curve: list[CurvePoint],
        detection: _Detection,
        honest: torch.Tensor,
        t_start: float,
        train_s: float,
        eval_s: float,
    ) -> RunResult:
        st, s = self.setup, self.setup.scenario
        acc = self._last_accuracy  # the last round is always evaluated
        assert acc is not None
        honest_list = honest.tolist()
        edges = _edge_rows(detection.suspicion, detection.scored, honest)
        byz_set = {int(b) for b in st.byzantine}
        e_auc, n_auc = metrics.edge_auc(edges, byz_set), metrics.node_auc(edges, byz_set)
        m0 = st.mixing.at(0)
        result = RunResult(
            scenario=s.to_dict(),
            auto_params=self.auto_params,
            byzantine=sorted(byz_set),
            final_accuracy_mean=float(acc.mean()),
            final_accuracy_worst=float(acc.min()),
            node_accuracy={str(j): float(a) for j, a in zip(honest_list, acc.tolist(), strict=True)},
            curve=curve,
            suspicion=edges,
            edge_auc=e_auc.value,
            edge_auc_reason=e_auc.reason,
            node_auc=n_auc.value,
            node_auc_reason=n_auc.reason,
            diverged=not bool(torch.isfinite(theta[honest]).all()),
            topology={
                "spectral_gap": float(st.mixing.spectral_gap),
                "period": st.mixing.period,
                "edges": int(sum(m.graph.n_edges for m in st.mixing.matrices)),
                "sparse_gossip": m0.use_sparse,
                "num_params": st.model.num_params,
            },
            timings={
                "total_s": time.perf_counter() - t_start,
                "train_s": train_s,
                "eval_s": eval_s,
                "seconds_per_round": train_s / s.rounds,
                "threads": torch.get_num_threads(),  # matmul rounding depends on it: a re-run needs the same
            },
            versions=versions(st.device),
        )
        self._pruning_metrics(result, detection, honest_list, byz_set)
        return result

    def _pruning_metrics(self, result: RunResult, det: _Detection, honest: list[int], byz: set[int]) -> None:
        if det.pruned is None:
            result.time_to_detection_reason = f"defense {self.defense.name!r} does not prune edges"
            return
        union = self.setup.mixing.topology.union().adjacency
        pruned = det.pruned.cpu().numpy()
        result.pruned_edges = [[j, int(k)] for j in honest for k in np.flatnonzero(pruned[j])]
        result.honest_edges = int(union[np.ix_(honest, honest)].sum())  # the diagonal is never an edge
        result.honest_edges_wrongly_pruned = sum(1 for j, k in result.pruned_edges if k not in byz)
        if not union[np.ix_(honest, sorted(byz))].any():
            result.time_to_detection_reason = "no honest node has a Byzantine in-neighbour"
        elif det.caught_since is None:
            result.time_to_detection_reason = "Byzantine in-edges were not all pruned by the last round"
        else:
            result.time_to_detection = det.caught_since


def _check_output(
    owner: str, what: str, value: object, shape: tuple[int, ...], dtype: torch.dtype | None, device: torch.device
) -> None:
    """A plugin's output of the wrong type, shape, dtype (None: any real one) or device: a RuntimeError naming it,
    before it becomes a torch error, or a silent cast, somewhere else a round later."""
    if not isinstance(value, torch.Tensor):
        raise RuntimeError(f"{owner} returned {what} of type {type(value).__name__}, expected a torch.Tensor")
    if tuple(value.shape) != shape:
        raise RuntimeError(f"{owner} returned {what} of shape {tuple(value.shape)}, expected {shape}")
    if value.is_complex() or (dtype is not None and value.dtype != dtype):
        raise RuntimeError(f"{owner} returned {what} of dtype {value.dtype}, expected {dtype or 'a real dtype'}")
    if value.device != device:
        raise RuntimeError(f"{owner} returned {what} on {value.device}, expected the run's device {device}")


def _edge_rows(matrix: torch.Tensor, where: torch.Tensor, honest: torch.Tensor) -> list[list[float]]:
    """``[j, k, matrix[j, k]]`` for honest receivers j and every k where ``where (N, N)`` is true.

    A value that overflowed to +-inf becomes the largest float of its sign: JSON has no infinity, and the order
    (which is all an AUC or a ROC curve uses) is kept. NaN stays NaN (stored as None).
    """
    values = np.clip(matrix[honest].double().cpu().numpy(), -np.finfo(np.float64).max, np.finfo(np.float64).max)
    keep = where[honest].cpu().numpy()
    return [[j, int(k), float(values[i, k])] for i, j in enumerate(honest.tolist()) for k in np.flatnonzero(keep[i])]


def honest_test_metrics(
    setup: RunSetup, theta: torch.Tensor, test_batch: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test accuracy and mean loss ``(n,)`` of each row of ``theta (n, P)`` on the global test set."""
    ds, dev = setup.dataset, setup.device
    # nodes per chunk keep the activations near 2^24 floats
    node_chunk = max(1, min(theta.shape[0], (1 << 24) // max(1, test_batch * setup.model.activation_width)))
    correct = torch.zeros(theta.shape[0], device=dev)
    loss = torch.zeros(theta.shape[0], device=dev)
    x_all, y_all = ds.x_test.to(dev, theta.dtype), ds.y_test.to(dev)
    with torch.no_grad():
        for a in range(0, theta.shape[0], node_chunk):
            rows = theta[a : a + node_chunk]
            for b in range(0, x_all.shape[0], test_batch):
                x, y = x_all[b : b + test_batch], y_all[b : b + test_batch]
                logits = setup.model.forward(rows, x)  # (n, B, C)
                correct[a : a + node_chunk] += (logits.argmax(-1) == y).sum(1)
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(rows.shape[0]), reduction="none")
                loss[a : a + node_chunk] += ce.view(rows.shape[0], -1).sum(1)
    count = float(x_all.shape[0])
    return (correct / count).cpu(), (loss / count).cpu()


def versions(device: torch.device | None = None) -> dict[str, str]:
    """The libraries and kernels the numbers depend on; on a GPU also its name and the CUDA version (a run on one
    rounds differently from a run on the CPU, and from one on another GPU)."""
    out = {"torch": torch.__version__, "numpy": np.__version__, "cpu_capability": active_instruction_set()}
    if device is not None and device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = str(torch.version.cuda)
    try:
        out["robustbench_dice"] = importlib.metadata.version("robustbench-dice")
    except importlib.metadata.PackageNotFoundError:
        out["robustbench_dice"] = "unknown"
    return out


def simulate(scenario: Scenario, progress: ProgressCallback | None = None) -> RunResult:
    """Run one scenario; a plugin that declines the cell gives a ``skipped`` result with its reason."""
    sim = Simulation.from_scenario(scenario, progress)
    reason = sim.skip_reason()
    if reason:
        return RunResult(
            scenario=scenario.to_dict(),
            status="skipped",
            reason=reason,
            auto_params=sim.auto_params,
            versions=versions(),
        )
    return sim.run()
