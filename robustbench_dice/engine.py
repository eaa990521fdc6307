"""The vectorised engine: all N nodes' local steps, attacks, defenses and gossip as tensor operations.

One round (DESIGN.md section 2), with ``theta`` the ``(N, P)`` stacked models:

1. local step for all nodes at once: ``g = grad L_k(theta_k; batch_k) + wd * theta_k``,
   ``buf = momentum * buf + g``, ``Delta = -lr * buf``, ``half = theta + Delta``;
2. messages ``m = half``; the attack rewrites the Byzantine rows;
3. the defense maps every node's received messages to its next ``theta`` and
   emits suspicion scores;
4. evaluation of honest nodes every ``eval_every`` rounds.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .mixing import MixingMatrix, Neighbourhood
from .models import Model, per_node_loss
from .plugins import Aggregation, Attack, AttackSetup, AttackView, Defense, DefenseView
from .registry import build_attack, build_defense
from .result import CurvePoint, RunResult
from .scenario import Scenario
from .setup import RunSetup, prepare, sample_positions, validation_loss

ProgressCallback = Callable[[int, int], None]


def local_gradients(model: Model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every node's minibatch gradient, ``(N, P)``, in one backward pass (node losses are independent).

    Gradients are taken with respect to each named parameter tensor and then
    concatenated: differentiating through slices of the flat ``theta`` would
    make autograd build a zero-filled ``(N, P)`` tensor per slice.
    """
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in model.unflatten(theta).items()}
        grads = torch.autograd.grad(per_node_loss(model, leaves, x, y).sum(), list(leaves.values()))
    return torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)


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


