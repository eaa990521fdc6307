"""Fixed tables from the result store only (.md, .csv, .tex each), and summary.csv with one row per run.

accuracy, worst_accuracy, detection_auc (and influence_auc when runs tracked
it): one block per (dataset, model, nodes, Byzantine count, partition); rows
topology x attack; columns defense; cells mean ± sample standard deviation over
seeds (n - 1 in the denominator; a cell from one seed shows the mean alone,
since one run says nothing about the spread). worst_attack: rows topology,
columns defense, cell the lowest of the accuracy means over the attacks (the
clean baseline left out) and which attack. ranking: one row per defense, its
worst cases compared on the cells (block x topology) where every defense has
one, with a test of whether the ranks tell the defenses apart. attack_strength: per (dataset, model), rows attack,
columns defense, cell the accuracy the attack costs the defense against no attack, averaged over the cells, and in
how many cells it is the defense's worst attack. A cell without a number says why
(n/a with a footnote). Ordering and formatting are fixed, so the same store
gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.stats

from .io import atomic_write_bytes
from .metrics import Auc, edge_auc
from .scenario import Scenario
from .store import Record, ResultStore
from .suite import PluginSpec

CELL_COLUMNS = ("dataset", "model", "nodes", "byzantine", "partition", "topology", "attack", "defense")
SUMMARY_COLUMNS = (
    *CELL_COLUMNS,
    "seed",
    "status",
    "auto_params",
    "final_accuracy_mean",
    "final_accuracy_worst",
    "edge_auc",
    "node_auc",
    "influence_auc",
    "honest_edges_wrongly_pruned",
    "honest_edges",
    "time_to_detection",
    "final_consensus_distance",
    "reason",
)
METRICS = {
    "accuracy": "final_accuracy_mean",
    "worst_accuracy": "final_accuracy_worst",
    "detection_auc": "edge_auc",
    "influence_auc": "influence_auc",  # written only when some run tracked proximal influence
}


UNTRACKED = "run without track_influence"
NO_ATTACK = "none"  # the clean baseline: left out of the worst case over attacks


def influence_auc(result: dict[str, Any]) -> Auc:
    """Edge AUC of the accumulated proximal influence as a detector: low influence = suspicious (score = -Prox)."""
    rows = result.get("proximal_influence") or []
    if not result.get("scenario", {}).get("track_influence"):
        return Auc(None, UNTRACKED)
    nan = any(v is None for _, _, v in rows)  # None: a NaN the record could not hold in JSON
    if not rows or (nan and result.get("diverged")):
        return Auc(None, "the run diverged: its influence is not finite" if result.get("diverged") else "no edges")
    # the AUC is then undefined, and says so, rather than taken over the other edges
    scores = ([j, k, math.nan if v is None else -v] for j, k, v in rows)
    return edge_auc(scores, set(result.get("byzantine", [])))


def summary_rows(records: list[Record]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        s = record.data["scenario"]
        result = record.data.get("result", {})
        reason = record.data.get("reason") or record.data.get("error") or result.get("edge_auc_reason") or ""
        by_influence = influence_auc(result)
        rows.append(
            {
                "dataset": s["dataset"],
                "model": s["model"],
                "nodes": s["nodes"],
                "byzantine": s["byzantine"]
                if s.get("byzantine_fraction") is None
                else int(s["byzantine_fraction"] * s["nodes"]),
                "partition": s["partition"],
                "topology": s["topology"],
                "attack": PluginSpec(s["attack"], s["attack_params"]).label,
                "defense": PluginSpec(s["defense"], s["defense_params"]).label,
                "seed": s["seed"],
                "status": record.status,
                "auto_params": " ".join(f"{k}={v}" for k, v in sorted(result.get("auto_params", {}).items())),
                "final_accuracy_mean": result.get("final_accuracy_mean"),
                "final_accuracy_worst": result.get("final_accuracy_worst"),
                "edge_auc": result.get("edge_auc"),
                "node_auc": result.get("node_auc"),
                "influence_auc": by_influence.value,
                "influence_auc_reason": by_influence.reason,
                "honest_edges_wrongly_pruned": result.get("honest_edges_wrongly_pruned"),
                "honest_edges": result.get("honest_edges"),
                "time_to_detection": result.get("time_to_detection"),
                "final_consensus_distance": curve[-1]["consensus_distance"] if (curve := result.get("curve")) else None,
                "reason": " ".join(str(reason).split()),
            }
        )
    order = (*CELL_COLUMNS, "seed")
    return sorted(rows, key=lambda r: tuple(str(r[k]).zfill(8) if isinstance(r[k], int) else str(r[k]) for k in order))


SCIENTIFIC_COLUMNS = frozenset({"final_consensus_distance"})  # spans 1e-3 (consensus) to 1e25 (an attack blowing up)


def _num(value: Any, scientific: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4e}" if scientific else f"{value:.6f}"
    return str(value)


def _values(rows: list[dict[str, Any]], metric: str) -> list[float]:
    """The metric of the runs that have it (ok status, defined value)."""
    return [r[metric] for r in rows if r["status"] == "ok" and r[metric] is not None]


def _every_seed_mean(runs: list[dict[str, Any]], metric: str) -> float | None:
    """The mean of the metric over ``runs`` (a cell's seeds), None unless every one of them has it."""
    values = _values(runs, metric)
    return statistics.fmean(values) if values and len(values) == len(runs) else None


def _first_reason(rows: list[dict[str, Any]], metric: str, default: str = "") -> str:
    """Why the first of ``rows`` that lacks ``metric`` lacks it (the rows that have it may carry a reason about
    another metric: a run without suspicion scores says so in ``reason``)."""
    own = f"{metric}_reason"
    lacking = [r for r in rows if r["status"] != "ok" or r[metric] is None]
    return next((r[own] for r in lacking if r.get(own) and r["status"] == "ok"), "") or next(
        (r["reason"] for r in lacking if r["reason"]), default
    )


def sample_std(values: list[float]) -> float | None:
    """Standard deviation with n - 1 in the denominator; None for fewer than two values (undefined)."""
    return statistics.stdev(values) if len(values) > 1 else None


def mean_and_spread(values: list[float]) -> str:
    """``"0.951 ± 0.003"`` (mean ± sample std), or the mean alone for a single value."""
    spread = sample_std(values)
    mean = f"{statistics.fmean(values):.3f}"
    return mean if spread is None else f"{mean} ± {spread:.3f}"


def _not_available(notes: dict[str, int], reason: str) -> str:
    """``n/a[k]``, k the footnote of ``reason`` in this block (numbered in order of first use)."""
    return f"n/a[{notes.setdefault(reason, len(notes) + 1)}]"


def _incomplete_reason(rows: list[dict[str, Any]], metric: str) -> str:
    """Why ``rows`` (the seeds of one cell) do not all have ``metric``; prefixed ``k of n seeds:`` when some do."""
    values = _values(rows, metric)
    reason = _first_reason(rows, metric, "no value")
    return f"{len(values)} of {len(rows)} seeds: {reason}" if values else reason


def _cell(rows: list[dict[str, Any]], metric: str, notes: dict[str, int]) -> str:
    values = _values(rows, metric)
    if len(values) == len(rows) and values:
        return mean_and_spread(values)
    mean = f"{statistics.fmean(values):.3f} " if values else ""
    return mean + _not_available(notes, _incomplete_reason(rows, metric))


def write_tables(
    store: ResultStore, out: str | Path, scenarios: Iterable[Scenario] | Mapping[str, Scenario] | None = None
) -> list[Path]:
    """Write every table from the records in ``store``; returns the files.

    ``scenarios`` (a suite's runs) restricts them to those runs, and a run the store does not hold yet is a row
    with status ``missing``, so its cells and the worst cases that need it read n/a ("not run yet").
    """
    return write_tables_of(store.records_of(scenarios), out)


def write_tables_of(records: list[Record], out: str | Path) -> list[Path]:
    """:func:`write_tables` for records already read from a store; returns the files."""
    out = Path(out)
    rows = summary_rows(records)
    written = [out / "summary.csv"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _num(r[k], k in SCIENTIFIC_COLUMNS) for k in SUMMARY_COLUMNS})
    atomic_write_bytes(written[0], buffer.getvalue().encode())
    blocks = _blocks(rows)
    tracked = any(r["influence_auc_reason"] != UNTRACKED for r in rows)
    for table, metric in METRICS.items():
        if metric == "influence_auc" and not tracked:
            continue
        md, tex, flat, flat_writer = _new_table(
            f"{table.replace('_', ' ')} ({metric})", [*CELL_COLUMNS, "mean", "std", "seeds", "note"]
        )
        for block_key, block, title in _ordered_blocks(blocks):
            dataset, model, nodes, byzantine, partition = block_key
            defenses = sorted({r["defense"] for r in block})
            grid: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
            for r in block:
                grid[(r["topology"], r["attack"])][r["defense"]].append(r)
            notes: dict[str, int] = {}
            _block_header(md, tex, title, ["topology", "attack"], defenses)
            for (topology, attack), by_defense in sorted(grid.items()):
                cells = [_cell(by_defense.get(d, []), metric, notes) if d in by_defense else "-" for d in defenses]
                _block_row(md, tex, [topology, attack], cells)
                for d in defenses:
                    runs = by_defense.get(d, [])
                    values = _values(runs, metric)
                    mean = f"{statistics.fmean(values):.6f}" if values else ""
                    spread = sample_std(values)
                    std = "" if spread is None else f"{spread:.6f}"
                    note = "" if len(values) == len(runs) else _first_reason(runs, metric)
                    flat_writer.writerow(
                        [dataset, model, nodes, byzantine, partition, topology, attack, d, mean, std, len(values), note]
                    )
            _block_footer(md, tex, notes)
        written += _write_formats(out, table, md, tex, flat.getvalue())
    if any(r["attack"] != NO_ATTACK for r in rows):
        worst_attack_files, worst_cases = _write_worst_attack(out, blocks)
        written += worst_attack_files + _write_ranking(out, worst_cases, rows)
        if any(r["attack"] == NO_ATTACK for r in rows):
            written += _write_attack_strength(out, blocks)
    if any(r[METRICS["detection_auc"]] is not None for r in rows):
        written += _write_detection_summary(out, rows)
    return written


