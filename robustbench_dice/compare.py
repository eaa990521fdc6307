"""Compare two runs of a suite, run by run: did a re-run on another machine, or after a change, give the same numbers?

Both sides are ``summary.csv`` files as :func:`~.tables.write_tables` writes them (or folders holding one). A run is
known by its identity columns (dataset, model, nodes, Byzantine count, partition, topology, attack, defense, seed);
its numbers are compared with a tolerance that is absolute below 1 and relative above (``|a - b| <= tolerance *
max(1, |a|, |b|)``), since consensus distances span 1e-3 to 1e25 where accuracies stay in [0, 1].
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .tables import CELL_COLUMNS, SUMMARY_COLUMNS

IDENTITY = (*CELL_COLUMNS, "seed")
NUMBERS = tuple(c for c in SUMMARY_COLUMNS if c not in (*IDENTITY, "status", "auto_params", "reason"))


@dataclass(frozen=True)
class Difference:
    run: tuple[str, ...]  # the IDENTITY values
    column: str
    before: str
    after: str

    @property
    def size(self) -> float:
        """How far apart, in the tolerance's own measure; infinite where one side has no number."""
        a, b = _float(self.before), _float(self.after)
        if a is None or b is None:
            return float("inf")
        return abs(a - b) / max(1.0, abs(a), abs(b))

    def __str__(self) -> str:
        return f"{self.column:<28} {run_label(self.run)}: {self.before or 'n/a'} -> {self.after or 'n/a'}"


def run_label(run: tuple[str, ...]) -> str:
    """``digits/mlp/16n/3b/iid ring label_flip dice_prune seed 0`` for a run's IDENTITY values."""
    r = dict(zip(IDENTITY, run, strict=True))
    return (
        f"{r['dataset']}/{r['model']}/{r['nodes']}n/{r['byzantine']}b/{r['partition']}"
        f" {r['topology']} {r['attack']} {r['defense']} seed {r['seed']}"
    )


@dataclass
class Comparison:
    compared: int = 0  # runs on both sides
    only_before: list[tuple[str, ...]] = field(default_factory=list)
    only_after: list[tuple[str, ...]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)  # beyond the tolerance, statuses included
    # summary columns one side lacks (a summary of another version, or cut down): their numbers went uncompared
    columns_only_before: list[str] = field(default_factory=list)
    columns_only_after: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (
            self.only_before
            or self.only_after
            or self.differences
            or self.columns_only_before
            or self.columns_only_after
        )

    def runs_differing(self) -> int:
        return len({d.run for d in self.differences})


def _float(text: str) -> float | None:
    """The number in a summary cell; None for an empty cell (n/a) or text (a status)."""
    try:
        return float(text)
    except ValueError:
        return None


def read_summary(path: str | Path) -> dict[tuple[str, ...], dict[str, str]]:
    """The rows of a ``summary.csv`` (or of the one in folder ``path``) by run identity."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.csv"
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"{str(path)!r} {what} (give a summary.csv or the tables folder holding one)")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not a robustbench-dice summary.csv (not UTF-8 text: {exc})") from exc
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (*IDENTITY, "status") if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{str(path)!r} is not a robustbench-dice summary.csv (no column {missing[0]!r})")
        rows = {}
        for row in reader:
            # a short row reads as None in its last columns, a long one keeps its extra fields under the key None
            if None in row or None in row.values():
                fields = len(reader.fieldnames or ()) - list(row.values()).count(None) + len(row.get(None) or ())
                raise ConfigError(
                    f"{str(path)!r} line {reader.line_num} has {fields} fields, its header"
                    f" {len(reader.fieldnames or ())}: is the file complete?"
                )
            rows[tuple(row[c] for c in IDENTITY)] = row
    return rows


def compare_summaries(before: str | Path, after: str | Path, tolerance: float = 0.0) -> Comparison:
    """Run-by-run comparison of two summaries; a number differs when ``|a - b| > tolerance * max(1, |a|, |b|)``,
    a status or a missing number differs always. Runs missing from either side (``missing`` status: not run yet)
    count as absent."""
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    summaries = [read_summary(p) for p in (before, after)]
    old, new = ({run: row for run, row in rows.items() if row["status"] != "missing"} for rows in summaries)
    result = Comparison(only_before=sorted(set(old) - set(new)), only_after=sorted(set(new) - set(old)))
    columns_before, columns_after = (set(next(iter(rows.values()), {})) for rows in summaries)
    result.columns_only_before = [c for c in NUMBERS if c in columns_before and c not in columns_after]
    result.columns_only_after = [c for c in NUMBERS if c in columns_after and c not in columns_before]
    for run in sorted(set(old) & set(new)):
        result.compared += 1
        a, b = old[run], new[run]
        if a["status"] != b["status"]:
            result.differences.append(Difference(run, "status", a["status"], b["status"]))
            continue
        for column in NUMBERS:
            if column not in a or column not in b or a[column] == b[column]:
                continue
            difference = Difference(run, column, a[column], b[column])
            if difference.size > tolerance:
                result.differences.append(difference)
    return result
