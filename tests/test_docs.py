"""The Python examples in the docs run as written."""

import argparse
import csv
import re
import shlex
import statistics
from pathlib import Path

import pytest

from robustbench_dice import Scenario, simulate

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
DOC_FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.glob("*.md"))]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("block", _python_blocks(DOCS / "dice.md"), ids=lambda block: "dice.md")
def test_dice_doc_example_runs_and_estimate_tracks_the_ground_truth(block, capsys):
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/dice.md", "exec"), namespace)  # our own docs, not user input
    estimate, truth = namespace["estimate"], namespace["truth"]
    assert estimate.shape == truth.shape == (3, 8, 8)
    for r in range(3):  # the example's own claim: the estimate follows the counterfactual, source by source
        assert ((estimate[r].mean(1) - truth[r].mean(1)).abs() < 0.2 * truth[r].mean(1).abs()).all()
    assert capsys.readouterr().out.count("truth") == 3


@pytest.mark.parametrize("block", _python_blocks(DOCS.parent / "README.md"), ids=lambda block: "README.md")
def test_readme_python_example_runs(block, capsys):
    exec(compile(block, "README.md", "exec"), {})  # our own README, not user input
    accuracy_mean, accuracy_worst = map(float, capsys.readouterr().out.split())
    assert 0.5 < accuracy_worst <= accuracy_mean <= 1.0


README = DOCS.parent / "README.md"
RESULTS = DOCS.parent / "results"


def _rows_of_table_after(path: Path, marker: str) -> list[list[str]]:
    """Cells of the body rows of the first Markdown table after the line containing ``marker``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    table: list[str] = []
    for line in lines[start:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in table[2:]]


@pytest.mark.parametrize(
    "marker,table,rows",
    [
        ("Quick suite, mean honest accuracy", "tables/accuracy.md", 16),
        ("Quick suite, worst case over the attacks", "tables/worst_attack.md", 4),
        ("Edge-level detection AUC (", "tables/detection_auc.md", 16),
        ("Full suite, worst case over the attacks", "full/tables/worst_attack.md", 7),
        ("Full suite, defenses ranked by their worst case", "full/tables/ranking.md", 11),
        ("MNIST-1D (the same cells)", "full/tables/ranking.md", 11),
    ],
)
def test_readme_suite_tables_quote_the_committed_tables(marker, table, rows):
    committed = (RESULTS / table).read_text().splitlines()
    quoted = _rows_of_table_after(README, marker)
    assert len(quoted) == rows
    for cells in quoted:
        assert "| " + " | ".join(cells) + " |" in committed


def test_readme_detection_summary_quotes_the_detection_benchmark():
    committed = {
        (cells[0], cells[1]): cells
        for cells in _rows_of_table_after(RESULTS / "detection_label_flip.md", "| topology | defense |")
    }
    quoted = _rows_of_table_after(README, "Three label flippers among 16 nodes")
    assert len(quoted) == 13
    for defense, *pairs in quoted:
        for topology, auc, accuracy in zip(("ring", "torus", "exponential"), pairs[::2], pairs[1::2], strict=True):
            row = committed[(topology, defense)]
            if row[2].startswith("skipped"):
                assert auc.startswith("skipped") and accuracy == ""
                continue
            assert auc == ("1.000" if row[2] == "1.000 ± 0.000" else row[2])
            assert accuracy == row[4].split(" ±")[0]


def _alignment_pearson(folder: str = "influence") -> dict[tuple[str, str, str], list[str]]:
    """(model, topology, estimator) -> Pearson at r = 1, 2, 3, at the default learning rate 0.1."""
    rows = _rows_of_table_after(RESULTS / folder / "alignment_summary.md", "| model | topology | lr |")
    return {(r[0], r[1], r[3]): r[5:8] for r in rows if r[2] == "0.1"}


@pytest.mark.parametrize(
    "folder,readme_marker,doc_marker",
    [
        ("influence", "Agreement with ground truth on digits", "Pearson correlation of `GT_r` (mean over receivers)"),
        ("influence/one_sample", "| one data point removed, lr 0.1 |", "Pearson correlation of `GT_r` at lr 0.1, one"),
    ],
)
def test_readme_and_dice_doc_quote_the_committed_alignment(folder, readme_marker, doc_marker):
    pearson = _alignment_pearson(folder)
    topologies = ("ring", "torus", "exponential", "one_peer_exponential")
    readme = _rows_of_table_after(README, readme_marker)
    assert [r[0] for r in readme] == ["logreg", "mlp", "mlp without curvature (H = 0)"]
    for label, *cells in readme:
        model, estimator = label.split()[0], ("no_curvature" if "without" in label else "dice")
        for topology, cell in zip(topologies, cells, strict=True):
            assert cell.replace("**", "").split(" / ") == pearson[(model, topology, estimator)]
    doc = _rows_of_table_after(DOCS / "dice.md", doc_marker)
    assert len(doc) == 8
    for model, topology, r1, r2, r3, r3_flat in doc:
        topology = topology.replace("one-peer ", "one_peer_")
        assert [r1.replace("**", ""), r2.replace("**", ""), r3.replace("**", "")] == pearson[(model, topology, "dice")]
        assert r3_flat == pearson[(model, topology, "no_curvature")][2]


def test_readme_quotes_the_committed_poisoning_aucs():
    summary = _rows_of_table_after(RESULTS / "influence" / "poisoning" / "poisoning_summary.md", "| topology | r |")
    auc = {(row[0], row[1]): row[3] for row in summary}  # (topology, r) -> AUC of the estimate
    quoted = _rows_of_table_after(README, "| r | ring | torus | exponential | Erdos-Renyi |")
    assert [row[0] for row in quoted] == ["1", "2", "3"]
    for r, *cells in quoted:
        assert cells == [auc[(t, r)] for t in ("ring", "torus", "exponential", "erdos_renyi")]


def test_citation_file_names_the_packaged_version_and_license():
    import tomllib

    project = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]
    citation = (DOCS.parent / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(project['version'])}$", citation, flags=re.MULTILINE)
    assert re.search(rf"^license: {project['license']}$", citation, flags=re.MULTILINE)
    assert (DOCS.parent / "LICENSE").read_text().startswith(f"{project['license']} License")


def test_scenario_doc_lists_every_field_in_order_with_its_default_and_help():
    import dataclasses

    from robustbench_dice import Scenario

    rows = re.findall(r"^\| `(\w+)` \| `(.*?)` \| (.*) \|$", (DOCS / "scenario.md").read_text(), flags=re.MULTILINE)
    fields = dataclasses.fields(Scenario)
    assert [name for name, _, _ in rows] == [f.name for f in fields]
    for (name, default, meaning), f in zip(rows, fields, strict=True):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert default == repr(list(value) if isinstance(value, tuple) else value), name
        assert meaning == f.metadata["help"], name


def test_suite_doc_lists_the_grid_keys_with_their_fields_and_defaults_and_its_example_loads():
    import dataclasses

    from robustbench_dice.suite import GRID_FIELDS, GRID_KEYS, Suite, load_suite

    rows = re.findall(r"^\| `(\w+)` \| (.*?) \| `(.*)` \|$", (DOCS / "suites.md").read_text(), flags=re.MULTILINE)
    assert [key for key, _, _ in rows] == list(GRID_KEYS)
    defaults = {f.name: f.default for f in dataclasses.fields(Suite)}
    for key, fields, default in rows:
        assert re.findall(r"`(\w+)`", fields) == [f for f, k in GRID_FIELDS.items() if k == key]
        shown = [getattr(v, "name", v) for v in defaults[key]]  # plugin specs by name
        assert default == "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in shown) + "]"
    suite = load_suite(str(DOCS / "example-suite.toml"))
    assert len(suite.scenarios()) == 36 and suite.name == "example-suite"


def test_readme_lists_the_summary_columns_in_order():
    from robustbench_dice.tables import SUMMARY_COLUMNS

    readme = (DOCS.parent / "README.md").read_text()
    paragraph = readme[readme.index("`summary.csv` has one row per run") :].split("\n\n")[0]
    quoted = re.findall(r"`(\w+)`", paragraph)
    assert set(quoted) <= set(SUMMARY_COLUMNS), set(quoted) - set(SUMMARY_COLUMNS)
    assert list(dict.fromkeys(quoted)) == list(SUMMARY_COLUMNS)  # each column, in the file's order


def _full_worst_cases(partition: str, byzantine: int) -> dict[tuple[str, str], float]:
    """(topology, defense) -> the full suite's worst case on digits, from the committed worst_attack.csv."""
    with open(RESULTS / "full" / "tables" / "worst_attack.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        (r["topology"], r["defense"]): float(r["mean"])
        for r in rows
        if (r["dataset"], r["partition"], r["byzantine"]) == ("digits", partition, str(byzantine)) and r["mean"]
    }