def _blocks(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """``rows`` by block: (dataset, model, nodes, Byzantine count, partition)."""
    blocks: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        blocks[(r["dataset"], r["model"], r["nodes"], r["byzantine"], r["partition"])].append(r)
    return blocks


def _ordered_blocks(
    blocks: dict[tuple[Any, ...], list[dict[str, Any]]],
) -> list[tuple[tuple[Any, ...], list[dict[str, Any]], str]]:
    """(key, rows, title) of each block (dataset, model, nodes, Byzantine count, partition), in the tables' order."""
    ordered = sorted(blocks.items(), key=lambda kv: tuple(map(str, kv[0])))
    return [(key, rows, "{} / {} / {} nodes / {} Byzantine / {}".format(*key)) for key, rows in ordered]


# LaTeX's special characters in a cell (a plugin's string parameter can hold any of them), each as LaTeX prints it
_TEX_ESCAPES = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
}
_TEX_TABLE = str.maketrans(_TEX_ESCAPES)


def _tex(text: str) -> str:
    return text.translate(_TEX_TABLE).replace("±", "$\\pm$")


def _md(text: str) -> str:
    """A Markdown table cell: a ``|`` in it would end the cell."""
    return text.replace("|", "\\|")


def _block_header(md: list[str], tex: list[str], title: str, row_labels: list[str], columns: list[str]) -> None:
    """Open one block of a table in Markdown and LaTeX: its title, then a header of row labels and columns."""
    header = [*row_labels, *columns]
    md += [f"## {title}", "", "| " + " | ".join(map(_md, header)) + " |", "|---" * len(header) + "|"]
    tex += [
        f"% {title}",
        "\\begin{tabular}{" + "l" * len(row_labels) + "r" * len(columns) + "}",
        "\\toprule",
        " & ".join(_tex(c) for c in header) + " \\\\",
        "\\midrule",
    ]


