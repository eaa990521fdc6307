"""`compare`: two summaries of a suite, run by run, with a tolerance absolute below 1 and relative above."""

import csv
import shutil
from pathlib import Path

import pytest

from robustbench_dice.cli import main
from robustbench_dice.compare import compare_summaries
from robustbench_dice.errors import ConfigError

COMMITTED = Path(__file__).parents[1] / "results" / "tables" / "summary.csv"


def _edited(folder, edit):
    """A copy of the committed quick-suite summary, with ``edit(rows)`` applied, in ``folder``."""
    with open(COMMITTED, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    edit(rows)
    out = folder / "summary.csv"
    out.parent.mkdir(parents=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def _first_ok(rows):
    return next(r for r in rows if r["status"] == "ok")


def test_a_summary_equals_itself_and_its_folder(tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(COMMITTED.parent, copy)
    assert main(["compare", str(COMMITTED), str(copy)]) == 0
    assert "compared 192 runs: 192 the same, 0 differ beyond tolerance 0" in capsys.readouterr().out


def test_a_changed_accuracy_is_reported_unless_within_the_tolerance(tmp_path, capsys):
    def edit(rows):
        row = _first_ok(rows)
        row["final_accuracy_mean"] = f"{float(row['final_accuracy_mean']) + 0.004:.6f}"

    after = _edited(tmp_path / "after", edit)
    assert main(["compare", str(COMMITTED), str(after)]) == 1
    out = capsys.readouterr().out
    assert "191 the same, 1 differ beyond tolerance 0 (1 value(s))" in out
    assert "final_accuracy_mean" in out and "digits/mlp/16n/" in out
    assert main(["compare", str(COMMITTED), str(after), "--tolerance", "0.005"]) == 0


def _set_distance(value):
    def edit(rows):
        _first_ok(rows)["final_consensus_distance"] = value

    return edit


def test_large_values_compare_relatively(tmp_path):
    big, nudged = (_edited(tmp_path / v, _set_distance(v)) for v in ("1.0000e+20", "1.0005e+20"))
    assert compare_summaries(big, nudged, tolerance=1e-3).same  # 5e-4 relative, though 5e16 absolute
    (difference,) = compare_summaries(big, nudged, tolerance=1e-4).differences
    assert difference.column == "final_consensus_distance" and difference.size == pytest.approx(5e-4, rel=1e-3)


def test_statuses_and_runs_missing_on_one_side_always_differ(tmp_path, capsys):
    def edit(rows):
        _first_ok(rows)["status"] = "failed"
        del rows[-1]

    after = _edited(tmp_path / "after", edit)
    result = compare_summaries(COMMITTED, after, tolerance=1.0)
    assert [d.column for d in result.differences] == ["status"] and len(result.only_before) == 1
    assert not result.only_after and not result.same
    assert main(["compare", str(COMMITTED), str(after), "--tolerance", "1"]) == 1
    out = capsys.readouterr().out
    assert "status" in out and ": ok -> failed" in out and f"only in {COMMITTED}: " in out


def test_a_summary_column_one_side_lacks_is_named_and_the_summaries_differ(tmp_path, capsys):
    """A summary without edge_auc compared as 'the same' before: its numbers went uncompared, silently."""
    rows = list(csv.DictReader(COMMITTED.open()))
    cut = tmp_path / "summary.csv"
    with cut.open("w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "edge_auc"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = compare_summaries(COMMITTED, cut)
    assert result.columns_only_before == ["edge_auc"] and not result.columns_only_after and not result.same
    assert not result.differences and result.compared == len(rows)
    assert main(["compare", str(cut), str(COMMITTED)]) == 1
    assert f"columns only in {COMMITTED}, not compared ({cut} lacks them): edge_auc" in capsys.readouterr().out
    assert compare_summaries(COMMITTED, COMMITTED).same


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="does not exist \\(give a summary.csv or the tables folder"):
        compare_summaries(tmp_path / "none.csv", COMMITTED)
    with pytest.raises(ConfigError, match="'/dev/null' is not a file \\(give a summary.csv"):  # "does not exist" before
        compare_summaries("/dev/null", COMMITTED)
    binary = tmp_path / "summary.xlsx.csv"  # a spreadsheet saved under the name: a UnicodeDecodeError traceback before
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not a robustbench-dice summary.csv \\(not UTF-8 text: 'utf-8' codec"):
        compare_summaries(COMMITTED, binary)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="is not a robustbench-dice summary.csv \\(no column 'dataset'\\)"):
        compare_summaries(other, COMMITTED)
    assert main(["compare", str(COMMITTED), str(COMMITTED), "--tolerance", "-1"]) == 2
    assert "tolerance must be >= 0, got -1.0" in capsys.readouterr().err
    assert main(["compare", str(COMMITTED), str(COMMITTED), "--show", "-3"]) == 2  # was a slice [:-3]
    assert "--show must be >= 0, got -3" in capsys.readouterr().err
    # a copy cut off mid-row (or with a row too long) read as a run with empty columns before
    lines = COMMITTED.read_text().splitlines()
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40] + "\n")
    header = len(lines[0].split(","))
    with pytest.raises(ConfigError, match=f"'{cut}' line 4 has \\d+ fields, its header {header}: is the file complete"):
        compare_summaries(COMMITTED, cut)
    cut.write_text("\n".join(lines[:3]) + ",1,2\n")
    with pytest.raises(ConfigError, match=f"line 3 has {header + 2} fields, its header {header}"):
        compare_summaries(COMMITTED, cut)


def test_summaries_of_different_suites_are_said_to_share_no_run(capsys):
    full = COMMITTED.parents[1] / "full" / "tables" / "summary.csv"
    assert main(["compare", str(COMMITTED), str(full)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("compared 0 runs") and "note: the two share no run: summaries of different suites" in out