def test_readme_robustness_paragraph_quotes_the_committed_worst_cases():
    text = " ".join(README.read_text().split())
    start = text.index("Plain gossip's worst case falls from")
    paragraph = text[start : text.index("Edge-level detection AUC", start)]
    iid1, iid4, dirichlet4 = _full_worst_cases("iid", 1), _full_worst_cases("iid", 4), _full_worst_cases("dirichlet", 4)

    def gossip(cases: dict[tuple[str, str], float]) -> str:
        values = [v for (_, d), v in cases.items() if d == "gossip"]
        return f"{min(values):.2f}-{max(values):.2f}"

    assert f"falls from {gossip(iid1)} with one Byzantine node to {gossip(iid4)} with four" in paragraph

    def spread(values: list[float]) -> str:
        return f"{min(values):.3f}-{max(values):.3f}"

    dice = [v for (_, d), v in iid4.items() if d == "dice_prune"]
    assert len(dice) == 7 and f"DICE pruning to chance on every graph ({spread(dice)};" in paragraph
    below = {(t, d): v for (t, d), v in iid4.items() if v < 0.82 and d not in ("gossip", "dice_prune")}
    below = {k: v for k, v in below.items() if k[0] != "one_peer_exponential"}
    clipped = [v for (_, d), v in below.items() if d == "clipped_gossip"]
    assert f"clipped gossip to {spread(clipped)} on the Erdos-Renyi, exponential, small-world and torus graphs" in (
        paragraph
    ) and sorted(t for t, d in below if d == "clipped_gossip") == ["erdos_renyi", "exponential", "small_world", "torus"]
    named = {
        ("erdos_renyi", "median"): "the median to {:.3f} (Erdos-Renyi)",
        ("small_world", "median"): "and {:.3f} (small world)",
        ("exponential", "ios(f=auto)"): "IOS on the exponential graph ({:.3f}, under `min_sum`)",
        ("torus", "ios(f=auto)"): "the torus ({:.3f})",
    }
    for key, value in below.items():
        if key[1] != "clipped_gossip":
            assert key in named and named[key].format(value) in paragraph, key  # every exception is named
    one_peer = {d: f"{v:.3f}" for (t, d), v in iid4.items() if t == "one_peer_exponential"}
    assert one_peer["median"] == one_peer["clipped_gossip"] == one_peer["gossip"]
    assert f"both are plain gossip ({one_peer['gossip']})" in paragraph
    assert f"only BALANCE ({one_peer['balance']}) resists" in paragraph
    assert f"DICE pruning ({one_peer['dice_prune']}) and the geometric median ({one_peer['geometric_median']})" in (
        paragraph
    )
    for topology in ("complete", "exponential"):
        pair = f"{dirichlet4[(topology, 'clipped_gossip')]:.3f} and {dirichlet4[(topology, 'geometric_median')]:.3f}"
        assert f"{topology}: {pair}" in paragraph
    balance = [v for (_, d), v in dirichlet4.items() if d == "balance"]
    assert len(balance) == 7 and f"BALANCE keeps {min(balance):.2f}-{max(balance):.2f} on every graph" in paragraph