def _block_row(md: list[str], tex: list[str], labels: list[str], cells: list[str]) -> None:
    md.append("| " + " | ".join(map(_md, [*labels, *cells])) + " |")
    tex.append(" & ".join(_tex(c) for c in [*labels, *cells]) + " \\\\")


def _block_footer(md: list[str], tex: list[str], notes: dict[str, int], sentence: str = "") -> None:
    """Close a block: ``sentence`` (a rank test, say) and then its footnotes (``[n] reason``) under the Markdown
    table; as comments after the LaTeX one, footnotes first."""
    md += (["", sentence] if sentence else []) + [""] + [f"[{n}] {reason}" for reason, n in notes.items()] + [""]
    tex += ["\\bottomrule", "\\end{tabular}"] + [f"% [{n}] {reason}" for reason, n in notes.items()] + [""]
    if sentence:
        tex += [f"% {sentence}", ""]


def _new_table(title: str, columns: list[str]) -> tuple[list[str], list[str], io.StringIO, Any]:
    """A table being built: its markdown lines (the ``# title`` heading and a blank line), its LaTeX lines, and its
    csv buffer with a writer that has written the ``columns`` header."""
    flat = io.StringIO()
    flat_writer = csv.writer(flat, lineterminator="\n")
    flat_writer.writerow(columns)
    return [f"# {title}", ""], [], flat, flat_writer


def _write_formats(out: Path, table: str, md: list[str], tex: list[str], flat: str) -> list[Path]:
    paths = []
    for suffix, text in (("md", "\n".join(md)), ("tex", "\n".join(tex)), ("csv", flat)):
        path = out / f"{table}.{suffix}"
        atomic_write_bytes(path, (text.rstrip("\n") + "\n").encode())
        paths.append(path)
    return paths


def _worst_attack_cell(
    by_attack: dict[str, list[dict[str, Any]]], metric: str, notes: dict[str, int]
) -> tuple[str, str, float | None, str]:
    """(markdown cell, worst attack, its mean, note): the attack with the lowest mean of ``metric``; undefined (with
    the reason) when some attack lacks a value for some seed, since the worst case would then be a guess. The reason
    names the attacks concerned only when not all are (a defense that declines a seed's graph declines every
    attack)."""
    incomplete = [a for a, runs in sorted(by_attack.items()) if not runs or len(_values(runs, metric)) != len(runs)]
    if incomplete:
        reason = _incomplete_reason(by_attack[incomplete[0]], metric)
        if len(incomplete) < len(by_attack):
            reason = f"under {', '.join(incomplete)}: {reason}"
        return _not_available(notes, reason), "", None, reason
    means = {attack: statistics.fmean(_values(runs, metric)) for attack, runs in by_attack.items()}
    worst = min(means, key=lambda a: (means[a], a))
    return f"{means[worst]:.3f} {worst}", worst, means[worst], ""


