"""The benchmark scripts run at a tiny size and report the ratios the README quotes.

Their timings are not asserted (a loaded machine moves them); what is checked is that each script runs from a
clean checkout, reports every documented key, and that the keys hang together.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
RESULTS = Path(__file__).parents[1] / "results"


def _json_rows(script: str, *args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def _positive(row: dict, keys: list[str]) -> None:
    bad = {k: row.get(k) for k in keys if not (isinstance(row.get(k), float) and math.isfinite(row[k]) and row[k] > 0)}
    assert not bad, bad


def test_engine_benchmark_reports_speedups_against_the_reference_and_the_flop_bound():
    (row,) = _json_rows("engine.py", "--nodes", "6", "--rounds", "2", "--reference-rounds", "1", "--repeats", "1")
    assert row["n_nodes"] == 6 and row["device"].startswith("cpu")
    _positive(row, ["vectorised_s_per_round", "reference_s_per_round", "flop_bound_s_per_round", "autograd_grad_s"])
    assert row["speedup"] == pytest.approx(row["reference_s_per_round"] / row["vectorised_s_per_round"])
    assert row["vectorised_vs_flop_bound"] == pytest.approx(
        row["vectorised_s_per_round"] / row["flop_bound_s_per_round"]
    )
    assert row["gradient_speedup"] == pytest.approx(row["autograd_grad_s"] / row["hand_written_grad_s"])


def test_engine_benchmark_omits_the_reference_above_its_node_limit():
    (row,) = _json_rows("engine.py", "--nodes", "6", "--rounds", "2", "--repeats", "1", "--max-reference-nodes", "4")
    assert "reference_s_per_round" not in row and "speedup" not in row
    _positive(row, ["vectorised_s_per_round"])


def test_influence_benchmark_reports_each_cost_in_plain_rounds():
    (row,) = _json_rows("influence.py", "--nodes", "6", "--rounds", "2", "--repeats", "1")
    assert row["n_nodes"] == 6
    lowest, median, highest = (
        row[f"proximal_influence_overhead{end}"] for end in ("_lowest_pair", "", "_highest_pair")
    )
    assert lowest <= median <= highest
    for r in (1, 2, 3):
        for kind in ("estimate", "ground_truth"):
            assert row[f"{kind}_r{r}_rounds"] == pytest.approx(row[f"{kind}_r{r}_s"] / row["plain_round_s_float64"])
    _positive(row, ["edge_products_speedup", "estimate_r3_torch_func_hvp_rounds"])
    assert isinstance(row["edge_products_in_engine"], bool)


def test_influence_benchmark_overhead_only_skips_the_estimates():
    (row,) = _json_rows("influence.py", "--nodes", "6", "--rounds", "2", "--repeats", "1", "--overhead-only")
    assert "proximal_influence_overhead" in row and not any(k.startswith("estimate_") for k in row)


def test_order_statistics_benchmark_reports_its_ratios():
    (row,) = _json_rows("order_stats.py", "--nodes", "8", "--repeats", "1")
    assert row["n_nodes"] == 8 and row["candidates_per_node"] == 4
    assert all(row[k] > 0 for k in ("sort_speedup", "median_speedup", "median_round_speedup"))


def test_defense_cost_benchmark_reports_every_defense_against_gossip():
    from robustbench_dice.registry import DEFENSES, load_builtin_plugins

    load_builtin_plugins()
    rows = {row["defense"]: row for row in _json_rows("defenses.py", "--nodes", "8", "--repeats", "1", "--rounds", "5")}
    assert set(rows) == set(DEFENSES) and rows["gossip"]["vs_gossip"] == 1.0
    assert "needs more than" in rows["krum"]["declined"]  # 8 nodes, exponential: 4 models per neighbourhood
    assert all(row["round_ms"] > 0 for name, row in rows.items() if name != "krum")


@pytest.mark.slow
def test_detection_benchmark_regenerates_the_committed_table(tmp_path):
    out = tmp_path / "detection.md"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "detection.py"), "--out", str(out)], capture_output=True, check=True
    )
    assert out.read_text() == (RESULTS / "detection_label_flip.md").read_text()
