"""Engine speed: vectorised rounds vs the per-node-loop reference, and vs the FLOP bound.

Every ratio is taken in this one process. For each node count the script runs
the same scenario (MLP on digits, batch 32, exponential graph, Metropolis-
Hastings; ``partition='replicated'`` with 64 samples per node so that every N
fits the 1,437-image training pool) through

- the vectorised engine (:class:`robustbench_dice.Simulation`),
- the per-node reference (:func:`robustbench_dice.reference.run_reference`),
  skipped above ``--max-reference-nodes``,

and converts the round's FLOPs (forward + backward = 6 x MACs per sample,
plus 2 x nnz(W) x P for gossip) to seconds at the dense float32 matmul rate
measured here. ``speedup`` = reference / vectorised seconds per round; each time is the best of
``--repeats`` runs, as timeit recommends, so background noise does not pick the ratio.
``gradient_speedup`` = seconds of every node's minibatch gradient by autograd
(:func:`~robustbench_dice.functional.per_node_grad_autograd`) / by the dense
models' hand-written backward pass, which the engine uses.
``module_vs_hand_written`` = seconds of the same gradient for the same network
written as a ``torch.nn.Module`` (a model plugin: :class:`~robustbench_dice.models.ModuleModel`,
``vmap`` of ``functional_call``, autograd) / by the hand-written pass.

Usage: ``python benchmarks/engine.py [--json] [--nodes 16 64 256 1024] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from common import add_device_argument, benchmark_scenario, device_name

from robustbench_dice import Scenario, Simulation
from robustbench_dice.functional import per_node_grad, per_node_grad_autograd
from robustbench_dice.models import ModuleModel
from robustbench_dice.reference import run_reference
from robustbench_dice.setup import prepare, sample_positions, synchronize


def matmul_flops_per_second(device: str, size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` dense float32 matmul rate in this process, on ``device`` (4096 x 4096 on a GPU, where
    1024 would not fill it)."""
    size = 4096 if device == "cuda" else size
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def scenario(n_nodes: int, rounds: int, device: str) -> Scenario:
    return benchmark_scenario(n_nodes, rounds, device=device)


def round_flops(sim: Simulation) -> float:
    model, s = sim.setup.model, sim.setup.scenario
    macs_per_sample = sum(spec.size for spec in model.specs if spec.name.startswith("w"))
    nnz = np.count_nonzero(sim.setup.mixing.at(0).weights)
    return 6.0 * macs_per_sample * s.batch_size * s.nodes + 2.0 * nnz * model.num_params


def vectorised_seconds_per_round(n_nodes: int, rounds: int, repeats: int, device: str) -> tuple[float, Simulation]:
    """Best of ``repeats`` runs (after a warm-up) of the engine's training time per round."""
    Simulation.from_scenario(scenario(n_nodes, 2, device)).run()
    best, sim = float("inf"), None
    for _ in range(repeats):
        sim = Simulation.from_scenario(scenario(n_nodes, rounds, device))
        best = min(best, sim.run().timings["seconds_per_round"])
    assert sim is not None
    return best, sim


def reference_seconds_per_round(n_nodes: int, rounds: int, repeats: int, device: str) -> float:
    """Best of ``repeats`` runs (after a warm-up) of the per-node loop's time per round."""
    run_reference(prepare(scenario(n_nodes, 1, device)))
    best = float("inf")
    for _ in range(repeats):
        setup = prepare(scenario(n_nodes, rounds, device))
        synchronize(device)
        start = time.perf_counter()
        run_reference(setup)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / rounds)
    return best


def as_module(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    """The benchmark's MLP as a ``torch.nn.Module``: the same parameters in the same order."""
    sizes = [input_shape[0], *hidden, num_classes]
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def gradient_seconds(sim: Simulation, repeats: int, calls: int = 50) -> tuple[float, float, float]:
    """Best-of-``repeats`` seconds of one all-node minibatch gradient: hand-written, autograd, and autograd through
    the same network as a model plugin's module."""
    st = sim.setup
    x, y = st.data.batch(
        sample_positions(st.sampler(), st.data.train_count, st.data.train_index.shape[1], 32).to(st.device)
    )
    hidden = st.scenario.hidden
    module = ModuleModel("mlp_module", lambda shape, c: as_module(shape, c, hidden), st.model.input_shape, 10)
    out = []
    for grad, model in ((per_node_grad, st.model), (per_node_grad_autograd, st.model), (per_node_grad, module)):
        grad(model, st.theta0, x, y)
        synchronize(st.device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                grad(model, st.theta0, x, y)
            synchronize(st.device)
            best = min(best, (time.perf_counter() - start) / calls)
        out.append(best)
    return out[0], out[1], out[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per node count on stdout")
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=60, help="timed vectorised rounds per run")
    parser.add_argument("--reference-rounds", type=int, default=5, help="timed reference rounds per run")
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many timed runs")
    parser.add_argument(
        "--max-reference-nodes",
        type=int,
        default=256,
        help="omit the reference above this many nodes (it would take too long)",
    )
    add_device_argument(parser)
    args = parser.parse_args()
    processor = device_name(args.device)
    rate = matmul_flops_per_second(args.device)
    if not args.json:
        print(f"device: {processor}", flush=True)
    for n in args.nodes:
        vec, sim = vectorised_seconds_per_round(n, args.rounds, args.repeats, args.device)
        row: dict[str, float] = {
            "n_nodes": n,
            "vectorised_s_per_round": vec,
            "rounds_per_s": 1.0 / vec,
            "flop_bound_s_per_round": round_flops(sim) / rate,
            "matmul_gflops": rate / 1e9,
            "threads": torch.get_num_threads(),
        }
        if n <= args.max_reference_nodes:
            ref = reference_seconds_per_round(n, args.reference_rounds, args.repeats, args.device)
            row["reference_s_per_round"] = ref
            row["speedup"] = ref / vec
        row["vectorised_vs_flop_bound"] = vec / row["flop_bound_s_per_round"]
        row["hand_written_grad_s"], row["autograd_grad_s"], row["module_grad_s"] = gradient_seconds(sim, args.repeats)
        row["gradient_speedup"] = row["autograd_grad_s"] / row["hand_written_grad_s"]
        row["module_vs_hand_written"] = row["module_grad_s"] / row["hand_written_grad_s"]
        if args.json:
            print(json.dumps({"device": processor, **row}), flush=True)
        else:
            ref_text = (
                f"{row['reference_s_per_round'] * 1e3:9.2f} ms  x{row['speedup']:6.1f}"
                if "speedup" in row
                else " " * 20
            )
            print(
                f"N={n:5d}  vectorised {vec * 1e3:8.2f} ms/round  reference{ref_text}"
                f"  FLOP bound {row['flop_bound_s_per_round'] * 1e3:7.2f} ms"
                f"  gradient vs autograd x{row['gradient_speedup']:.1f}, vs a module x{row['module_vs_hand_written']:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