WorstCases = dict[tuple[Any, ...], dict[str, float | None]]  # (block key..., topology) -> defense -> worst case
AttackGrid = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # topology -> defense -> attack -> runs (seeds)


def _attack_grid(block: list[dict[str, Any]], clean: bool = False) -> AttackGrid:
    """The attacked runs of one block by topology, defense and attack; the clean baseline too if ``clean``."""
    grid: AttackGrid = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in block:
        if clean or r["attack"] != NO_ATTACK:
            grid[r["topology"]][r["defense"]][r["attack"]].append(r)
    return grid


def worst_case_values(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, list[float] | None]]:
    """Each defense's worst case in each cell (block x topology), as ``worst_attack`` has it, seed by seed: the
    honest accuracies of the seeds of the attack with the lowest mean, None where some attack lacks some seed's value.
    ``rows``: from ``summary_rows``."""
    metric = METRICS["accuracy"]
    cases: dict[tuple[Any, ...], dict[str, list[float] | None]] = {}
    for block_key, block in _blocks(rows).items():
        for topology, by_defense in _attack_grid(block).items():
            for defense, by_attack in by_defense.items():
                worst, mean = _worst_attack_cell(by_attack, metric, {})[1:3]
                values = None if mean is None else _values(by_attack[worst], metric)
                cases.setdefault((*block_key, topology), {})[defense] = values
    return cases


def worst_cases(rows: list[dict[str, Any]]) -> WorstCases:
    """Each defense's worst case in each cell (block x topology), as ``worst_attack`` has it: the lowest mean honest
    accuracy over the attacks, None where some attack lacks some seed's value. ``rows``: from ``summary_rows``."""
    return {
        cell: {defense: None if values is None else statistics.fmean(values) for defense, values in by_defense.items()}
        for cell, by_defense in worst_case_values(rows).items()
    }


def _write_worst_attack(
    out: Path, blocks: dict[tuple[Any, ...], list[dict[str, Any]]]
) -> tuple[list[Path], WorstCases]:
    """``worst_attack``: per block, rows topology, columns defense, cell = the lowest mean honest accuracy over the
    attacks (the clean baseline ``none`` left out) and the attack that causes it: a defense's worst case. Also returns
    those worst cases by cell (None where undefined), for the ranking."""
    metric = METRICS["accuracy"]
    worst_cases: WorstCases = {}
    md, tex, flat, flat_writer = _new_table(
        f"worst attack (lowest mean {metric} over the attacks, {NO_ATTACK!r} left out, and which attack)",
        [*CELL_COLUMNS[:6], "defense", "worst_attack", "mean", "attacks", "note"],
    )
    for block_key, block, title in _ordered_blocks(blocks):
        grid = _attack_grid(block)
        if not grid:
            continue
        defenses = sorted({d for by_defense in grid.values() for d in by_defense})
        notes: dict[str, int] = {}
        _block_header(md, tex, title, ["topology"], defenses)
        for topology, by_defense in sorted(grid.items()):
            cells = []
            for d in defenses:
                if d not in by_defense:
                    cells.append("-")
                    continue
                cell, worst, mean, note = _worst_attack_cell(by_defense[d], metric, notes)
                cells.append(cell)
                worst_cases.setdefault((*block_key, topology), {})[d] = mean
                flat_writer.writerow(
                    [*block_key, topology, d, worst, "" if mean is None else f"{mean:.6f}", len(by_defense[d]), note]
                )
            _block_row(md, tex, [topology], cells)
        _block_footer(md, tex, notes)
    return _write_formats(out, "worst_attack", md, tex, flat.getvalue()), worst_cases


NO_COMMON_CELL = "no cell where every defense has a worst case"


