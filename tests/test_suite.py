import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from robustbench_dice.cli import main
from robustbench_dice.errors import ConfigError
from robustbench_dice.io import atomic_write_json
from robustbench_dice.runner import pending, run_suite
from robustbench_dice.store import ResultStore, scenario_key
from robustbench_dice.suite import PluginSpec, full, load_suite, quick
from robustbench_dice.tables import CELL_COLUMNS, _write_ranking, mean_and_spread, write_tables

TINY = """
[suite]
topologies = ["ring", "complete"]
attacks = ["none", "label_flip"]
defenses = ["gossip", "krum", { name = "dice_prune", params = { trust = "reported" } }]
nodes = [6]
byzantine = [1]
seeds = [0, 1]
[suite.base]
rounds = 6
eval_every = 3
batch_size = 8
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_suite(str(path))


def test_quick_suite_is_the_specified_grid():
    suite = quick()
    cells = suite.scenarios()
    assert len(cells) == 4 * 4 * 4 * 3
    assert {c.topology for c in cells} == {"ring", "torus", "exponential", "erdos_renyi"}
    assert {c.attack for c in cells} == {"none", "label_flip", "gradient_scale", "free_ride"}
    assert {c.defense for c in cells} == {"gossip", "dice_prune", "krum", "median"}
    assert all(c.nodes == 16 and c.byzantine == 3 and c.byzantine_placement == "random" for c in cells)


def test_full_suite_gives_every_byzantine_bound_auto_and_a_suite_file_may_too(tmp_path):
    from robustbench_dice.registry import DEFENSES
    from robustbench_dice.suite import full

    specs = {spec.name: spec for spec in full().defenses}
    assert set(specs) == set(DEFENSES)
    for name, cls in DEFENSES.items():
        assert specs[name].params == ({cls.byzantine_bound: "auto"} if cls.byzantine_bound else {})
    assert specs["krum"].label == "krum(f=auto)" and specs["trimmed_mean"].label == "trimmed_mean(trim=auto)"
    path = tmp_path / "bounds.toml"
    path.write_text("[suite]\ndefenses = ['median', { name = 'ios', params = { f = 'auto' } }]\n")
    cells = load_suite(str(path)).scenarios()
    assert [c.defense_params for c in cells] == [{}, {"f": "auto"}]


def test_run_resume_and_tables_are_stable(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    first = run_suite(tiny, store, jobs=1, show_progress=False)
    assert first.done + first.skipped == 24 and first.failed == 0 and first.skipped == 4  # krum on the ring
    again = run_suite(tiny, store, jobs=1, show_progress=False)
    assert again.stored == 24 and again.done == 0
    a = {p.name: p.read_bytes() for p in write_tables(store, tmp_path / "t1")}
    b = {p.name: p.read_bytes() for p in write_tables(store, tmp_path / "t2")}
    assert a == b and set(a) >= {
        "summary.csv",
        "accuracy.md",
        "accuracy.csv",
        "accuracy.tex",
        "detection_auc.md",
        "worst_accuracy.tex",
    }
    text = a["accuracy.md"].decode()
    assert "n/a[1]" in text and "[1] krum: needs more than 2f + 2" in text
    skipped = [r for r in store.records() if r.status == "skipped"]
    assert skipped and all("krum" in r.data["reason"] for r in skipped)


def test_table_cells_give_the_sample_std_and_no_spread_for_one_seed(tiny, tmp_path):
    assert mean_and_spread([0.9, 0.8, 0.7]) == "0.800 ± 0.100"  # n - 1 in the denominator
    assert mean_and_spread([0.9]) == "0.900"  # one run says nothing about the spread
    store = ResultStore(tmp_path / "store")
    run_suite(dataclasses.replace(tiny, seeds=(0,)), store, jobs=1, show_progress=False)
    write_tables(store, tmp_path / "t")
    table = (tmp_path / "t" / "accuracy.md").read_text()
    assert "±" not in table and "| ring | none | " in table
    with open(tmp_path / "t" / "accuracy.csv", newline="") as f:
        flat = list(csv.DictReader(f))
    assert {row["seeds"] for row in flat} == {"1", "0"} and all(row["std"] == "" for row in flat)


def test_summary_rows_carry_each_runs_detection_and_consensus_metrics(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    run_suite(dataclasses.replace(tiny, seeds=(0,)), store, jobs=1, show_progress=False)
    write_tables(store, tmp_path / "t")
    with open(tmp_path / "t" / "summary.csv", newline="") as f:
        rows = {(r["topology"], r["attack"], r["defense"]): r for r in csv.DictReader(f)}
    for record in store.records():
        if record.status != "ok":
            continue
        result, s = record.data["result"], record.data["scenario"]
        row = rows[
            (s["topology"], s["attack"], s["defense"] if not s["defense_params"] else "dice_prune(trust=reported)")
        ]
        for column in ("honest_edges", "time_to_detection"):
            assert row[column] == ("" if result[column] is None else str(result[column]))
        assert float(row["final_consensus_distance"]) == pytest.approx(
            result["curve"][-1]["consensus_distance"], rel=1e-4
        )
    assert {r["honest_edges"] for r in rows.values() if r["defense"] == "gossip"} == {""}  # it prunes nothing
    assert all(r["honest_edges"].isdigit() for r in rows.values() if r["defense"].startswith("dice_prune"))


def test_summary_gives_the_value_each_auto_bound_took(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    bounded = (PluginSpec("trimmed_mean", {"trim": "auto"}), PluginSpec("krum", {"f": "auto"}), PluginSpec("median"))
    suite = dataclasses.replace(tiny, topologies=("complete",), attacks=(PluginSpec("none"),), defenses=bounded)
    run_suite(dataclasses.replace(suite, byzantine=(2,), seeds=(0,)), store, jobs=1, show_progress=False)
    write_tables(store, tmp_path / "t")
    rows = {r["defense"]: r for r in _csv_rows(tmp_path / "t" / "summary.csv")}
    assert (
        rows["trimmed_mean(trim=auto)"]["status"] == "ok" and rows["trimmed_mean(trim=auto)"]["auto_params"] == "trim=2"
    )
    assert rows["krum(f=auto)"]["status"] == "skipped" and "f=2" in rows["krum(f=auto)"]["reason"]
    assert rows["median"]["auto_params"] == ""


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def attacked(tiny, tmp_path):
    """(suite, store) of the tiny suite with two attacks, one seed, run, and its tables written to tmp_path / "t"."""
    suite = dataclasses.replace(tiny, attacks=(*tiny.attacks, PluginSpec("gradient_scale")), seeds=(0,))
    store = ResultStore(tmp_path / "store")
    run_suite(suite, store, jobs=1, show_progress=False)
    write_tables(store, tmp_path / "t")
    return suite, store


def test_worst_attack_table_is_the_lowest_accuracy_over_the_attacks(attacked, tmp_path):
    tiny, store = attacked
    accuracy = _csv_rows(tmp_path / "t" / "accuracy.csv")
    worst = {(r["topology"], r["defense"]): r for r in _csv_rows(tmp_path / "t" / "worst_attack.csv")}
    assert len(worst) == 2 * 3
    for (topology, defense), row in worst.items():
        attacked = {r["attack"]: r["mean"] for r in accuracy if (r["topology"], r["defense"]) == (topology, defense)}
        attacked.pop("none")
        if "" in attacked.values():  # krum declines the ring: no worst case
            assert row["worst_attack"] == row["mean"] == "" and row["note"].startswith("krum: needs")  # every attack
            continue
        lowest = min(attacked, key=lambda a: float(attacked[a]))
        assert (row["worst_attack"], row["mean"], row["attacks"]) == (lowest, attacked[lowest], "2")
    md = (tmp_path / "t" / "worst_attack.md").read_text()
    gossip_ring = worst[("ring", "gossip")]
    assert "| ring | " in md and f"{float(gossip_ring['mean']):.3f} {gossip_ring['worst_attack']}" in md

    # one failed run of one attack makes the worst case undefined, with the failure as the reason
    failed = next(
        c for c in tiny.scenarios() if (c.topology, c.attack, c.defense) == ("complete", "label_flip", "gossip")
    )
    store.put_failure(failed, "RuntimeError: boom", "Traceback ...")
    write_tables(store, tmp_path / "t")
    row = next(
        r
        for r in _csv_rows(tmp_path / "t" / "worst_attack.csv")
        if (r["topology"], r["defense"]) == ("complete", "gossip")
    )
    assert row["mean"] == "" and row["note"].startswith("under label_flip: RuntimeError: boom")


def test_ranking_compares_defenses_on_the_cells_where_all_have_a_worst_case(tmp_path):
    block = ("digits", "mlp", 6, 1, "iid")
    worst_cases = {
        (*block, "x"): {"a": 0.9, "b": 0.8, "c": 0.8},  # b and c tie: ranks 2.5 each
        (*block, "y"): {"a": 0.5, "b": 0.7, "c": 0.6},
        (*block, "z"): {"a": 0.9, "b": None, "c": 0.1},  # b has no worst case: z is left out for everyone
    }
    clean = {("x", "a"): [0.95], ("x", "b"): [0.9, 0.92], ("x", "c"): [0.93], ("y", "a"): [0.8], ("y", "b"): [0.85]}
    rows = [
        dict(zip(CELL_COLUMNS, (*block, topology, "none", defense), strict=True), status="ok", reason="")
        | {"final_accuracy_mean": value}
        for (topology, defense), values in clean.items()
        for value in values
    ]
    _write_ranking(tmp_path, worst_cases, rows)
    table = [
        (r["defense"], r["mean_rank"], r["worst_case_mean"], r["worst_case_min"], r["no_attack_mean"], r["cells"])
        for r in _csv_rows(tmp_path / "ranking.csv")
    ]
    assert table == [
        ("b", "1.750000", "0.750000", "0.700000", f"{(0.91 + 0.85) / 2:.6f}", "2"),
        ("a", "2.000000", "0.700000", "0.500000", f"{(0.95 + 0.8) / 2:.6f}", "3"),
        ("c", "2.250000", "0.700000", "0.600000", "", "3"),  # no run without attack in cell y
    ]
    md = (tmp_path / "ranking.md").read_text()
    assert "## digits / mlp: 2 of 3 cells" in md and "| b | 1.75 | 0.750 | 0.700 | 0.880 | 2 of 3 |" in md
    assert "| c | 2.25 | 0.700 | 0.600 | n/a[1] | 3 of 3 |" in md and "[1] not every such cell has all its runs" in md
    assert "all datasets" not in md  # one (dataset, model) only
    # ranks (1, 2.5, 2.5) and (3, 1, 2): 0.25 before the correction for the tie, 0.25 / (1 - 6 / 48) after
    assert "\nFriedman test over the 2 cells: chi-square 0.3, p = 0.87. Nemenyi critical difference" in md

    # a second dataset: its own block, and one over both where the ranks of all common cells are averaged
    other = ("mnist1d", "mlp", 6, 1, "iid", "x")
    _write_ranking(tmp_path, worst_cases | {other: {"a": 0.3, "b": 0.4, "c": 0.2}}, rows)
    ranking = _csv_rows(tmp_path / "ranking.csv")
    by_group = {(r["dataset"], r["defense"]): (r["mean_rank"], r["worst_case_mean"], r["cells"]) for r in ranking}
    assert [r["dataset"] for r in ranking] == ["digits"] * 3 + ["mnist1d"] * 3 + ["all"] * 3
    assert by_group[("mnist1d", "b")] == ("1.000000", "0.400000", "1")
    assert by_group[("all", "b")] == ("1.500000", f"{(0.8 + 0.7 + 0.4) / 3:.6f}", "3")  # ranks 2.5, 1, 1
    assert by_group[("all", "c")] == ("2.500000", f"{(0.8 + 0.6 + 0.2) / 3:.6f}", "4")  # ranks 2.5, 2, 3
    assert "## all datasets and models: 3 of 4 cells" in (tmp_path / "ranking.md").read_text()

    _write_ranking(tmp_path, {(*block, "z"): worst_cases[(*block, "z")]}, rows)
    assert "| a | n/a[1] | n/a[1] | n/a[1] | n/a[1] | 1 of 1 |" in (tmp_path / "ranking.md").read_text()


def test_ranking_of_a_suite_follows_its_worst_attack_table(attacked, tmp_path):
    worst = _csv_rows(tmp_path / "t" / "worst_attack.csv")
    common = {r["topology"] for r in worst} - {r["topology"] for r in worst if r["mean"] == ""}
    assert common == {"complete"}  # krum declines the ring
    complete = sorted((r for r in worst if r["topology"] == "complete"), key=lambda r: -float(r["mean"]))
    ranking = _csv_rows(tmp_path / "t" / "ranking.csv")
    assert [r["defense"] for r in ranking] == [r["defense"] for r in complete]
    assert [r["worst_case_mean"] for r in ranking] == [r["mean"] for r in complete]
    assert [r["mean_rank"] for r in ranking] == [f"{i:.6f}" for i in range(1, len(complete) + 1)]
    assert {r["defense"]: (r["cells"], r["of"]) for r in ranking}["krum"] == ("1", "2")


def test_attack_strength_is_the_accuracy_lost_against_no_attack(attacked, tmp_path):
    tiny, store = attacked
    accuracy = {
        (r["topology"], r["attack"], r["defense"]): r["mean"] for r in _csv_rows(tmp_path / "t" / "accuracy.csv")
    }
    worst = {(r["topology"], r["defense"]): r["worst_attack"] for r in _csv_rows(tmp_path / "t" / "worst_attack.csv")}
    strength = _csv_rows(tmp_path / "t" / "attack_strength.csv")
    assert {(r["attack"], r["defense"]) for r in strength} == {
        (a, d) for a in ("label_flip", "gradient_scale") for d in ("dice_prune(trust=reported)", "gossip", "krum")
    }
    for row in strength:
        drops = [
            float(accuracy[(t, "none", row["defense"])]) - float(accuracy[(t, row["attack"], row["defense"])])
            for t in ("complete", "ring")
            if accuracy[(t, row["attack"], row["defense"])] != ""
        ]
        assert row["cells"] == str(len(drops)) and len(drops) == (1 if row["defense"] == "krum" else 2)
        assert float(row["mean_drop"]) == pytest.approx(sum(drops) / len(drops), abs=2e-6)  # csv: 6 decimals
        assert float(row["max_drop"]) == pytest.approx(max(drops), abs=2e-6)
        worst_in = sum(worst[(t, row["defense"])] == row["attack"] for t in ("complete", "ring"))
        assert row["worst_in"] == str(worst_in)
    md = (tmp_path / "t" / "attack_strength.md").read_text()
    means = {}
    for r in strength:
        means.setdefault(r["attack"], []).append(float(r["mean_drop"]))
    first = max(means, key=lambda a: sum(means[a]) / len(means[a]))
    assert md.splitlines()[6].startswith(f"| {first} | ")  # strongest attack first

    # a failed seed under no attack takes the cell out of every attack's drop for that defense
    failed = next(c for c in tiny.scenarios() if (c.topology, c.attack, c.defense) == ("complete", "none", "gossip"))
    store.put_failure(failed, "RuntimeError: boom", "Traceback ...")
    write_tables(store, tmp_path / "t")
    gossip = {
        r["attack"]: r["cells"] for r in _csv_rows(tmp_path / "t" / "attack_strength.csv") if r["defense"] == "gossip"
    }
    assert gossip == {"label_flip": "1", "gradient_scale": "1"}


def test_detection_summary_is_the_mean_auc_over_the_cells(attacked, tmp_path):
    tiny, store = attacked
    per_cell = _csv_rows(tmp_path / "t" / "detection_auc.csv")
    summary = _csv_rows(tmp_path / "t" / "detection_summary.csv")
    assert {(r["defense"], r["attack"]) for r in summary} == {
        (d, a) for d in ("dice_prune(trust=reported)", "krum") for a in ("gradient_scale", "label_flip", "none")
    }  # gossip scores no edge: left out
    for row in summary:
        aucs = [
            float(r["mean"])
            for r in per_cell
            if (r["defense"], r["attack"]) == (row["defense"], row["attack"]) and r["mean"] and r["note"] == ""
        ]
        assert row["cells"] == str(len(aucs)) and len(aucs) == (1 if row["defense"] == "krum" else 2)
        assert float(row["mean_auc"]) == pytest.approx(sum(aucs) / len(aucs), abs=2e-6)  # csv: 6 decimals
    # shared: the cells every defense has, here krum's one (it declines the other graph)
    krum_cells = {
        (r["topology"], r["attack"]) for r in per_cell if r["defense"] == "krum" and r["mean"] and r["note"] == ""
    }
    for row in summary:
        same_graphs = [
            float(r["mean"])
            for r in per_cell
            if (r["defense"], r["attack"]) == (row["defense"], row["attack"])
            and (r["topology"], r["attack"]) in krum_cells
        ]
        assert row["shared_cells"] == "1" and len(same_graphs) == 1
        assert float(row["shared_mean_auc"]) == pytest.approx(same_graphs[0], abs=2e-6)
    md = (tmp_path / "t" / "detection_summary.md").read_text().splitlines()
    assert md[2].startswith("## ") and md[2].endswith(" (shared cells: 1)")
    assert md[4] == "| defense | gradient_scale | label_flip | none | mean | shared | rank |"  # the control last

    def over_attacks(d: str, column: str) -> float:
        return sum(float(r[column]) for r in summary if r["defense"] == d and r["attack"] != "none") / 2

    both = ("dice_prune(trust=reported)", "krum")
    for attack in ("gradient_scale", "label_flip"):  # one shared cell each: rank 1 to the higher AUC, 1.5 to a tie
        auc = {r["defense"]: float(r["shared_mean_auc"]) for r in summary if r["attack"] == attack}
        for d, other in (both, both[::-1]):
            expected = 1.0 if auc[d] > auc[other] else 1.5 if auc[d] == auc[other] else 2.0
            assert (
                next(float(r["shared_mean_rank"]) for r in summary if (r["defense"], r["attack"]) == (d, attack))
                == expected
            )
    shared = {d: over_attacks(d, "shared_mean_auc") for d in both}
    best = max(shared, key=shared.get)
    row = f"| {best} | "
    numbers = (
        f" | {over_attacks(best, 'mean_auc'):.3f} | {shared[best]:.3f} | {over_attacks(best, 'shared_mean_rank'):.2f} |"
    )
    assert md[6].startswith(row) and md[6].endswith(numbers)
    assert md[7].startswith(f"| {min(shared, key=shared.get)} | ")  # best detector on the shared cells first
    assert md[9].startswith("Wilcoxon signed-rank test over the 2 (cell, attack) pairs")  # two defenses: Wilcoxon
    # a seed without an AUC takes its cell out
    failed = next(c for c in tiny.scenarios() if (c.topology, c.attack, c.defense) == ("complete", "none", "krum"))
    store.put_failure(failed, "RuntimeError: boom", "Traceback ...")
    write_tables(store, tmp_path / "t")
    krum = {
        r["attack"]: r["cells"] for r in _csv_rows(tmp_path / "t" / "detection_summary.csv") if r["defense"] == "krum"
    }
    assert krum == {"gradient_scale": "1", "label_flip": "1", "none": "0"}
    text = (tmp_path / "t" / "detection_summary.md").read_text()
    assert "n/a[1]" in text and "(shared cells: 1)" in text  # krum's failed seed was under no attack


def test_detection_summary_figure_draws_the_tables_shared_auc_and_rank(attacked, tmp_path, monkeypatch):
    import robustbench_dice.figures as figures

    _, store = attacked
    summary = _csv_rows(tmp_path / "t" / "detection_summary.csv")
    drawn = {}

    def keep(fig, out, name):
        auc_panel, rank_panel = fig.axes[:2]  # then the two colour bars
        drawn[name] = (
            [label.get_text() for label in auc_panel.get_yticklabels()],
            [label.get_text() for label in auc_panel.get_xticklabels()],
            auc_panel.get_images()[0].get_array(),
            rank_panel.get_images()[0].get_array(),
        )
        return []

    monkeypatch.setattr(figures, "_save", keep)
    figures.detection_summary_heatmaps(store.records(), tmp_path)
    ((name, (defenses, attacks, auc, rank)),) = drawn.items()
    assert name.startswith("detection_summary_") and attacks == ["gradient_scale", "label_flip"]  # none left out
    order = [
        line.split(" | ")[0].lstrip("| ")
        for line in (tmp_path / "t" / "detection_summary.md").read_text().splitlines()[6:8]
    ]
    assert defenses == order  # the table's rows, best detector first
    for i, d in enumerate(defenses):
        for j, a in enumerate(attacks):
            row = next(r for r in summary if (r["defense"], r["attack"]) == (d, a))
            assert auc[i, j] == pytest.approx(float(row["shared_mean_auc"]), abs=2e-6)
            assert rank[i, j] == pytest.approx(float(row["shared_mean_rank"]), abs=2e-6)
    assert figures.detection_summary_heatmaps([], tmp_path) == []  # nothing scored, nothing drawn


def test_heatmap_text_is_white_on_dark_cells_and_black_on_light_ones_whatever_the_colormap():
    from robustbench_dice.figures import _pyplot, _text_colour_on

    plt = _pyplot()
    fig, ax = plt.subplots()
    for cmap, dark, light in (("viridis", 0.0, 1.0), ("viridis_r", 1.0, 0.0), ("Greys", 1.0, 0.0)):
        image = ax.imshow(np.zeros((1, 1)), vmin=0.0, vmax=1.0, cmap=cmap)
        assert (_text_colour_on(image, dark), _text_colour_on(image, light)) == ("white", "black"), cmap
    assert _text_colour_on(image, float("nan")) == "black"
    plt.close(fig)


def test_detection_summary_figure_is_drawn_from_one_suite_and_named_after_it(tiny, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    store = ResultStore(tmp_path / "store")
    run_suite(tiny, store, jobs=1, show_progress=False)
    args = ["figures", "--store", str(store.root), "--influence", str(tmp_path / "none"), "--out", str(tmp_path / "f")]
    assert main([*args, "--suite", str(path), "--kind", "detection_summary"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "detection_summary_tiny_digits_mlp.pdf",
        "detection_summary_tiny_digits_mlp.png",
    ]
    assert main([*args, "--suite", str(path), "--kind", "accuracy_curves"]) == 0
    assert not any(p.name.startswith("detection_summary_all") for p in (tmp_path / "f").iterdir())


def test_worst_attack_table_needs_an_attack(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    run_suite(dataclasses.replace(tiny, attacks=(PluginSpec("none"),), seeds=(0,)), store, jobs=1, show_progress=False)
    written = {p.name for p in write_tables(store, tmp_path / "t")}
    assert "accuracy.md" in written
    assert not any(name.startswith(("worst_attack", "ranking", "attack_strength")) for name in written)
    assert "detection_summary.md" in written  # a clean run still has scores to summarise


def test_progress_without_a_terminal_is_logged_as_lines(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("robustbench_dice.runner.LOG_INTERVAL_S", 0.0)
    store = ResultStore(tmp_path / "store")
    one_seed = dataclasses.replace(tiny, seeds=(0,))
    run_suite(one_seed, store, jobs=1)  # stderr is captured here: no terminal
    lines = capsys.readouterr().err.splitlines()
    total = len(one_seed.scenarios())
    assert len(lines) == total - 1  # a line per finished run but the last, which the caller sums up
    assert lines[-1].startswith(f"tiny: {total - 1}/{total} runs (")
    assert "; computed " in lines[-1] and "elapsed, about" in lines[0] and lines[-1].endswith(" left")

    run_suite(tiny, store, jobs=1)  # the stored seed counts as done, and nothing is said about it
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(tiny.scenarios()) - total - 1
    assert lines[0].startswith(f"tiny: {total + 1}/{2 * total} runs (")
    assert f"already stored {total}" in lines[0]

    run_suite(one_seed, store, jobs=1, force=True, show_progress=False)
    assert capsys.readouterr().err == ""


def test_process_executor_gives_the_same_records(tiny, tmp_path):
    local, procs = ResultStore(tmp_path / "one"), ResultStore(tmp_path / "two")
    assert run_suite(tiny, local, jobs=1, show_progress=False).failed == 0
    progress = run_suite(tiny, procs, jobs=2, show_progress=False)
    failures = [r.data.get("error") for r in procs.records() if r.status == "failed"]
    assert progress.failed == 0, failures
    for record in local.records():
        other = json.loads(procs.path(record.key).read_text())
        mine = dict(record.data)
        if "result" in mine:
            for data in (mine, other):
                data["result"] = {k: v for k, v in data["result"].items() if k not in ("timings", "versions")}
        assert mine == other


def test_tables_default_to_the_quick_suite_and_refuse_to_write_empty_ones(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = ResultStore("results/store")
    run_suite(tiny, store, jobs=1, show_progress=False)
    quick_cell = quick().scenarios()[0]
    assert main(["tables"]) == 2  # the store holds no run of the default suite: nothing is overwritten
    assert "no stored runs of suite 'quick' in results/store" in capsys.readouterr().err
    assert not (tmp_path / "results" / "tables").exists()
    store.put_failure(quick_cell, "RuntimeError: x", "Traceback ...")
    assert main(["tables"]) == 0
    assert "note: 191 of the suite's 192 runs are not in the store yet" in capsys.readouterr().out
    summary = _csv_rows(tmp_path / "results" / "tables" / "summary.csv")
    assert sorted(r["status"] for r in summary) == ["failed"] + ["missing"] * 191
    assert "complete" not in {r["topology"] for r in summary}  # the tiny suite's runs stay out
    assert main(["tables", "--suite", "all", "--out", "every"]) == 0
    assert len((tmp_path / "every" / "summary.csv").read_text().splitlines()) == 1 + len(tiny.scenarios()) + 1


def test_runs_of_the_suite_not_in_the_store_read_not_run_in_every_table(tiny, tmp_path):
    """An attack run against one defense only (``run --only``) must not give the others a worst case over fewer
    attacks, and a cell with some seeds stored must not read as complete."""
    from robustbench_dice.suite import narrow

    store = ResultStore(tmp_path / "store")
    (partial,) = narrow([tiny], {"attack": ("none",)})
    run_suite(partial, store, jobs=1, show_progress=False)
    (one_seed,) = narrow([tiny], {"attack": ("label_flip",), "defense": ("gossip",), "seed": ("0",)})
    run_suite(one_seed, store, jobs=1, show_progress=False)
    out = tmp_path / "t"
    write_tables(store, out, tiny.scenarios())
    summary = _csv_rows(out / "summary.csv")
    missing = [r for r in summary if r["status"] == "missing"]
    assert len(summary) == len(tiny.scenarios()) and len(missing) == len(tiny.scenarios()) // 2 - 2  # 1 per graph
    assert {r["attack"] for r in missing} == {"label_flip"}
    assert all(r["reason"] == "not run yet (in the suite, not in the store)" for r in missing)
    accuracy = (out / "accuracy.md").read_text()
    assert "1 of 2 seeds: not run yet" in accuracy  # gossip under label_flip on each graph: seed 0 only
    ring = next(line for line in (out / "worst_attack.md").read_text().splitlines() if line.startswith("| ring |"))
    assert "label_flip" not in ring and ring.count("n/a[") == 3  # no worst case over 'none' alone
    assert "not run yet" in (out / "worst_attack.md").read_text()
    # the same store without the suite's list: the tables cover the stored runs only, as `tables --suite all` does
    write_tables(store, tmp_path / "all")
    assert all(r["status"] != "missing" for r in _csv_rows(tmp_path / "all" / "summary.csv"))


def test_commands_that_read_the_store_do_not_create_it(tmp_path, capsys):
    missing = tmp_path / "no-store"
    assert main(["tables", "--store", str(missing)]) == 2
    assert "no stored runs of suite 'quick'" in capsys.readouterr().err
    assert main(["tables", "--store", str(missing), "--suite", "all", "--out", str(tmp_path / "t")]) == 2
    assert f"no stored runs of suite 'all' in {missing}/" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert main(["prune", "--store", str(missing)]) == 0
    assert f"no result store at {missing}/; nothing to prune" in capsys.readouterr().out
    influence = tmp_path / "no-influence"
    figures = ["figures", "--store", str(missing), "--influence", str(influence), "--out", str(tmp_path / "f")]
    assert main(figures) == 2  # neither: every figure would be empty (`figures` run away from the checkout)
    assert f"nothing to draw: no result store at {missing}/ and no influence results at {influence}/" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "f").exists()
    influence.mkdir()
    assert main(figures) == 2  # an influence folder without results: still nothing to draw
    captured = capsys.readouterr()
    assert f"note: no result store at {missing}/" in captured.out
    assert "no figure could be drawn: none of accuracy_curves, " in captured.err
    assert not missing.exists() and not (tmp_path / "f").exists()  # no empty figures folder either


def test_figures_draw_the_committed_suites_by_default_and_other_runs_on_request(tiny, tmp_path, capsys):
    store = ResultStore(tmp_path / "store")
    run_suite(tiny, store, jobs=1, show_progress=False)
    common = ["--store", str(store.root), "--influence", str(tmp_path / "none")]

    def drawn(*extra: str, status: int = 0) -> list[str]:
        out = tmp_path / f"figures{len(extra)}"
        assert main(["figures", *common, "--out", str(out), *extra]) == status
        return sorted(p.name for p in out.glob("accuracy_curves_*.png"))

    capsys.readouterr()
    # the tiny suite is neither quick nor paper: it stays out of the committed figures, and with nothing else
    # to draw that is an error, not a success that wrote nothing
    assert drawn(status=2) == []
    captured = capsys.readouterr()
    assert "no figure could be drawn: none of accuracy_curves, " in captured.err
    out = captured.out
    assert "note: 192 of the 192 runs of suite 'quick' are not in" in out
    assert "note: 144 of the 144 runs of suite 'paper' are not in" in out
    assert "(`robustbench-dice run --suite paper` computes them)" in out
    every = drawn("--suite", "all")
    assert every == drawn("--suite", str(tmp_path / "tiny.toml"))
    assert every == [
        "accuracy_curves_complete_digits_mlp_6n_1b_iid.png",
        "accuracy_curves_ring_digits_mlp_6n_1b_iid.png",
    ]
    # a line per kind as it is done, each with the files it wrote (2 PNG + 2 PDF here)
    assert re.search(r"^  accuracy_curves: 4 file\(s\) in \d+\.\ds$", capsys.readouterr().out, flags=re.MULTILINE)


def test_prune_deletes_stale_and_unreadable_records_and_their_logs_only(tiny, tmp_path, monkeypatch, capsys):
    import robustbench_dice.store as store_module

    root = tmp_path / "store"
    store = ResultStore(root)
    old_cell, cell = tiny.scenarios()[:2]
    monkeypatch.setattr(store_module, "RESULTS_VERSION", "older")
    stale = store.put_failure(old_cell, "RuntimeError: old", "Traceback ...")
    monkeypatch.undo()
    current = store.put_failure(cell, "RuntimeError: new", "Traceback ...")
    (root / "0123456789abcdef0123.json").write_text("{not json")
    (root / "logs").mkdir()
    for name in (stale.key, current.key, "in-flight-run"):  # a running job has a log and no record yet
        (root / "logs" / f"{name}.log").write_text("log\n")
    before = sorted(p.name for p in root.rglob("*") if p.is_file())

    assert main(["prune", "--store", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 2 record(s)" in out and "their 1 log(s)" in out and f"{stale.key}.json" in out
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == before

    assert main(["prune", "--store", str(root)]) == 0
    assert "removed 2 record(s)" in capsys.readouterr().out
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert left == [f"{current.key}.json", f"logs/{current.key}.log", "logs/in-flight-run.log"]
    fresh = ResultStore(root)
    assert [r.key for r in fresh.records()] == [current.key] and fresh.stale == 0 and not fresh.corrupted


def _run_a_suite_of_plugins(tmp_path):
    """Run a 3-run suite of two plugin files (a dataset and an attack) into ``tmp_path / "store"``, then forget
    the plugins, as a new process that has not loaded their folder would; returns (plugins folder, run command)."""
    from robustbench_dice import registry
    from robustbench_dice.datasets import DATASETS, PLUGIN_DATASETS

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    examples = Path(__file__).parents[1] / "docs" / "examples"
    for name in ("breast_cancer.py", "scaled_model.py"):
        (plugins / name).write_text((examples / name).read_text())
    suite = tmp_path / "mine.toml"
    suite.write_text(
        TINY.replace('topologies = ["ring", "complete"]', 'topologies = ["ring"]\ndatasets = ["breast_cancer"]')
        .replace('attacks = ["none", "label_flip"]', 'attacks = ["scaled_model"]')
        .replace("seeds = [0, 1]", "seeds = [0]")
    )
    command = ["run", "--suite", str(suite), "--store", str(tmp_path / "store"), "--plugins", str(plugins)]
    command += ["--tables", str(tmp_path / "run-tables"), "--quiet"]
    assert main(command) == 0
    assert len(list((tmp_path / "store").glob("*.json"))) == 3
    for table, name in (
        (DATASETS, "breast_cancer"),
        (PLUGIN_DATASETS, "breast_cancer"),
        (registry.ATTACKS, "scaled_model"),
    ):
        del table[name]
    registry._user_folders.clear()
    return plugins, command


@pytest.mark.usefixtures("restore_registry")
def test_records_of_runs_with_plugins_not_loaded_are_kept_and_named_not_pruned(tmp_path, capsys):
    """A process without the suite's --plugins folder cannot tell whether such a record is stale: prune keeps it, and
    tables say which plugins to load, rather than deleting it or calling it another results version's."""
    plugins, _ = _run_a_suite_of_plugins(tmp_path)
    store = tmp_path / "store"
    capsys.readouterr()
    assert main(["prune", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "removed 0 record(s)" in out
    assert "kept 3 stored record(s) of runs with plugins not loaded here: attack 'scaled_model' (3)," in out
    assert "dataset 'breast_cancer' (3); give their folder with --plugins DIR" in out
    assert len(list(store.glob("*.json"))) == 3
    assert main(["tables", "--suite", "all", "--store", str(store), "--out", str(tmp_path / "t")]) == 2
    assert "no stored runs of suite 'all' in" in capsys.readouterr().err

    assert main(["prune", "--store", str(store), "--plugins", str(plugins)]) == 0
    out = capsys.readouterr().out
    assert "removed 0 record(s)" in out and "not loaded" not in out
    assert main(["tables", "--suite", "all", "--store", str(store), "--out", str(tmp_path / "t")]) == 0
    assert len(_csv_rows(tmp_path / "t" / "summary.csv")) == 3


@pytest.mark.usefixtures("restore_registry")
def test_runs_of_an_edited_plugin_file_are_recomputed_and_their_old_records_pruned(tmp_path, capsys):
    plugins, command = _run_a_suite_of_plugins(tmp_path)
    store = tmp_path / "store"
    old = sorted(p.name for p in store.glob("*.json"))
    record = json.loads((store / old[0]).read_text())
    assert set(record["plugin_code"]) == {"dataset breast_cancer", "attack scaled_model"}
    attack = plugins / "scaled_model.py"
    attack.write_text(
        attack.read_text().replace("return self.scale * view.half", "return 0.5 * self.scale * view.half")
    )
    capsys.readouterr()
    tables = ["tables", "--suite", command[2], "--store", str(store), "--plugins", str(plugins)]
    assert main([*tables, "--out", str(tmp_path / "t")]) == 2  # none of the suite's runs is stored for this code
    out = capsys.readouterr().out
    assert "3 of the suite's 3 runs are not in the store yet" in out
    assert "runs of your own plugins are new runs after an edit to their code" in out
    assert main(command) == 0
    assert re.search(r"computed 2, already stored 0, skipped 1, failed 0 of 3", capsys.readouterr().out)
    recomputed = sorted({p.name for p in store.glob("*.json")} - set(old))
    assert main(["simulate", "--config", str(store / old[0]), "--plugins", str(plugins), "--quiet"]) == 0
    assert (
        "note: the code of attack scaled_model (its file or a module of yours it imports) is not the one this"
        in capsys.readouterr().err
    )
    assert main(["simulate", "--config", str(store / recomputed[0]), "--plugins", str(plugins), "--quiet"]) == 0
    assert "is not the one this record" not in capsys.readouterr().err
    assert main(["prune", "--store", str(store), "--plugins", str(plugins)]) == 0
    assert "removed 3 record(s)" in capsys.readouterr().out
    assert not set(old) & {p.name for p in store.glob("*.json")} and len(list(store.glob("*.json"))) == 3


def test_corrupted_and_failed_records_are_recomputed(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    run_suite(tiny, store, jobs=1, show_progress=False)
    cells = tiny.scenarios()
    store.path(scenario_key(cells[0])).write_text("{ not json")
    store.put_failure(cells[1], "RuntimeError: boom", "Traceback ...")
    todo, stored = pending(tiny, store, force=False)
    assert {scenario_key(s) for s in todo} == {scenario_key(cells[0]), scenario_key(cells[1])}
    assert any("not json" in c or "Expecting" in c for c in store.corrupted)
    progress = run_suite(tiny, store, jobs=1, show_progress=False)
    assert progress.done + progress.skipped == 2 and progress.stored == 22
    assert store.get(cells[1]).status in ("ok", "skipped")


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda d: [d], "a JSON list, not a record"),
        (lambda d: {**d, "status": "done"}, "status 'done' is none of ok, skipped, failed"),
        (lambda d: {**d, "result": "x"}, "its result is a JSON str, not an object"),
        (lambda d: {**d, "result": {**d["result"], "curve": "x"}}, "argument after \\*\\* must be a mapping"),
        (lambda d: {**d, "result": {**d["result"], "accuracy": 1.0}}, "unexpected keyword argument 'accuracy'"),
    ],
)
def test_a_record_that_parses_but_is_not_one_is_corrupted(tiny, tmp_path, capsys, damage, reason):
    """JSON that is not a record (a hand edit, a fork's schema under the same results version) stopped `tables` and
    `figures` with a TypeError traceback, or an AttributeError in the store; now it is corrupted: left out of the
    tables with a note, recomputed by `run`, deleted by `prune`."""
    store = ResultStore(tmp_path / "store")
    small = dataclasses.replace(tiny, seeds=(0,), attacks=(tiny.attacks[0],))
    cells = small.scenarios()
    run_suite(small, store, jobs=1, show_progress=False)
    ok = next(s for s in cells if store.get(s).status == "ok")
    path = store.path(scenario_key(ok))
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    assert store.get(ok) is None and re.search(reason, store.corrupted[-1]), store.corrupted
    assert scenario_key(ok) not in {r.key for r in store.records()}
    assert main(["tables", "--suite", "all", "--store", str(store.root), "--out", str(tmp_path / "t")]) == 0
    assert "note: left out 1 stored record(s) that do not read, as not run" in capsys.readouterr().out
    assert main(["prune", "--store", str(store.root)]) == 0 and not path.exists()


