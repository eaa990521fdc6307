"""Detection of label flippers: edge/node AUC and accuracy of every defense on three topologies.

3 label-flipping Byzantine nodes among 16 (digits, MLP, 200 rounds), seeds
0, 1, 2; mean +- sample std over seeds. Writes ``results/detection_label_flip.md``
(and prints it), the table the README's detection section quotes. The suites
(``robustbench-dice run``) measure detection too, over more attacks, in the
fixed tables; this script keeps the one scenario small enough to rerun in a
minute (``tests/test_benchmarks.py`` checks it regenerates byte for byte).

Usage: ``python benchmarks/detection.py [--seeds 0 1 2] [--out results/detection_label_flip.md]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from robustbench_dice import Scenario, simulate
from robustbench_dice.io import atomic_write_bytes
from robustbench_dice.tables import mean_and_spread

TOPOLOGIES = ("ring", "torus", "exponential")
DEFENSES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("gossip", {}),
    ("dice_prune", {}),
    ("dice_prune", {"trust": "reported"}),
    ("krum", {}),
    ("median", {}),
    ("trimmed_mean", {}),
    ("clipped_gossip", {}),
    ("balance", {}),
    ("geometric_median", {}),
    ("ios", {}),
    ("krum", {"f": "auto"}),
    ("trimmed_mean", {"trim": "auto"}),
    ("ios", {"f": "auto"}),
)


def cell(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return mean_and_spread(known) + ("" if len(known) == len(values) else f" ({len(known)}/{len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/detection_label_flip.md")
    args = parser.parse_args()
    lines = [
        "# Label flipping: detection and accuracy per defense",
        "",
        "3 label-flipping (reverse rule) Byzantine nodes among 16; digits, MLP, 200 rounds, Metropolis-Hastings;"
        f" mean ± sample std over seeds {', '.join(map(str, args.seeds))}. Regenerate: `python benchmarks/detection.py`.",
        "",
        "| topology | defense | edge AUC | node AUC | honest accuracy (mean) | honest accuracy (worst) |"
        " honest edges wrongly pruned |",
        "|---|---|---|---|---|---|---|",
    ]
    for topology in TOPOLOGIES:
        for defense, params in DEFENSES:
            runs = []
            for seed in args.seeds:
                scenario = Scenario(
                    attack="label_flip",
                    byzantine=3,
                    topology=topology,
                    defense=defense,
                    defense_params=params,
                    seed=seed,
                )
                runs.append(simulate(scenario))
                print(f"{topology} {defense} {params} seed {seed}: {runs[-1].status}", file=sys.stderr, flush=True)
            label = defense + "".join(f" ({k}={v})" for k, v in params.items())
            if any(r.status != "ok" for r in runs):
                lines.append(f"| {topology} | {label} | skipped: {runs[0].reason} | | | | |")
                continue
            wrongly = [r.honest_edges_wrongly_pruned for r in runs]
            pruned = (
                "n/a (no pruning)" if wrongly[0] is None else cell([None if w is None else float(w) for w in wrongly])
            )
            lines.append(
                f"| {topology} | {label} | {cell([r.edge_auc for r in runs])} | {cell([r.node_auc for r in runs])}"
                f" | {cell([r.final_accuracy_mean for r in runs])} | {cell([r.final_accuracy_worst for r in runs])}"
                f" | {pruned} |"
            )
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(Path(args.out), text.encode())
    print(text)


if __name__ == "__main__":
    main()