def rank_test(worst: list[list[float]], alpha: float = 0.05, unit: str = "cell") -> str:
    """Whether the mean ranks tell the defenses apart, as one sentence: the Friedman test over the cells and the
    Nemenyi critical difference, or for two defenses Wilcoxon's signed-rank test (Demsar, JMLR 2006). ``worst``: one
    row per cell (block x topology; ``unit`` names what a row is), one column per defense, higher is better."""
    cells, k = len(worst), len(worst[0]) if worst else 0
    over = f"over the {cells} {unit}{'s' if cells != 1 else ''}"
    if k == 2 and cells:  # Demsar's test for two: Wilcoxon's signed-rank test on the paired differences
        first, second = np.asarray(worst, dtype=float).T
        if np.all(first == second):
            return f"Wilcoxon signed-rank test {over}: every cell ties."
        p = scipy.stats.wilcoxon(first, second).pvalue
        return f"Wilcoxon signed-rank test {over}: p = {p:.2g} (two-sided)."
    if k < 3 or cells < 2:
        return f"Friedman test: needs at least 3 defenses and 2 {unit}s (here {k} and {cells})."
    # q_alpha of the studentized range for k groups and infinite degrees of freedom, over sqrt 2
    critical = scipy.stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2) * np.sqrt(k * (k + 1) / (6 * cells))
    with np.errstate(divide="ignore", invalid="ignore"):  # every cell a tie: no statistic
        chi2, p = scipy.stats.friedmanchisquare(*np.asarray(worst, dtype=float).T)
    test = "every cell ties" if not np.isfinite(chi2) else f"chi-square {chi2:.1f}, p = {p:.2g}"
    return (
        f"Friedman test {over}: {test}. Nemenyi critical difference at alpha = {alpha}:"
        f" {critical:.2f} (mean ranks closer than this are not told apart)."
    )


def _rank_defenses(
    worst_cases: WorstCases, unattacked: dict[tuple[Any, ...], list[dict[str, Any]]]
) -> tuple[int, list[tuple[Any, ...]], str]:
    """(number of common cells, one row per defense sorted by mean rank, the rank test): see ``_write_ranking``."""
    metric = METRICS["accuracy"]
    defenses = sorted({d for by_defense in worst_cases.values() for d in by_defense})
    common = [cell for cell, by_defense in worst_cases.items() if all(by_defense.get(d) is not None for d in defenses)]
    ranks = {cell: scipy.stats.rankdata([-cast(float, worst_cases[cell][d]) for d in defenses]) for cell in common}
    ranked = []
    for i, d in enumerate(defenses):
        worst = [cast(float, worst_cases[cell][d]) for cell in common]
        clean = [_values(unattacked[(*cell, d)], metric) for cell in common]
        complete = common and all(
            v and len(v) == len(unattacked[(*cell, d)]) for v, cell in zip(clean, common, strict=True)
        )
        ran_in = [by_defense[d] for by_defense in worst_cases.values() if d in by_defense]
        ranked.append(
            (
                statistics.fmean(float(ranks[cell][i]) for cell in common) if common else None,
                d,
                statistics.fmean(worst) if common else None,
                min(worst) if common else None,
                statistics.fmean(statistics.fmean(v) for v in clean) if complete else None,
                sum(w is not None for w in ran_in),
                len(ran_in),
            )
        )
    ranked.sort(key=lambda r: (r[0] is None, r[0] or 0.0, r[1]))
    test = rank_test([[cast(float, worst_cases[cell][d]) for d in defenses] for cell in common]) if common else ""
    return len(common), ranked, test


def _write_ranking(out: Path, worst_cases: WorstCases, rows: list[dict[str, Any]]) -> list[Path]:
    """``ranking``: one row per defense, compared on the cells (block x topology) where every defense has a worst case
    (``worst_attack``), so that no defense is averaged over easier cells than another: its mean rank there (1 = the
    highest worst-case accuracy of the cell; ties share the mean of their ranks), the mean and the lowest of its worst
    cases, its mean accuracy under no attack (what the defense costs when nobody attacks), and of the cells it was run
    in, how many give it a worst case. One block per (dataset, model), whose accuracies are comparable, and one over
    all cells when there are several."""
    unattacked: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["attack"] == NO_ATTACK:
            unattacked[(*(r[c] for c in CELL_COLUMNS[:6]), r["defense"])].append(r)
    groups: dict[tuple[str, str], WorstCases] = defaultdict(dict)
    for cell in sorted(worst_cases, key=lambda cell: tuple(map(str, cell))):
        groups[(cell[0], cell[1])][cell] = worst_cases[cell]
    if len(groups) > 1:
        groups[("all", "all")] = worst_cases

    md, tex, flat, flat_writer = _new_table(
        f"ranking of the defenses by worst-case accuracy (lowest mean {METRICS['accuracy']} over the attacks)",
        [
            "dataset",
            "model",
            "defense",
            "mean_rank",
            "worst_case_mean",
            "worst_case_min",
            "no_attack_mean",
            "cells",
            "of",
        ],
    )
    for (dataset, model), group in groups.items():
        common, ranked, test = _rank_defenses(group, unattacked)
        what = "all datasets and models" if dataset == "all" else f"{dataset} / {model}"
        title = f"{what}: {common} of {len(group)} cells (block x topology), those where every defense has a worst case"
        columns = ["mean rank", "worst case", "lowest worst case", "no attack", "cells with a worst case"]
        _block_header(md, tex, title, ["defense"], columns)
        notes: dict[str, int] = {}
        no_clean = f"not every such cell has all its runs with attack {NO_ATTACK!r}" if common else NO_COMMON_CELL
        for rank, d, worst_mean, worst_min, clean_mean, defined, of in ranked:
            numbers = (rank, worst_mean, worst_min, clean_mean)
            cells = [
                f"{value:{spec}}" if value is not None else _not_available(notes, missing)
                for value, spec, missing in zip(
                    numbers, (".2f", ".3f", ".3f", ".3f"), (NO_COMMON_CELL,) * 3 + (no_clean,), strict=True
                )
            ]
            _block_row(md, tex, [d], [*cells, f"{defined} of {of}"])
            flat_writer.writerow([dataset, model, d, *("" if v is None else f"{v:.6f}" for v in numbers), defined, of])
        _block_footer(md, tex, notes, test)
    return _write_formats(out, "ranking", md, tex, flat.getvalue())


