import json
import math
import pickle
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_dice import Scenario, registry
from robustbench_dice.cli import main
from robustbench_dice.conformance import run_conformance, run_dataset_conformance
from robustbench_dice.datasets import DATASETS, PLUGIN_DATASETS, load_dataset
from robustbench_dice.engine import Simulation
from robustbench_dice.errors import ConfigError, DatasetNotFoundError
from robustbench_dice.registry import ATTACKS, DEFENSES, build_attack, build_defense
from robustbench_dice.setup import STREAMS, seed_streams

GOOD_ATTACK = '''
from dataclasses import dataclass
import torch
from robustbench_dice.plugins import Attack
from robustbench_dice.registry import register_attack


@register_attack
@dataclass
class {cls}(Attack):
    """Sends zeros (a test plugin; no paper)."""

    name = "{name}"
    level: float = 0.0

    def messages(self, view):
        return torch.full_like(view.half[view.byzantine], self.level)
'''


@pytest.fixture(autouse=True)
def _restore_registry(restore_registry):
    yield


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_user_folder_loads_good_files_and_lists_broken_ones(tmp_path, capsys):
    _write(tmp_path / "zeros.py", GOOD_ATTACK.format(cls="Zeros", name="zeros_user"))
    _write(tmp_path / "broken.py", "import not_a_module_anywhere\n")
    failed = registry.load_plugin_folder(tmp_path)
    assert "zeros_user" in ATTACKS
    assert len(failed) == 1 and "broken.py" in failed[0].source and "not_a_module_anywhere" in failed[0].error
    assert main(["list", "attacks", "--plugins", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "zeros_user" in out and "broken.py" in out and "failed to import" in out
    assert main(["list", "datasets"]) == 0  # the file may have meant to register a dataset
    assert "broken.py" in capsys.readouterr().out
    attack = build_attack("zeros_user", {"level": 1.5})
    assert pickle.loads(pickle.dumps(attack)).level == 1.5


def test_simulate_with_user_plugin(tmp_path, capsys):
    _write(tmp_path / "zeros.py", GOOD_ATTACK.format(cls="Zeros2", name="zeros_cli"))
    code = main(
        [
            "simulate",
            "--plugins",
            str(tmp_path),
            "--attack",
            "zeros_cli",
            "--byzantine",
            "2",
            "--nodes",
            "6",
            "--rounds",
            "3",
            "--defense",
            "median",
            "--quiet",
            "--attack-param",
            "level=2.0",
        ]
    )
    assert code == 0
    assert "detection AUC: edge" in capsys.readouterr().out


def test_suite_naming_a_user_plugin_runs_and_tabulates_with_plugins_flag(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write(plugins / "zeros.py", GOOD_ATTACK.format(cls="Zeros3", name="zeros_suite"))
    suite = tmp_path / "mine.toml"
    suite.write_text(
        '[suite]\ntopologies = ["complete"]\nattacks = ["zeros_suite"]\ndefenses = ["median"]\n'
        "nodes = [5]\nbyzantine = [1]\nseeds = [0]\n[suite.base]\nrounds = 2\neval_every = 1\n"
    )
    store, tables = str(tmp_path / "store"), str(tmp_path / "tables")
    common = ["--suite", str(suite), "--store", store]
    assert main(["run", *common, "--tables", tables, "--jobs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err  # not loaded yet: the error names the flag that loads it
    assert "unknown attack 'zeros_suite'" in err and "--plugins DIR" in err
    assert main(["run", *common, "--tables", tables, "--jobs", "1", "--quiet", "--plugins", str(plugins)]) == 0
    registry._user_folders.clear()  # as in a fresh process: each command loads what its flags name
    registry.ATTACKS.pop("zeros_suite")
    assert main(["tables", *common, "--out", tables, "--plugins", str(plugins)]) == 0
    assert "zeros_suite" in (tmp_path / "tables" / "accuracy.md").read_text()
    assert main(["figures", *common, "--out", str(tmp_path / "figures"), "--plugins", str(plugins)]) == 0
    assert "files written" in capsys.readouterr().out


def test_unknown_plugin_error_points_to_the_plugins_flag():
    with pytest.raises(ConfigError, match="of your own load with --plugins DIR"):
        build_attack("zeros_nowhere", {})


def test_duplicate_names_name_both_files(tmp_path):
    _write(tmp_path / "a.py", GOOD_ATTACK.format(cls="First", name="twice"))
    _write(tmp_path / "b.py", GOOD_ATTACK.format(cls="Second", name="twice"))
    with pytest.raises(ConfigError, match="two attack plugins are named 'twice': First in .*a.py and Second in .*b.py"):
        registry.load_plugin_folder(tmp_path)


def test_entry_point_of_an_installed_package(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "tinyplug").mkdir(parents=True)
    _write(site / "tinyplug" / "__init__.py", GOOD_ATTACK.format(cls="Tiny", name="tiny_ep"))
    info = site / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    _dataset_file(site / "tinyplug", "tiny_data")
    examples = Path(__file__).parents[1] / "docs" / "examples"
    for example in ("small_convnet.py", "hypercube.py"):
        (site / "tinyplug" / example).write_text((examples / example).read_text())
    groups = {
        "attacks": "tiny = tinyplug",
        "datasets": "tiny_data = tinyplug.tiny_data",
        "models": "small_convnet = tinyplug.small_convnet",
        "topologies": "hypercube = tinyplug.hypercube",
    }
    (info / "entry_points.txt").write_text("".join(f"[robustbench_dice.{g}]\n{e}\n" for g, e in groups.items()))
    (info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    registry.load_builtin_plugins()
    assert "tiny_ep" in ATTACKS and ATTACKS["tiny_ep"].__module__ == "tinyplug"
    assert PLUGIN_DATASETS["tiny_data"].__module__ == "tinyplug.tiny_data"
    assert registry.PLUGIN_FUNCTIONS["model"]["small_convnet"].__module__ == "tinyplug.small_convnet"
    assert registry.PLUGIN_FUNCTIONS["topology"]["hypercube"].__module__ == "tinyplug.hypercube"
    for module in ("tinyplug", *(f"tinyplug.{m}" for m in ("tiny_data", "small_convnet", "hypercube"))):
        sys.modules.pop(module, None)


def test_bad_plugin_parameters_are_clear_errors():
    with pytest.raises(ConfigError, match="attack 'label_flip' has no parameter 'flip'; valid: rule, fraction"):
        build_attack("label_flip", {"flip": 1})
    with pytest.raises(ConfigError, match="parameter 'f' must be int or 'auto', got 'two'"):
        build_defense("krum", {"f": "two"})
    with pytest.raises(ConfigError, match="defense 'dice_prune' parameter 'threshold' must be a number, got nan"):
        build_defense("dice_prune", {"threshold": float("nan")})
    assert math.isnan(build_attack("same_value", {"value": float("nan")}).value)  # an attack may send NaN
    with pytest.raises(ConfigError, match="rule must be one of reverse, shift, random"):
        build_attack("label_flip", {"rule": "sideways"})
    with pytest.raises(
        ConfigError, match="no parameter 'maxiter' \\(did you mean 'max_iter'\\?\\); valid: nu, max_iter"
    ):
        build_defense("geometric_median", {"maxiter": 3})
    with pytest.raises(ConfigError, match="unknown defense 'krumm' \\(did you mean 'krum'\\?\\)"):
        build_defense("krumm")


@pytest.mark.parametrize(
    "kind,name,params,message",
    [
        ("attack", "gaussian", {"std": -1.0}, "std must be >= 0, got -1.0"),
        ("attack", "free_ride", {"noise": -0.5}, "noise must be >= 0, got -0.5"),
        ("attack", "label_flip", {"fraction": 0.0}, r"fraction must be in \(0, 1\], got 0.0"),
        ("attack", "label_flip", {"fraction": 1.5}, r"fraction must be in \(0, 1\], got 1.5"),
        ("attack", "min_max", {"perturbation": "inverse"}, "perturbation must be one of std, unit, sign"),
        ("attack", "mimic", {"warmup": 0}, "warmup must be >= 1 round, got 0"),
        ("defense", "balance", {"gamma": 0.0}, "need gamma > 0, kappa >= 0, 0 <= alpha <= 1; got 0.0, 1.0, 0.5"),
        ("defense", "balance", {"alpha": 2.0}, "0 <= alpha <= 1; got 0.3, 1.0, 2.0"),
        ("defense", "clipped_gossip", {"tau": 0.0}, "tau must be > 0, got 0.0"),
        ("defense", "dice_prune", {"decay": 0.0}, "need warmup >= 0 and 0 < decay <= 1; got 5, 0.0"),
        ("defense", "dice_prune", {"warmup": -1}, "need warmup >= 0 and 0 < decay <= 1; got -1, 1.0"),
        ("defense", "dice_prune", {"trust": "blind"}, "trust must be one of"),
        ("defense", "geometric_median", {"nu": 0.0}, "need nu > 0, max_iter >= 1, ftol >= 0; got 0.0, 100, 1e-06"),
        ("defense", "geometric_median", {"max_iter": 0}, "got 1e-06, 0, 1e-06"),
        ("defense", "ubar", {"alpha": -0.1}, r"alpha must be in \[0, 1\], got -0.1"),
        ("defense", "nnm", {"rule": "ios"}, "rule must be one of"),
    ],
)
def test_out_of_range_plugin_parameters_name_the_plugin_and_the_value(kind, name, params, message):
    """Each built-in plugin's own validation, reached through the registry as a suite or the CLI reaches it."""
    build = build_attack if kind == "attack" else build_defense
    with pytest.raises(ConfigError, match=f"{kind} '{name}': .*{message}"):
        build(name, params)


def test_check_command_passes_a_good_file(tmp_path, capsys):
    path = _write(tmp_path / "good.py", GOOD_ATTACK.format(cls="Good", name="good_check"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PASS  good_check: pickles" in out and "all checks passed" in out
    if not torch.cuda.is_available():  # said, and counted apart from the passes
        assert "SKIP  good_check: same_numbers_on_cuda  (no CUDA device on this machine)" in out
        assert out.rstrip().endswith("all checks passed, 1 skipped")


RANDOM_DROP_DEFENSE = '''
from dataclasses import dataclass
import torch
from robustbench_dice.plugins import Aggregation, Defense, weighted_average
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class RandomDrop(Defense):
    """Each node drops each in-neighbour with probability `p` every round (a test plugin; no paper)."""

    name = "random_drop"
    p: float = 0.5

    def aggregate(self, view):
        nb = view.neighbours
        draws = torch.rand(nb.mask.shape, generator=view.generator).to(nb.mask.device)
        keep = nb.mask & (draws >= self.p)
        return Aggregation(theta=weighted_average(view, keep), suspicion=draws, pruned=nb.mask & ~keep)
'''


def test_a_randomised_defense_drawing_from_the_views_generator_is_reproducible(tmp_path, capsys):
    path = _write(tmp_path / "random_drop.py", RANDOM_DROP_DEFENSE)
    assert main(["check", str(path)]) == 0, capsys.readouterr().out
    assert "PASS  random_drop: same_seed_same_result" in capsys.readouterr().out
    base = Scenario(nodes=8, rounds=3, eval_every=3, topology="complete", defense="random_drop", byzantine=0)
    thetas = []
    for seed in (0, 0, 1):
        sim = Simulation.from_scenario(base.replace(seed=seed))
        sim.run()
        thetas.append(sim.final_theta)
    assert torch.equal(thetas[0], thetas[1]) and not torch.equal(thetas[0], thetas[2])
    # the defense's stream was appended: the streams before it (the stored runs' numbers) kept their values
    earlier = np.random.SeedSequence(0).spawn(6)
    assert [seed_streams(0)[k] for k in STREAMS[:6]] == [int(c.generate_state(1)[0]) for c in earlier]


def test_check_command_on_a_built_in_plugin_file_or_a_file_loaded_twice(tmp_path, capsys):
    from robustbench_dice.registry import load_plugin_file

    builtin = Path(__file__).parents[1] / "defenses" / "ios.py"
    assert main(["check", str(builtin)]) == 0  # the registered class, not a second copy that clashes with it
    assert "PASS  ios: pickles" in capsys.readouterr().out
    path = _write(tmp_path / "twice.py", GOOD_ATTACK.format(cls="Twice", name="twice_check"))
    first = load_plugin_file(path)
    assert [c.name for c in first] == ["twice_check"] and load_plugin_file(path) == first


BROKEN = '''
from dataclasses import dataclass, field
import torch
from robustbench_dice.plugins import Aggregation, Attack, Defense
from robustbench_dice.registry import register_attack, register_defense


@register_attack
@dataclass
class PoisonsEveryone(Attack):
    """Flips honest labels too and writes into the honest messages (broken on purpose)."""

    name = "poisons_everyone"

    def setup(self, context):
        context.train_labels[:] = 0

    def messages(self, view):
        view.half.zero_()
        return view.half[view.byzantine]


@register_defense
@dataclass
class NanDefense(Defense):
    """Returns NaN models and no per-neighbour scores of the right shape (broken on purpose)."""

    name = "nan_defense"
    lock: object = None

    def aggregate(self, view):
        return Aggregation(theta=view.own * float("nan"), suspicion=torch.full_like(view.neighbours.weight, float("inf")))


@register_defense
@dataclass
class UnseededDefense(Defense):
    """Adds noise from torch's global generator, not the run's seeds (broken on purpose)."""

    name = "unseeded_defense"

    def aggregate(self, view):
        return Aggregation(theta=view.own + 1e-3 * torch.randn_like(view.own))


@register_defense
@dataclass
class LeakyDefense(Defense):
    """Counts rounds on the instance and never resets the count, so a second run starts where the first ended."""

    name = "leaky_defense"
    _rounds_seen: int = field(default=0, init=False, repr=False, compare=False)

    def aggregate(self, view):
        self._rounds_seen += 1
        return Aggregation(theta=view.own * (1.0 - 1e-4 * self._rounds_seen))


@register_defense
@dataclass
class ScalesItsOwnModel(Defense):
    """Scales the node's own model in place, under the engine's feet (broken on purpose)."""

    name = "scales_its_own_model"

    def aggregate(self, view):
        return Aggregation(theta=view.own.mul_(0.5))


@register_defense
@dataclass
class ClipsTheGatheredMessages(Defense):
    """Clips the tensor neighbour_messages() returns in place (broken on purpose)."""

    name = "clips_the_gathered_messages"

    def aggregate(self, view):
        gathered = view.neighbour_messages().clamp_(-0.01, 0.01)
        return Aggregation(theta=gathered.mean(dim=1))
'''


def test_conformance_catches_broken_plugins(tmp_path, capsys):
    path = _write(tmp_path / "broken_plugins.py", BROKEN)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  poisons_everyone: attack_changes_only_byzantine_rows" in out
    assert "setup changed the training labels of honest nodes" in out
    assert "FAIL  nan_defense: defense_output_is_well_formed" in out
    assert "FAIL  unseeded_defense: same_seed_same_result" in out
    assert "FAIL  leaky_defense: same_seed_same_result" in out
    assert "running the same Simulation twice gave different parameters (draw random numbers from view.generator" in out
    assert (
        "FAIL  scales_its_own_model: defense_output_is_well_formed  (AssertionError: aggregate() modified view.own"
        in out
    )
    assert (
        "FAIL  clips_the_gathered_messages: defense_output_is_well_formed  (AssertionError: aggregate() modified the"
        in out
    )
    failed = {r.check for r in run_conformance(DEFENSES["nan_defense"]) if not r.passed}
    assert failed == {"defense_output_is_well_formed"}  # NaN models are reproducible NaN, not a seeding failure


def test_check_command_errors(tmp_path, capsys):
    empty = _write(tmp_path / "empty.py", "x = 1\n")
    assert main(["check", str(empty)]) == 2
    assert "registers no plugin (decorate a class with @register_attack" in capsys.readouterr().err
    bad = _write(tmp_path / "syntax.py", "def (:\n")
    assert main(["check", str(bad)]) == 1
    assert "failed to import: SyntaxError" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    assert "missing.py' does not exist" in capsys.readouterr().err
    assert main(["check", str(_write(tmp_path / "notes.txt", "x"))]) == 2
    assert "is not a .py file" in capsys.readouterr().err


def test_check_command_on_a_folder_checks_each_plugin_file(tmp_path, capsys):
    folder = tmp_path / "plugins"
    folder.mkdir()
    _write(folder / "good.py", GOOD_ATTACK.format(cls="FolderGood", name="folder_good"))
    _write(folder / "helpers.py", "SCALE = 2\n")  # imported by plugins, registers nothing itself
    _write(folder / "broken.py", "def (:\n")
    _write(folder / "_private.py", "raise RuntimeError('skipped, as --plugins skips it')\n")
    assert main(["check", str(folder)]) == 1  # the broken file fails; the others are still checked
    out = capsys.readouterr().out
    assert (
        "FAIL  broken.py: imports  (SyntaxError" in out and "good.py:\nPASS  folder_good: builds_with_defaults" in out
    )
    assert "note: helpers.py registers no plugin" in out and "_private" not in out
    assert out.rstrip().split("\n")[-1].startswith("1 check(s) failed")
    (folder / "broken.py").unlink()
    assert main(["check", str(folder)]) == 0
    assert main(["check", str(tmp_path / "empty")]) == 2  # a folder that does not exist is a missing file
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty")]) == 2
    assert "holds no .py file" in capsys.readouterr().err


def test_documented_example_plugins_pass_the_conformance_suite(capsys):
    from pathlib import Path

    examples = Path(__file__).parents[1] / "docs" / "examples"
    for name in ("scaled_model.py", "distance_filter.py", "breast_cancer.py", "small_convnet.py", "hypercube.py"):
        assert main(["check", str(examples / name)]) == 0, capsys.readouterr().out


def test_plugins_load_from_a_source_checkout_without_an_install_mapping_them(tmp_path):
    """`python -m robustbench_dice` from the repository root imports the checkout, even over a regular install,
    and there attacks/ and defenses/ sit beside the package: they must still load, and their classes pickle."""
    import subprocess
    from pathlib import Path

    code = """
import pickle, sys
# without an editable install's finder, as with a regular install shadowed by the checkout
sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", type(f).__name__)]
sys.path.insert(0, sys.argv[1])
import robustbench_dice.registry as registry
registry.load_builtin_plugins()
from robustbench_dice.attacks.label_flip import LabelFlip
assert pickle.loads(pickle.dumps(LabelFlip(fraction=0.5))) == LabelFlip(fraction=0.5)
import robustbench_dice
print(robustbench_dice.__file__, sorted(registry.ATTACKS), sorted(registry.DEFENSES))
"""
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(root / "robustbench_dice" / "__init__.py"))
    assert "'label_flip'" in done.stdout and "'dice_prune'" in done.stdout


def test_auto_byzantine_bound_takes_the_given_count_or_the_default_without_one():
    assert build_defense("krum", {"f": "auto"}, byzantine_in_neighbours=3).f == 3
    assert build_defense("trimmed_mean", {"trim": "auto"}, byzantine_in_neighbours=0).trim == 0
    assert build_defense("ios", {"f": "auto"}).f == 1  # checking a suite: the default stands in
    with pytest.raises(ConfigError, match=r"parameter 'tau' must be float \| None, got 'auto' \(no parameter of"):
        build_defense("clipped_gossip", {"tau": "auto"})
    with pytest.raises(ConfigError, match="parameter 'f' must be int or 'auto', got 'three'"):
        build_defense("krum", {"f": "three"})


BAD_BOUND = '''
from dataclasses import dataclass
from robustbench_dice.plugins import Defense, gossip_average, Aggregation
from robustbench_dice.registry import register_defense


@register_defense
@dataclass
class BadBound(Defense):
    """Declares a bound that is not an int parameter (a test plugin; no paper)."""

    name = "bad_bound"
    byzantine_bound = "{bound}"
    threshold: float = 1.0

    def aggregate(self, view):
        return Aggregation(theta=gossip_average(view))
'''


@pytest.mark.parametrize("bound", ["f", "threshold"])
def test_byzantine_bound_must_name_an_int_parameter(tmp_path, bound):
    path = _write(tmp_path / "bad_bound.py", BAD_BOUND.format(bound=bound))
    with pytest.raises(ConfigError, match=f"byzantine_bound = '{bound}' must name one of its int parameters"):
        registry.load_plugin_file(path)
    assert "bad_bound" not in DEFENSES


@pytest.mark.parametrize("name,bound", [("krum", "f"), ("ios", "f"), ("trimmed_mean", "trim")])
def test_a_negative_byzantine_bound_is_refused(name, bound):
    with pytest.raises(ConfigError, match=f"defense '{name}': {bound} must be >= 0, got -1"):
        build_defense(name, {bound: -1})


DATASET_PLUGIN = '''
import numpy as np
import torch
from robustbench_dice.datasets import Dataset
from robustbench_dice.registry import register_dataset


@register_dataset("{name}")
def {function}({arguments}):
    """Two Gaussian blobs (a test dataset){note}."""
    rng = np.random.default_rng({seed})
    x = rng.normal(size=(240, {features})).astype(np.float32)
    y = (x.reshape(240, -1)[:, 0] > 0).astype(np.int64)
    x[y == 1] += 1.0
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return Dataset("{name}", x[:200], y[:200], x[200:], y[200:], num_classes=2)
'''


def _dataset_file(folder, name, arguments="", seed="0", features="5", note="", function=None):
    text = DATASET_PLUGIN.format(
        name=name, function=function or name, arguments=arguments, seed=seed, features=features, note=note
    )
    return _write(folder / f"{function or name}.py", text)


def test_a_dataset_plugin_runs_in_a_scenario_and_is_listed(tmp_path, capsys):
    _dataset_file(tmp_path, "blobs")
    assert main(["list", "datasets", "--plugins", str(tmp_path)]) == 0
    assert "blobs                  Two Gaussian blobs (a test dataset)." in capsys.readouterr().out
    args = ["simulate", "--plugins", str(tmp_path), "--dataset", "blobs", "--nodes", "4", "--rounds", "20"]
    assert main([*args, "--batch-size", "8", "--model", "logreg", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["scenario"]["dataset"] == "blobs" and result["final_accuracy_mean"] > 0.8


def test_dataset_model_and_topology_plugins_are_loaded_by_the_suite_workers(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _dataset_file(plugins, "blobs_suite")
    (plugins / "hypercube.py").write_text(
        (Path(__file__).parents[1] / "docs" / "examples" / "hypercube.py").read_text()
    )
    _write(
        plugins / "tiny_module.py",
        '''
        from torch import nn
        from robustbench_dice.registry import register_model


        @register_model("tiny_module")
        def tiny_module(input_shape, num_classes):
            """A linear layer as a torch.nn.Module (a test model)."""
            return nn.Linear(input_shape[0], num_classes)
        ''',
    )
    suite = _write(
        tmp_path / "mine.toml",
        """
        [suite]
        datasets = ["blobs_suite"]
        models = ["logreg", "tiny_module"]
        topologies = ["ring", "hypercube"]
        attacks = ["label_flip"]
        defenses = ["median"]
        nodes = [4]
        byzantine = [1]
        seeds = [0]
        [suite.base]
        rounds = 5
        batch_size = 8
        eval_every = 5
        """,
    )
    common = ["--suite", str(suite), "--store", str(tmp_path / "store"), "--tables", str(tmp_path / "t"), "--quiet"]
    assert main(["run", *common]) == 2
    assert "unknown dataset 'blobs_suite'" in capsys.readouterr().err  # the error names the flag that loads it
    # spawned worker processes import the plugin folder themselves
    assert main(["run", *common, "--jobs", "2", "--plugins", str(plugins)]) == 0
    summary = (tmp_path / "t" / "summary.csv").read_text()
    assert summary.count("blobs_suite") == 4 and summary.count("tiny_module") == 2 and summary.count("hypercube") == 2
    assert ",ok," in summary and ",failed," not in summary


def test_a_dataset_that_reads_data_root_gets_it(tmp_path, capsys):
    _write(
        tmp_path / "from_file.py",
        '''
        from pathlib import Path
        import numpy as np
        import torch
        from robustbench_dice.datasets import Dataset
        from robustbench_dice.errors import DatasetNotFoundError
        from robustbench_dice.registry import register_dataset


        @register_dataset("npz_file")
        def npz_file(data_root):
            """Arrays from DATA_ROOT/data.npz (a test dataset)."""
            path = Path(data_root or ".") / "data.npz"
            if not path.is_file():
                raise DatasetNotFoundError(f"{path} does not exist")
            with np.load(path, allow_pickle=False) as f:
                x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
            return Dataset("npz_file", x[:60], y[:60], x[60:], y[60:], num_classes=3)
        ''',
    )
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    root.mkdir()
    np.savez(root / "data.npz", x=rng.normal(size=(90, 4)).astype(np.float32), y=np.arange(90) % 3)
    registry.load_plugin_folder(tmp_path)
    assert DATASETS["npz_file"].endswith("[data_root]")
    assert Scenario(dataset="npz_file", data_root=str(root)).unused_fields() == []
    assert Scenario(dataset="digits", data_root=str(root)).unused_fields()[0].startswith("data_root (read only with")
    assert main(["check", str(tmp_path / "from_file.py"), "--data-root", str(root)]) == 0
    assert "PASS  npz_file: dataset_loads_and_is_valid  (60 train / 30 test samples, input (4,), 3 classes)" in (
        capsys.readouterr().out
    )
    assert main(["check", str(tmp_path / "from_file.py")]) == 1
    assert (
        "FAIL  npz_file: dataset_loads_and_is_valid  (DatasetNotFoundError: data.npz does not exist (its loader got"
        " data_root=None: `check --data-root DIR` gives it one))" in capsys.readouterr().out
    )


def test_a_model_file_is_checked_on_a_dataset_from_another_plugin_folder(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _dataset_file(data, "blobs_check")
    model = _write(
        tmp_path / "linear.py",
        '''
        from torch import nn
        from robustbench_dice.registry import register_model


        @register_model("linear_check")
        def linear_check(input_shape, num_classes):
            """One linear layer (a test model)."""
            return nn.Linear(input_shape[0], num_classes)
        ''',
    )
    assert main(["check", str(model), "--dataset", "blobs_check", "--plugins", str(data)]) == 0
    assert "12 parameters; 3 nodes at once equal each node alone, on blobs_check" in capsys.readouterr().out


def test_a_loader_whose_data_root_has_a_default_is_given_it(tmp_path):
    _write(
        tmp_path / "rooted.py",
        '''
        from robustbench_dice.errors import DatasetNotFoundError
        from robustbench_dice.registry import register_dataset


        @register_dataset("rooted")
        def rooted(data_root=None):
            """Data under data_root (a test loader that finds none)."""
            raise DatasetNotFoundError(f"nothing under {data_root}")
        ''',
    )
    registry.load_plugin_folder(tmp_path)
    assert DATASETS["rooted"].endswith("[data_root]")
    with pytest.raises(DatasetNotFoundError, match="nothing under somewhere"):
        load_dataset("rooted", "somewhere")


def test_dataset_conformance_catches_a_loader_that_changes_between_loads(tmp_path):
    _dataset_file(tmp_path, "drifting", seed="None")
    registry.load_plugin_folder(tmp_path)
    results = {r.check: r for r in run_dataset_conformance("drifting")}
    assert results["dataset_loads_and_is_valid"].passed and results["dataset_trains_on_a_small_graph"].passed
    assert not results["dataset_same_data_every_load"].passed
    assert "two loads gave different x_train" in results["dataset_same_data_every_load"].detail


def test_an_image_dataset_plugin_is_trained_on_by_the_cnn_too(tmp_path):
    _dataset_file(tmp_path, "tiny_images", features="1, 6, 6")
    registry.load_plugin_folder(tmp_path)
    (trained,) = [r for r in run_dataset_conformance("tiny_images") if r.check == "dataset_trains_on_a_small_graph"]
    assert trained.passed and "cnn: accuracy" in trained.detail, trained.detail


def _documented(function):
    function.__doc__ = "A loader (a test)."
    return function


@pytest.mark.parametrize(
    "name,loader,message",
    [
        ("has space", _documented(lambda: None), "dataset name 'has space' must be letters, digits"),
        ("undocumented", lambda: None, "needs a docstring"),
        ("two_args", _documented(lambda a, b: None), "must take no argument or one \\(data_root\\), not 2"),
        ("digits", _documented(lambda: None), "two datasets are named 'digits': a built-in dataset and"),
    ],
)
def test_bad_dataset_registrations_are_clear_errors(name, loader, message):
    with pytest.raises(ConfigError, match=message):
        registry.register_dataset(name)(loader)
    assert name not in PLUGIN_DATASETS


def test_two_files_registering_one_dataset_name_clash(tmp_path):
    _dataset_file(tmp_path, "blobs_twice", function="first")
    _dataset_file(tmp_path, "blobs_twice", function="second")
    with pytest.raises(ConfigError, match="two datasets are named 'blobs_twice': .*first.py and dataset plugin"):
        registry.load_plugin_folder(tmp_path)


def test_a_plugin_files_code_is_part_of_its_runs_store_keys(tmp_path):
    """Same file content, same key (wherever the file is); an edit to the file, a new key; built-ins, no code."""
    import hashlib

    from robustbench_dice import Scenario
    from robustbench_dice.registry import plugin_code
    from robustbench_dice.store import scenario_key

    scenario = Scenario(attack="zeros_keyed", byzantine=2, defense="krum")

    def key_with(folder, text):
        folder.mkdir()
        _write(folder / "zeros.py", text)
        ATTACKS.pop("zeros_keyed", None)  # as in a new process, which loads only this folder
        registry.load_plugin_folder(folder)
        return scenario_key(scenario), plugin_code(scenario)

    original = GOOD_ATTACK.format(cls="ZerosKeyed", name="zeros_keyed")
    first, code = key_with(tmp_path / "a", original)
    digest = hashlib.sha256((tmp_path / "a" / "zeros.py").read_bytes()).hexdigest()[:16]
    assert code == {"attack zeros_keyed": digest}
    edited, _ = key_with(tmp_path / "b", original.replace("torch.full_like", "0.0 + torch.full_like"))
    moved, _ = key_with(tmp_path / "c", original)
    assert edited != first and moved == first
    assert plugin_code(Scenario(attack="label_flip", defense="krum", dataset="digits", model="mlp")) == {}


def test_an_installed_plugin_packages_own_modules_count_and_other_installed_packages_do_not(tmp_path, monkeypatch):
    """A package of plugins (an entry point's, installed in site-packages): its own modules, reached by relative
    imports, are its code; another installed package it imports is a library, whose upgrade the key does not see."""
    import importlib
    import sys

    from robustbench_dice import code_digest

    installed = (*code_digest._installation_folders(), tmp_path.resolve())  # tmp_path plays site-packages
    monkeypatch.setattr(code_digest, "_installation_folders", lambda: installed)
    package = tmp_path / "pkg_with_plugins"
    package.mkdir()
    _write(package / "__init__.py", "")
    _write(package / "levels.py", "import lib_elsewhere\n\n\ndef level_of(x):\n    return lib_elsewhere.same(x)\n")
    _write(tmp_path / "lib_elsewhere.py", "def same(x):\n    return x\n")
    plugin = (
        GOOD_ATTACK.format(cls="ZerosPackaged", name="zeros_packaged")
        .replace("import torch\n", "import torch\nfrom .levels import level_of\n")
        .replace("self.level)", "level_of(self.level))")
    )
    _write(package / "attack.py", plugin)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pkg_with_plugins", "pkg_with_plugins.attack", "pkg_with_plugins.levels", "lib_elsewhere"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("pkg_with_plugins.attack")
    assert [p.name for p in code_digest.user_code_files(module)] == ["attack.py", "levels.py"]
    digest = code_digest.code_digest(module)
    (tmp_path / "lib_elsewhere.py").write_text("def same(x):\n    return 1 * x\n")  # a library upgrade
    assert code_digest.code_digest(module) == digest
    (package / "levels.py").write_text("import lib_elsewhere\n\n\ndef level_of(x):\n    return 2 * x\n")
    assert code_digest.code_digest(module) != digest


def test_a_helper_beside_a_plugin_file_that_is_not_importable_gets_a_hint(tmp_path):
    plugin = GOOD_ATTACK.format(cls="ZerosHinted", name="zeros_hinted").replace(
        "import torch\n", "import torch\nfrom _hinted_level import level_of\n"
    )
    _write(tmp_path / "zeros.py", plugin)
    _write(tmp_path / "_hinted_level.py", "def level_of(x):\n    return x\n")
    (failed,) = registry.load_plugin_folder(tmp_path)
    assert "No module named '_hinted_level'" in failed.error and f"PYTHONPATH={tmp_path}" in failed.error
    (tmp_path / "_hinted_level.py").unlink()  # a module that is nowhere: no hint
    registry._user_folders.clear()
    (failed,) = registry.load_plugin_folder(tmp_path)
    assert failed.error.endswith("No module named '_hinted_level'")


def test_a_helper_module_the_plugin_file_uses_is_part_of_the_key_too(tmp_path, monkeypatch):
    """An edit to the user's module that a plugin file imports (directly, or through another) makes a new key;
    installed libraries and robustbench_dice itself do not enter it; same code elsewhere, same key."""
    import sys

    from robustbench_dice import Scenario
    from robustbench_dice.code_digest import user_code_files
    from robustbench_dice.registry import plugin_code

    scenario = Scenario(attack="zeros_helped", byzantine=2, defense="krum")
    plugin = (
        GOOD_ATTACK.format(cls="ZerosHelped", name="zeros_helped")
        .replace("import torch\n", "import torch\nfrom _zeros_level import level_of\n")
        .replace("self.level)", "level_of(self.level))")
    )

    def code_with(folder, level_text, scale_text="SCALE = 1.0\n"):
        folder.mkdir()
        _write(folder / "zeros.py", plugin)
        _write(folder / "_zeros_level.py", f"from _zeros_scale import SCALE\n\n\ndef level_of(x):\n    {level_text}\n")
        _write(folder / "_zeros_scale.py", scale_text)  # reached only through _zeros_level
        for name in ("_zeros_level", "_zeros_scale"):  # as in a new process, which imports this folder's copies
            sys.modules.pop(name, None)
        ATTACKS.pop("zeros_helped", None)
        monkeypatch.syspath_prepend(str(folder))
        assert registry.load_plugin_folder(folder) == []
        return plugin_code(scenario)["attack zeros_helped"]

    first = code_with(tmp_path / "a", "return x * SCALE")
    module = sys.modules[ATTACKS["zeros_helped"].__module__]
    assert [p.name for p in user_code_files(module)] == ["zeros.py", "_zeros_level.py", "_zeros_scale.py"]
    assert code_with(tmp_path / "b", "return x * SCALE") == first  # the same code in another folder
    assert code_with(tmp_path / "c", "return 2 * x * SCALE") != first  # the helper changed
    assert code_with(tmp_path / "d", "return x * SCALE", "SCALE = 2.0\n") != first  # the helper's helper changed


@pytest.mark.parametrize("name", ["my attack", "a,b", "x|y", "_hidden", "cost$"])
def test_attack_and_defense_names_are_plain_words(name):
    # such a name is a table row, a figure label and a `--only` value: a ',' or '|' or '$' in it broke one of them
    from robustbench_dice.plugins import Attack, Defense

    for base, register in ((Attack, registry.register_attack), (Defense, registry.register_defense)):
        plugin = type("Odd", (base,), {"name": name, "__doc__": "Odd name."})
        with pytest.raises(ConfigError, match=f"name {re.escape(repr(name))} must be letters, digits, '_', '.' or '-'"):
            register(plugin)
        assert name not in ATTACKS and name not in DEFENSES


def test_figures_draw_a_plugin_parameter_holding_dollar_signs_as_text(tmp_path):
    # matplotlib reads text between two '$' as a formula, and one that does not parse ('$^$') stopped the figure
    from dataclasses import dataclass

    from robustbench_dice.engine import simulate
    from robustbench_dice.figures import write_figures
    from robustbench_dice.plugins import Attack
    from robustbench_dice.store import ResultStore

    @registry.register_attack
    @dataclass
    class Tagged(Attack):
        """Sends its honest model; a test plugin with a free-text parameter (no paper)."""

        name = "tagged"
        tag: str = "plain"

        def messages(self, view):
            return view.half[view.byzantine]

    store = ResultStore(tmp_path / "store")
    for defense in ("median", "gossip"):
        scenario = Scenario(
            nodes=6,
            rounds=2,
            eval_every=1,
            byzantine=1,
            attack="tagged",
            attack_params={"tag": "x$^$y"},
            defense=defense,
        )
        store.put_result(scenario, simulate(scenario))
    kinds = ["accuracy_curves", "detection_auc", "roc_curves"]
    written = write_figures(store, tmp_path / "no-influence", tmp_path / "figures", kinds=kinds)
    assert sorted({p.name.split("_ring")[0] for p in written}) == sorted(kinds)