def test_a_suites_records_are_read_without_reading_the_rest_of_the_store(tiny, tmp_path):
    store = ResultStore(tmp_path / "store")
    run_suite(dataclasses.replace(tiny, seeds=(0,)), store, jobs=1, show_progress=False)
    (store.root / "0123456789abcdef0123.json").write_text("{ another suite's record, unreadable")
    wanted = tiny.scenarios()  # seed 1 is not stored
    records = store.records_of(wanted)
    assert [r.key for r in records] == sorted(scenario_key(s) for s in wanted)
    assert {r.status for r in records} >= {"ok", "missing"} and not store.corrupted  # the other file was not opened
    whole = {r.key: r for r in store.records()}  # reading the whole store opens it, and finds the same records
    assert store.corrupted and all(whole[r.key] == r for r in records if r.status != "missing")


def test_records_of_another_results_version_are_left_out(tiny, tmp_path, monkeypatch, capsys):
    import robustbench_dice.store as store_module

    store = ResultStore(tmp_path / "store")
    cell = tiny.scenarios()[0]
    monkeypatch.setattr(store_module, "RESULTS_VERSION", "older")  # numbers from code before a change
    store.put_failure(cell, "RuntimeError: old", "Traceback ...")
    monkeypatch.undo()
    assert store.records() == [] and store.stale == 1
    assert store.get(cell) is None  # so the runner recomputes it
    store.put_failure(cell, "RuntimeError: new", "Traceback ...")
    assert [r.data["error"] for r in store.records()] == ["RuntimeError: new"] and store.stale == 1
    assert main(["tables", "--store", str(tmp_path / "store"), "--suite", "all", "--out", str(tmp_path / "t")]) == 0
    assert "left out 1 stored record(s) made by another results version" in capsys.readouterr().out