def _largest_mean_first(row_means: dict[str, list[float]]) -> list[str]:
    """The rows of a summary table by the mean of their values, largest first; rows without values last; ties by
    label."""
    return sorted(row_means, key=lambda row: (not row_means[row], -statistics.fmean(row_means[row] or [0.0]), row))


NO_DROP = f"no cell with every seed's value both under this attack and under {NO_ATTACK!r}"


def attack_strength(
    blocks: dict[tuple[Any, ...], list[dict[str, Any]]],
) -> dict[tuple[str, str], dict[str, dict[str, tuple[list[float], int]]]]:
    """What each attack costs each defense: ``(dataset, model) -> attack -> defense -> (drops, worst_in)``.

    ``drops``: one per cell (block x topology) where both the attack and the clean baseline have every seed's
    value, the mean honest accuracy under no attack minus under the attack (positive = accuracy lost).
    ``worst_in``: in how many cells the attack is the defense's worst case (as ``worst_attack`` has it).
    """
    metric = METRICS["accuracy"]
    strength: dict[tuple[str, str], dict[str, dict[str, tuple[list[float], int]]]] = {}
    for block_key, block, _ in _ordered_blocks(blocks):
        group = strength.setdefault((block_key[0], block_key[1]), {})
        for by_defense in _attack_grid(block, clean=True).values():
            for defense, by_attack in by_defense.items():
                attacked = {a: runs for a, runs in by_attack.items() if a != NO_ATTACK}
                worst = _worst_attack_cell(attacked, metric, {})[1] if attacked else ""
                clean = _every_seed_mean(by_attack.get(NO_ATTACK, []), metric)
                for attack, runs in attacked.items():
                    drops, worst_in = group.setdefault(attack, {}).get(defense, ([], 0))
                    under_attack = _every_seed_mean(runs, metric)
                    if clean is not None and under_attack is not None:
                        drops = [*drops, clean - under_attack]
                    group[attack][defense] = (drops, worst_in + (attack == worst))
    return strength


def _write_attack_strength(out: Path, blocks: dict[tuple[Any, ...], list[dict[str, Any]]]) -> list[Path]:
    """``attack_strength``: per (dataset, model), rows attack, columns defense; cell = the mean over the cells
    (block x topology) of the accuracy the attack costs the defense against no attack (:func:`attack_strength`), and
    in brackets in how many cells it is the defense's worst attack. Rows strongest first, by the mean of the row (of
    the defenses' means, each defense weighted alike: Krum, which declines most graphs, counts as much as gossip)."""
    md, tex, flat, flat_writer = _new_table(
        f"attack strength (mean {METRICS['accuracy']} lost against {NO_ATTACK!r}, over the cells block x topology;"
        " in brackets, in how many cells it is the defense's worst attack; mean: the mean of the defenses' columns,"
        " each defense weighted alike whatever its number of cells)",
        ["dataset", "model", "attack", "defense", "mean_drop", "max_drop", "cells", "worst_in"],
    )
    for (dataset, model), by_attack in attack_strength(blocks).items():
        defenses = sorted({d for by_defense in by_attack.values() for d in by_defense})
        row_means = {
            attack: [statistics.fmean(drops) for drops, _ in by_defense.values() if drops]
            for attack, by_defense in by_attack.items()
        }
        attacks = _largest_mean_first(row_means)
        notes: dict[str, int] = {}
        _block_header(md, tex, f"{dataset} / {model}", ["attack"], [*defenses, "mean"])
        for attack in attacks:
            cells = []
            for d in defenses:
                drops, worst_in = by_attack[attack].get(d, ([], 0))
                mean = statistics.fmean(drops) if drops else None
                cells.append(f"{mean:.3f} ({worst_in})" if mean is not None else _not_available(notes, NO_DROP))
                flat_writer.writerow(
                    [
                        dataset,
                        model,
                        attack,
                        d,
                        "" if mean is None else f"{mean:.6f}",
                        f"{max(drops):.6f}" if drops else "",
                        len(drops),
                        worst_in,
                    ]
                )
            overall = (
                f"{statistics.fmean(row_means[attack]):.3f}" if row_means[attack] else _not_available(notes, NO_DROP)
            )
            _block_row(md, tex, [attack], [*cells, overall])
        _block_footer(md, tex, notes)
    return _write_formats(out, "attack_strength", md, tex, flat.getvalue())


