"""What each defense costs: seconds per training round with it, as a multiple of a plain gossip round.

Every ratio is taken in this one process. For each node count N, every
registered defense at its default parameters runs the benchmarks' common
scenario (MLP on digits, exponential graph, 64 samples per node) under label
flipping by 10% of the nodes, and the script reports its seconds per round
(the fastest of ``--repeats`` interleaved runs, so that load drifting during
the measurement hits every defense alike) and that time over gossip's. A
defense that declines the cell is reported with its reason.

Usage: ``python benchmarks/defenses.py [--json] [--nodes 16 64 256] [--repeats 3] [--rounds R] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse

import torch
from common import add_device_argument, defense_round_seconds, device_name, print_row

from robustbench_dice.registry import DEFENSES, load_builtin_plugins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per node count and defense on stdout")
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many timings")
    parser.add_argument("--rounds", type=int, help="rounds per run (default: 3200 / N, at least 5)")
    add_device_argument(parser)
    args = parser.parse_args()
    processor = device_name(args.device)
    load_builtin_plugins()
    defenses = ["gossip", *sorted(name for name in DEFENSES if name != "gossip")]
    for n in args.nodes:
        rounds = args.rounds or max(5, 3200 // n)
        timings: dict[str, list[float | str]] = {d: [] for d in defenses}
        for _ in range(args.repeats):
            for defense in defenses:
                timings[defense].append(defense_round_seconds(n, defense, rounds, args.device))
        gossip = min(t for t in timings["gossip"] if isinstance(t, float))
        for defense in defenses:
            seconds = [t for t in timings[defense] if isinstance(t, float)]
            row: dict[str, object] = {"n_nodes": n, "defense": defense, "rounds": rounds}
            if seconds:
                row |= {"round_ms": 1000 * min(seconds), "vs_gossip": min(seconds) / gossip}
            else:
                row["declined"] = str(timings[defense][0])
            row["threads"] = torch.get_num_threads()
            row["device"] = processor
            print_row(row, args.json)


if __name__ == "__main__":
    main()