def test_failing_run_is_stored_with_traceback_and_others_continue(tmp_path, monkeypatch):
    import robustbench_dice.engine as engine

    path = tmp_path / "s.toml"
    path.write_text(TINY.replace('attacks = ["none", "label_flip"]', 'attacks = ["none"]'))
    suite = load_suite(str(path))
    real = engine.simulate

    def flaky(scenario, progress=None):
        if scenario.defense == "gossip" and scenario.topology == "ring":
            raise RuntimeError("injected failure")
        return real(scenario, progress)

    monkeypatch.setattr(engine, "simulate", flaky)
    store = ResultStore(tmp_path / "store")
    progress = run_suite(suite, store, jobs=1, show_progress=False)
    assert progress.failed == 2 and progress.done + progress.skipped == 10
    failed = [r for r in store.records() if r.status == "failed"]
    assert len(failed) == 2 and "injected failure" in failed[0].data["traceback"]
    assert "injected failure" in (store.root / "logs" / f"{failed[0].key}.log").read_text()
    assert sorted(progress.failures) == sorted((r.key, "RuntimeError: injected failure") for r in failed)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[suite]\ntopology = ['ring']\n", "unknown suite key 'topology' \\(did you mean 'topologies'\\?\\)"),
        ("[suite]\nattacks = ['labelflip']\n", "unknown attack 'labelflip' \\(did you mean 'label_flip'\\?\\)"),
        ("[suite]\ndefenses = [{ name = 'krum', params = { f = 'x' } }]\n", "parameter 'f' must be int"),
        ("[suite]\ndefenses = [{ name = 'median', params = { f = 'auto' } }]\n", "'median' has no parameter 'f'"),
        ("[suite]\nnodes = 16\n", "'nodes' must be a non-empty list"),
        ("[suite]\nnodes = [1]\n", "nodes must be >= 2"),
        (  # a graph no cell can have: one failed run per cell before, found only once the suite ran
            "[suite]\nnodes = [16, 7]\ntopologies = ['ring', 'torus']\n",
            "the cells on topology 'torus' with 7 nodes: a torus needs nodes = rows x cols",
        ),
        ("[suite]\nattacks = [{ name = 'alie', params = 3 }]\n", "attacks entry 'alie': params must be a table, got 3"),
        ("[suite]\ndescription = 5\n", "suite key 'description' must be a string, got 5"),
        ("[suite]\nname = ' '\n", "suite key 'name' must not be empty \\(leave it out for the file's name"),
        (  # the fraction overrides every cell's count: two cells, the same runs
            "[suite]\nbyzantine = [1, 2]\n[suite.base]\nbyzantine_fraction = 0.25\n",
            "sets byzantine_fraction = 0.25, which overrides the byzantine axis \\[1, 2\\]",
        ),
        ("[suite\n", "malformed TOML"),
        # tables beside [suite] would be ignored: a [base] meant as [suite.base] ran every cell at the defaults
        (
            "[suite]\nseeds = [0]\n[base]\nrounds = 5\n",
            "has 'base' outside its \\[suite\\] table.* \\[suite.base\\]\\?",
        ),
        ("rounds = 5\n[suite]\nseeds = [0]\n", "has 'rounds' outside .* goes under \\[suite.base\\]"),
        (
            "[suite]\nseeds = [0]\n[grid]\nattacks = ['none']\n",
            "has 'grid' outside its \\[suite\\] table, where nothing",
        ),
        ("[suite.base]\ntopology = 'torus'\n", "sets 'topology', which the grid decides .* topologies = \\[...\\]"),
        ("[suite.base]\nseed = 3\n", "give it as seeds = "),
        ("[suite]\nseeds = [0, 1, 0]\n", "suite key 'seeds' lists 0 twice: they would be made, and counted, twice"),
        ("[suite]\ntopologies = ['ring', 'ring']\n", "'topologies' lists 'ring' twice"),
        ("[suite]\nattacks = ['none', 'label_flip', 'none']\n", "'attacks' lists none twice"),
        (  # std = 2 is the run std = 2.0 is
            "[suite]\nattacks = [{ name = 'gaussian', params = { std = 2 } }, { name = 'gaussian', params = { std = 2.0 } }]\n",
            "'attacks' lists gaussian\\(std=2\\) and gaussian\\(std=2.0\\), the same runs: they would be",
        ),
        (  # so is a plugin with its defaults spelled out
            "[suite]\ndefenses = ['krum', 'median', { name = 'krum', params = { f = 1 } }]\n",
            "'defenses' lists krum and krum\\(f=1\\), the same runs",
        ),
    ],
)
def test_bad_suite_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_suite(str(path))


