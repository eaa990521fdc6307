import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from robustbench_dice import Scenario, simulate
from robustbench_dice.cli import main
from robustbench_dice.influence import ALIGNMENT_COLUMNS, AlignmentConfig, CascadeConfig, run_alignment, run_cascade

QUICK = dict(topologies=("ring",), lrs=(0.1,), sweep_topologies=(), rounds=40, probe_rounds=4, nodes=8)


def test_slow_settings_say_how_far_they_are(monkeypatch):
    import robustbench_dice.influence as influence

    lines: list[str] = []
    influence.run_alignment(AlignmentConfig(**{**QUICK, "models": ("logreg",)}), log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("[1/1] logreg ring lr=0.1: Pearson")  # quick: one line
    monkeypatch.setattr(influence, "HEARTBEAT_SECONDS", 0.0)  # every setting is "slow"
    lines.clear()
    influence.run_alignment(AlignmentConfig(**{**QUICK, "models": ("logreg",)}), log=lines.append)
    assert [line.split(" (")[0] for line in lines[:-1]] == [
        f"  [1/1] logreg ring lr=0.1: probe round {done}/4 done" for done in (1, 2, 3)
    ]  # not after the last: the setting's own line follows
    assert lines[-1].startswith("[1/1] logreg ring lr=0.1: Pearson")


def test_alignment_is_high_at_the_default_learning_rate():
    _, summary, _ = run_alignment(AlignmentConfig(**QUICK), log=lambda _: None)
    dice = [s for s in summary if s["estimator"] == "dice"]
    assert {s["r"] for s in dice} == {1, 2, 3} and {s["model"] for s in dice} == {"logreg", "mlp"}
    assert all(s["probes"] == 32 for s in dice)
    assert all(s["pearson"] >= 0.99 and s["spearman"] >= 0.97 for s in dice), dice
    second = {s["model"]: s for s in summary if s["estimator"] == "probe_second_order"}
    assert {s["r"] for s in second.values()} == {1}  # the diagnostic is defined at r = 1 only
    first = {s["model"]: s for s in dice if s["r"] == 1}
    assert all(second[m]["pearson"] >= first[m]["pearson"] for m in ("logreg", "mlp"))


def test_cascade_decays_with_hops():
    decay, centrality = run_cascade(
        CascadeConfig(topologies=("ring",), rounds=40, probe_rounds=3, nodes=8, horizon=3), log=lambda _: None
    )
    at_r3 = sorted((d for d in decay if d["r"] == 3), key=lambda d: d["hop"])
    magnitudes = [d["mean_abs_ground_truth"] for d in at_r3]
    assert [d["hop"] for d in at_r3] == [0, 1, 2, 3]
    assert magnitudes[1] > magnitudes[2] > magnitudes[3]
    assert len(centrality) == 8


def test_cli_writes_every_output(tmp_path):
    assert main(["influence", "alignment", "--quick", "--out", str(tmp_path)]) == 0
    assert main(["influence", "cascade", "--quick", "--out", str(tmp_path)]) == 0
    with gzip.open(tmp_path / "alignment.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ALIGNMENT_COLUMNS
    assert all(0 <= int(r["hop"]) <= int(r["r"]) for r in rows)
    assert all((r["estimate_probe_second_order"] == "") == (r["r"] != "1") for r in rows)
    table = (tmp_path / "alignment_summary.md").read_text()
    assert "| probe_second_order |" in table and "| n/a | n/a |" in table
    _check_by_round_against_the_long_csv(rows, tmp_path / "alignment_by_round.csv")
    assert "## r = 1 by probe round (lr 0.1)" in table
    for name in (
        "alignment_summary.csv",
        "alignment_summary.md",
        "cascade_decay.csv",
        "cascade_centrality.csv",
        "cascade_summary.md",
    ):
        assert (tmp_path / name).stat().st_size > 0
    first = (tmp_path / "alignment.csv.gz").read_bytes()
    assert main(["influence", "alignment", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "alignment.csv.gz").read_bytes() == first  # same inputs, same bytes


def test_cli_flags_configure_the_experiment_and_the_regenerate_line_reproduces_it(tmp_path, capsys):
    import shlex

    from robustbench_dice.paper import InfluenceJob

    out = tmp_path / "er"
    args = ["influence", "cascade", "--quick", "--topologies", "erdos_renyi", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "1 training run," in stdout and "note:" not in stdout
    config = CascadeConfig(topologies=("erdos_renyi",), rounds=40, probe_rounds=3, nodes=8, horizon=3, seed=3)
    assert InfluenceJob("cascade", out, config).up_to_date()  # the stamp records what the folder holds
    assert not InfluenceJob("cascade", out, CascadeConfig()).up_to_date()  # so the paper suite would redo it
    with open(out / "cascade_decay.csv") as f:
        assert {r["topology"] for r in csv.DictReader(f)} == {"erdos_renyi"}
    summary = (out / "cascade_summary.md").read_text()
    command = summary.split("Regenerate: `")[1].split("`")[0]
    assert "--topologies erdos_renyi" in command and "--seed 3" in command and "--quick" not in command
    first = (out / "cascade_decay.csv").read_bytes()
    assert main(shlex.split(command)[1:]) == 0  # the line as printed, without the program name
    assert (out / "cascade_decay.csv").read_bytes() == first


def test_a_custom_configuration_in_the_default_folder_is_pointed_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["influence", "cascade", "--quick", "--topologies", "ring"]) == 0
    assert "note: results/influence/ now holds a configuration other than the committed one" in capsys.readouterr().out
    assert (tmp_path / "results" / "influence" / "cascade.config.json").is_file()


def test_default_experiments_regenerate_line_is_the_plain_command():
    from robustbench_dice.influence import command_line

    assert command_line("alignment", AlignmentConfig()) == "robustbench-dice influence alignment"
    assert command_line("cascade", CascadeConfig(lr=0.3), "results/influence") == (
        "robustbench-dice influence cascade --lr 0.3"
    )


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--topologies", "rnig"], "did you mean 'ring'"),
        (["--topologies", "torus", "--nodes", "7"], "7 is not such a product"),
        (["--rounds", "3", "--horizon", "3"], "leaves no probe round"),
        (["--topologies", "ring", "file"], "cannot run topology 'file' (no adjacency file can be given to them)"),
        (["--rounds", "20", "--probe-rounds", "500"], "probe_rounds=500 does not fit: rounds=20 with horizon=3 has 17"),
        (["--lrs", "0.1", "-0.5"], "lr must be finite and > 0"),
        (["--nodes", "1"], "nodes must be an integer >= 2"),
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--removal", "sample", "--batch-size", "1"], "removal='sample' needs batch_size >= 2"),
        (["--topologies", "ring", "ring"], "topologies lists 'ring' twice: its runs would be made twice"),
        (["--lrs", "0.1", "1", "0.1"], "lrs lists 0.1 twice"),
        (["--models", "mlp", "logreg", "mlp"], "models lists 'mlp' twice"),
    ],
)
def test_bad_experiment_configurations_fail_before_any_training(flags, message, tmp_path, capsys):
    assert main(["influence", "alignment", *flags, "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "training run" not in captured.out
    assert not any(tmp_path.iterdir())


def test_a_model_the_dataset_cannot_feed_fails_before_the_other_models_train(tmp_path, capsys):
    flags = ["--quick", "--dataset", "mnist1d", "--models", "logreg", "cnn", "--out", str(tmp_path)]
    assert main(["influence", "alignment", *flags]) == 2
    captured = capsys.readouterr()
    assert "model 'cnn' needs image inputs" in captured.err and "[1/" not in captured.out  # logreg never trained
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_fails_before_any_training(tmp_path, capsys):
    assert main(["influence", "cascade", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_committed_influence_results_are_up_to_date():
    """The paper suite re-runs an influence folder whose stamp is not its configuration's: a new config field (or a
    results-version bump) must come with the committed stamps, or ``run --suite paper`` silently redoes them."""
    from robustbench_dice.paper import paper_plan

    jobs = paper_plan(None, Path(__file__).parents[1] / "results" / "influence").influence
    assert [(job.kind, job.out.name) for job in jobs] == [
        ("alignment", "influence"),
        ("cascade", "influence"),
        ("alignment", "one_sample"),
        ("poisoning", "poisoning"),
    ]
    for job in jobs:
        assert job.up_to_date(), f"{job.stamp} is not the stamp of the paper suite's {job.kind} configuration"


def _check_by_round_against_the_long_csv(rows, path):
    """Each per-round row is recomputed from the long CSV: per source, GT_r = sum over listed receivers / N."""
    from scipy.stats import pearsonr

    nodes = 8  # the CLI's --quick configuration: 8 nodes, ring, lr 0.1 and 1.0, 3 probe rounds
    with open(path) as f:
        by_round = [r for r in csv.DictReader(f) if r["estimator"] == "dice"]
    assert len(by_round) == 2 * 2 * 3 * 3  # models x lrs x r x rounds
    for row in by_round:
        mine = [r for r in rows if all(r[c] == row[c] for c in ("model", "topology", "lr", "r", "round"))]
        estimate, truth = np.zeros(nodes), np.zeros(nodes)
        for r in mine:
            estimate[int(r["source"])] += float(r["estimate"]) / nodes
            truth[int(r["source"])] += float(r["ground_truth"]) / nodes
        assert int(row["sources"]) == nodes
        assert float(row["pearson"]) == pytest.approx(pearsonr(estimate, truth).statistic, abs=1e-4)
        assert float(row["mean_abs_ground_truth"]) == pytest.approx(np.abs(truth).mean(), rel=1e-4)
        assert float(row["mean_abs_error"]) == pytest.approx(np.abs(truth - estimate).mean(), rel=1e-3)


def test_tracked_proximal_influence_flags_label_flippers(tmp_path):
    result = simulate(Scenario(attack="label_flip", byzantine=3, topology="torus", rounds=100, track_influence=True))
    last = result.influence_curve[-1]
    assert last.byzantine_mean < last.honest_mean
    byz = set(result.byzantine)
    honest_values = [v for _, k, v in result.proximal_influence if k not in byz]
    byzantine_values = [v for _, k, v in result.proximal_influence if k in byz]
    assert np.median(byzantine_values) < np.median(honest_values)
    path = tmp_path / "r.json"
    result.write_json(path)
    assert json.loads(path.read_text())["influence_curve"][-1]["byzantine_mean"] == pytest.approx(last.byzantine_mean)


def test_track_influence_flag_on_the_cli(tmp_path):
    out = tmp_path / "o.json"
    assert main(["simulate", "--rounds", "3", "--nodes", "6", "--track-influence", "--json", str(out), "--quiet"]) == 0
    assert len(json.loads(out.read_text())["proximal_influence"]) == 12  # ring: 2 in-neighbours x 6 nodes


@pytest.mark.parametrize(
    "rounds,eval_every,defense,validation_passes",
    # gossip: the engine's validation gradient shares a pass with the next minibatch gradient (a separate
    # pass only in the last round); dice_pruning: the engine reuses the defense's (one pass per round)
    [(7, 3, "gossip", 1), (6, 2, "gossip", 1), (6, 2, "dice_prune", 6)],
)
def test_tracked_influence_is_the_definition_and_does_not_change_training(
    rounds, eval_every, defense, validation_passes, monkeypatch
):
    import torch

    import robustbench_dice.engine as engine
    from robustbench_dice import Simulation
    from robustbench_dice.dice import proximal_influence
    from robustbench_dice.setup import validation_grad

    scenario = Scenario(
        attack="label_flip",
        byzantine=3,
        defense=defense,
        rounds=rounds,
        eval_every=eval_every,
        nodes=8,
        dtype="float64",
        track_influence=True,
    )
    passes = []

    def counted(*args):
        passes.append(1)
        return validation_grad(*args)

    monkeypatch.setattr(engine, "validation_grad", counted)
    records = []
    sim = Simulation.from_scenario(scenario)
    sim.observer = records.append
    result = sim.run()
    assert len(passes) == validation_passes
    total = sum(
        proximal_influence(validation_grad(sim.setup.model, sim.setup.data, r.theta_next), r.delta, r.weights)
        for r in records
    )
    for j, k, value in result.proximal_influence:
        assert value == pytest.approx(float(total[j, k]), rel=1e-12, abs=1e-15)
    plain = Simulation.from_scenario(scenario.replace(track_influence=False))
    plain.run()
    # tracking shares a forward pass with training but must not change it (bit-identical here; BLAS kernels
    # chosen by matrix height could differ in the last bit elsewhere)
    torch.testing.assert_close(plain.final_theta, sim.final_theta, rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")
def test_tracked_influence_on_a_large_sparse_graph_takes_edge_products_and_is_the_definition():
    from robustbench_dice import Simulation
    from robustbench_dice.dice import proximal_influence
    from robustbench_dice.setup import validation_grad

    # 40 nodes on a ring: W is dense for gossip (below 128 nodes) but sparse enough for edge-only products
    scenario = Scenario(nodes=40, topology="ring", rounds=3, batch_size=16, dtype="float64", track_influence=True)
    records = []
    sim = Simulation.from_scenario(scenario)
    sim.observer = records.append
    result = sim.run()
    mixing = sim.mixing_at(0)
    assert mixing.weights.layout == torch.strided and mixing.influence_weights.layout == torch.sparse_csr
    dense_total = sum(
        proximal_influence(validation_grad(sim.setup.model, sim.setup.data, r.theta_next), r.delta, r.weights)
        for r in records
    )
    assert len(result.proximal_influence) == 80  # 2 in-neighbours x 40 nodes
    for j, k, value in result.proximal_influence:
        assert value == pytest.approx(float(dense_total[j, k]), rel=1e-12, abs=1e-15)


def test_cascade_centrality_figure_draws_the_irregular_topologies_with_their_spearman(tmp_path, monkeypatch):
    from scipy.stats import spearmanr

    import robustbench_dice.figures as figures

    header = "dataset,model,topology,source,degree,eigenvector_centrality,mean_influence,mean_abs_influence\n"
    star = [(0, 3, 9e-4), (1, 1, 2e-4), (2, 1, 3e-4), (3, 1, 1e-4)]
    lines = [f"digits,mlp,ring,{j},2,0.5,1e-4,{1e-4 * (j + 1)}\n" for j in range(4)]
    lines += [f"digits,mlp,star,{j},{d},0.5,{v},{v}\n" for j, d, v in star]
    (tmp_path / "cascade_centrality.csv").write_text(header + "".join(lines))
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: drawn.append((fig, name)) or [out / name])
    assert figures.cascade_centrality(tmp_path, tmp_path / "f") == [tmp_path / "f" / "cascade_centrality"]
    (fig, _), expected = drawn[0], spearmanr([3, 1, 1, 1], [9e-4, 2e-4, 3e-4, 1e-4]).statistic
    assert [ax.get_title() for ax in fig.axes] == [f"star (Spearman {expected:.2f})"]  # the ring's degrees are equal
    (tmp_path / "cascade_centrality.csv").write_text(header + "".join(lines[:4]))
    assert figures.cascade_centrality(tmp_path, tmp_path / "f") == []


def test_influence_experiments_run_on_a_plugin_model_and_say_how_to_reproduce_them(
    tmp_path, restore_registry, monkeypatch
):
    """DICE on your own model: the `--plugins` flag loads it, and the Regenerate line carries the flag."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # the folder is shown relative to the working directory only where it lies below it
    examples = Path(__file__).parents[1] / "docs" / "examples"
    flags = ["--models", "small_convnet", "--lrs", "0.1", "--sweep-topologies", "--rounds", "10", "--nodes", "6"]
    assert main(["influence", "alignment", "--quick", *flags, "--out", str(tmp_path), "--plugins", str(examples)]) == 0
    with open(tmp_path / "alignment_summary.csv") as f:
        dice = [r for r in csv.DictReader(f) if r["estimator"] == "dice"]
    assert {r["model"] for r in dice} == {"small_convnet"} and all(float(r["pearson"]) > 0.5 for r in dice), dice
    assert f"--plugins {examples}`" in (tmp_path / "alignment_summary.md").read_text()


def test_figures_draw_each_influence_experiment_folder_with_its_name(tmp_path):
    """The paper suite writes experiments into folders inside the influence folder (one_sample/, mnist/): each
    gets its figures, named after it; a folder no experiment wrote is passed over."""
    influence = tmp_path / "influence"
    assert main(["influence", "alignment", "--quick", "--out", str(influence)]) == 0
    assert (
        main(["influence", "alignment", "--quick", "--removal", "sample", "--out", str(influence / "one_sample")]) == 0
    )
    assert "without one sample of the source's batch" in (influence / "one_sample" / "alignment_summary.md").read_text()
    (influence / "notes").mkdir()
    out = tmp_path / "figures"
    common = ["--store", str(tmp_path / "no-store"), "--influence", str(influence), "--out", str(out)]
    assert main(["figures", "--kind", "influence_alignment", *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "influence_alignment.pdf",
        "influence_alignment.png",
        "influence_alignment_one_sample.pdf",
        "influence_alignment_one_sample.png",
    ]


@pytest.mark.parametrize(
    "name,damage,reason",
    [
        ("alignment.csv.gz", lambda b: b[:200], "EOFError: Compressed file ended"),  # a copy cut short
        ("alignment.csv.gz", lambda b: b"version https://git-lfs.github.com/spec/v1\n", "BadGzipFile"),  # LFS pointer
        ("alignment.config.json", lambda b: b"{", "JSONDecodeError"),
        ("alignment.config.json", lambda b: b"[]", "a JSON list, not an object"),
        ("cascade_decay.csv", lambda b: b.split(b"\n")[0] + b"\n", "no rows"),
        ("cascade_decay.csv", lambda b: b"hop,value\n1,2\n", "no column 'topology'"),
        ("cascade_centrality.csv", lambda b: b[: b.index(b"\n", 100) + 8], "row \\d+ does not have the header's"),
        ("poisoning/poisoning.csv.gz", lambda b: gzip.compress(b"\xff\xfe"), "UnicodeDecodeError"),
    ],
)
def test_figures_name_an_influence_file_that_does_not_read(tmp_path, capsys, name, damage, reason):
    """A damaged output of an influence experiment stopped `figures` with a traceback from gzip, json or a KeyError;
    now it is an error naming the file and the command that writes it again."""
    import shutil

    influence = tmp_path / "influence"
    shutil.copytree(Path(__file__).parents[1] / "results" / "influence", influence)
    path = influence / name
    path.write_bytes(damage(path.read_bytes()))
    experiment = path.name.split("_")[0].split(".")[0]
    kind = {"alignment": "influence_alignment", "poisoning": "poisoning_influence"}.get(experiment, path.name[:-4])
    flags = ["--kind", kind, "--store", str(tmp_path / "store"), "--influence", str(influence)]
    assert main(["figures", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(f"'{path}' is not a readable output of `robustbench-dice influence` \\(.*{reason}", err), err
    assert f"write it again with `robustbench-dice influence {experiment} --out {path.parent}`" in err


@pytest.mark.parametrize("folder,removal", [("influence", "batch"), ("influence/one_sample", "sample")])
def test_one_committed_alignment_setting_reproduces(folder, removal):
    """The MLP on the one-peer graph at lr 0.1 (the setting the targets turn on), re-run: its summary rows are the
    committed ones to the printed digits. A change that moves DICE's numbers fails here until the influence
    results are regenerated (`robustbench-dice run --suite paper`)."""
    from robustbench_dice.influence import SUMMARY_COLUMNS, _csv_text

    config = AlignmentConfig(
        models=("mlp",), topologies=("one_peer_exponential",), lrs=(0.1,), sweep_topologies=(), removal=removal
    )
    _, summary, _ = run_alignment(config, log=lambda line: None)
    committed = (Path(__file__).parents[1] / "results" / folder / "alignment_summary.csv").read_text().splitlines()
    rows = _csv_text(SUMMARY_COLUMNS, summary).splitlines()
    assert rows[0] == committed[0] and len(rows) == 1 + 3 + 3 + 1  # dice, no_curvature: r = 1..3; second order: r = 1
    missing = [row for row in rows[1:] if row not in committed]
    assert not missing, (
        f"{missing}: not in the committed {folder}/alignment_summary.csv; regenerate the influence results"
    )


def test_poisoning_experiment_finds_the_label_flippers_and_writes_its_outputs(tmp_path, capsys):
    from robustbench_dice.poisoning import POISONING_COLUMNS

    assert main(["influence", "poisoning", "--quick", "--out", str(tmp_path)]) == 0
    assert "poisoning written to" in capsys.readouterr().out
    with gzip.open(tmp_path / "poisoning.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == POISONING_COLUMNS and len(rows) == 3 * 3 * 8  # r x probe rounds x sources
    with open(tmp_path / "poisoning_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [int(row["r"]) for row in summary] == [1, 2, 3]
    for row in summary:
        # the clean batches help the honest nodes, the flipped labels' ones barely (after 40 rounds; they hurt
        # later: the committed 200-round results); the estimate tracks the truth
        honest = float(row["mean_ground_truth_honest"])
        assert honest > 0 and float(row["mean_ground_truth_byzantine"]) < 0.1 * honest
        assert float(row["auc_estimate"]) > 0.95 and float(row["pearson"]) > 0.99
        # the AUC is scikit-learn's over the long CSV's rows of that r
        mine = [r for r in rows if r["r"] == row["r"]]
        labels = [int(r["byzantine"]) for r in mine]
        assert float(row["auc_estimate"]) == pytest.approx(
            roc_auc_score(labels, [-float(r["estimate"]) for r in mine]), abs=1e-6
        )
    assert sum(int(r["byzantine"]) for r in rows if r["r"] == "1" and r["round"] == rows[0]["round"]) == 2
    assert (tmp_path / "poisoning_summary.md").read_text().count("| ring |") == 3
    first = (tmp_path / "poisoning.csv.gz").read_bytes()
    assert main(["influence", "poisoning", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "poisoning.csv.gz").read_bytes() == first  # same inputs, same bytes
    figures = tmp_path / "figures"
    common = ["--store", str(tmp_path / "no-store"), "--out", str(figures), "--kind", "poisoning_influence"]
    assert main(["figures", "--influence", str(tmp_path), *common]) == 0
    assert sorted(p.name for p in figures.iterdir()) == ["poisoning_influence.pdf", "poisoning_influence.png"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--attack", "sign_flip"], "attack 'sign_flip' is not a data-poisoning attack .*; valid: label_flip"),
        (["--byzantine", "0"], "byzantine must be in \\[1, nodes=8\\), got 0"),
        (["--attack", "labelflip"], "unknown attack 'labelflip' \\(did you mean 'label_flip'\\?\\)"),
        (["--attack-params", "fractio=0.3"], "attack 'label_flip' has no parameter 'fractio'"),
        (["--attack-params", "fraction=3"], "fraction must be in \\(0, 1\\], got 3"),
        (["--topologies", "torus", "ring", "torus"], "topologies lists 'torus' twice"),
    ],
)
def test_poisoning_refuses_what_it_cannot_measure(flags, message, tmp_path, capsys):
    assert main(["influence", "poisoning", "--quick", *flags, "--out", str(tmp_path)]) == 2
    assert re.search(message, capsys.readouterr().err) and not any(tmp_path.iterdir())


def test_poisoning_takes_the_attacks_parameters_and_its_regenerate_line_keeps_them():
    from robustbench_dice.influence import command_line
    from robustbench_dice.poisoning import PoisoningConfig

    config = PoisoningConfig(attack_params=["fraction=0.3", "rule=shift"])  # a list, as JSON gives it
    assert config.attack_params == ("fraction=0.3", "rule=shift")
    assert config.scenario("ring").attack_params == {"fraction": 0.3, "rule": "shift"}
    assert config.attack_label() == "label_flip(fraction=0.3, rule=shift)"
    line = command_line("poisoning", config, PoisoningConfig.default_out)
    assert line == "robustbench-dice influence poisoning --attack-params fraction=0.3 rule=shift"
    assert PoisoningConfig().scenario("ring").attack_params == {}  # the attack's own defaults
