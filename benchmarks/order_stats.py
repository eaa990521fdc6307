"""Coordinate-wise order statistics: the sorting network vs ``torch.sort``, and what it does to a defense round.

Every ratio is taken in this one process. For each node count N the script
builds the candidates a node sees on the exponential graph (itself and its
M - 1 in-neighbours, P = the MLP's 4,810 parameters) and times, best of
``--repeats``:

- ``sort_speedup``: ``torch.sort`` along M / :func:`robustbench_dice.order_stats.sort_along`;
- ``median_speedup``: the plain median (``torch.sort``, then the middle
  values) / :func:`robustbench_dice.order_stats.coordinate_median`;
- ``median_round_speedup`` and ``trimmed_mean_round_speedup``: seconds per
  training round of a whole run with the defense (label flipping, 10%
  Byzantine) with the network disabled / enabled (``NETWORK_MAX = 0`` sends
  every sort to ``torch.sort``).

On a GPU (``--device cuda``) the same ratios say whether the network still
pays there, where ``torch.sort`` is one kernel.

Usage: ``python benchmarks/order_stats.py [--json] [--nodes 16 256 1024] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from common import add_device_argument, best_of, defense_round_seconds, device_name, print_row

import robustbench_dice.order_stats as order_stats
from robustbench_dice.topology import exponential_offsets

PARAMETERS = 4810  # the digits MLP: 64 x 64 + 64 + 64 x 10 + 10


def plain_median(candidates: torch.Tensor) -> torch.Tensor:
    ordered = candidates.sort(dim=1).values
    m = candidates.shape[1]
    return (ordered[:, (m - 1) // 2] + ordered[:, m // 2]) / 2


def round_seconds(n: int, defense: str, rounds: int, network: bool, device: str) -> float:
    order_stats.NETWORK_MAX = 128 if network else 0
    try:
        seconds = defense_round_seconds(n, defense, rounds, device)
        if not isinstance(seconds, float):
            raise RuntimeError(f"{defense} declined the benchmark's cell: {seconds}")
        return seconds
    finally:
        order_stats.NETWORK_MAX = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per node count on stdout")
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many timings")
    add_device_argument(parser)
    args = parser.parse_args()
    processor, device = device_name(args.device), args.device
    for n in args.nodes:
        m = len(exponential_offsets(n)) + 1  # the node itself and its in-neighbours
        candidates = torch.randn(n, m, PARAMETERS, generator=torch.Generator().manual_seed(0)).to(device)
        mask = torch.ones(n, m, dtype=torch.bool, device=device)
        sort_plain = best_of(args.repeats, partial(torch.sort, candidates, 1), device)
        sort_network = best_of(args.repeats, partial(order_stats.sort_along, candidates, 1), device)
        median_plain = best_of(args.repeats, partial(plain_median, candidates), device)
        median_network = best_of(args.repeats, partial(order_stats.coordinate_median, candidates, mask), device)
        rounds = max(3, 1600 // n)
        row: dict[str, object] = {
            "n_nodes": n,
            "candidates_per_node": m,
            "sort_speedup": sort_plain / sort_network,
            "median_speedup": median_plain / median_network,
            "threads": torch.get_num_threads(),
            "device": processor,
        }
        for defense in ("median", "trimmed_mean"):
            timings: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):  # interleaved, so that load drifting hits both alike
                for network in (False, True):
                    timings[network].append(round_seconds(n, defense, rounds, network, device))
            row[f"{defense}_round_ms"] = 1000 * min(timings[True])
            row[f"{defense}_round_speedup"] = min(timings[False]) / min(timings[True])
        print_row(row, args.json)


if __name__ == "__main__":
    main()
