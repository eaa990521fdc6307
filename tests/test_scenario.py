from pathlib import Path

import pytest

from robustbench_dice import Scenario
from robustbench_dice.errors import ConfigError
from robustbench_dice.setup import prepare


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(dataset="imagenet"), "unknown dataset 'imagenet'; valid: cifar10, digits, fashion-mnist, mnist, mnist1d"),
        (dict(model="resnet"), "unknown model 'resnet'; valid: cnn, logreg, mlp"),
        (dict(topology="rnig"), "unknown topology 'rnig' \\(did you mean 'ring'\\?\\); valid: complete"),
        (
            dict(mixing="metropolis"),
            "unknown mixing rule 'metropolis'.*valid: max_degree, metropolis_hastings, uniform",
        ),
        (dict(nodes=1), "nodes must be >= 2, got 1"),
        (dict(byzantine=16), "byzantine must satisfy 0 <= byzantine < nodes=16, got 16"),
        (dict(byzantine=-1), "byzantine must satisfy 0 <= byzantine < nodes=16, got -1"),
        (dict(byzantine_fraction=1.0), "byzantine_fraction must be in \\[0, 1\\)"),
        (dict(lr=0.0), "lr must be finite and > 0, got 0.0"),
        (dict(lr=-1.0), "lr must be finite and > 0"),
        (dict(lr=float("inf")), "lr must be finite and > 0, got inf"),
        (dict(lr=float("nan")), "lr must be finite and > 0, got nan"),
        (dict(weight_decay=float("nan")), "weight_decay must be finite and >= 0, got nan"),
        (dict(weight_decay=-0.1), "weight_decay must be finite and >= 0, got -0.1"),
        (dict(dirichlet_alpha=float("inf")), "dirichlet_alpha must be finite and > 0, got inf .*partition='iid'"),
        (dict(dirichlet_alpha=float("nan")), "dirichlet_alpha must be finite and > 0, got nan"),
        (dict(rounds=0), "rounds must be a positive integer, got 0"),
        (dict(batch_size=-2), "batch_size must be a positive integer, got -2"),
        (dict(eval_every=0), "eval_every must be a positive integer"),
        (dict(momentum=1.0), "momentum must be in \\[0, 1\\)"),
        (dict(rounds=2.5), "rounds must be an integer, got 2.5"),
        (dict(lr="fast"), "lr must be a number, got 'fast'"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(track_influence=True, val_fraction=0.0), "val_fraction=0 holds none out"),
        (dict(hidden=(64, 0)), "hidden layer widths must be positive, got \\[64, 0\\]"),
        (dict(hidden=()), "hidden must list at least one layer width for model 'mlp', got \\[\\]"),
        (dict(hidden=64), "hidden must be a list of integers, got 64"),
        # a list or a string where a table belongs was a TypeError / ValueError from dict() before
        (dict(defense_params=[1, 2]), "defense_params must be a table of parameters, got \\[1, 2\\]"),
        (dict(attack_params="a=1"), "attack_params must be a table of parameters, got 'a=1'"),
    ],
)
def test_bad_scenarios_name_the_value_and_the_valid_ones(changes, message):
    with pytest.raises(ConfigError, match=message):
        Scenario(**changes)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(batch_size=500), "batch_size=500 is larger than a node's training data|too few for 16 nodes"),
        (dict(nodes=64, batch_size=32), r"too few for 64 nodes.*ceil\(32 / 0.8\) = 40 samples"),
        (dict(topology="torus", nodes=13), "13 is not such a product"),
        (dict(topology="erdos_renyi", nodes=40, edge_probability=0.01), "disconnected in all"),
        (dict(dataset="mnist", data_root="/nonexistent/data"), "does not exist; get mnist with"),
    ],
)
def test_bad_setups_fail_before_training(changes, message):
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        prepare(Scenario(**changes))


def test_fraction_overrides_count():
    assert Scenario(byzantine_fraction=0.25).n_byzantine == 4