def test_a_suite_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"  # saved by an editor in Latin-1: a UnicodeDecodeError traceback before
    path.write_bytes("[suite]\ndescription = 'Gr\u00fc\u00dfe'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="malformed TOML in .*latin1.toml.*'utf-8' codec can't decode"):
        load_suite(str(path))


def test_a_scenario_file_given_as_a_suite_says_which_command_runs_it(tmp_path):
    scenario = Path(__file__).parents[1] / "docs" / "example-scenario.toml"
    with pytest.raises(ConfigError, match="is a scenario file .* `robustbench-dice simulate --config "):
        load_suite(str(scenario))
    top_level = tmp_path / "top.toml"  # a suite may leave out the [suite] header; nodes is a key of both
    top_level.write_text("nodes = [8]\nseeds = [0]\n")
    assert load_suite(str(top_level)).nodes == (8,)


def test_unwritable_store_and_unknown_suite(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"store' cannot be made: '.*file' is a file, not a folder"):
        ResultStore(blocker / "store")
    with pytest.raises(ConfigError, match=r"file' is a file, not a folder"):
        ResultStore(blocker)
    with pytest.raises(ConfigError, match=r"result store '.*file' is a file, not a folder"):
        ResultStore(blocker, create=False)  # what tables, figures and prune open: not "no stored runs"
    assert not ResultStore(tmp_path / "absent", create=False).root.exists()
    with pytest.raises(ConfigError, match="no built-in suite or file named 'quik'"):
        load_suite("quik")


def test_output_folders_that_cannot_be_written_fail_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    store = tmp_path / "store"
    assert main(["run", "--suite", str(suite), "--store", str(store), "--tables", str(blocker / "t"), "--quiet"]) == 2
    assert "tables folder" in capsys.readouterr().err and not list(store.glob("*.json"))  # nothing was run
    assert main(["influence", "cascade", "--quick", "--out", str(blocker / "x")]) == 2
    captured = capsys.readouterr()
    assert (
        "output folder" in captured.err
        and "is a file, not a folder" in captured.err
        and "cascade on" not in captured.out
    )
    assert main(["figures", "--store", str(store), "--out", str(blocker / "f")]) == 2
    assert "figures folder" in capsys.readouterr().err
    # simulate --json says so before its run
    assert main(["simulate", "--rounds", "1", "--quiet", "--json", str(blocker / "r.json")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"robustbench-dice: error: --json output folder {str(blocker)!r} is a file, not a folder"
    )
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["simulate", "--rounds", "1", "--quiet", "--json", str(folder)]) == 2
    assert f"--json {str(folder)!r} is a folder; give the file to write" in capsys.readouterr().err
    # and a write that fails names the file asked for, not the temporary file written beside it
    with pytest.raises(NotADirectoryError) as not_a_folder:
        atomic_write_json(blocker / "r.json", {})
    assert str(not_a_folder.value) == f"[Errno 20] Not a directory: {str(blocker / 'r.json')!r}"
    with pytest.raises(IsADirectoryError) as a_folder:
        atomic_write_json(folder, {})
    assert str(a_folder.value) == f"[Errno 21] Is a directory: {str(folder)!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "file", "store", "tiny.toml"]  # none left


def test_run_command_end_to_end(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    args = [
        "run",
        "--suite",
        str(path),
        "--store",
        str(tmp_path / "s"),
        "--tables",
        str(tmp_path / "t"),
        "--jobs",
        "1",
        "--quiet",
    ]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "24 runs (2 topologies x 2 attacks x 3 defenses x 2 seeds); 0 stored, 24 to run" in out
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()  # a dry run writes nothing
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "computed 20, already stored 0, skipped 4, failed 0 of 24" in out and "tables written to" in out
    assert main(args) == 0
    assert "computed 0, already stored 24" in capsys.readouterr().out
    assert main([*args, "--dry-run", "--force"]) == 0
    assert "24 stored" not in (out := capsys.readouterr().out) and "24 to run" in out
    assert main([*args, "--dry-run", "--jobs", "0"]) == 2  # a dry run checks the flags the run would use
    assert "jobs must be >= 1, got 0" in capsys.readouterr().err


def _assert_rows_reproduced(suite, committed, tmp_path):
    """Run ``suite`` (4 runs) afresh: its summary rows, byte for byte, are among the ``committed`` lines."""
    store = ResultStore(tmp_path / "store")
    assert run_suite(suite, store, jobs=1, show_progress=False).done == 4
    regenerated = (write_tables(store, tmp_path / "tables")[0]).read_text().splitlines()
    assert regenerated[0] == committed[0]
    for row in regenerated[1:]:
        assert row in committed, row


def test_quick_suite_slice_reproduces_the_committed_summary(tmp_path):
    import dataclasses
    from pathlib import Path

    committed = (Path(__file__).parents[1] / "results" / "tables" / "summary.csv").read_text().splitlines()
    suite = dataclasses.replace(
        quick(),
        topologies=("ring", "torus"),
        attacks=(PluginSpec("label_flip"),),
        defenses=(PluginSpec("dice_prune"), PluginSpec("median")),
        seeds=(1,),
    )
    _assert_rows_reproduced(suite, committed, tmp_path)


def test_every_attack_and_defense_reproduces_its_committed_full_suite_rows(tmp_path):
    """One cell of the full suite per plugin (digits, 2 Byzantine, complete graph, seed 0: no defense declines it):
    every attack against plain gossip and every defense against label flipping, byte for byte. A change that moves
    a plugin's numbers fails here until the committed full suite is regenerated with it (~12 s for 23 runs)."""
    committed = (Path(__file__).parents[1] / "results" / "full" / "tables" / "summary.csv").read_text().splitlines()
    cell = dataclasses.replace(
        full(), datasets=("digits",), byzantine=(2,), partitions=("iid",), topologies=("complete",), seeds=(0,)
    )
    store = ResultStore(tmp_path / "store")
    for suite in (
        dataclasses.replace(cell, defenses=tuple(d for d in cell.defenses if d.name == "gossip")),
        dataclasses.replace(cell, attacks=tuple(a for a in cell.attacks if a.name == "label_flip")),
    ):
        assert run_suite(suite, store, jobs=1, show_progress=False).skipped == 0
    regenerated = (write_tables(store, tmp_path / "tables")[0]).read_text().splitlines()
    assert len(regenerated) == 1 + len(cell.attacks) + len(cell.defenses) - 1
    stale_rows = [row for row in regenerated[1:] if row not in committed]
    stale = [f"{r['attack']} vs {r['defense']}" for r in csv.DictReader([regenerated[0], *stale_rows])]
    assert not stale, (
        f"{stale}: not the committed results/full/tables/summary.csv rows; regenerate them"
        " (robustbench-dice run --suite full --only attack=... / defense=..., then tables --suite full), or bump"
        " RESULTS_VERSION if the change moves every run"
    )


def test_full_suite_slice_reproduces_the_committed_summary(tmp_path):
    committed = (Path(__file__).parents[1] / "results" / "full" / "tables" / "summary.csv").read_text().splitlines()
    suite = dataclasses.replace(
        full(),
        datasets=("mnist1d",),
        byzantine=(2,),
        partitions=("dirichlet",),
        topologies=("exponential",),
        attacks=(PluginSpec("alie"), PluginSpec("ipm")),
        defenses=(PluginSpec("clipped_gossip"), PluginSpec("trimmed_mean", {"trim": "auto"})),
        seeds=(2,),
    )
    _assert_rows_reproduced(suite, committed, tmp_path)


def _runner_command(suite_path, store, tables, jobs="1"):
    import sys

    return [
        sys.executable,
        "-m",
        "robustbench_dice",
        "run",
        "--suite",
        str(suite_path),
        "--store",
        str(store),
        "--tables",
        str(tables),
        "--jobs",
        jobs,
        "--quiet",
    ]


def test_killing_the_runner_loses_only_runs_in_flight(tmp_path):
    import signal
    import subprocess
    import time

    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("rounds = 6", "rounds = 40"))
    store_dir = tmp_path / "store"
    proc = subprocess.Popen(
        _runner_command(path, store_dir, tmp_path / "t"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list(store_dir.glob("*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ResultStore(store_dir)
    kept = store.records()
    assert 3 <= len(kept) < 24 and not store.corrupted  # whole records only, no half-written file
    assert not [p for p in store_dir.glob("*.json") if p.name.startswith(".")]
    done = run_suite(load_suite(str(path)), store, jobs=1, show_progress=False)
    assert done.stored == len(kept) and done.done + done.skipped == 24 - len(kept)


def test_two_runners_on_one_store_corrupt_nothing(tmp_path):
    import subprocess

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    store_dir = tmp_path / "store"
    procs = [
        subprocess.Popen(
            _runner_command(path, store_dir, tmp_path / f"t{i}"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    store = ResultStore(store_dir)
    records = store.records()
    assert len(records) == 24 and not store.corrupted
    assert all(r.status in ("ok", "skipped") for r in records)


def test_many_store_handles_open_concurrently(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: ResultStore(tmp_path / "store"), range(200)))
    assert len(stores) == 200 and not list((tmp_path / "store").iterdir())


def test_figures_from_a_store(tiny, tmp_path):
    from robustbench_dice.figures import write_figures

    store = ResultStore(tmp_path / "store")
    run_suite(tiny, store, jobs=1, show_progress=False)
    written = write_figures(store, tmp_path / "no-influence-yet", tmp_path / "figures")
    names = {p.name for p in written}
    assert {
        "accuracy_curves_ring_digits_mlp_6n_1b_iid.png",
        "accuracy_curves_complete_digits_mlp_6n_1b_iid.pdf",
        "detection_auc_complete_digits_mlp_6n_1b_iid.png",
        "roc_curves_complete_digits_mlp_6n_1b_iid.png",
    } <= names
    assert not any(n.startswith(("influence_curves", "topology_influence")) for n in names)  # nothing tracked
    assert all(p.stat().st_size > 1000 for p in written)
    assert (
        main(
            [
                "figures",
                "--store",
                str(tmp_path / "store"),
                "--out",
                str(tmp_path / "f2"),
                "--influence",
                str(tmp_path / "none"),
                "--suite",
                "all",
            ]
        )
        == 0
    )
    assert {p.name for p in (tmp_path / "f2").iterdir()} >= {"accuracy_curves_ring_digits_mlp_6n_1b_iid.png"}


def test_run_command_lists_failed_runs_with_their_error(tmp_path, capsys):
    path = tmp_path / "skewed.toml"  # a seeded Dirichlet split that leaves some node short: a failure no check foresees
    path.write_text(
        '[suite]\ntopologies = ["ring"]\nattacks = ["none"]\ndefenses = ["gossip"]\nnodes = [32]\nbyzantine = [0]\n'
        'partitions = ["dirichlet"]\nseeds = [0, 1]\n[suite.base]\nrounds = 2\ndirichlet_alpha = 0.01\n'
    )
    store = tmp_path / "s"
    args = ["run", "--suite", str(path), "--store", str(store), "--tables", str(tmp_path / "t"), "--quiet"]
    assert main([*args, "--jobs", "1"]) == 1  # failed runs make the command fail
    out = capsys.readouterr().out
    assert out.count("  failed: ConfigError: dirichlet(alpha=0.01) never gave every one of 32 nodes >= 40") == 2
    assert f"{store}/logs/" in out


@pytest.mark.parametrize(
    "grid,message",
    [
        (  # every seed fails: the pool cannot give 1024 nodes 40 samples each
            "nodes = [1024]\n",
            "2 run\\(s\\) of suite 'bad' \\(dataset digits, model mlp, 1024 nodes, partition iid\\) would each fail:"
            " the training pool has 1437 samples, too few for 1024 nodes x 40 samples each",
        ),
        (  # a suite crosses every model with every dataset: the CNN cannot take MNIST-1D's vectors
            "nodes = [8]\ndatasets = ['digits', 'mnist1d']\nmodels = ['mlp', 'cnn']\n",
            "2 run\\(s\\) of suite 'bad' \\(dataset mnist1d, model cnn, 8 nodes, partition iid\\) would each fail:"
            " model 'cnn' needs image inputs",
        ),
        (
            "nodes = [8]\ndatasets = ['mnist']\n",
            "2 run\\(s\\) of suite 'bad' use dataset 'mnist': dataset 'mnist' needs data_root",
        ),
    ],
)
def test_runs_that_would_fail_whatever_their_seed_stop_the_suite_before_any_run(tmp_path, capsys, grid, message):
    """Each of these was one failed run per cell before, found only after the suite ran (and retried every time)."""
    path = tmp_path / "bad.toml"
    path.write_text(f'[suite]\ntopologies = ["ring"]\nseeds = [0, 1]\n{grid}[suite.base]\nrounds = 2\n')
    store = tmp_path / "s"
    args = ["run", "--suite", str(path), "--store", str(store), "--tables", str(tmp_path / "t"), "--jobs", "1"]
    assert main([*args, "--dry-run"]) == 2  # a dry run says so too
    assert re.search(message, capsys.readouterr().err)
    assert main([*args, "--quiet"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not list(store.glob("*.json")) and not (tmp_path / "t").exists()  # nothing was run or written


def test_a_cuda_suite_on_a_machine_without_cuda_fails_before_any_run(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu.toml"
    path.write_text('[suite]\ntopologies = ["ring"]\nseeds = [0, 1]\n[suite.base]\nrounds = 2\ndevice = "cuda"\n')
    store = tmp_path / "s"
    args = ["run", "--suite", str(path), "--store", str(store), "--tables", str(tmp_path / "t"), "--jobs", "1"]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "2 run(s) of suite 'gpu' ask for device 'cuda', and torch sees no CUDA device" in err
    assert not list(store.glob("*.json")) and not (tmp_path / "t").exists()  # nothing was run or written
    from robustbench_dice.runner import check_devices_here
    from robustbench_dice.suite import load_suite

    check_devices_here(load_suite(str(path)), [])  # nothing left to run: nothing to refuse


def test_robustness_figure_and_worst_cases_follow_the_worst_attack_table(tiny, tmp_path, capsys):
    from robustbench_dice.figures import write_figures
    from robustbench_dice.tables import summary_rows, worst_case_values, worst_cases

    path = tmp_path / "counts.toml"
    path.write_text(TINY.replace("byzantine = [1]", "byzantine = [1, 2]").replace("seeds = [0, 1]", "seeds = [0]"))
    store = ResultStore(tmp_path / "store")
    run_suite(load_suite(str(path)), store, jobs=1, show_progress=False)
    write_tables(store, tmp_path / "tables")
    with open(tmp_path / "tables" / "worst_attack.csv") as f:
        table = list(csv.DictReader(f))
    rows = summary_rows(store.records())
    cases = worst_cases(rows)
    assert len(table) == sum(len(by_defense) for by_defense in cases.values()) == 2 * 2 * 3
    seeds = worst_case_values(rows)  # the worst attack's accuracy seed by seed: what the figure's bars come from
    for row in table:
        cell = ("digits", "mlp", 6, int(row["byzantine"]), "iid", row["topology"])
        expected = [
            r["final_accuracy_mean"]
            for r in rows
            if (r["byzantine"], r["topology"], r["defense"], r["attack"])
            == (*cell[3:4], cell[5], row["defense"], row["worst_attack"])
        ]
        assert seeds[cell][row["defense"]] == (expected or None)
    for row in table:
        mean = cases[("digits", "mlp", 6, int(row["byzantine"]), "iid", row["topology"])][row["defense"]]
        assert row["mean"] == ("" if mean is None else f"{mean:.6f}")
    assert cases[("digits", "mlp", 6, 1, "iid", "ring")]["krum"] is None  # declined: no point, the table's n/a
    assert cases[("digits", "mlp", 6, 1, "iid", "complete")]["krum"] is not None
    written = write_figures(store, tmp_path / "none", tmp_path / "figures", kinds=["robustness"])
    assert sorted(p.name for p in written) == ["robustness_digits_mlp_6n_iid.pdf", "robustness_digits_mlp_6n_iid.png"]
    with pytest.raises(ValueError, match="unknown figure kind.*'robust'.*known: accuracy_curves"):
        write_figures(store, tmp_path / "none", tmp_path / "figures", kinds=["robust"])
    # one Byzantine count: nothing to draw against
    single = ResultStore(tmp_path / "single")
    run_suite(tiny, single, jobs=1, show_progress=False)
    assert write_figures(single, tmp_path / "none", tmp_path / "f1", kinds=["robustness"]) == []
    # the CLI's --kind draws only that kind
    args = ["figures", "--store", str(store.root), "--influence", str(tmp_path / "none"), "--suite", "all"]
    assert main([*args, "--out", str(tmp_path / "f2"), "--kind", "robustness"]) == 0
    assert {p.name.split("_")[0] for p in (tmp_path / "f2").iterdir()} == {"robustness"}
    with pytest.raises(SystemExit):
        main([*args, "--kind", "robust"])
    assert "invalid choice: 'robust'" in capsys.readouterr().err


def test_rank_test_is_friedman_with_the_nemenyi_difference_and_wilcoxon_for_two():
    from robustbench_dice.tables import rank_test

    rng = np.random.default_rng(0)
    worst = rng.random((10, 9)).tolist()  # 10 cells, 9 defenses, no ties
    ranks = np.array([scipy.stats.rankdata([-v for v in row]) for row in worst])
    n, k = ranks.shape
    chi2 = 12 * n / (k * (k + 1)) * float((ranks.mean(0) ** 2).sum()) - 3 * n * (k + 1)  # Demsar (2006), eq. 1
    p = scipy.stats.chi2.sf(chi2, k - 1)
    # q_0.05 for 9 classifiers is 3.102 in Demsar's Table 5(a): CD = q sqrt(k (k + 1) / (6 N))
    critical = 3.102 * np.sqrt(k * (k + 1) / (6 * n))
    sentence = rank_test(worst)
    assert f"over the 10 cells: chi-square {chi2:.1f}, p = {p:.2g}." in sentence
    assert f"critical difference at alpha = 0.05: {critical:.2f} " in sentence
    assert "every cell ties" in rank_test([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]])
    two = [[0.9, 0.8], [0.7, 0.6], [0.5, 0.45], [0.3, 0.1], [0.6, 0.55], [0.8, 0.7]]
    assert rank_test(two) == "Wilcoxon signed-rank test over the 6 cells: p = 0.031 (two-sided)."
    assert rank_test([[0.9, 0.9]]) == "Wilcoxon signed-rank test over the 1 cell: every cell ties."
    assert rank_test([[0.9, 0.8, 0.7]]) == "Friedman test: needs at least 3 defenses and 2 cells (here 3 and 1)."


def test_robustness_figure_takes_any_number_of_defenses(tmp_path, monkeypatch):
    import robustbench_dice.figures as figures

    cases = {
        ("digits", "mlp", 16, b, "iid", "ring"): {
            f"d{i}": (None if i == 3 and b == 2 else [0.9 - 0.05 * b, 0.91 - 0.05 * b][: 1 + i % 2]) for i in range(12)
        }
        for b in (1, 2, 4)
    }
    monkeypatch.setattr(figures, "summary_rows", lambda records: records)
    monkeypatch.setattr(figures, "worst_case_values", lambda rows: cases)
    written = figures.robustness_curves([], tmp_path)
    assert [p.name for p in written] == ["robustness_digits_mlp_16n_iid.png", "robustness_digits_mlp_16n_iid.pdf"]


def test_accuracy_curves_draw_the_seeds_spread_around_their_mean(tmp_path, monkeypatch):
    import robustbench_dice.figures as figures

    scenario = {"topology": "ring", "dataset": "digits", "model": "mlp", "nodes": 4, "byzantine": 1}
    scenario |= {"partition": "iid", "attack": "none", "attack_params": {}, "defense_params": {}}

    def record(defense: str, accuracies: list[float]) -> dict:
        curve = [{"round": 10 * i, "accuracy_mean": a} for i, a in enumerate(accuracies)]
        return {"scenario": scenario | {"defense": defense}, "result": {"curve": curve}}

    records = [record("gossip", [0.1, 0.5]), record("gossip", [0.3, 0.9]), record("median", [0.2, 0.6])]
    drawn = {}

    def keep(fig, out, name):
        (ax,) = fig.axes
        drawn["lines"] = {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines()}
        drawn["bands"] = [band.get_paths()[0].vertices[:, 1] for band in ax.collections]
        return []

    monkeypatch.setattr(figures, "_save", keep)
    figures.accuracy_curves(records, tmp_path)
    assert drawn["lines"] == {"gossip": pytest.approx([0.2, 0.7]), "median": pytest.approx([0.2, 0.6])}
    (band,) = drawn["bands"]  # one seed of median: no band
    spread = np.std([[0.1, 0.5], [0.3, 0.9]], axis=0, ddof=1)
    assert min(band) == pytest.approx(min(np.array([0.2, 0.7]) - spread))
    assert max(band) == pytest.approx(max(np.array([0.2, 0.7]) + spread))


def test_only_cuts_the_grid_and_the_tables_still_cover_the_whole_suite(tmp_path, capsys):
    from robustbench_dice.suite import narrow, parse_only

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    suite = load_suite(str(path))
    only = parse_only(["defense=gossip,dice_prune(trust=reported)", "seed=1", "topology=ring"])
    assert only == {"defense": ("gossip", "dice_prune(trust=reported)"), "seed": ("1",), "topology": ("ring",)}
    (cut,) = narrow([suite], only)
    assert [d.label for d in cut.defenses] == ["gossip", "dice_prune(trust=reported)"]
    assert (cut.seeds, cut.topologies, cut.attacks) == ((1,), ("ring",), suite.attacks)  # unnamed axes stay whole
    assert [d.label for d in narrow([suite], parse_only(["defense=dice_prune"]))[0].defenses] == [
        "dice_prune(trust=reported)"
    ]  # a plugin's name takes every variant of it
    for bad, message in [
        (["defense"], "--only takes KEY=VALUE"),
        (["defense="], "--only takes KEY=VALUE"),
        (["defence=gossip"], "unknown key 'defence' (did you mean 'defense'?); keys: dataset, model"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_only(bad)
    with pytest.raises(ConfigError, match=r"--only defense=median matches nothing in this suite; its defense values: "):
        narrow([suite], parse_only(["defense=gossip,median"]))

    args = ["run", "--suite", str(path), "--store", str(tmp_path / "s"), "--tables", str(tmp_path / "t"), "--quiet"]
    assert main([*args, "--jobs", "1", "--only", "defense=gossip", "--only", "seed=0", "--dry-run"]) == 0
    assert "4 runs (2 topologies x 2 attacks) of its 24 (--only); 0 stored, 4 to run" in capsys.readouterr().out
    assert main([*args, "--jobs", "1", "--only", "defense=gossip", "--only", "seed=0"]) == 0
    out = capsys.readouterr().out
    assert "computed 4, already stored 0, skipped 0, failed 0 of 4" in out
    assert "note: 20 of the suite's 24 runs are not in the store yet" in out
    rows = _csv_rows(tmp_path / "t" / "summary.csv")
    assert len(rows) == 24  # the whole suite, the runs not stored yet as such
    assert {(r["defense"], r["seed"]) for r in rows if r["status"] != "missing"} == {("gossip", "0")}
    assert main([*args, "--jobs", "1"]) == 0  # the rest of the suite; the tables then hold all of it
    out = capsys.readouterr().out
    assert "computed 16, already stored 4, skipped 4, failed 0 of 24" in out and "not in the store" not in out
    rows = _csv_rows(tmp_path / "t" / "summary.csv")
    assert len(rows) == 24 and "missing" not in {r["status"] for r in rows}
    assert main([*args, "--only", "attack=sign_flip"]) == 2
    assert "--only attack=sign_flip matches nothing in this suite; its attack values: none, label_flip" in (
        capsys.readouterr().err
    )


def test_tables_and_figures_of_a_large_suite_say_they_are_reading_the_store(tiny, tmp_path, monkeypatch, capsys):
    import robustbench_dice.cli as cli

    store = tmp_path / "s"
    run_suite(tiny, ResultStore(store), jobs=1, show_progress=False)
    suite = tmp_path / "tiny.toml"
    args = ["--suite", str(suite), "--store", str(store)]
    assert main(["tables", *args, "--out", str(tmp_path / "t")]) == 0
    assert "reading" not in capsys.readouterr().out  # a small suite reads fast: no line
    monkeypatch.setattr(cli, "LARGE_SUITE", len(tiny.scenarios()))
    assert main(["tables", *args, "--out", str(tmp_path / "t")]) == 0
    assert f"reading {len(tiny.scenarios())} stored runs from {store}/ for the tables" in capsys.readouterr().out
    assert main(["figures", *args, "--out", str(tmp_path / "f"), "--kind", "accuracy_curves"]) == 0
    assert f"reading the runs of {suite} from {store}/ for the figures" in capsys.readouterr().out


def test_table_cells_escape_what_latex_and_markdown_would_read_as_markup():
    from robustbench_dice.tables import _block_row

    md: list[str] = []
    tex: list[str] = []
    # a plugin's string parameter may hold any of these; unescaped, '&' adds a LaTeX column and '|' a Markdown one
    label = "mine(tag=a&b|c_50%$#{x}~^\\)"
    _block_row(md, tex, [label], ["0.951 ± 0.003"])
    assert tex == [
        "mine(tag=a\\&b|c\\_50\\%\\$\\#\\{x\\}\\textasciitilde{}\\textasciicircum{}\\textbackslash{}) & 0.951 $\\pm$ 0.003 \\\\"
    ]
    assert md == ["| mine(tag=a&b\\|c_50%$#{x}~^\\) | 0.951 ± 0.003 |"]
