import argparse
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from robustbench_dice.cli import build_parser, main


def test_simulate_writes_json_and_summary(tmp_path, capsys):
    out = tmp_path / "out.json"
    code = main(["simulate", "--nodes", "6", "--rounds", "4", "--eval-every", "2", "--json", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "final honest test accuracy: mean" in text and "time per round" in text
    data = json.loads(out.read_text())
    assert data["scenario"]["nodes"] == 6 and data["status"] == "ok"
    assert f"consensus distance {data['curve'][-1]['consensus_distance']:.3g}" in text


def test_simulate_json_dash_puts_the_record_alone_on_stdout_and_the_summary_on_stderr(tmp_path, capsys):
    args = ["simulate", "--nodes", "6", "--rounds", "4", "--eval-every", "2", "--quiet"]
    assert main([*args, "--json", "-"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # nothing but the record
    assert data["status"] == "ok" and "final honest test accuracy: mean" in captured.err
    assert "result written" not in captured.err
    out = tmp_path / "out.json"
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["final_accuracy_mean"] == data["final_accuracy_mean"]


def test_an_attack_without_byzantine_nodes_is_pointed_out(capsys):
    base = ["simulate", "--nodes", "6", "--rounds", "2", "--quiet", "--attack", "label_flip"]
    assert main(base) == 0
    assert "note: attack 'label_flip' has no Byzantine node" in capsys.readouterr().err
    assert main([*base, "--byzantine", "1"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_simulate_with_tracked_influence_reports_its_detection_auc(capsys):
    args = ["simulate", "--nodes", "6", "--rounds", "3", "--byzantine", "1", "--attack", "gradient_scale"]
    assert main([*args, "--track-influence", "--quiet"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "proximal influence as detector" in x]
    assert len(line) == 1 and "edge AUC" in line[0] and "n/a" not in line[0]
    assert main([*args, "--quiet"]) == 0
    assert "proximal influence" not in capsys.readouterr().out  # untracked runs have none


def test_flags_override_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('nodes = 6\nrounds = 3\ntopology = "complete"\n[defense_params]\n')
    out = tmp_path / "o.json"
    assert main(["simulate", "--config", str(config), "--rounds", "2", "--json", str(out), "--quiet"]) == 0
    scenario = json.loads(out.read_text())["scenario"]
    assert scenario["rounds"] == 2 and scenario["nodes"] == 6 and scenario["topology"] == "complete"


def test_byzantine_count_and_fraction_on_the_command_line(tmp_path, capsys):
    from robustbench_dice.cli import scenario_from_args

    parser = build_parser()
    config = tmp_path / "c.toml"
    config.write_text("byzantine_fraction = 0.5\n")
    # a count given on the command line lays over the config's fraction (the fraction used to win, silently)
    scenario = scenario_from_args(parser.parse_args(["simulate", "--config", str(config), "--byzantine", "2"]))
    assert scenario.byzantine_fraction is None and scenario.n_byzantine == 2
    assert scenario_from_args(parser.parse_args(["simulate", "--config", str(config)])).n_byzantine == 8
    assert main(["simulate", "--byzantine", "3", "--byzantine-fraction", "0.5", "--quiet"]) == 2
    assert "give --byzantine or --byzantine-fraction, not both (got 3 and 0.5)" in capsys.readouterr().err


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "never.json"
    assert main(["simulate", "--topology", "torus", "--nodes", "13", "--json", str(out)]) == 2
    assert "13 is not such a product" in capsys.readouterr().err
    assert not out.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [\n")
    assert main(["simulate", "--config", str(bad)]) == 2
    assert "malformed TOML" in capsys.readouterr().err
    started = []  # a --json path that cannot be written fails before the run, not after it
    monkeypatch.setattr("robustbench_dice.engine.simulate", lambda *a, **k: started.append(1))
    assert main(["simulate", "--json", str(tmp_path)]) == 2
    assert "is a folder; give the file to write" in capsys.readouterr().err
    assert main(["simulate", "--json", str(bad / "x.json")]) == 2
    assert "--json output folder" in capsys.readouterr().err and not started
    monkeypatch.undo()
    assert main(["simulate", "--attack-param", "noequals"]) == 2
    assert "expects KEY=VALUE" in capsys.readouterr().err
    assert (
        main(["simulate", "--attack", "label_flip", "--attack-param", "fraction=0.3", "--attack-param", "fraction=0.5"])
        == 2
    )
    assert (
        "--attack-param sets 'fraction' twice (fraction=0.3 and fraction=0.5); give it once" in capsys.readouterr().err
    )


def test_config_from_standard_input_toml_or_a_json_result(tmp_path, monkeypatch, capsys):
    import io

    first, again = tmp_path / "first.json", tmp_path / "again.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("rounds = 2\nnodes = 6\n[defense_params]\n"))
    assert main(["simulate", "--config", "-", "--defense", "median", "--json", str(first), "--quiet"]) == 0
    result = json.loads(first.read_text())
    assert (result["scenario"]["rounds"], result["scenario"]["nodes"], result["scenario"]["defense"]) == (
        2,
        6,
        "median",
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(first.read_text()))  # a result piped back in re-runs it
    assert main(["simulate", "--config", "-", "--json", str(again), "--quiet"]) == 0
    assert json.loads(again.read_text())["final_accuracy_mean"] == result["final_accuracy_mean"]
    monkeypatch.setattr("sys.stdin", io.StringIO("rounds = [\n"))
    assert main(["simulate", "--config", "-"]) == 2
    assert "malformed TOML in standard input" in capsys.readouterr().err


def test_plugin_parameter_flags_take_the_singular_and_the_plural(tmp_path, capsys):
    # `influence poisoning` spells it --attack-params; simulate takes that spelling too
    for flag in ("--attack-param", "--attack-params"):
        out = tmp_path / f"{flag}.json"
        args = ["simulate", "--rounds", "1", "--attack", "label_flip", "--byzantine", "2", flag, "fraction=0.5"]
        assert main([*args, "--json", str(out), "--quiet"]) == 0
        assert json.loads(out.read_text())["scenario"]["attack_params"] == {"fraction": 0.5}
    with pytest.raises(SystemExit):
        main(["influence", "poisoning", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert help_text.count("(default: its own)") == 1 and "(default: )" not in help_text


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _subcommand_paths(sub, (*prefix, name))
    return paths


@pytest.mark.parametrize(
    "command", _subcommand_paths(build_parser()), ids=lambda command: " ".join(command) or "(top level)"
)
def test_every_help_page_renders(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    assert "usage: robustbench-dice" in capsys.readouterr().out


def test_list_and_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "robustbench_dice", "list", "topologies"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "one_peer_exponential" in done.stdout
    assert "time-varying" in done.stdout  # names come with what they are


def test_listed_descriptions_name_real_scenario_fields():
    from robustbench_dice.datasets import DATASETS
    from robustbench_dice.mixing import MIXING_RULES
    from robustbench_dice.models import MODELS
    from robustbench_dice.scenario import Scenario
    from robustbench_dice.topology import TOPOLOGIES

    fields = {f.name for f in dataclasses.fields(Scenario)}
    for catalogue in (TOPOLOGIES, MIXING_RULES, DATASETS, MODELS):
        for name, description in catalogue.items():
            assert description, name
            named = re.findall(r"\[([^]]+)\]$", description)
            for field in (f.strip() for group in named for f in group.split(",")):
                assert field in fields, f"{name}: description names {field!r}, not a Scenario field"


def test_version_names_the_package_the_results_version_and_torch(capsys):
    import tomllib
    from pathlib import Path

    import torch

    from robustbench_dice import __version__
    from robustbench_dice.store import RESULTS_VERSION

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert __version__ == project["version"]
    assert out.startswith(f"robustbench-dice {project['version']} (results version {RESULTS_VERSION};")
    assert f"torch {torch.__version__}" in out
    if not torch.cuda.is_available():  # whether a bug report came from a machine that could use a GPU
        assert "built without CUDA" in out or f"CUDA {torch.version.cuda} build, no GPU visible" in out


def test_top_level_help_examples_are_valid_commands():
    from robustbench_dice.cli import EXAMPLES

    lines = [line.strip() for line in EXAMPLES.splitlines() if line.startswith("  robustbench-dice")]
    commands = [line.split("  ")[0] for line in lines]  # two spaces part a command from its comment
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        parser.parse_args(command.split()[1:])  # exits (fails the test) on an unknown command or flag


def test_list_marks_the_byzantine_bounds_that_take_auto(capsys):
    assert main(["list", "defenses"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "[f: int = 1 or 'auto']" in lines["krum"] and "[trim: int = 1 or 'auto']" in lines["trimmed_mean"]
    assert "'auto'" not in lines["balance"]


def test_simulate_prints_the_value_auto_resolved_to(capsys):
    args = ["simulate", "--quiet", "--nodes", "6", "--rounds", "2", "--topology", "complete", "--byzantine", "2"]
    assert main([*args, "--defense", "ios", "--defense-param", "f=auto"]) == 0
    assert "defense=ios, f=2 (auto))" in capsys.readouterr().out


def test_figures_go_beside_the_committed_ones_only_for_the_committed_suites():
    from robustbench_dice.cli import _figures_folder

    assert _figures_folder(None, None) == _figures_folder("quick", None) == "results/figures"
    assert _figures_folder("paper", None) == "results/figures"
    assert _figures_folder("full", None) == "results/full/figures"
    assert _figures_folder("all", None) == "results/all/figures"
    assert _figures_folder("suites/mine.toml", None) == "results/mine/figures"
    assert _figures_folder("full", "elsewhere") == "elsewhere"


@pytest.mark.parametrize(
    "error",
    [
        MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000) and data type float64"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to"),
    ],
)
def test_running_out_of_memory_is_a_clear_error(monkeypatch, capsys, error):
    """`simulate --nodes 100000` ended in numpy's _ArrayMemoryError traceback (a dense 100,000 x 100,000 graph)."""
    import robustbench_dice.engine as engine

    def too_large(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine.Simulation, "from_scenario", too_large)
    assert main(["simulate", "--quiet", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"robustbench-dice: error: out of memory: {error}. The scenario is too large")
        and "fewer nodes" in err
    )


def test_a_runtime_error_that_is_not_out_of_memory_keeps_its_traceback(monkeypatch):
    import robustbench_dice.engine as engine

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(engine.Simulation, "from_scenario", bug)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        main(["simulate", "--quiet", "--rounds", "1"])
