"""The paper suite's plan, its resumable influence parts, the CLI wiring, and the figures it feeds."""

import dataclasses

import numpy as np
import pytest
from test_datasets import _write_idx

import robustbench_dice.paper as paper
from robustbench_dice.cli import main
from robustbench_dice.figures import write_figures
from robustbench_dice.influence import AlignmentConfig, CascadeConfig
from robustbench_dice.runner import run_suite
from robustbench_dice.store import ResultStore
from robustbench_dice.suite import PluginSpec, Suite

QUICK_ALIGNMENT = AlignmentConfig(
    models=("logreg",), topologies=("ring",), lrs=(0.1,), sweep_topologies=(), nodes=6, rounds=12, probe_rounds=2
)
QUICK_CASCADE = CascadeConfig(topologies=("ring",), nodes=6, rounds=12, probe_rounds=2, horizon=2)


def tracked_suite(name="paper-tiny", topologies=("ring", "torus")) -> Suite:
    return Suite(
        name=name,
        topologies=topologies,
        attacks=(PluginSpec("none"), PluginSpec("label_flip")),
        defenses=(PluginSpec("gossip"), PluginSpec("dice_prune")),
        nodes=(6,),
        byzantine=(1,),
        seeds=(0, 1),
        base={"rounds": 8, "eval_every": 4, "batch_size": 8, "track_influence": True},
    )


def test_plan_without_data_root_lists_what_is_missing_and_how_to_get_it(tmp_path):
    plan = paper.paper_plan(None, tmp_path)
    assert [s.name for s in plan.suites] == ["paper-digits", "paper-mnist1d"]
    assert all(s.base["track_influence"] for s in plan.suites)
    assert {(job.kind, job.out) for job in plan.influence} == {
        ("alignment", tmp_path),
        ("cascade", tmp_path),
        ("alignment", tmp_path / "one_sample"),
        ("poisoning", tmp_path / "poisoning"),
    }
    assert [job.config.removal for job in plan.influence if job.kind == "alignment"] == ["batch", "sample"]
    assert len(plan.missing) == 2 and "robustbench-dice download mnist" in plan.missing[0]
    assert "cifar10" in plan.missing[1]
    cells = plan.suites[0].scenarios()
    assert len(cells) == 3 * 4 * 2 * 3 and {c.defense for c in cells} == {"gossip", "dice_prune"}