NO_AUC = "no cell where every seed has a detection AUC"
NO_SHARED_CELL = "no cell where every defense of the table has a detection AUC under the same attack"

Cell = tuple[Any, ...]  # (*block key, topology)


def detection_summary(
    blocks: dict[tuple[Any, ...], list[dict[str, Any]]],
) -> dict[tuple[str, str], dict[str, dict[str, dict[Cell, float]]]]:
    """How well each defense's suspicion scores find the Byzantine senders: ``(dataset, model) -> defense -> attack ->
    cell -> auc``, one edge-level AUC per cell (block x topology), the mean over its seeds, where every seed has one."""
    metric = METRICS["detection_auc"]
    summary: dict[tuple[str, str], dict[str, dict[str, dict[Cell, float]]]] = {}
    for block_key, block, _ in _ordered_blocks(blocks):
        group = summary.setdefault((block_key[0], block_key[1]), {})
        for topology, by_defense in _attack_grid(block, clean=True).items():
            for defense, by_attack in by_defense.items():
                for attack, runs in by_attack.items():
                    mean = _every_seed_mean(runs, metric)
                    aucs = group.setdefault(defense, {}).setdefault(attack, {})
                    if mean is not None:
                        aucs[(*block_key, topology)] = mean
    return summary


def shared_cells(by_defense: dict[str, dict[str, dict[Cell, float]]], attack: str) -> set[Cell]:
    """The cells where every defense of ``by_defense`` has a detection AUC under ``attack``: what compares them on the
    same graphs and data (a rule that declines sparse graphs is otherwise scored on the easier ones only)."""
    return set.intersection(*(set(by_attack.get(attack, {})) for by_attack in by_defense.values()))


def _mean_auc(aucs: dict[Cell, float], cells: set[Cell] | None = None) -> float | None:
    """The mean of ``aucs`` over ``cells`` (all of them if None); None where none is left."""
    kept = [v for c, v in aucs.items() if cells is None or c in cells]
    return statistics.fmean(kept) if kept else None


def _attack_means(
    by_attack: dict[str, dict[Cell, float]], attacks: list[str], shared: dict[str, set[Cell]] | None = None
) -> list[float]:
    """One defense's mean AUC under each of ``attacks`` that has one, over its own cells or the ``shared`` ones."""
    means = (_mean_auc(by_attack.get(a, {}), None if shared is None else shared[a]) for a in attacks)
    return [m for m in means if m is not None]


@dataclass(frozen=True)
class DetectionComparison:
    """The defenses of one (dataset, model) compared as detectors, as ``detection_summary`` writes them: each
    defense's AUC per attack over its own cells and over the cells every defense has (``shared``), and the ranks of
    the defenses' AUCs in each shared (cell, attack) pair, 1 = the best detector there (ties share their ranks)."""

    aucs: dict[str, dict[str, dict[Cell, float]]]  # defense -> attack -> cell -> AUC (defenses that score edges)
    attacks: list[str]  # ``none`` last
    defenses: list[str]  # the best detector on the shared cells first
    shared: dict[str, set[Cell]]  # attack -> the cells every defense has
    pairs: list[tuple[Cell, str]]  # the shared (cell, attack) pairs, attacks other than ``none``
    ranks: list[np.ndarray]  # per pair, the ranks of ``defenses``' AUCs

    @classmethod
    def of(cls, by_defense: dict[str, dict[str, dict[Cell, float]]]) -> DetectionComparison | None:
        """From one (dataset, model) of :func:`detection_summary`; None where no defense scores an edge."""
        scored = {d: by_attack for d, by_attack in by_defense.items() if any(by_attack.values())}
        if not scored:
            return None
        attacks = sorted({a for by_attack in scored.values() for a in by_attack}, key=lambda a: (a == NO_ATTACK, a))
        shared = {a: shared_cells(scored, a) for a in attacks}
        attacked = [a for a in attacks if a != NO_ATTACK]
        by_shared = {d: _attack_means(by_attack, attacked, shared) for d, by_attack in scored.items()}
        by_own = {d: _attack_means(by_attack, attacked) for d, by_attack in scored.items()}
        defenses = _largest_mean_first(by_shared if any(by_shared.values()) else by_own)
        pairs = [(c, a) for a in attacked for c in sorted(shared[a], key=lambda c: tuple(map(str, c)))]
        ranks = [scipy.stats.rankdata([-scored[d][a][c] for d in defenses]) for c, a in pairs]
        return cls(scored, attacks, defenses, shared, pairs, ranks)

    @property
    def attacked(self) -> list[str]:
        """The attacks other than ``none``: what ``mean``, ``shared`` and ``rank`` average over."""
        return [a for a in self.attacks if a != NO_ATTACK]

    def auc(self, defense: str, attack: str, shared: bool = False) -> float | None:
        """The mean AUC of ``defense`` under ``attack``, over its own cells or the shared ones."""
        return _mean_auc(self.aucs[defense].get(attack, {}), self.shared[attack] if shared else None)

    def means(self, defense: str, shared: bool = False) -> list[float]:
        """``auc`` of each attack other than ``none`` that has one."""
        return _attack_means(self.aucs[defense], self.attacked, self.shared if shared else None)

    def rank(self, defense: str, attack: str | None = None) -> float | None:
        """The mean rank of ``defense`` over the shared pairs of ``attack`` (of every attack but ``none`` if None)."""
        i = self.defenses.index(defense)
        kept = [float(r[i]) for r, (_, a) in zip(self.ranks, self.pairs, strict=True) if attack in (None, a)]
        return statistics.fmean(kept) if kept else None

    def rank_test(self) -> str:
        """The Friedman test (Wilcoxon's for two defenses) over the shared pairs; empty where it has nothing to test."""
        if not self.pairs or len(self.defenses) < 2:
            return ""
        aucs = [[self.aucs[d][a][c] for d in self.defenses] for c, a in self.pairs]
        return rank_test(aucs, unit="(cell, attack) pair")

    def shared_count(self) -> str:
        """How many cells are shared: one number, or a range over the attacks."""
        counts = sorted({len(self.shared[a]) for a in self.attacked}) or [0]
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]} per attack"