def test_readme_ranking_significance_follows_the_committed_rank_tests():
    text = " ".join(README.read_text().split())
    start = text.index("How sure is this order?")
    paragraph = text[start : text.index("Full suite, each defense's worst case", start)]
    ranking = (RESULTS / "full" / "tables" / "ranking.md").read_text()
    tests = dict(re.findall(r"## (\w+|all) [^\n]*\n.*?Friedman test over the \d+ cells: ([^\n]*)", ranking, re.DOTALL))
    with open(RESULTS / "full" / "tables" / "ranking.csv") as f:
        ranks = [(r["dataset"], r["defense"], float(r["mean_rank"])) for r in csv.DictReader(f)]

    def told_apart(dataset: str, a: str, b: str) -> bool:
        rank = {d: r for ds, d, r in ranks if ds == dataset}
        return abs(rank[a] - rank[b]) > float(re.search(r"alpha = 0.05: ([\d.]+)", tests[dataset]).group(1))

    chi = {
        ds: re.search(r"chi-square [\d.]+, p = [\d.e-]+", tests[ds]).group(0).rstrip(".")
        for ds in ("digits", "mnist1d")
    }
    assert f"({chi['digits']})" in paragraph and f"MNIST-1D ({chi['mnist1d']}," in paragraph
    bottom = {"krum(f=auto)", "gossip", "dice_prune"}
    for dataset, apart in (("digits", 3), ("mnist1d", 5)):  # "the N best-ranked are told apart from the bottom three"
        order = [d for ds, d, _ in ranks if ds == dataset]  # the csv is sorted by mean rank
        assert set(order[-3:]) == bottom
        assert all(told_apart(dataset, a, b) for a in order[:apart] for b in order[-3:])
        assert not all(told_apart(dataset, order[apart], b) for b in order[-3:])
        assert not any(told_apart(dataset, a, b) for a in order[:8] for b in order[:8])
    digits = [d for ds, d, _ in ranks if ds == "digits"]
    assert all(
        told_apart("digits", a, b) and not told_apart("digits", a, "krum(f=auto)")
        for a in digits[3:6]
        for b in ("gossip", "dice_prune")
    )  # "the next three from gossip and DICE pruning only"
    assert "critical difference is 4.77" in paragraph and "(critical difference 3.38)" in paragraph
    order = [d for ds, d, _ in ranks if ds == "all"]
    assert set(order[-3:]) == bottom and order[7] == "median"
    assert all(told_apart("all", a, b) for a in order[:8] for b in ("gossip", "dice_prune"))
    assert all(told_apart("all", a, "krum(f=auto)") for a in order[:7]) and not told_apart("all", "median", order[8])
    assert "all eight are told apart from plain gossip and DICE pruning, and all but the median from Krum" in paragraph
    pairs = [(a, b) for i, a in enumerate(order[:8]) for b in order[i + 1 : 8] if told_apart("all", a, b)]
    assert pairs == [("nnm(f=auto)", "median")]
    assert "NNM (2.50) from the median (6.25), by a margin of 0.37" in paragraph