def test_a_whole_number_given_for_a_float_field_is_the_same_run(tmp_path):
    from robustbench_dice.store import scenario_key

    written = tmp_path / "s.toml"
    written.write_text("lr = 1\nweight_decay = 0\nbyzantine_fraction = 0\n")
    whole = Scenario.from_toml(written)
    assert whole == Scenario(lr=1.0, weight_decay=0.0, byzantine_fraction=0.0)
    assert scenario_key(whole) == scenario_key(Scenario(lr=1.0, weight_decay=0.0, byzantine_fraction=0.0))
    assert [type(whole.to_dict()[k]) for k in ("lr", "weight_decay", "byzantine_fraction")] == [float] * 3


def test_a_whole_number_given_for_a_plugins_float_parameter_is_the_same_run():
    from robustbench_dice.store import scenario_key

    whole = Scenario(attack="gaussian", attack_params={"std": 1}, defense="krum", defense_params={"f": 2})
    same = Scenario(attack="gaussian", attack_params={"std": 1.0}, defense="krum", defense_params={"f": 2})
    assert scenario_key(whole) == scenario_key(same)
    assert type(whole.attack_params["std"]) is float and type(whole.defense_params["f"]) is int  # f is an int
    assert Scenario(defense="krum", defense_params={"f": "auto"}).defense_params == {"f": "auto"}
    # a plugin not registered here: its parameters are kept as given (the run fails later, naming the plugin)
    assert type(Scenario(attack="not_loaded_here", attack_params={"level": 1}).attack_params["level"]) is int