def detection_comparisons(rows: list[dict[str, Any]]) -> dict[tuple[str, str], DetectionComparison]:
    """``(dataset, model) ->`` its :class:`DetectionComparison`, for those where some defense scores edges. ``rows``:
    from ``summary_rows``."""
    compared = {key: DetectionComparison.of(by_defense) for key, by_defense in detection_summary(_blocks(rows)).items()}
    return {key: c for key, c in compared.items() if c is not None}


def _write_detection_summary(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """``detection_summary``: per (dataset, model), rows defense, columns attack; cell = the mean edge-level detection
    AUC over the cells (block x topology) where every seed has one (:func:`detection_summary`), and in brackets how
    many cells that is. The ``none`` column is the control: with no attack, suspicion should rank Byzantine and honest
    senders alike (0.5). ``mean``: over the attacks other than ``none``, each attack's mean over the defense's own
    cells; ``shared``: the same over the cells every listed defense has (:func:`shared_cells`), the fair comparison
    of rows, and their order, best detector first; ``rank``: the mean rank of the defense's AUC among the rows' over
    those (cell, attack) pairs (1 = the best detector; ties share their ranks), with the Friedman test under the block.
    The csv has each attack's mean rank (``shared_mean_rank``). Defenses that score no edge (plain gossip) are left
    out. See :class:`DetectionComparison`."""
    md, tex, flat, flat_writer = _new_table(
        f"detection summary (mean {METRICS['detection_auc']} over the cells block x topology where every seed has"
        " one; in brackets, how many cells; shared: over the cells every defense listed has, the order of the rows;"
        " rank: the mean rank there, 1 = the best detector)",
        [
            "dataset",
            "model",
            "defense",
            "attack",
            "mean_auc",
            "cells",
            "shared_mean_auc",
            "shared_mean_rank",
            "shared_cells",
        ],
    )
    for (dataset, model), compared in detection_comparisons(rows).items():
        notes: dict[str, int] = {}
        title = f"{dataset} / {model} (shared cells: {compared.shared_count()})"
        _block_header(md, tex, title, ["defense"], [*compared.attacks, "mean", "shared", "rank"])
        for d in compared.defenses:
            cells = []
            for attack in compared.attacks:
                mean, common, rank = (
                    compared.auc(d, attack),
                    compared.auc(d, attack, shared=True),
                    compared.rank(d, attack),
                )
                count = len(compared.aucs[d].get(attack, {}))
                cells.append(f"{mean:.3f} ({count})" if mean is not None else _not_available(notes, NO_AUC))
                flat_writer.writerow(
                    [dataset, model, d, attack, "" if mean is None else f"{mean:.6f}", count]
                    + ["" if common is None else f"{common:.6f}", "" if rank is None else f"{rank:.6f}"]
                    + [len(compared.shared[attack])]
                )
            own, shared = compared.means(d), compared.means(d, shared=True)
            overall = f"{statistics.fmean(own):.3f}" if own else _not_available(notes, NO_AUC)
            fair = f"{statistics.fmean(shared):.3f}" if shared else _not_available(notes, NO_SHARED_CELL)
            rank = compared.rank(d)
            _block_row(md, tex, [d], [*cells, overall, fair, fair if rank is None else f"{rank:.2f}"])
        _block_footer(md, tex, notes, compared.rank_test())
    return _write_formats(out, "detection_summary", md, tex, flat.getvalue())