def test_plan_includes_mnist_when_it_is_on_disk(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    plan = paper.paper_plan(str(tmp_path), tmp_path / "influence")
    mnist = [s for s in plan.suites if s.name == "paper-mnist"]
    assert mnist and mnist[0].base["data_root"] == str(tmp_path) and mnist[0].models == ("mlp",)
    influence = tmp_path / "influence"
    assert {job.out for job in plan.influence} == {
        influence,
        influence / "one_sample",
        influence / "poisoning",
        influence / "mnist",
    }
    mnist_alignment = next(j for j in plan.influence if j.kind == "alignment" and j.out.name == "mnist")
    assert mnist_alignment.config.dataset == "mnist" and mnist_alignment.config.data_root == str(tmp_path)
    assert len(plan.missing) == 1 and plan.missing[0].startswith("cifar10")


def test_influence_parts_rerun_only_when_their_configuration_or_results_version_changes(tmp_path, monkeypatch):
    job = paper.InfluenceJob("cascade", tmp_path, QUICK_CASCADE)
    assert not job.up_to_date()
    job.run(log=lambda line: None)
    assert job.up_to_date() and (tmp_path / "cascade_decay.csv").is_file()
    changed = paper.InfluenceJob("cascade", tmp_path, dataclasses.replace(QUICK_CASCADE, topologies=("star",)))
    assert not changed.up_to_date()
    monkeypatch.setattr(paper, "RESULTS_VERSION", "older")  # files made by code that gave other numbers
    assert not job.up_to_date()
    monkeypatch.undo()
    assert job.up_to_date()
    job.stamp.write_text("{ not json")
    assert not job.up_to_date()


def test_run_paper_suite_end_to_end(tmp_path, monkeypatch, capsys):
    def tiny_plan(data_root, influence_root):
        return paper.PaperPlan(
            suites=[tracked_suite()],
            influence=[
                paper.InfluenceJob("alignment", tmp_path / "influence", QUICK_ALIGNMENT),
                paper.InfluenceJob("cascade", tmp_path / "influence", QUICK_CASCADE),
            ],
            missing=["mnist: no --data-root given"],
        )

    monkeypatch.setattr(paper, "paper_plan", tiny_plan)
    command = ["run", "--suite", "paper", "--store", str(tmp_path / "store"), "--tables", str(tmp_path / "tables")]
    assert main([*command, "--jobs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "leaving out mnist: no --data-root given" in out and "influence cascade ->" in out
    assert (tmp_path / "tables" / "summary.csv").read_text().count("\n") == 1 + 16
    assert (tmp_path / "influence" / "alignment_summary.md").is_file()
    assert main([*command, "--jobs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "computed 0, already stored 16" in out and out.count("is up to date") == 2


def test_influence_roc_and_topology_figures(tmp_path):
    store = ResultStore(tmp_path / "store")
    progress = run_suite(tracked_suite(), store, jobs=1, show_progress=False)
    assert progress.done == 16
    first = write_figures(store, tmp_path / "none", tmp_path / "f1")
    names = {p.name for p in first}
    group = "ring_digits_mlp_6n_1b_iid"
    for kind in ("roc_curves", "influence_curves", "topology_influence", "accuracy_curves", "detection_auc"):
        assert {f"{kind}_{group}.png", f"{kind}_{group}.pdf"} <= names, kind
    assert "topology_influence_torus_digits_mlp_6n_1b_iid.png" in names
    second = write_figures(store, tmp_path / "none", tmp_path / "f2")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]  # byte-reproducible


def test_figures_and_tables_can_be_restricted_to_one_suite(tmp_path):
    store = ResultStore(tmp_path / "store")
    run_suite(tracked_suite("a", ("ring",)), store, jobs=1, show_progress=False)
    other = tracked_suite("b", ("torus",))
    run_suite(other, store, jobs=1, show_progress=False)
    suite_file = tmp_path / "b.toml"
    suite_file.write_text(
        '[suite]\ntopologies = ["torus"]\nattacks = ["none", "label_flip"]\ndefenses = ["gossip", "dice_prune"]\n'
        "nodes = [6]\nbyzantine = [1]\nseeds = [0, 1]\n"
        "[suite.base]\nrounds = 8\neval_every = 4\nbatch_size = 8\ntrack_influence = true\n"
    )
    args = ["--store", str(store.root), "--suite", str(suite_file)]
    assert main(["tables", *args, "--out", str(tmp_path / "t")]) == 0
    assert "ring" not in (tmp_path / "t" / "summary.csv").read_text()
    assert main(["figures", *args, "--out", str(tmp_path / "f"), "--influence", str(tmp_path / "none")]) == 0
    assert not list((tmp_path / "f").glob("*ring*")) and list((tmp_path / "f").glob("*torus*"))


@pytest.mark.parametrize("suite", ["paper"])
def test_load_suite_names_paper_among_the_builtins(suite, tmp_path):
    from robustbench_dice.errors import ConfigError
    from robustbench_dice.suite import load_suite

    with pytest.raises(ConfigError, match="built-in: quick, full, paper"):
        load_suite("nonexistent-suite")


def test_topology_figure_leaves_out_a_tracked_run_whose_influence_is_all_nan(tmp_path):
    """A diverged tracked run stores its edges' NaN influence as None: there is nothing to colour, so no figure."""
    from robustbench_dice import Scenario
    from robustbench_dice.figures import topology_influence

    scenario = Scenario(nodes=6, byzantine=1, rounds=2, track_influence=True).to_dict()
    diverged = {"key": "k", "scenario": scenario, "result": {"byzantine": [0], "proximal_influence": [[1, 0, None]]}}
    assert topology_influence([diverged], tmp_path) == []
    finite = {"key": "k", "scenario": scenario, "result": {"byzantine": [0], "proximal_influence": [[1, 0, -0.5]]}}
    assert [p.suffix for p in topology_influence([finite], tmp_path)] == [".png", ".pdf"]
