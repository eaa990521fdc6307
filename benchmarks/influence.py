"""Cost of DICE quantities relative to one plain training round, for all source nodes at once.

For N in ``--nodes`` (default 16 and 64), MLP on digits (batch 32,
exponential graph, 64 samples per node so both sizes fit), measured in one
process, best of ``--repeats``:

- ``proximal_influence_overhead``: median over interleaved pairs of runs of
  (round with ``track_influence``) / (plain round) - 1, in the engine's
  default float32. Target: <= 0.5. ``..._lowest_pair`` / ``..._highest_pair``:
  the range over the pairs, i.e. how much the machine's load moved it.
- ``edge_products_speedup``: seconds of one round's proximal influence as the
  dense ``N x N`` product / as the product on W's non-zeros only (CSR,
  ``torch.sparse.sampled_addmm``), at this graph's W; ``edge_products_in_engine``:
  whether the engine takes the latter here (the rule in ``robustbench_dice.dice``).
- ``estimate_r{r}_rounds`` and ``ground_truth_r{r}_rounds``: seconds of
  ``dice_estimate`` / ``dice_ground_truth`` for every node as a source and
  horizon r, divided by the seconds of one plain training round, both in
  float64 (the precision the influence experiments use).
- ``estimate_r3_torch_func_hvp_rounds``: the r = 3 estimate with ``torch.func``'s
  forward-over-reverse Hessian-vector products instead of the MLP's hand-written
  ones; ``estimate_r3_hand_written_hvp_speedup`` the ratio of the two.

Usage: ``python benchmarks/influence.py [--json] [--nodes 16 64] [--overhead-only] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import copy
import json
from functools import partial

import torch
from common import add_device_argument, benchmark_scenario, best_of, device_name

from robustbench_dice import Scenario, Simulation
from robustbench_dice.dice import dice_estimate, dice_ground_truth, proximal_influence
from robustbench_dice.influence import probe_from_test_set, record_windows

HORIZONS = (1, 2, 3)


def scenario(n: int, rounds: int, dtype: str = "float32", track: bool = False, device: str = "cpu") -> Scenario:
    return benchmark_scenario(n, rounds, momentum=0.0, dtype=dtype, track_influence=track, device=device)


def seconds_per_round(n: int, rounds: int, repeats: int, **kw: object) -> float:
    Simulation.from_scenario(scenario(n, 2, **kw)).run()  # type: ignore[arg-type]
    return min(
        Simulation.from_scenario(scenario(n, rounds, **kw)).run().timings["seconds_per_round"]  # type: ignore[arg-type]
        for _ in range(repeats)
    )


def interleaved(n: int, rounds: int, repeats: int, device: str) -> dict[str, float]:
    """Plain and tracked runs alternated ``repeats`` times: best seconds per round of each, and the median,
    lowest and highest of the per-pair overheads (the median is robust to load drifting during the
    measurement; the range shows how much it drifted)."""
    plain, tracked = [], []
    for _ in range(repeats):
        plain.append(seconds_per_round(n, rounds, 1, device=device))
        tracked.append(seconds_per_round(n, rounds, 1, track=True, device=device))
    overheads = sorted(t / p - 1.0 for p, t in zip(plain, tracked, strict=True))
    return {
        "plain_round_s_float32": min(plain),
        "tracked_round_s_float32": min(tracked),
        "proximal_influence_overhead": overheads[len(overheads) // 2],
        "proximal_influence_overhead_lowest_pair": overheads[0],
        "proximal_influence_overhead_highest_pair": overheads[-1],
    }


def edge_products(n: int, repeats: int, device: str, calls: int = 100) -> dict[str, float]:
    """Dense against edge-only proximal-influence products at the benchmark graph's W, and the engine's choice."""
    sim = Simulation.from_scenario(scenario(n, 2, device=device))
    mixing = sim.mixing_at(0)
    dense, csr = (mixing.matrix.to_torch(sim.setup.device, sim.setup.dtype, sparse=sparse) for sparse in (False, True))
    generator = torch.Generator().manual_seed(0)
    test_grad, delta = torch.randn(2, n, sim.setup.model.num_params, generator=generator).to(dense)

    def repeated(weights: torch.Tensor) -> None:
        for _ in range(calls):
            proximal_influence(test_grad, delta, weights)

    return {
        "edge_products_in_engine": mixing.influence_weights.layout == torch.sparse_csr,
        "edge_products_speedup": best_of(repeats, partial(repeated, dense), device)
        / best_of(repeats, partial(repeated, csr), device),
    }


def measure(n: int, rounds: int, repeats: int, overhead_only: bool = False, device: str = "cpu") -> dict[str, float]:
    row: dict[str, float] = {
        "n_nodes": n,
        **interleaved(n, rounds, repeats, device),
        **edge_products(n, repeats, device),
    }
    if overhead_only:
        return row
    plain64 = seconds_per_round(n, rounds, repeats, dtype="float64", device=device)
    sim, (window,) = record_windows(scenario(n, 10, dtype="float64", device=device), [5], max(HORIZONS))
    probe = probe_from_test_set(sim)
    sources = torch.arange(n, device=sim.setup.device)
    row["plain_round_s_float64"] = plain64
    for r in HORIZONS:
        est = best_of(repeats, partial(dice_estimate, sim.setup.model, window, sources, probe, r), device)
        truth = best_of(repeats, partial(dice_ground_truth, sim.setup.model, window, sources, probe, r), device)
        row[f"estimate_r{r}_s"] = est
        row[f"estimate_r{r}_rounds"] = est / plain64
        row[f"ground_truth_r{r}_s"] = truth
        row[f"ground_truth_r{r}_rounds"] = truth / plain64
    # the same estimate with torch.func's forward-over-reverse Hessian-vector products instead of the model's
    # hand-written ones (the path a model without Model.hvp takes)
    autograd_model = copy.copy(sim.setup.model)
    autograd_model.has_hvp = False
    r = max(HORIZONS)
    est_autograd = best_of(repeats, partial(dice_estimate, autograd_model, window, sources, probe, r), device)
    row[f"estimate_r{r}_torch_func_hvp_rounds"] = est_autograd / plain64
    row[f"estimate_r{r}_hand_written_hvp_speedup"] = est_autograd / row[f"estimate_r{r}_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per node count")
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=200, help="timed training rounds per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--overhead-only", action="store_true", help="only the proximal-influence overhead (quick at large N)"
    )
    add_device_argument(parser)
    args = parser.parse_args()
    processor = device_name(args.device)
    if not args.json:
        print(f"device: {processor}", flush=True)
    for n in args.nodes:
        row = measure(n, args.rounds, args.repeats, args.overhead_only, args.device)
        if args.json:
            print(json.dumps({"device": processor, **row}), flush=True)
        else:
            spread = [100 * float(row[f"proximal_influence_overhead_{end}_pair"]) for end in ("lowest", "highest")]
            parts = [
                f"N={n}",
                f"prox overhead {100 * float(row['proximal_influence_overhead']):.0f}%"
                f" (pairs {spread[0]:.0f}-{spread[1]:.0f}%; dense / edge-only product time {row['edge_products_speedup']:.1f},"
                f" edge-only {'used' if row['edge_products_in_engine'] else 'not used'} here)",
            ]
            parts += (
                []
                if args.overhead_only
                else [
                    f"r={r}: estimate {row[f'estimate_r{r}_rounds']:.1f} rounds,"
                    f" ground truth {row[f'ground_truth_r{r}_rounds']:.1f} rounds"
                    for r in HORIZONS
                ]
                + [
                    f"r={max(HORIZONS)} estimate with torch.func HVPs"
                    f" {row[f'estimate_r{max(HORIZONS)}_torch_func_hvp_rounds']:.1f} rounds"
                    f" ({row[f'estimate_r{max(HORIZONS)}_hand_written_hvp_speedup']:.1f}x slower)"
                ]
            )
            print("  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
