"""What the benchmark scripts share (they run as ``python benchmarks/NAME.py``, so this folder is on the path)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from robustbench_dice import Scenario, simulate
from robustbench_dice.errors import ConfigError
from robustbench_dice.setup import resolve_device, synchronize


def best_of(repeats: int, fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call (timeit's advice: the minimum
    is the least disturbed by other load); each call's work on ``device`` is waited for."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where the runs compute (the Scenario's device)"
    )


def device_name(device: str) -> str:
    """The processor a benchmark ran on, for its output rows; a clear error if ``device`` is not available."""
    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({torch.get_num_threads()} threads)"


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


def defense_round_seconds(nodes: int, defense: str, rounds: int, device: str) -> float | str:
    """Seconds per training round of the benchmarks' run with ``defense`` under label flipping by 10% of the nodes
    (at least one), or the reason the defense declines the cell."""
    scenario = benchmark_scenario(
        nodes, rounds, defense=defense, attack="label_flip", byzantine=max(1, nodes // 10), device=device
    )
    result = simulate(scenario)
    return str(result.reason) if result.status == "skipped" else float(result.timings["seconds_per_round"])


def print_row(row: dict[str, Any], as_json: bool) -> None:
    """One result row on stdout: a JSON object, or ``key=value`` pairs with floats to 3 significant digits."""
    text = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    print(json.dumps(row) if as_json else text, flush=True)
