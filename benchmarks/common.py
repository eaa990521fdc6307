"""What the benchmark scripts share (they run as ``python benchmarks/NAME.py``, so this folder is on the path)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from robustbench_dice import Scenario


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call (timeit's advice: the minimum
    is the least disturbed by other load)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def benchmark_scenario(nodes: int, rounds: int, **fields: Any) -> Scenario:
    """The benchmarks' common run: MLP on digits, batch 32, exponential graph, Metropolis-Hastings, seed 0, and
    ``partition='replicated'`` with 64 samples per node so that every N fits the 1,437-image training pool;
    evaluated once, at the end. ``fields`` override any of it."""
    return Scenario(
        **{
            "nodes": nodes,
            "topology": "exponential",
            "partition": "replicated",
            "samples_per_node": 64,
            "rounds": rounds,
            "eval_every": rounds,
            "seed": 0,
            **fields,
        }
    )


def print_row(row: dict[str, Any], as_json: bool) -> None:
    """One result row on stdout: a JSON object, or ``key=value`` pairs with floats to 3 significant digits."""
    text = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    print(json.dumps(row) if as_json else text, flush=True)