def test_toml_roundtrip_and_errors(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('dataset = "digits"\nnodes = 8\nhidden = [32, 16]\n[attack_params]\nscale = -2.0\n')
    s = Scenario.from_toml(good)
    assert s.nodes == 8 and s.hidden == (32, 16) and s.attack_params == {"scale": -2.0}
    nested = tmp_path / "n.toml"
    nested.write_text("[scenario]\nnodes = 6\n")
    assert Scenario.from_toml(nested).nodes == 6
    # beside [scenario], a table or field would be read by nothing: the run would silently use the defaults
    for beside in ("[scenario]\nnodes = 6\n[attack_params]\nscale = 2.0\n", "rounds = 5\n[scenario]\nnodes = 6\n"):
        nested.write_text(beside)
        with pytest.raises(ConfigError, match="outside its \\[scenario\\] table, where nothing reads it"):
            Scenario.from_toml(nested)
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = = 3\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        Scenario.from_toml(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("node = 3\n")
    with pytest.raises(ConfigError, match="unknown scenario key 'node' \\(did you mean 'nodes'\\?\\)"):
        Scenario.from_toml(typo)
    with pytest.raises(ConfigError, match="does not exist"):
        Scenario.from_toml(tmp_path / "missing.toml")
    suite = Path(__file__).parents[1] / "docs" / "example-suite.toml"
    with pytest.raises(ConfigError, match="is a suite file .* run it with `robustbench-dice run --suite "):
        Scenario.from_toml(suite)
    both = tmp_path / "both.toml"  # the fraction won, silently, as it did for the two flags
    both.write_text("byzantine = 1\nbyzantine_fraction = 0.25\n")
    with pytest.raises(ConfigError, match="sets byzantine = 1 and byzantine_fraction = 0.25: the fraction overrides"):
        Scenario.from_toml(both)


def test_a_stored_record_or_result_json_re_runs_to_the_same_numbers(tmp_path, capsys):
    import json

    import torch

    from robustbench_dice.cli import main
    from robustbench_dice.runner import RUN_THREADS, run_cell  # the suite runner's own path into the store
    from robustbench_dice.store import ResultStore

    scenario = Scenario(nodes=6, rounds=6, eval_every=3, attack="label_flip", byzantine=1, defense="median", seed=4)
    store = ResultStore(tmp_path / "store")

    threads = torch.get_num_threads()
    record = run_cell(scenario.to_dict(), str(store.root), (), RUN_THREADS)  # a worker: sets its own threads
    torch.set_num_threads(threads)
    stored = next((tmp_path / "store").glob("*.json"))
    assert Scenario.from_file(stored) == scenario
    out = tmp_path / "again.json"
    assert main(["simulate", "--quiet", "--config", str(stored), "--json", str(out)]) == 0
    assert f"on {RUN_THREADS} thread(s)" in capsys.readouterr().out  # the record's own thread count
    assert torch.get_num_threads() == threads  # and main() gives the process its own back
    again = json.loads(out.read_text())
    for field in ("final_accuracy_mean", "final_accuracy_worst", "node_accuracy", "suspicion", "curve"):
        assert again[field] == record["result"][field]
    assert Scenario.from_file(out) == scenario  # a simulate --json result holds its scenario too
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(scenario.to_dict()))
    assert Scenario.from_file(plain) == scenario
    for text, message in (("[1, 2]", "holds no scenario"), ("{", "malformed JSON"), ('{"nodse": 4}', "did you mean")):
        plain.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Scenario.from_file(plain)
    capsys.readouterr()


def test_replace_revalidates():
    with pytest.raises(ConfigError, match="nodes must be >= 2"):
        Scenario().replace(nodes=0)


def test_documented_example_scenario_loads_and_prepares():
    from pathlib import Path

    s = Scenario.from_toml(Path(__file__).parents[1] / "docs" / "example-scenario.toml")
    assert s.partition == "dirichlet" and s.topology == "torus"
    prepare(s.replace(rounds=1))


def test_fields_the_scenario_never_reads_are_named():
    assert Scenario().unused_fields() == []
    assert Scenario(topology="erdos_renyi", edge_probability=0.5).unused_fields() == []
    unused = Scenario(edge_probability=0.5, samples_per_node=40, model="logreg", hidden=(32,)).unused_fields()
    assert [u.split()[0] for u in unused] == ["samples_per_node", "hidden", "edge_probability"]
    assert "read only with topology erdos_renyi; this run has ring" in unused[2]
    assert Scenario(partition="replicated", samples_per_node=40).unused_fields() == []


def test_simulate_notes_ignored_flags(capsys):
    from robustbench_dice.cli import main

    assert main(["simulate", "--quiet", "--nodes", "6", "--rounds", "2", "--torus-rows", "2"]) == 0
    assert "note: torus_rows (read only with topology torus; this run has ring) is ignored" in capsys.readouterr().err


@pytest.mark.parametrize(
    "built_for,message",
    [
        (None, r"\(built without CUDA\): install a CUDA build of torch"),
        ("12.8", r"\(CUDA 12.8 build, no GPU visible\): check `nvidia-smi` and CUDA_VISIBLE_DEVICES"),
    ],
)
def test_cuda_on_a_machine_without_one_says_why(monkeypatch, built_for, message):
    import torch

    from robustbench_dice.setup import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", built_for)
    with pytest.raises(ConfigError, match=f"device 'cuda' requested but .*{message}.*or use device='cpu' or 'auto'"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_to_dict_is_asdict_with_hidden_as_a_list_and_shares_nothing():
    """The store's keys hash to_dict(): it must stay exactly what dataclasses.asdict gives."""
    import dataclasses
    import json

    s = Scenario(hidden=(8, 4), attack="alie", attack_params={"z": 1.5}, defense="krum", defense_params={"f": "auto"})
    out = s.to_dict()
    expected = dict(dataclasses.asdict(s), hidden=[8, 4])
    assert out == expected and json.dumps(out) == json.dumps(expected)  # the same keys in the same order
    out["attack_params"]["z"] = 9.0
    out["hidden"].append(2)
    assert s.attack_params == {"z": 1.5} and s.hidden == (8, 4)


def test_a_scenario_from_text_names_its_source_and_checks_its_kind():
    assert Scenario.from_text("rounds = 3", "toml").rounds == 3
    assert Scenario.from_text('{"scenario": {"rounds": 4}}', "json").rounds == 4
    with pytest.raises(ConfigError, match="malformed JSON in standard input"):
        Scenario.from_text("{", "json")
    with pytest.raises(ConfigError, match="unknown config kind 'yaml'.*valid: json, toml"):
        Scenario.from_text("rounds: 3", "yaml")