def test_readme_ubar_paragraph_quotes_the_committed_ranking():
    text = " ".join(README.read_text().split())
    paragraph = text[text.index("UBAR, added three versions ago") : text.index("How sure is this order?")]
    with open(RESULTS / "full" / "tables" / "ranking.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] in ("digits", "mnist1d")]
    order = {ds: [r["defense"] for r in rows if r["dataset"] == ds] for ds in ("digits", "mnist1d")}
    ubar = {r["dataset"]: r for r in rows if r["defense"] == "ubar(f=auto)"}
    assert (
        order["digits"].index("ubar(f=auto)") == 5
        and f"sixth on digits ({float(ubar['digits']['mean_rank']):.2f})" in paragraph
    )
    rank = {r["defense"]: float(r["mean_rank"]) for r in rows if r["dataset"] == "mnist1d"}
    assert order["mnist1d"][6] == "ubar(f=auto)" and sorted(rank.values()).count(rank["ubar(f=auto)"]) == 1
    assert f"seventh on MNIST-1D ({rank['ubar(f=auto)']:.2f})" in paragraph
    lowest = {r["defense"]: float(r["worst_case_min"]) for r in rows if r["dataset"] == "digits"}
    assert max(lowest, key=lowest.get) == "ubar(f=auto)" and f"({lowest['ubar(f=auto)']:.3f})" in paragraph
    assert ubar["digits"]["cells"] == "24" and "24 of the 42 cells" in paragraph
    for dataset, below_it in (("digits", {"krum(f=auto)", "dice_prune"}), ("mnist1d", {"krum(f=auto)"})):
        clean = {r["defense"]: float(r["no_attack_mean"]) for r in rows if r["dataset"] == dataset}
        assert {d for d, v in clean.items() if v < clean["ubar(f=auto)"]} == below_it
        assert f"({clean['ubar(f=auto)']:.3f})" in paragraph
    torus = simulate(Scenario(byzantine=2, topology="torus", defense="ubar", defense_params={"f": 2}, seed=0))
    wrongly = f"leaves out {torus.honest_edges_wrongly_pruned} of the {torus.honest_edges} honest in-edges"
    assert wrongly == "leaves out 33 of the 48 honest in-edges" and wrongly in paragraph


def test_readme_attack_strength_paragraph_quotes_the_committed_table():
    text = " ".join(README.read_text().split())
    start = text.index("Which attacks matter?")
    paragraph = text[start : text.index("Full suite, each defense's worst case", start)]
    with open(RESULTS / "full" / "tables" / "attack_strength.csv") as f:
        rows = {(r["dataset"], r["attack"], r["defense"]): r for r in csv.DictReader(f)}

    def drop(dataset: str, attack: str, defense: str) -> float:
        return float(rows[(dataset, attack, defense)]["mean_drop"])

    def most_often_worst(dataset: str, defense: str) -> tuple[str, int, int]:
        """The attack most often the defense's worst (checked to be the only one), in how many cells it is, and the
        defense's cells."""
        mine = [r for (ds, _, d), r in rows.items() if (ds, d) == (dataset, defense)]
        top = max(mine, key=lambda r: int(r["worst_in"]))
        assert sum(int(r["worst_in"]) == int(top["worst_in"]) for r in mine) == 1, (dataset, defense)  # no tie
        return top["attack"], int(top["worst_in"]), sum(int(r["worst_in"]) for r in mine)

    assert f"the same-value attack costs {drop('digits', 'same_value', 'gossip'):.3f} on digits" in paragraph
    assert f"sign flipping {drop('digits', 'sign_flip', 'gossip'):.3f}" in paragraph
    assert f"gradient scaling {drop('digits', 'gradient_scale', 'gossip'):.3f}" in paragraph
    for dataset in ("digits", "mnist1d"):
        for defense in ("clipped_gossip", "geometric_median", "median"):
            assert most_often_worst(dataset, defense)[0] == "same_value"
        assert most_often_worst(dataset, "dice_prune") == ("same_value", 42, 42)
    distance_rules = ("balance", "ios(f=auto)", "krum(f=auto)", "nnm(f=auto)", "ubar(f=auto)")
    to_distance_rules = [drop(ds, "same_value", d) for ds in ("digits", "mnist1d") for d in distance_rules]
    assert f"{max(to_distance_rules):.3f}" == "0.020" and "(BALANCE, IOS, Krum, NNM, UBAR) lose at most 0.020" in (
        paragraph
    )
    assert most_often_worst("digits", "balance") == ("gradient_scale", 34, 42) and "(34 of 42 cells)" in paragraph
    assert most_often_worst("digits", "krum(f=auto)") == ("free_ride", 7, 10) and "(7 of its 10 cells)" in paragraph
    assert most_often_worst("digits", "ubar(f=auto)") == ("free_ride", 8, 24) and "(8 of its 24)" in paragraph
    assert most_often_worst("mnist1d", "ubar(f=auto)") == ("free_ride", 7, 24)
    assert (
        rows[("mnist1d", "min_sum", "ubar(f=auto)")]["worst_in"]
        == rows[("mnist1d", "min_max", "ubar(f=auto)")]["worst_in"]
        == "6"
    )
    assert "MNIST-1D too, 7 of 24, with `min_sum` and `min_max` next at 6 each" in paragraph
    assert most_often_worst("mnist1d", "ios(f=auto)") == ("min_sum", 14, 24) and "(14 of 24)" in paragraph
    others = ("balance", "clipped_gossip", "dice_prune", "geometric_median", "median", "trimmed_mean(trim=auto)")
    optimised = [drop("mnist1d", a, d) for a in ("min_max", "min_sum") for d in others]
    assert (
        f"{min(optimised):.2f}-{max(optimised):.2f}" == "0.03-0.06"
        and "cost the other robust rules 0.03-0.06" in paragraph
    )
    on_digits = [drop("digits", a, d) for (ds, a, d) in rows if ds == "digits" and a in ("min_max", "min_sum")]
    not_ios = [
        drop("digits", a, d)
        for (ds, a, d) in rows
        if ds == "digits" and a in ("min_max", "min_sum") and d != "ios(f=auto)"
    ]
    assert max(on_digits) > max(not_ios) and f"but IOS at most {max(not_ios):.3f}" in paragraph
    alie = [drop(ds, a, d) for (ds, a, d) in rows if a == "alie"]
    assert f"ALIE costs no defense more than {max(alie):.3f}" in paragraph
    assert f"(digits: {drop('digits', 'alie', 'krum(f=auto)'):.3f})" in paragraph


def test_readme_detection_paragraph_quotes_the_committed_summary():
    text = " ".join(README.read_text().split())
    paragraph = text[
        text.index("Which defense finds the attackers?") : text.index("Full suite, each defense's worst case")
    ]
    with open(RESULTS / "full" / "tables" / "detection_summary.csv") as f:
        rows = list(csv.DictReader(f))
    auc = {(r["dataset"], r["defense"], r["attack"]): float(r["mean_auc"]) for r in rows if r["mean_auc"]}

    def ranking(dataset: str) -> list[tuple[float, str]]:
        defenses = {d for ds, d, _ in auc if ds == dataset}
        means = {
            d: sum(v for (ds, dd, a), v in auc.items() if (ds, dd) == (dataset, d) and a != "none")
            / sum(1 for (ds, dd, a) in auc if (ds, dd) == (dataset, d) and a != "none")
            for d in defenses
        }
        return sorted(((m, d) for d, m in means.items()), reverse=True)

    first, top = ranking("digits")[0]
    assert top == "ubar(f=auto)" and f"UBAR's scores look best on digits ({first:.3f})" in paragraph
    shared = {(r["dataset"], r["defense"], r["attack"]): float(r["shared_mean_auc"]) for r in rows if r["mean_auc"]}
    attacked = {a for _, _, a in shared if a != "none"}
    for dataset, top_two, words in (
        ("digits", ["nnm(f=auto)", "dice_prune"], "on digits, {:.3f} (then DICE pruning's, {:.3f})"),
        ("mnist1d", ["nnm(f=auto)", "ios(f=auto)"], "on MNIST-1D, {:.3f} (then IOS's, {:.3f})"),
    ):
        means = {
            d: sum(v for (ds, dd, a), v in shared.items() if (ds, dd) == (dataset, d) and a != "none") / len(attacked)
            for (ds, d, _) in shared
            if ds == dataset
        }
        order = sorted(means, key=means.get, reverse=True)
        assert order[:2] == top_two and {r["shared_cells"] for r in rows if r["dataset"] == dataset} == {"10"}
        assert words.format(means[top_two[0]], means[top_two[1]]) in paragraph
    # the split by attack: DICE pruning's scores rank best under the quiet attacks and near last under the loud ones
    rank = {
        (r["dataset"], r["defense"], r["attack"]): float(r["shared_mean_rank"]) for r in rows if r["attack"] != "none"
    }
    quiet, loud = (
        ("alie", "ipm", "free_ride", "mimic"),
        ("gaussian", "gradient_scale", "label_flip", "sign_flip", "min_max", "min_sum", "same_value"),
    )
    assert {a for _, _, a in rank} == {*quiet, *loud, "dissensus"}
    mine = {(ds, a): v for (ds, d, a), v in rank.items() if d == "dice_prune"}
    for dataset in ("digits", "mnist1d"):
        for attack in quiet:
            assert mine[(dataset, attack)] == min(v for (ds, _, a), v in rank.items() if (ds, a) == (dataset, attack))
    quiet_ranks = [mine[(ds, a)] for ds in ("digits", "mnist1d") for a in quiet]
    loud_ranks = [mine[(ds, a)] for ds in ("digits", "mnist1d") for a in loud]
    assert f"under each, {min(quiet_ranks):.1f}-{max(quiet_ranks):.1f}, on the shared cells" in paragraph
    assert f"among the worst (mean rank {min(loud_ranks):.1f}-{max(loud_ranks):.1f})" in paragraph
    assert min(loud_ranks) > 6 and max(loud_ranks) <= 10
    quiet_auc = [shared[(ds, "dice_prune", a)] for ds in ("digits", "mnist1d") for a in quiet]
    assert f"near chance there (AUC {min(quiet_auc):.2f}-{max(quiet_auc):.2f})" in paragraph
    best_loud = [
        max(v for (ds, d, a), v in shared.items() if (ds, a) == (dataset, attack))
        for dataset in ("digits", "mnist1d")
        for attack in loud
    ]
    assert f"the best rule reaches AUC {min(best_loud):.2f}-{max(best_loud):.2f}" in paragraph
    same_value = (auc[("digits", "dice_prune", "same_value")], auc[("mnist1d", "dice_prune", "same_value")])
    assert "AUC over its own cells is {:.3f} on digits and {:.3f} on MNIST-1D".format(*same_value) in paragraph
    table = (RESULTS / "full" / "tables" / "detection_summary.md").read_text()
    overall = {}
    for block in table.split("\n## ")[1:]:
        dataset = block.split(" ")[0]
        body = [line.split("|") for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
        overall[dataset] = {cells[1].strip(): cells[-2].strip() for cells in body}
    for dataset in ("digits", "mnist1d"):
        assert min(overall[dataset], key=lambda d: float(overall[dataset][d])) == "nnm(f=auto)"
        assert len(overall[dataset]) == 10
    assert (
        f"({overall['digits']['nnm(f=auto)']} on digits, {overall['mnist1d']['nnm(f=auto)']} on MNIST-1D) and DICE"
        f" pruning {overall['digits']['dice_prune']} and {overall['mnist1d']['dice_prune']} of 10" in paragraph
    )
    friedman = re.findall(
        r"Friedman test over the 120 \(cell, attack\) pairs: chi-square [\d.]+, p = ([\d.e-]+)\.", table
    )
    assert len(friedman) == 2 and all(float(p) < 0.05 for p in friedman)
    assert f"(p = {friedman[0]} and {friedman[1]})" in paragraph
    # the same comparison without krum, from the per-cell table: 18 cells are then shared
    with open(RESULTS / "full" / "tables" / "detection_auc.csv") as f:
        complete = [
            r
            for r in csv.DictReader(f)
            if r["mean"] and r["note"] == "" and r["defense"] not in ("gossip", "krum(f=auto)")
        ]
    means_by: dict[str, float] = {}
    for dataset in ("digits", "mnist1d"):
        per_cell: dict[tuple[str, str], dict[tuple[str, str, str], float]] = {}
        for r in complete:
            if r["dataset"] == dataset:
                per_cell.setdefault((r["defense"], r["attack"]), {})[
                    (r["byzantine"], r["partition"], r["topology"])
                ] = float(r["mean"])
        defenses = sorted({d for d, _ in per_cell})
        attacks = sorted({a for _, a in per_cell if a != "none"})
        common = {a: set.intersection(*(set(per_cell[(d, a)]) for d in defenses)) for a in attacks}
        assert {len(c) for c in common.values()} == {18}
        means = {
            d: sum(sum(per_cell[(d, a)][c] for c in common[a]) / 18 for a in attacks) / len(attacks) for d in defenses
        }
        order = sorted(means, key=means.get, reverse=True)
        assert order[0] == "nnm(f=auto)"
        means_by[dataset] = means[order[0]]
    assert (
        f"NNM still has the highest mean on digits ({means_by['digits']:.3f}) and on MNIST-1D"
        f" ({means_by['mnist1d']:.3f})" in paragraph
    )
    gaussian = [v for (_, _, a), v in auc.items() if a == "gaussian"]
    assert f"AUC >= {min(gaussian):.3f} on both datasets" in paragraph
    hidden = [v for (_, _, a), v in auc.items() if a in ("alie", "ipm")]
    assert max(hidden) < 0.5 and f"(at most {max(hidden):.3f})" in paragraph
    free_ride = auc[("digits", "dice_prune", "free_ride")]
    assert f"({free_ride:.3f} on digits)" in paragraph and abs(free_ride - 0.5) < 0.01


def _full_accuracy_rows_with_every_seed() -> list[dict[str, str]]:
    """The full suite's ``accuracy.csv`` rows of the cells where all three seeds ran."""
    with open(RESULTS / "full" / "tables" / "accuracy.csv") as f:
        return [r for r in csv.DictReader(f) if r["mean"] and r["seeds"] == "3"]


def test_readme_mimic_paragraph_quotes_the_committed_tables():
    text = " ".join(README.read_text().split())
    start = text.index("`mimic`, added two versions ago")
    paragraph = text[start : text.index("Which defense finds the attackers?", start)]
    complete = _full_accuracy_rows_with_every_seed()
    accuracy = {
        (r["dataset"], r["byzantine"], r["partition"], r["topology"], r["attack"], r["defense"]): r for r in complete
    }
    drops: dict[tuple[str, str, str], list[float]] = {}
    for (dataset, byzantine, partition, topology, attack, defense), r in accuracy.items():
        clean = accuracy.get((dataset, byzantine, partition, topology, "none", defense))
        if attack == "mimic" and clean is not None:
            drops.setdefault((dataset, partition, defense), []).append(float(clean["mean"]) - float(r["mean"]))
    cost = {key: sum(values) / len(values) for key, values in drops.items()}

    def by_cost(dataset: str, partition: str) -> list[tuple[float, str]]:
        return sorted(((c, d) for (ds, p, d), c in cost.items() if (ds, p) == (dataset, partition)), reverse=True)

    skewed = by_cost("digits", "dirichlet")
    assert [d for _, d in skewed[:2]] == ["balance", "geometric_median"]
    assert {d for _, d in skewed[2:4]} == {"ios(f=auto)", "median"} and f"{skewed[2][0]:.3f}" == f"{skewed[3][0]:.3f}"
    assert (
        f"costs BALANCE {skewed[0][0]:.3f} on average over the cells, the geometric median {skewed[1][0]:.3f}, IOS and the median {skewed[2][0]:.3f}"
        in paragraph
    )
    assert f"costs no defense more than {by_cost('digits', 'iid')[0][0]:.3f}" in paragraph
    assert skewed[3][0] > 2 * by_cost("digits", "iid")[0][0]  # "it does what it is built for"
    for partition, words in (("iid", "with iid data"), ("dirichlet", "with Dirichlet data")):
        top, defense = by_cost("mnist1d", partition)[0]
        assert defense == "geometric_median" and f"up to {top:.3f} {words}" in paragraph
    with open(RESULTS / "full" / "tables" / "attack_strength.csv") as f:
        strength = list(csv.DictReader(f))
    for dataset, defense in {(r["dataset"], r["defense"]) for r in strength}:
        mine = {
            r["attack"]: float(r["mean_drop"]) for r in strength if (r["dataset"], r["defense"]) == (dataset, defense)
        }
        assert mine["mimic"] < max(mine.values()), (dataset, defense)  # "never the strongest for any defense"
    ubar = {
        r["attack"]: int(r["worst_in"]) for r in strength if (r["dataset"], r["defense"]) == ("digits", "ubar(f=auto)")
    }
    assert ubar["mimic"] == 4 and sum(ubar.values()) == 24 and "4 of UBAR's 24 digits cells" in paragraph
    with open(RESULTS / "full" / "tables" / "detection_summary.csv") as f:
        auc = {
            r["defense"]: float(r["mean_auc"])
            for r in csv.DictReader(f)
            if (r["dataset"], r["attack"]) == ("digits", "mimic")
        }
    by_distance = [v for d, v in auc.items() if d not in ("dice_prune", "ubar(f=auto)")]
    assert len(by_distance) == 8 and max(by_distance) < 0.5
    assert f"below 0.5 ({min(by_distance):.3f}-{max(by_distance):.3f})" in paragraph
    assert f"near chance ({auc['dice_prune']:.3f} and {auc['ubar(f=auto)']:.3f})" in paragraph


def test_readme_nnm_paragraph_quotes_the_committed_tables():
    text = " ".join(README.read_text().split())
    start = text.index("Nearest-neighbour mixing (`nnm`")
    paragraph = text[start : text.index("The attacks `min_max` and `min_sum` moved", start)]
    with open(RESULTS / "full" / "tables" / "ranking.csv") as f:
        ranking = {(r["dataset"], r["defense"]): r for r in csv.DictReader(f)}
    for dataset, words in (("digits", "digits {}"), ("mnist1d", "MNIST-1D {}")):
        order = sorted((float(r["mean_rank"]), d) for (ds, d), r in ranking.items() if ds == dataset)
        assert order[0][1] == "nnm(f=auto)" and words.format(f"{order[0][0]:.2f}") in paragraph
        assert (
            ranking[(dataset, "nnm(f=auto)")]["cells"] == ranking[(dataset, "trimmed_mean(trim=auto)")]["cells"] == "18"
        )
    complete = _full_accuracy_rows_with_every_seed()
    cells: dict[tuple[str, str, str, str], dict[str, dict[str, float]]] = {}
    for r in complete:
        key = (r["dataset"], r["byzantine"], r["partition"], r["topology"])
        if r["attack"] != "none":  # the worst case is over the attacks
            cells.setdefault(key, {}).setdefault(r["defense"], {})[r["attack"]] = float(r["mean"])
    for dataset, partition in (
        ("digits", "dirichlet"),
        ("mnist1d", "dirichlet"),
        ("digits", "iid"),
        ("mnist1d", "iid"),
    ):
        pairs = [
            (min(per["nnm(f=auto)"].values()), min(per["trimmed_mean(trim=auto)"].values()))
            for (ds, _, p, _), per in cells.items()
            if (ds, p) == (dataset, partition) and "nnm(f=auto)" in per and "trimmed_mean(trim=auto)" in per
        ]
        assert len(pairs) == 9  # the same cells: NNM declines where the trimmed mean does
        mixed, alone = (sum(v) / len(v) for v in zip(*pairs, strict=True))
        assert f"{mixed:.3f} against {alone:.3f}" in paragraph
        if partition == "dirichlet":
            assert mixed > alone + 0.02


@pytest.mark.parametrize(
    "name,first_line",
    [
        ("scaled_model.py", "from dataclasses"),
        ("breast_cancer.py", "import"),
        ("small_convnet.py", "import"),
        ("hypercube.py", "import"),
    ],
)
def test_the_plugin_guide_shows_the_example_files_as_they_are(name, first_line):
    guide = (DOCS / "plugins.md").read_text()
    example = (DOCS / "examples" / name).read_text()
    shown = guide[guide.index("```python\n", guide.index(f"examples/{name}")) + len("```python\n") :]
    assert shown[: shown.index("```")] == example[example.index(first_line) :]


def test_readme_same_value_paragraph_quotes_the_committed_tables_and_reruns():
    text = " ".join(README.read_text().split())
    start = text.index("The same-value attack (`same_value`: every coordinate")
    paragraph = text[start : text.index("How sure is this order?", start)]
    with open(RESULTS / "full" / "tables" / "worst_attack.csv") as f:
        worst = [r for r in csv.DictReader(f) if r["defense"] == "dice_prune"]
    for dataset, name in (("digits", "on digits"), ("mnist1d", "on MNIST-1D")):
        mine = [r for r in worst if r["dataset"] == dataset]
        assert len(mine) == 42 and {r["worst_attack"] for r in mine} == {"same_value"}
        values = [float(r["mean"]) for r in mine]
        assert f"{min(values):.3f}-{max(values):.3f} {name}" in paragraph
    with open(RESULTS / "full" / "tables" / "ranking.csv") as f:
        ranking = [r for r in csv.DictReader(f) if r["dataset"] in ("digits", "mnist1d")]
    digits = [r for r in ranking if r["dataset"] == "digits"]
    mnist1d = [r for r in ranking if r["dataset"] == "mnist1d"]
    assert (
        digits[-1]["defense"] == "dice_prune"
        and f"last on digits (6.90 to {float(digits[-1]['mean_rank']):.2f})" in paragraph
    )
    assert mnist1d[9][
        "defense"
    ] == "dice_prune" and f"tenth on MNIST-1D (7.10 to {float(mnist1d[9]['mean_rank']):.2f})" in (paragraph)
    with open(RESULTS / "full" / "tables" / "attack_strength.csv") as f:
        drops = {(r["dataset"], r["attack"], r["defense"]): float(r["mean_drop"]) for r in csv.DictReader(f)}
    median, trimmed = (drops[("digits", "same_value", d)] for d in ("median", "trimmed_mean(trim=auto)"))
    assert f"lose {median:.3f} and {trimmed:.3f} on digits" in paragraph
    with open(RESULTS / "full" / "tables" / "summary.csv") as f:
        runs = [r for r in csv.DictReader(f) if r["attack"] == "same_value"]
    seeds = [
        float(r["final_accuracy_mean"])
        for r in runs
        if (r["dataset"], r["byzantine"], r["partition"], r["topology"], r["defense"])
        == ("digits", "2", "iid", "complete", "trimmed_mean(trim=auto)")
    ]
    assert len(seeds) == 3 and f"the trimmed mean ends at {min(seeds):.3f} in one of the three seeds" in paragraph
    dice = [r for r in runs if r["defense"] == "dice_prune"]
    detected = sorted(float(r["time_to_detection"]) for r in dice if r["time_to_detection"])
    assert f"every Byzantine in-edge in {len(detected)} of its {len(dice)} runs" in paragraph
    assert f"(from round {detected[0]:.0f} at the earliest)" in paragraph
    spread = statistics.median(float(r["final_consensus_distance"]) for r in dice)
    assert f"consensus distance of the honest nodes is {spread:.1e}" in paragraph
    assert sorted(seeds)[1] > 0.9  # the other two seeds hold
    for topology, params in (("ring", {"warmup": 0}), ("complete", {"threshold": -1.0})):
        run = simulate(
            Scenario(byzantine=3, topology=topology, attack="same_value", defense="dice_prune", defense_params=params)
        )
        assert f"{run.final_accuracy_mean:.3f}" == "0.100", (topology, run.final_accuracy_mean)
    assert "with `warmup=0` on the ring, or `threshold=-1` on the complete graph, a run still ends at 0.100" in (
        paragraph
    )


def test_readme_bound_paragraph_quotes_the_complete_graph_worst_cases():
    text = " ".join(README.read_text().split())
    start = text.index("Krum, IOS, UBAR and the trimmed mean run with their Byzantine bound")
    paragraph = text[start : text.index("Full suite, defenses ranked", start)]
    with open(RESULTS / "full" / "tables" / "worst_attack.csv") as f:
        complete = {
            r["defense"]: r
            for r in csv.DictReader(f)
            if (r["dataset"], r["byzantine"], r["partition"], r["topology"]) == ("digits", "2", "iid", "complete")
        }
    assert f"IOS holds on the complete graph ({float(complete['ios(f=auto)']['mean']):.3f} above)" in paragraph
    trimmed = complete["trimmed_mean(trim=auto)"]
    assert trimmed["worst_attack"] == "same_value" and f"({float(trimmed['mean']):.3f} above" in paragraph


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("doc", DOC_FILES)
def test_markdown_links_reach_a_file_and_anchors_a_heading(doc):
    path = ROOT / doc
    text = path.read_text()
    without_code = re.sub(r"```.*?```", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor:
            headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", linked.read_text(), flags=re.S), flags=re.M)
            if anchor not in {_github_anchor(h) for h in headings}:
                broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def _shell_commands(text: str) -> list[str]:
    """The ``robustbench-dice`` command lines of a doc's fenced shell blocks: continuations joined, comments and
    what runs before ``&&``, ``|``, ``&`` or ``;`` split off."""
    blocks: list[list[str]] = []
    language = None  # None outside a fence
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence:
            language = None if language is not None else fence.group(1)
            if language in ("", "bash", "sh", "console", "shell"):
                blocks.append([])
        elif language in ("", "bash", "sh", "console", "shell"):
            blocks[-1].append(line)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines():
            for part in re.split(r"&&|\|\||[|;&]", line.split(" #")[0]):
                found = re.match(r"\s*(?:\w+=\S*\s+)*(?:\S*/)?robustbench-dice(\s.*)?$", part)
                if found:
                    commands.append((found.group(1) or "").strip())
    # inline ones that give options; a bare `robustbench-dice check` in prose names the command, and
    # `download NAME` stands for one, neither is a call
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`robustbench-dice ([^`]*)`", prose):
        words = span.split()
        placeholder = any(
            w.isupper() and not prev.startswith("--") for prev, w in zip(["", *words], words, strict=False)
        )
        if any(w.startswith("--") for w in words) and not placeholder and "..." not in span and "[" not in span:
            commands.append(" ".join(words))
    return commands


@pytest.mark.parametrize("doc", DOC_FILES)
def test_every_command_in_the_docs_shell_blocks_is_accepted_by_the_cli(doc, capsys):
    """A renamed flag or subcommand leaves no stale command in a copy-paste block."""
    from robustbench_dice.cli import build_parser

    def exact(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.allow_abbrev = False  # the docs spell every flag out: an abbreviation breaks when a flag is added
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    exact(sub)
        return parser

    refused = []
    for command in _shell_commands((ROOT / doc).read_text()):
        try:
            exact(build_parser()).parse_args(shlex.split(command))
        except SystemExit as exit_:
            if exit_.code:  # --version and --help exit 0
                refused.append(f"robustbench-dice {command}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not refused, refused
    if doc == "README.md":
        assert len(_shell_commands((ROOT / doc).read_text())) >= 10  # the extraction found the README's commands


def test_readme_module_table_names_every_module_of_the_package():
    """The README's map of the code stays complete as modules are added."""
    table = re.findall(r"^\| ((?:`[\w]+(?:\.py|/)`(?:, )?)+) \|", (ROOT / "README.md").read_text(), flags=re.M)
    named = {name for row in table for name in re.findall(r"`([\w./]+)`", row)}
    modules = {p.name for p in (ROOT / "robustbench_dice").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert modules - named == set()
    assert named - modules - {"attacks/", "defenses/"} == set()  # and names none that is gone