@dataclass(eq=False)
class Simulation:
    """A prepared run; :meth:`run` trains and returns the :class:`RunResult`."""

    setup: RunSetup
    attack: Attack
    defense: Defense
    progress: ProgressCallback | None = None
    final_theta: torch.Tensor | None = None  # (N, P) after :meth:`run`
    _mixing_cache: dict[int, _RoundMixing] = field(default_factory=dict)

    @classmethod
    def from_scenario(cls, scenario: Scenario, progress: ProgressCallback | None = None) -> Simulation:
        attack = build_attack(scenario.attack, scenario.attack_params)
        defense = build_defense(scenario.defense, scenario.defense_params)
        return cls(prepare(scenario), attack, defense, progress)

    def mixing_at(self, round_index: int) -> _RoundMixing:
        key = round_index % self.setup.mixing.period
        if key not in self._mixing_cache:
            m = self.setup.mixing.at(key)
            dev = self.setup.device
            self._mixing_cache[key] = _RoundMixing(m, m.to_torch(dev), m.neighbourhood(dev))
        return self._mixing_cache[key]

    def run(self) -> RunResult:
        st, s = self.setup, self.setup.scenario
        t_start = time.perf_counter()
        n, dev = s.nodes, st.device
        byz = torch.as_tensor(st.byzantine, dtype=torch.long, device=dev)
        honest = torch.as_tensor(st.honest, dtype=torch.long, device=dev)
        attack_gen = torch.Generator().manual_seed(st.seeds["attack"])
        if byz.numel():
            self.attack.setup(
                AttackSetup(byz, st.data.train_labels, st.data.train_count, st.dataset.num_classes, attack_gen)
            )
        sampler = st.sampler()
        width = st.data.train_index.shape[1]
        theta = st.theta0.clone()
        buffer: torch.Tensor | None = None
        suspicion = torch.full((n, n), float("nan"), device=dev)
        curve = [self.evaluate(theta, 0, honest)]
        eval_s, t_train = 0.0, time.perf_counter()

        def val_loss(params: torch.Tensor) -> torch.Tensor:
            return validation_loss(st.model, st.data, params)

        for t in range(s.rounds):
            positions = sample_positions(sampler, st.data.train_count, width, s.batch_size).to(dev)
            x, y = st.data.batch(positions)
            grad = local_gradients(st.model, theta, x, y)
            delta, buffer = sgd_displacement(grad, theta, buffer, s.lr, s.momentum, s.weight_decay)
            half = theta + delta
            rm = self.mixing_at(t)
            messages = half
            if byz.numel():
                messages = half.clone()
                messages[byz] = self.attack.messages(AttackView(t, byz, theta, half, delta, rm.matrix, attack_gen))
            agg = self.defense.aggregate(
                DefenseView(t, messages, half, theta, rm.matrix, rm.weights, rm.neighbours, val_loss)
            )
            self._check_aggregation(agg, theta.shape, rm.neighbours)
            theta = agg.theta.detach()
            if agg.suspicion is not None:
                rows = torch.arange(n, device=dev).unsqueeze(1).expand_as(rm.neighbours.index)
                mask = rm.neighbours.mask
                suspicion[rows[mask], rm.neighbours.index[mask]] = agg.suspicion[mask].float()
            if (t + 1) % s.eval_every == 0 or t + 1 == s.rounds:
                t_eval = time.perf_counter()
                curve.append(self.evaluate(theta, t + 1, honest))
                eval_s += time.perf_counter() - t_eval
            if self.progress is not None:
                self.progress(t + 1, s.rounds)
        train_s = time.perf_counter() - t_train - eval_s
        self.final_theta = theta
        return self._result(theta, curve, suspicion, honest, t_start, train_s, eval_s)

    def _check_aggregation(self, agg: Aggregation, shape: torch.Size, nb: Neighbourhood) -> None:
        name = self.defense.name
        if agg.theta.shape != shape:
            raise RuntimeError(
                f"defense {name!r} returned theta of shape {tuple(agg.theta.shape)}, expected {tuple(shape)}"
            )
        if agg.suspicion is not None and agg.suspicion.shape != nb.index.shape:
            raise RuntimeError(
                f"defense {name!r} returned suspicion of shape {tuple(agg.suspicion.shape)},"
                f" expected {tuple(nb.index.shape)}"
            )

    @torch.no_grad()
    def evaluate(self, theta: torch.Tensor, round_index: int, honest: torch.Tensor) -> CurvePoint:
        acc, loss = honest_test_metrics(self.setup, theta[honest])
        h = theta[honest]
        consensus = ((h - h.mean(0, keepdim=True)) ** 2).sum(1).mean().item()
        return CurvePoint(round_index, float(acc.mean()), float(acc.min()), float(loss.mean()), float(consensus))

    def _result(
        self,
        theta: torch.Tensor,
        curve: list[CurvePoint],
        suspicion: torch.Tensor,
        honest: torch.Tensor,
        t_start: float,
        train_s: float,
        eval_s: float,
    ) -> RunResult:
        st, s = self.setup, self.setup.scenario
        acc, _ = honest_test_metrics(st, theta[honest])
        honest_list = honest.tolist()
        sus = suspicion[honest].cpu().numpy()
        edges = [
            [j, int(k), float(sus[i, k])] for i, j in enumerate(honest_list) for k in np.flatnonzero(~np.isnan(sus[i]))
        ]
        m0 = st.mixing.at(0)
        return RunResult(
            scenario=s.to_dict(),
            byzantine=[int(b) for b in st.byzantine],
            final_accuracy_mean=float(acc.mean()),
            final_accuracy_worst=float(acc.min()),
            node_accuracy={str(j): float(a) for j, a in zip(honest_list, acc.tolist(), strict=True)},
            curve=curve,
            suspicion=edges,
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
            },
            versions=versions(),
        )


def honest_test_metrics(
    setup: RunSetup, theta: torch.Tensor, test_batch: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test accuracy and mean loss ``(n,)`` of each row of ``theta (n, P)`` on the global test set."""
    ds, dev = setup.dataset, setup.device
    # nodes per chunk keep the activations near 2^24 floats
    node_chunk = max(1, min(theta.shape[0], (1 << 24) // max(1, test_batch * _activation_width(setup.model))))
    correct = torch.zeros(theta.shape[0], device=dev)
    loss = torch.zeros(theta.shape[0], device=dev)
    x_all, y_all = ds.x_test.to(dev), ds.y_test.to(dev)
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


def _activation_width(model: Model) -> int:
    from .models import CNN

    if isinstance(model, CNN):
        c, h, w = model.image_shape
        return CNN.channels[0] * h * w
    return max([64, *getattr(model, "hidden", ())])


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    try:
        out["robustbench_dice"] = importlib.metadata.version("robustbench-dice")
    except importlib.metadata.PackageNotFoundError:
        out["robustbench_dice"] = "unknown"
    return out


def simulate(scenario: Scenario, progress: ProgressCallback | None = None) -> RunResult:
    """Run one scenario; a plugin that declines the cell gives a ``skipped`` result with its reason."""
    sim = Simulation.from_scenario(scenario, progress)
    for plugin in (sim.attack, sim.defense):
        reason = plugin.skip(scenario)
        if reason:
            return RunResult(
                scenario=scenario.to_dict(), status="skipped", reason=f"{plugin.name}: {reason}", versions=versions()
            )
    return sim.run()
